import type { Stream, PeerId, IncomingStreamData } from '@libp2p/interface';
import type { Multiaddr } from '@multiformats/multiaddr';
import { z } from 'zod';
import type { Logger } from '../shared/logger.ts';
import { NavigatorError, errorMessage, isNavigatorError, type ErrorCode } from '../shared/errors.ts';
import {
  ControlRequest,
  ControlResponse,
  MAX_CONTROL_BYTES,
  PROTOCOLS,
  decodeMessage,
  encodeMessage,
  type ControlError,
} from '../shared/wire.ts';
import type { NavigatorNode } from './libp2p.ts';
import { frame, readFrame } from './frames.ts';
import { ContainerId, type ContainerManager } from './containers.ts';

// The control protocol: one request and one response per libp2p stream, each one
// length-prefixed (unsigned varint) JSON frame of at most MAX_CONTROL_BYTES. Requests are
// schema-checked twice: the envelope (ControlRequest) and then the method's own params. Whatever
// arrives — garbage bytes, a frame too large, an unknown method, a handler that throws — the
// server answers with an error response and carries on; it never lets a request crash the depot.
// Only peers holding the swarm key can open a stream at all (pnet).

/** What the control server needs from the image store (depot/images/catalog.ts ImageStore fits). */
export interface ControlImages {
  status(id: string): Promise<unknown>;
  verify(id: string): Promise<unknown>;
}

export const CONTROL_METHODS = ['image.status', 'image.verify', 'container.start', 'container.stop', 'container.status', 'container.exec'] as const;
export type ControlMethod = (typeof CONTROL_METHODS)[number];

const ImageParams = z.object({ image: z.string().min(1).max(256).describe('Content id of the image (64 hex digits)') }).strict();
const StopParams = z
  .object({
    id: ContainerId,
    timeoutMs: z.number().int().min(0).max(600_000).optional().describe('Graceful stop deadline; 0 forces at once'),
  })
  .strict();
const StatusParams = z.object({ id: ContainerId.optional().describe('One container; all when absent') }).strict();
const ExecParams = z
  .object({
    id: ContainerId,
    cmd: z.string().min(1).max(4096),
    args: z.array(z.string().max(4096)).max(256).default([]),
    timeoutMs: z.number().int().positive().max(600_000).optional(),
  })
  .strict();

/** Output of container.exec is cut to this many bytes per stream so the reply fits a frame. */
const EXEC_OUTPUT_MAX = 256 * 1024;
const IMAGE_ID = /^[0-9a-f]{64}$/;

export interface ControlServerOptions {
  node: NavigatorNode;
  containers: ContainerManager;
  images?: ControlImages;
  logger: Logger;
  /** Longest wait for the request frame after the stream opens (default 10 s). */
  readTimeoutMs?: number;
  /** Longest time one method may run before the server answers TIMEOUT (default 10 min). */
  maxRequestMs?: number;
  /** Streams per connection the protocol accepts at once (default 16). */
  maxInboundStreams?: number;
}

export class ControlServer {
  private readonly log: Logger;
  private started = false;
  /** Requests answered, by outcome (for metrics and tests). */
  readonly counters = { ok: 0, error: 0, malformed: 0 };

  constructor(private readonly opts: ControlServerOptions) {
    this.log = opts.logger.child({ component: 'control' });
  }

  async start(): Promise<void> {
    if (this.started) return;
    await this.opts.node.handle(PROTOCOLS.control, (data) => void this.onStream(data), {
      maxInboundStreams: this.opts.maxInboundStreams ?? 16,
    });
    this.started = true;
  }

  async stop(): Promise<void> {
    if (!this.started) return;
    this.started = false;
    await this.opts.node.unhandle(PROTOCOLS.control);
  }

  private async onStream({ stream, connection }: IncomingStreamData): Promise<void> {
    const peer = connection.remotePeer.toString();
    const started = Date.now();
    let response: ControlResponse;
    let method = '';
    try {
      const bytes = await readFrame(stream, this.opts.readTimeoutMs ?? 10_000, MAX_CONTROL_BYTES);
      const decoded = decodeMessage(ControlRequest, bytes, MAX_CONTROL_BYTES);
      if (!decoded.ok) {
        this.counters.malformed++;
        const code: ErrorCode = decoded.reason === 'too-large' ? 'MESSAGE_TOO_LARGE' : 'BAD_REQUEST';
        response = errorResponse(null, new NavigatorError(code, `malformed control request (${decoded.reason}): ${decoded.detail}`));
      } else {
        method = decoded.value.method;
        response = await this.dispatch(decoded.value);
      }
    } catch (err) {
      this.counters.malformed++;
      response = errorResponse(null, err);
    }
    if (response.ok) this.counters.ok++;
    else this.counters.error++;
    const level = response.ok ? 'info' : 'warn';
    this.log[level](
      {
        event: 'control-request',
        peer,
        method,
        ok: response.ok,
        ...(response.ok ? {} : { code: response.error.code, error: response.error.message }),
        durationMs: Date.now() - started,
      },
      `control ${method || '(unreadable)'} ${response.ok ? 'ok' : 'failed'}`,
    );
    try {
      let bytes: Uint8Array;
      try {
        bytes = encodeMessage(response, MAX_CONTROL_BYTES - 8);
      } catch (err) {
        bytes = encodeMessage(errorResponse(response.id, err), MAX_CONTROL_BYTES - 8);
      }
      await stream.sink([frame(bytes)]);
      await stream.close().catch(() => undefined);
    } catch (err) {
      stream.abort(err instanceof Error ? err : new Error(String(err)));
    }
  }

  /** Run one checked request; every failure becomes an error response. */
  async dispatch(req: ControlRequest): Promise<ControlResponse> {
    const handler = Object.hasOwn(this.handlers, req.method)
      ? (this.handlers[req.method as ControlMethod] as (params: unknown) => Promise<unknown>)
      : this.extra.get(req.method);
    if (!handler) {
      const known = [...CONTROL_METHODS, ...this.extra.keys()].join(', ');
      return errorResponse(req.id, new NavigatorError('UNKNOWN_METHOD', `unknown control method ${JSON.stringify(req.method)}; known: ${known}`));
    }
    const maxMs = this.opts.maxRequestMs ?? 600_000;
    let timer: NodeJS.Timeout | undefined;
    try {
      const result = await Promise.race([
        handler(req.params ?? {}),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new NavigatorError('TIMEOUT', `${req.method} did not finish within ${maxMs} ms`)), maxMs);
        }),
      ]);
      return { id: req.id, ok: true, result: result ?? null };
    } catch (err) {
      return errorResponse(req.id, err);
    } finally {
      clearTimeout(timer);
    }
  }

  private readonly handlers: Record<ControlMethod, (params: unknown) => Promise<unknown>> = {
    'image.status': async (params) => this.images().status(imageId(parse('image.status', ImageParams, params).image)),
    'image.verify': async (params) => this.images().verify(imageId(parse('image.verify', ImageParams, params).image)),
    'container.start': async (params) => this.opts.containers.startContainer(params),
    'container.stop': async (params) => {
      const p = parse('container.stop', StopParams, params);
      return this.opts.containers.stopContainer(p.id, { timeoutMs: p.timeoutMs });
    },
    'container.status': async (params) => {
      const p = parse('container.status', StatusParams, params);
      return p.id ? this.opts.containers.status(p.id) : this.opts.containers.list();
    },
    'container.exec': async (params) => {
      const p = parse('container.exec', ExecParams, params);
      const r = await this.opts.containers.exec(p.id, p.cmd, p.args, { timeoutMs: p.timeoutMs });
      return { exitCode: r.exitCode, stdout: cut(r.stdout), stderr: cut(r.stderr) };
    },
  };

  /**
   * Add a method served by another part (e.g. the pilots' `pilot.assign`). The handler checks
   * its own params and throws NavigatorError for a clear error reply.
   */
  register(method: string, handler: (params: unknown) => Promise<unknown>): void {
    if (Object.hasOwn(this.handlers, method) || this.extra.has(method)) throw new Error(`control method ${method} is already registered`);
    this.extra.set(method, handler);
  }

  private readonly extra = new Map<string, (params: unknown) => Promise<unknown>>();

  private images(): ControlImages {
    if (!this.opts.images) throw new NavigatorError('NOT_FOUND', 'this depot has no image store');
    return this.opts.images;
  }
}

export interface ControlClientOptions {
  node: NavigatorNode;
  /** Default per-call timeout (default 30 s). */
  timeoutMs?: number;
}

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
    const response = await this.exchange(peer, frame(bytes), opts.timeoutMs ?? this.opts.timeoutMs ?? 30_000, method);
    if (response.ok) return response.result as T;
    throw new NavigatorError(asCode(response.error.code), response.error.message, { ...(response.error.details ?? {}), remote: true, method });
  }

  /** Send raw bytes (tests: malformed frames) and read the response frame. */
  async exchange(peer: PeerId | Multiaddr, raw: Uint8Array, timeoutMs: number, what = 'request'): Promise<ControlResponse> {
    const signal = AbortSignal.timeout(timeoutMs);
    let stream: Stream;
    try {
      stream = await this.opts.node.dialProtocol(peer, PROTOCOLS.control, { signal });
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

function parse<T>(method: string, schema: z.ZodType<T>, params: unknown): T {
  const r = schema.safeParse(params);
  if (r.success) return r.data;
  const first = r.error.issues[0];
  throw new NavigatorError('BAD_REQUEST', `${method}: ${first ? `${first.path.join('.') || '(params)'}: ${first.message}` : 'invalid params'}`);
}

/** Image ids are hashes; anything path-like is an attempt to reach outside the store. */
function imageId(id: string): string {
  if (id.includes('/') || id.includes('\\') || id.includes('..') || id.startsWith('~')) {
    throw new NavigatorError('PATH_OUTSIDE_STORE', `image id ${JSON.stringify(id.slice(0, 100))} is a path; images are named by their 64-hex-digit content id`);
  }
  if (!IMAGE_ID.test(id)) throw new NavigatorError('BAD_REQUEST', `image id ${JSON.stringify(id.slice(0, 100))} is not a 64-hex-digit content id`);
  return id;
}

function errorResponse(id: string | null, err: unknown): ControlResponse {
  const error: ControlError = isNavigatorError(err)
    ? { code: err.code, message: err.message.slice(0, 4000), ...(err.details ? { details: safeDetails(err.details) } : {}) }
    : { code: 'INTERNAL', message: errorMessage(err).slice(0, 4000) };
  return { id, ok: false, error };
}

function safeDetails(d: Record<string, unknown>): Record<string, unknown> | undefined {
  try {
    const text = JSON.stringify(d);
    return text.length <= 16_384 ? (JSON.parse(text) as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

function cut(s: string): string {
  return Buffer.byteLength(s) <= EXEC_OUTPUT_MAX ? s : `${Buffer.from(s).subarray(0, EXEC_OUTPUT_MAX).toString('utf8')}\n[output cut at ${EXEC_OUTPUT_MAX} bytes]`;
}

/** A remote code is kept as sent when it looks like one (a newer peer may know more codes). */
function asCode(code: string): ErrorCode {
  return (/^[A-Z][A-Z_]{0,63}$/.test(code) ? code : 'INTERNAL') as ErrorCode;
}
