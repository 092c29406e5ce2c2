import type { IncomingStreamData, PeerId } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr';
import type { Logger } from '../../shared/logger.ts';
import {
  ELECTION_PROTOCOL,
  ElectionMessage,
  decodeMessage,
  encodeMessage,
  type LeaseAck,
  type LeaseRelease,
  type LeaseRenew,
  type VoteReply,
  type VoteRequest,
} from '../../shared/wire.ts';
import type { NavigatorNode } from '../../depot/libp2p.ts';
import { frame, readFrame } from '../../depot/control/frames.ts';
import type { Voters } from './voters.ts';

// Votes and lease renewals travel as one request and one reply per libp2p stream on
// ELECTION_PROTOCOL. A lost or late reply is simply no grant: the pure election logic counts
// only what comes back, measured from the send time, so the transport needs no retries.

const MAX_ELECTION_BYTES = 16_384;

export type ElectionRequest = VoteRequest | LeaseRenew | LeaseRelease;
export type ElectionReply = VoteReply | LeaseAck;

export interface ElectionTransportOptions {
  node: NavigatorNode;
  voters: Voters;
  logger: Logger;
  /** A reply later than this counts as none. */
  timeoutMs: number;
  /** Multiaddr of the witness (config pilot.witness), '' or absent: none. */
  witness?: string;
  /** Count and log a request refused because its sender is not the pilot it names (control guard). */
  refuse?: (peer: string, kind: string, reason: string) => void;
}

/** The depot a vote request, renewal or release speaks for: its pilot id is `<peer id>/<copy>/<incarnation>`. */
export function senderOf(msg: ElectionRequest): string {
  const pilot = msg.type === 'vote-request' ? msg.candidate : msg.holder;
  const slash = pilot.indexOf('/');
  return slash < 0 ? pilot : pilot.slice(0, slash);
}

export class ElectionTransport {
  private readonly log: Logger;
  readonly counters = { served: 0, malformed: 0, sent: 0, failed: 0, refused: 0 };

  constructor(private readonly opts: ElectionTransportOptions) {
    this.log = opts.logger.child({ component: 'election-transport' });
  }

  get selfId(): string {
    return this.opts.node.peerId.toString();
  }

  async start(): Promise<void> {
    await this.opts.node.handle(ELECTION_PROTOCOL, (data) => void this.onStream(data), { maxInboundStreams: 64 });
  }

  async stop(): Promise<void> {
    await this.opts.node.unhandle(ELECTION_PROTOCOL);
  }

  /** Send a request to the voter on depot `to` (this depot: handled locally); undefined = no reply. */
  async request(to: string, msg: ElectionRequest): Promise<ElectionReply | undefined> {
    this.counters.sent++;
    if (to === this.selfId) return this.opts.voters.receive(msg);
    let peer: PeerId;
    try {
      peer = peerIdFromString(to);
    } catch {
      return undefined;
    }
    return this.exchange(peer, msg);
  }

  /** Send a request to the witness (`navigator witness`, at config pilot.witness); undefined = no reply or none configured. */
  async requestWitness(msg: ElectionRequest): Promise<ElectionReply | undefined> {
    if (!this.opts.witness) return undefined;
    this.counters.sent++;
    const reply = await this.exchange(multiaddr(this.opts.witness), msg);
    if (reply) this.witnessHeardAt = performance.now();
    return reply;
  }

  /** Monotonic time (ms) the witness last answered, if ever (the quorum alert counts it as a live voter). */
  witnessHeardAt: number | undefined;

  private async exchange(peer: PeerId | Multiaddr, msg: ElectionRequest): Promise<ElectionReply | undefined> {
    const signal = AbortSignal.timeout(this.opts.timeoutMs);
    try {
      const stream = await this.opts.node.dialProtocol(peer, ELECTION_PROTOCOL, { signal });
      try {
        await stream.sink([frame(encodeMessage(msg, MAX_ELECTION_BYTES))]);
        if (msg.type === 'lease-release') return undefined;
        const decoded = decodeMessage(ElectionMessage, await readFrame(stream, this.opts.timeoutMs, MAX_ELECTION_BYTES), MAX_ELECTION_BYTES);
        if (!decoded.ok || (decoded.value.type !== 'vote-reply' && decoded.value.type !== 'lease-ack')) return undefined;
        return decoded.value;
      } finally {
        await stream.close().catch(() => undefined);
      }
    } catch {
      this.counters.failed++;
      return undefined;
    }
  }

  private async onStream({ stream, connection }: IncomingStreamData): Promise<void> {
    try {
      const decoded = decodeMessage(ElectionMessage, await readFrame(stream, 2000, MAX_ELECTION_BYTES), MAX_ELECTION_BYTES);
      if (!decoded.ok || decoded.value.type === 'vote-reply' || decoded.value.type === 'lease-ack') {
        this.counters.malformed++;
        this.log.warn({ event: 'election-message-dropped', peer: connection.remotePeer.toString(), reason: decoded.ok ? 'not a request' : decoded.reason }, 'bad election request dropped');
        stream.abort(new Error('bad election request'));
        return;
      }
      // Only the libp2p-authenticated sender may speak for its own pilots: a depot cannot ask for
      // votes, renew or release a lease in another's name.
      const from = connection.remotePeer.toString();
      if (senderOf(decoded.value) !== from) {
        this.counters.refused++;
        this.opts.refuse?.(from, `election.${decoded.value.type}`, `a ${decoded.value.type} naming pilot ${senderOf(decoded.value).slice(0, 64)} sent by another depot`);
        stream.abort(new Error('election request in another depot\'s name'));
        return;
      }
      this.counters.served++;
      const reply = await this.opts.voters.receive(decoded.value);
      if (reply) await stream.sink([frame(encodeMessage(reply, MAX_ELECTION_BYTES))]);
      await stream.close().catch(() => undefined);
    } catch (err) {
      stream.abort(err instanceof Error ? err : new Error(String(err)));
    }
  }
}
