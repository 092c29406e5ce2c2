import type { IncomingMessage, ServerResponse } from 'node:http';

// Server-sent events for the tracking page: one long-lived response per browser tab. Events are
// written as `event: NAME\ndata: JSON\n\n`; a comment line every heartbeat keeps proxies and
// the browser from timing the connection out. Clients are dropped when their socket closes.

export interface SseHubOptions {
  heartbeatMs?: number;
  /** Reconnect delay suggested to browsers (the `retry:` field). */
  retryMs?: number;
  /** Most concurrent clients; more are answered 503. */
  maxClients?: number;
}

export class SseHub {
  private readonly clients = new Set<ServerResponse>();
  private readonly heartbeatMs: number;
  private readonly retryMs: number;
  private readonly maxClients: number;
  private timer: NodeJS.Timeout | undefined;

  constructor(opts: SseHubOptions = {}) {
    this.heartbeatMs = opts.heartbeatMs ?? 15_000;
    this.retryMs = opts.retryMs ?? 2000;
    this.maxClients = opts.maxClients ?? 256;
  }

  get size(): number {
    return this.clients.size;
  }

  /**
   * Take over a request as an event stream. `initial` events are sent first (a reconnecting
   * page gets the full state again). Returns false when refused.
   */
  add(req: IncomingMessage, res: ServerResponse, initial: Array<[string, unknown]> = []): boolean {
    if (this.clients.size >= this.maxClients) {
      res.writeHead(503, { 'content-type': 'application/json', 'retry-after': '5' });
      res.end(JSON.stringify({ error: 'too many event streams' }));
      return false;
    }
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    req.socket.setNoDelay(true);
    req.socket.setKeepAlive(true);
    res.write(`retry: ${this.retryMs}\n\n`);
    for (const [event, data] of initial) res.write(frame(event, data));
    this.clients.add(res);
    const drop = () => this.clients.delete(res);
    res.on('close', drop);
    res.on('error', drop);
    this.ensureTimer();
    return true;
  }

  broadcast(event: string, data: unknown): void {
    if (this.clients.size === 0) return;
    const text = frame(event, data);
    for (const res of this.clients) {
      // A client that cannot keep up (buffer full) is cut; the browser reconnects and resyncs.
      if (res.writableLength > 1_048_576) {
        res.destroy();
        this.clients.delete(res);
        continue;
      }
      res.write(text);
    }
  }

  /** End every stream (server shutdown). */
  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    for (const res of this.clients) res.end();
    this.clients.clear();
  }

  private ensureTimer(): void {
    if (this.timer) return;
    this.timer = setInterval(() => {
      for (const res of this.clients) res.write(`: keepalive ${Date.now()}\n\n`);
    }, this.heartbeatMs);
    this.timer.unref();
  }
}

function frame(event: string, data: unknown): string {
  if (!/^[a-z][a-z0-9-]{0,31}$/.test(event)) throw new Error(`bad SSE event name ${event}`);
  // JSON.stringify never emits a raw newline, so one data line is enough.
  return `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}
