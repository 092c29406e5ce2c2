import type { PeerId, Stream } from '@libp2p/interface';
import type { Multiaddr } from '@multiformats/multiaddr';
import { NavigatorError, errorMessage, type ErrorCode } from '../../shared/errors.ts';
import { ControlResponse, MAX_CONTROL_BYTES, PROTOCOLS, decodeMessage, encodeMessage } from '../../shared/wire.ts';
import { ControlSection } from '../../shared/config.ts';
import type { NavigatorNode } from '../libp2p.ts';
import { frame, readFrame } from './frames.ts';

// The control protocol's client: calls a method on another depot and turns an error response into
// a NavigatorError with the remote code and message.

export interface ControlClientOptions {
  node: NavigatorNode;
  /** Default per-call timeout (default: config control.callTimeoutMs). */
  timeoutMs?: number;
}

const DEFAULT_TIMEOUT_MS = ControlSection.parse({}).callTimeoutMs;

export class ControlClient {
  private nextId = 1;

  constructor(private readonly opts: ControlClientOptions) {}

  /**
   * Call `method` on a peer and return its result; an error response is thrown as a
   * NavigatorError with the remote code and message.
   */
  async call<T = unknown>(peer: PeerId | Multiaddr, method: string, params: unknown, opts: { timeoutMs?: number } = {}): Promise<T> {
    const id = `${Date.now().toString(36)}-${this.nextId++}`;
    const bytes = encodeMessage({ id, method, params }, MAX_CONTROL_BYTES - 8);
    const response = await this.exchange(peer, frame(bytes), opts.timeoutMs ?? this.opts.timeoutMs ?? DEFAULT_TIMEOUT_MS, method);
    if (response.ok) return response.result as T;
    throw new NavigatorError(asCode(response.error.code), response.error.message, { ...(response.error.details ?? {}), remote: true, method });
  }

  /**
   * A stream on the existing connection, or on a new one: a connection whose other end went away
   * without a word (the address it was reached on was removed, as a service address is at a
   * hand-over; a cable pulled) takes streams that never open. So the first try gets a third of the
   * time; if it times out, that connection is dropped and the peer dialled afresh.
   */
  private async openStream(peer: PeerId | Multiaddr, timeoutMs: number, signal: AbortSignal): Promise<Stream> {
    const node = this.opts.node;
    const firstMs = Math.max(500, Math.floor(timeoutMs / 3));
    if (firstMs >= timeoutMs || !('toMultihash' in peer) || node.getConnections(peer).length === 0) return node.dialProtocol(peer, PROTOCOLS.control, { signal });
    const first = AbortSignal.any([signal, AbortSignal.timeout(firstMs)]);
    try {
      return await node.dialProtocol(peer, PROTOCOLS.control, { signal: first });
    } catch (err) {
      if (signal.aborted || !first.aborted) throw err;
      await node.hangUp(peer).catch(() => undefined);
      return node.dialProtocol(peer, PROTOCOLS.control, { signal });
    }
  }

  /** Send raw bytes (tests: malformed frames) and read the response frame. */
  async exchange(peer: PeerId | Multiaddr, raw: Uint8Array, timeoutMs: number, what = 'request'): Promise<ControlResponse> {
    const signal = AbortSignal.timeout(timeoutMs);
    let stream: Stream;
    try {
      stream = await this.openStream(peer, timeoutMs, signal);
    } catch (err) {
      if (signal.aborted) throw new NavigatorError('TIMEOUT', `${what}: could not open a control stream within ${timeoutMs} ms`);
      throw new NavigatorError('PEER_UNREACHABLE', `${what}: cannot open a control stream: ${errorMessage(err)}`);
    }
    const onAbort = () => stream.abort(new NavigatorError('TIMEOUT', `${what}: no response within ${timeoutMs} ms`));
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      await stream.sink([raw]);
      const decoded = decodeMessage(ControlResponse, await readFrame(stream, timeoutMs, MAX_CONTROL_BYTES), MAX_CONTROL_BYTES);
      if (!decoded.ok) throw new NavigatorError('MESSAGE_INVALID', `${what}: invalid control response (${decoded.reason}): ${decoded.detail}`);
      return decoded.value;
    } catch (err) {
      if (signal.aborted) throw new NavigatorError('TIMEOUT', `${what}: no response within ${timeoutMs} ms`);
      throw err;
    } finally {
      signal.removeEventListener('abort', onAbort);
      await stream.close().catch(() => undefined);
    }
  }
}

/** A remote code is kept as sent when it looks like one (a newer peer may know more codes). */
function asCode(code: string): ErrorCode {
  return (/^[A-Z][A-Z_]{0,63}$/.test(code) ? code : 'INTERNAL') as ErrorCode;
}
