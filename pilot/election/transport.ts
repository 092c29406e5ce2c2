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
}

export class ElectionTransport {
  private readonly log: Logger;
  readonly counters = { served: 0, malformed: 0, sent: 0, failed: 0 };

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
    return this.exchange(multiaddr(this.opts.witness), msg);
  }

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
      this.counters.served++;
      const reply = await this.opts.voters.receive(decoded.value);
      if (reply) await stream.sink([frame(encodeMessage(reply, MAX_ELECTION_BYTES))]);
      await stream.close().catch(() => undefined);
    } catch (err) {
      stream.abort(err instanceof Error ? err : new Error(String(err)));
    }
  }
}
