import { randomBytes } from 'node:crypto';
import { peerIdFromString } from '@libp2p/peer-id';
import type { Stream } from '@libp2p/interface';
import { byteStream, type ByteStream } from 'it-byte-stream';
import { SystemClock, type Clock } from '../../shared/clock.ts';
import type { NavigatorNode } from '../libp2p.ts';

// Direct pings over one long-lived libp2p ping stream per peer, both ends. The ping protocol
// (/ipfs/ping/1.0.0) lets a dialer send any number of 32-byte pings on one stream and keep one
// outbound stream per peer. Opening a stream per ping cost more than the ping itself: Yamux open
// and close frames, protocol negotiation, a peer-store update and timers on both sides — at one
// routine probe a second in and out, the better part of an idle depot's CPU. libp2p's own ping
// service is not used: its handler arms a fresh timeout per ping that later aborts the stream
// however busy it is. A stream that failed, or sat unused long enough for the other side to close
// it, is replaced by a new one.

export const PING_PROTOCOL = '/ipfs/ping/1.0.0';
const PING_LENGTH = 32;

/**
 * How long the answering side keeps a stream without pings open. Round-robin probing reaches
 * each peer about every N seconds (N depots), so streams last on clusters up to ~100 depots.
 * Not a knob: the dialing side's CHANNEL_REUSE_MS is derived from it, and both ends of every
 * connection (depots of possibly different configs) must agree on it.
 */
export const PING_STREAM_IDLE_MS = 120_000;
/** A channel unused this long is not trusted to be open at the other end any more. */
const CHANNEL_REUSE_MS = PING_STREAM_IDLE_MS - 20_000;

interface Channel {
  stream: Stream;
  bytes: ByteStream<Stream>;
  lastUsed: number;
  /** Pings on one stream are strictly one after the other (the answers carry no id). */
  queue: Promise<unknown>;
}

export class PingChannels {
  private readonly channels = new Map<string, Channel>();
  private readonly node: NavigatorNode;
  /** Decides when a channel is too old to trust; also times the round trips. */
  private readonly clock: Clock;

  constructor(opts: { node: NavigatorNode; clock?: Clock }) {
    this.node = opts.node;
    this.clock = opts.clock ?? new SystemClock();
  }

  /** Round trip to `peer` in ms; throws when the ping fails or `signal` fires first. */
  async ping(peer: string, signal: AbortSignal): Promise<number> {
    const ch = this.channels.get(peer);
    if (ch && this.usable(ch)) {
      try {
        return await this.enqueue(peer, ch, signal);
      } catch (err) {
        // The other end may have closed the stream just now (restart, idle limit, an older
        // version): one more try on a new stream before calling the ping failed.
        if (signal.aborted) throw err;
      }
    } else if (ch) this.drop(peer, ch);
    return this.enqueue(peer, await this.open(peer, signal), signal);
  }

  private enqueue(peer: string, ch: Channel, signal: AbortSignal): Promise<number> {
    const run = ch.queue.then(() => this.pingOn(peer, ch, signal));
    ch.queue = run.catch(() => {});
    return run;
  }

  /** Forget the channel to a peer whose connection closed. */
  forget(peer: string): void {
    const ch = this.channels.get(peer);
    if (ch) this.drop(peer, ch);
  }

  stop(): void {
    for (const [peer, ch] of this.channels) this.drop(peer, ch);
  }

  /** Open channels (for tests and metrics). */
  get size(): number {
    return this.channels.size;
  }

  private usable(ch: Channel): boolean {
    return ch.stream.status === 'open' && this.clock.now() - ch.lastUsed < CHANNEL_REUSE_MS;
  }

  private async open(peer: string, signal: AbortSignal): Promise<Channel> {
    const stream = await this.node.dialProtocol(peerIdFromString(peer), PING_PROTOCOL, { signal });
    const existing = this.channels.get(peer);
    if (existing && this.usable(existing)) {
      // Another ping opened one meanwhile: keep that one (one outbound ping stream per peer).
      stream.abort(new Error('duplicate ping stream'));
      return existing;
    }
    const ch: Channel = { stream, bytes: byteStream(stream), lastUsed: this.clock.now(), queue: Promise.resolve() };
    this.channels.set(peer, ch);
    return ch;
  }

  private async pingOn(peer: string, ch: Channel, signal: AbortSignal): Promise<number> {
    signal.throwIfAborted();
    const started = this.clock.now();
    const data = randomBytes(PING_LENGTH);
    try {
      const [, echo] = await Promise.all([ch.bytes.write(data, { signal }), ch.bytes.read({ bytes: PING_LENGTH, signal })]);
      if (!Buffer.from(echo.subarray()).equals(data)) throw new Error(`wrong ping answer from ${peer}`);
      ch.lastUsed = this.clock.now();
      return this.clock.now() - started;
    } catch (err) {
      // A late or missing answer would be read as the answer to the next ping: start over.
      this.drop(peer, ch);
      throw err;
    }
  }

  private drop(peer: string, ch: Channel): void {
    if (this.channels.get(peer) === ch) this.channels.delete(peer);
    if (ch.stream.status === 'open') ch.stream.abort(new Error('ping channel closed'));
  }
}

const systemClock = new SystemClock();

/**
 * The answering side: echo every 32 bytes until the dialer closes the stream or sends nothing for
 * `idleMs`. One timer per stream, re-armed by each ping.
 */
export async function answerPings(stream: Stream, idleMs = PING_STREAM_IDLE_MS, clock: Clock = systemClock): Promise<void> {
  const bytes = byteStream(stream);
  const idle = new AbortController();
  const arm = () => clock.setTimeout(() => idle.abort(new Error('ping stream idle')), idleMs);
  let timer = arm();
  try {
    for (;;) {
      const ping = await bytes.read({ bytes: PING_LENGTH, signal: idle.signal });
      clock.clear(timer);
      timer = arm();
      await bytes.write(ping, { signal: idle.signal });
    }
  } catch {
    // the dialer closed the stream (the usual end), went idle, or the connection went away
  } finally {
    clock.clear(timer);
    if (stream.status === 'open') await stream.close().catch((err: unknown) => stream.abort(err instanceof Error ? err : new Error(String(err))));
  }
}
