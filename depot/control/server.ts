import type { IncomingStreamData } from '@libp2p/interface';
import type { Logger } from '../../shared/logger.ts';
import { ControlSection } from '../../shared/config.ts';
import { NavigatorError, errorMessage, isNavigatorError, type ErrorCode } from '../../shared/errors.ts';
import { ControlRequest, ControlResponse, MAX_CONTROL_BYTES, PROTOCOLS, decodeMessage, encodeMessage, type ControlError } from '../../shared/wire.ts';
import type { NavigatorNode } from '../libp2p.ts';
import { frame, readFrame } from './frames.ts';

// The control protocol's server: one request and one response per libp2p stream, each one
// length-prefixed (unsigned varint) JSON frame of at most MAX_CONTROL_BYTES. Requests are
// schema-checked twice: the envelope (ControlRequest) here, then the method's own params in its
// handler. Whatever arrives — garbage bytes, a frame too large, an unknown method, a handler that
// throws — the server answers with an error response and carries on; a request never crashes the
// depot. Only peers holding the swarm key can open a stream at all (pnet).
//
// The server is a core part of the depot: it knows no method of its own. Plugins register theirs
// (containers, images, pilots), and each handler learns who called it, peer or local admin.

/** Who sent a request: another depot (its Noise-authenticated peer id), or this depot itself. */
export type ControlOrigin = { kind: 'peer'; peer: string } | { kind: 'local' };

export type ControlHandler = (params: unknown, caller: ControlOrigin) => Promise<unknown>;

/** Where plugins add methods (ControlServer fits). */
export interface ControlRegistrar {
  /** Add a method. The handler checks its own params and throws NavigatorError for a clear error reply. */
  register(method: string, handler: ControlHandler): void;
}

export interface ControlServerOptions extends Partial<Pick<ControlSettings, 'readTimeoutMs' | 'maxRequestMs' | 'maxInboundStreams'>> {
  node: NavigatorNode;
  logger: Logger;
}

type ControlSettings = ReturnType<typeof ControlSection.parse>;
/** Config section `control`: the defaults when a caller (a test, a benchmark) gives none. */
const DEFAULTS: ControlSettings = ControlSection.parse({});

export class ControlServer implements ControlRegistrar {
  private readonly log: Logger;
  private started = false;
  private readonly handlers = new Map<string, ControlHandler>();
  private readonly settings: Pick<ControlSettings, 'readTimeoutMs' | 'maxRequestMs' | 'maxInboundStreams'>;
  /** Requests answered, by outcome (for metrics and tests). */
  readonly counters = { ok: 0, error: 0, malformed: 0 };

  constructor(private readonly opts: ControlServerOptions) {
    this.log = opts.logger.child({ component: 'control' });
    this.settings = {
      readTimeoutMs: opts.readTimeoutMs ?? DEFAULTS.readTimeoutMs,
      maxRequestMs: opts.maxRequestMs ?? DEFAULTS.maxRequestMs,
      maxInboundStreams: opts.maxInboundStreams ?? DEFAULTS.maxInboundStreams,
    };
  }

  register(method: string, handler: ControlHandler): void {
    if (this.handlers.has(method)) throw new Error(`control method ${method} is already registered`);
    this.handlers.set(method, handler);
  }

  async start(): Promise<void> {
    if (this.started) return;
    await this.opts.node.handle(PROTOCOLS.control, (data) => void this.onStream(data), { maxInboundStreams: this.settings.maxInboundStreams });
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
      const bytes = await readFrame(stream, this.settings.readTimeoutMs, MAX_CONTROL_BYTES);
      const decoded = decodeMessage(ControlRequest, bytes, MAX_CONTROL_BYTES);
      if (!decoded.ok) {
        this.counters.malformed++;
        const code: ErrorCode = decoded.reason === 'too-large' ? 'MESSAGE_TOO_LARGE' : 'BAD_REQUEST';
        response = errorResponse(null, new NavigatorError(code, `malformed control request (${decoded.reason}): ${decoded.detail}`));
      } else {
        method = decoded.value.method;
        response = await this.dispatch(decoded.value, { kind: 'peer', peer });
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

  /** Run one checked request (from a peer, or this depot's own call); every failure becomes an error response. */
  async dispatch(req: ControlRequest, caller: ControlOrigin): Promise<ControlResponse> {
    const handler = this.handlers.get(req.method);
    if (!handler) {
      const known = [...this.handlers.keys()].join(', ');
      return errorResponse(req.id, new NavigatorError('UNKNOWN_METHOD', `unknown control method ${JSON.stringify(req.method)}; known: ${known}`));
    }
    const maxMs = this.settings.maxRequestMs;
    let timer: NodeJS.Timeout | undefined;
    try {
      const result = await Promise.race([
        handler(req.params ?? {}, caller),
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
