import * as lp from 'it-length-prefixed';
import { peerIdFromString } from '@libp2p/peer-id';
import type { Stream } from '@libp2p/interface';
import type { z } from 'zod';
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import type { Logger } from '../../shared/logger.ts';
import type { Clock } from '../../shared/clock.ts';
import { HeartbeatMessage, MembersResponse, PROTOCOLS, ProbeProtocolRequest, ProbeResponse, decodeMessage, encodeMessage, type ProbeRequest } from '../../shared/wire.ts';
import type { NavigatorNode } from '../libp2p.ts';
import { PING_PROTOCOL, PING_STREAM_IDLE_MS, PingChannels, answerPings } from './ping-channel.ts';

// SWIM probing of a suspect depot: a direct libp2p ping and, in parallel, ping-req through a
// few other depots (PROTOCOLS.probe), so one bad link does not make a healthy depot look dead.
// Frames are length-prefixed JSON, schema-checked, with a small size limit and timeouts.

const MAX_PROBE_FRAME = 1024;
/** An event-loop delay worth a log line: a third of the default lease (pilot.leaseMs 1500). */
const STALL_LOG_MS = 500;
/** A members list of 1024 depots with a few addresses each. */
const MAX_MEMBERS_FRAME = 1_048_576;

export interface MemberProberOptions {
  node: NavigatorNode;
  log: Logger;
  /** The ping channels' clock (when a kept ping stream is too old to trust). */
  clock: Clock;
  /** Timeout of one ping (membership.probeTimeoutMs). */
  probeTimeoutMs: number;
  /** How far back this process's event-loop delay is looked at (membership.lagWindowMs). */
  lagWindowMs: number;
  /** Most extra time a starved depot gives a ping (membership.maxLagAllowanceMs). */
  maxLagAllowanceMs: number;
  /** Depots this one knows alive or suspect, for a joining peer's `members` request. */
  members?: () => MembersResponse['members'];
  /** This depot's current heartbeat, for a newly connected peer's `heartbeat` request. */
  ownHeartbeat?: () => HeartbeatMessage | undefined;
  /** Largest heartbeat accepted (membership.maxMessageBytes). */
  maxHeartbeatBytes?: number;
}

export class MemberProber {
  /**
   * This process's event-loop delay: a starved depot must not blame others for its own slowness.
   * (A 100 ms sampling timer: ten wake-ups a second; delays that matter here are hundreds of ms.)
   */
  private readonly loopDelay: IntervalHistogram = monitorEventLoopDelay({ resolution: 100 });
  private lagResetTimer: NodeJS.Timeout | undefined;
  private readonly channels: PingChannels;

  constructor(private readonly opts: MemberProberOptions) {
    this.channels = new PingChannels({ node: opts.node, clock: opts.clock });
  }

  async start(): Promise<void> {
    await this.opts.node.handle(PROTOCOLS.probe, ({ stream }) => void this.serve(stream), { runOnLimitedConnection: false });
    // The ping spec: at most two inbound ping streams per peer (one kept, one being replaced).
    await this.opts.node.handle(PING_PROTOCOL, ({ stream }) => void answerPings(stream, PING_STREAM_IDLE_MS, this.opts.clock), { runOnLimitedConnection: false, maxInboundStreams: 2 });
    this.loopDelay.enable();
    // A sliding view: the last few seconds of delays, not the whole life of the process. A real
    // timer, not the clock: the histogram measures this process's real event-loop delay.
    this.lagResetTimer = setInterval(() => {
      // Said once per window: a starved depot explains its own late answers, lapsed leases and
      // missed probes (bench:scale reads these lines next to the failovers).
      const maxMs = Math.round(this.loopDelay.max / 1e6);
      if (maxMs >= STALL_LOG_MS) this.opts.log.warn({ event: 'event-loop-stall', maxMs, windowMs: this.opts.lagWindowMs }, `this depot's event loop was held up to ${maxMs} ms`);
      this.loopDelay.reset();
    }, this.opts.lagWindowMs);
    this.lagResetTimer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.lagResetTimer);
    this.channels.stop();
    this.loopDelay.disable();
    await this.opts.node.unhandle(PROTOCOLS.probe).catch(() => {});
    await this.opts.node.unhandle(PING_PROTOCOL).catch(() => {});
  }

  /**
   * Extra time a ping gets while this process is starved (memberlist's Lifeguard idea, "local
   * health"): twice the worst event-loop delay seen lately, capped. On a healthy host it is ~0.
   */
  lagAllowanceMs(): number {
    const maxMs = this.loopDelay.max / 1e6;
    return Number.isFinite(maxMs) && maxMs > 50 ? Math.min(this.opts.maxLagAllowanceMs, Math.round(2 * maxMs)) : 0;
  }

  /** Ping `target` directly; resolves the round trip in ms, or undefined on failure/timeout. */
  async ping(target: string, timeoutMs = this.opts.probeTimeoutMs): Promise<number | undefined> {
    try {
      return await this.channels.ping(target, AbortSignal.timeout(timeoutMs + this.lagAllowanceMs()));
    } catch {
      return undefined;
    }
  }

  /** The connection to `peer` closed: its ping stream went with it. */
  connectionClosed(peer: string): void {
    this.channels.forget(peer);
  }

  /** Ask `via` to ping `target` for us (SWIM ping-req). */
  async pingVia(via: string, target: string): Promise<boolean> {
    const t = this.opts.probeTimeoutMs;
    const req: ProbeRequest = { type: 'ping-req', target, timeoutMs: t };
    const r = await this.request(via, req, ProbeResponse, MAX_PROBE_FRAME, t * 2 + this.lagAllowanceMs());
    return r?.target === target && r.ok;
  }

  /** Ask `peer` which depots it knows (member exchange); undefined on failure. */
  async members(peer: string, timeoutMs = 3000): Promise<MembersResponse['members'] | undefined> {
    return (await this.request(peer, { type: 'members' }, MembersResponse, MAX_MEMBERS_FRAME, timeoutMs))?.members;
  }

  /**
   * Ask `peer` for its own heartbeat. The connection is authenticated (Noise), so an answer that
   * names another depot is a lie and is refused; undefined on any failure.
   */
  async heartbeatOf(peer: string, timeoutMs = 3000): Promise<HeartbeatMessage | undefined> {
    const hb = await this.request(peer, { type: 'heartbeat' }, HeartbeatMessage, this.opts.maxHeartbeatBytes ?? MAX_MEMBERS_FRAME, timeoutMs);
    return hb?.peerId === peer ? hb : undefined;
  }

  /** One request/answer on PROTOCOLS.probe: the answer checked against `schema`, undefined on any failure. */
  private async request<T>(peer: string, req: ProbeProtocolRequest, schema: z.ZodType<T>, maxFrame: number, timeoutMs: number): Promise<T | undefined> {
    const signal = AbortSignal.timeout(timeoutMs);
    let stream: Stream | undefined;
    try {
      stream = await this.opts.node.dialProtocol(peerIdFromString(peer), PROTOCOLS.probe, { signal });
      await stream.sink([lp.encode.single(encodeMessage(req, MAX_PROBE_FRAME))]);
      const frame = await readFrame(stream, signal, maxFrame);
      await stream.close().catch(() => {});
      if (!frame) return undefined;
      const r = decodeMessage(schema, frame, maxFrame);
      return r.ok ? r.value : undefined;
    } catch {
      stream?.abort(new Error(`${req.type} request failed`));
      return undefined;
    }
  }

  /**
   * A routine probe of a depot believed alive (memberlist): a direct ping first, ping-req through
   * `via` only when it failed, so a healthy cluster pays one ping per probe. (A slow answer on a
   * busy host is no reason to drop the connection: that only adds handshakes to the load.)
   */
  async probeRoutine(target: string, via: string[]): Promise<boolean> {
    if ((await this.ping(target)) !== undefined) return true;
    if (via.length === 0) return false;
    const results = await Promise.all(via.map((v) => this.pingVia(v, target)));
    return results.some(Boolean);
  }

  /**
   * One probe round: direct ping and ping-req through `via`, all in parallel. True as soon as
   * any of them reaches the target; false when all failed or timed out.
   */
  probe(target: string, via: string[]): Promise<boolean> {
    const attempts: Array<Promise<boolean>> = [this.ping(target).then((rtt) => rtt !== undefined), ...via.map((v) => this.pingVia(v, target))];
    return new Promise((resolve) => {
      let pending = attempts.length;
      for (const a of attempts) {
        void a.then((ok) => {
          pending -= 1;
          if (ok) resolve(true);
          else if (pending === 0) resolve(false);
        });
      }
    });
  }

  private async serve(stream: Stream): Promise<void> {
    const signal = AbortSignal.timeout(this.opts.probeTimeoutMs * 3);
    try {
      const frame = await readFrame(stream, signal);
      if (!frame) {
        stream.abort(new Error('no request'));
        return;
      }
      const r = decodeMessage(ProbeProtocolRequest, frame, MAX_PROBE_FRAME);
      if (!r.ok) {
        this.opts.log.debug({ event: 'probe-request-invalid', reason: r.reason, detail: r.detail }, 'invalid ping-req');
        stream.abort(new Error('invalid ping-req'));
        return;
      }
      if (r.value.type === 'heartbeat') {
        const hb = this.opts.ownHeartbeat?.();
        if (!hb) {
          stream.abort(new Error('no heartbeat yet'));
          return;
        }
        await stream.sink([lp.encode.single(encodeMessage(hb, this.opts.maxHeartbeatBytes ?? MAX_MEMBERS_FRAME))]);
        await stream.close().catch(() => {});
        return;
      }
      if (r.value.type === 'members') {
        const resp: MembersResponse = { type: 'members', members: (this.opts.members?.() ?? []).slice(0, 1024) };
        await stream.sink([lp.encode.single(encodeMessage(resp, MAX_MEMBERS_FRAME))]);
        await stream.close().catch(() => {});
        return;
      }
      const timeout = Math.min(r.value.timeoutMs, this.opts.probeTimeoutMs * 2);
      const rtt = await this.ping(r.value.target, timeout);
      const resp: ProbeResponse = rtt === undefined ? { type: 'ping-ack', target: r.value.target, ok: false } : { type: 'ping-ack', target: r.value.target, ok: true, rttMs: rtt };
      await stream.sink([lp.encode.single(encodeMessage(resp, MAX_PROBE_FRAME))]);
      await stream.close().catch(() => {});
    } catch (err) {
      this.opts.log.debug({ event: 'probe-serve-failed', err: (err as Error).message }, 'ping-req failed');
      stream.abort(new Error('ping-req failed'));
    }
  }
}

/** Read exactly one length-prefixed frame (or undefined if the stream ends first). */
async function readFrame(stream: Stream, signal: AbortSignal, maxBytes = MAX_PROBE_FRAME): Promise<Uint8Array | undefined> {
  const onAbort = () => stream.abort(new Error('probe timeout'));
  signal.addEventListener('abort', onAbort, { once: true });
  try {
    for await (const chunk of lp.decode(stream.source, { maxDataLength: maxBytes })) {
      return chunk.subarray();
    }
    return undefined;
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}
