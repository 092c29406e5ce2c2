import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../shared/logger.ts';
import { NavigatorError, errorMessage } from '../shared/errors.ts';
import type { RouteHandler, RouteTarget } from '../shared/api/routes.ts';

// The depot's HTTP server (node:http, no framework) with a tiny route table that every plugin
// extends: the tracking page, /api/*, server-sent events, /metrics. Paths are exact or have
// `:name` segments (e.g. /api/services/:id). Handlers either write the response themselves or
// return a value, which is sent as JSON with status 200 (nothing written and nothing returned:
// 204). A thrown NavigatorError becomes a JSON error with a matching status.

export type { RouteHandler };

interface Route {
  method: string;
  segments: string[];
  handler: RouteHandler;
}

export interface HttpServerOptions {
  host: string;
  port: number;
  log: Logger;
}

export class HttpServer implements RouteTarget {
  private readonly routes: Route[] = [];
  private server: Server | undefined;

  constructor(private readonly opts: HttpServerOptions) {}

  /** Add a route; a later route for the same method and path replaces the earlier one. */
  route(method: string, path: string, handler: RouteHandler): this {
    const m = method.toUpperCase();
    const segments = splitPath(path);
    const i = this.routes.findIndex((r) => r.method === m && r.segments.join('/') === segments.join('/'));
    const route = { method: m, segments, handler };
    if (i >= 0) this.routes[i] = route;
    else this.routes.push(route);
    return this;
  }

  async start(): Promise<void> {
    const server = createServer((req, res) => void this.dispatch(req, res));
    server.keepAliveTimeout = 5000;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.opts.port, this.opts.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.server = server;
  }

  /** The bound port (useful when configured with port 0). */
  get port(): number | undefined {
    const a = this.server?.address();
    return a && typeof a === 'object' ? (a as AddressInfo).port : undefined;
  }

  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      // SSE and keep-alive clients would hold close() open.
      server.closeAllConnections();
    });
  }

  private async dispatch(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = Date.now();
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://localhost');
    } catch {
      sendJson(res, 400, { error: 'BAD_REQUEST', message: 'invalid URL' });
      return;
    }
    const segments = splitPath(url.pathname);
    let pathMatched = false;
    for (const route of this.routes) {
      const params = matchSegments(route.segments, segments);
      if (!params) continue;
      pathMatched = true;
      if (route.method !== req.method && !(route.method === 'GET' && req.method === 'HEAD')) continue;
      try {
        const out = await route.handler(req, res, url, params);
        if (!res.headersSent && !res.writableEnded) {
          if (out === undefined) sendJson(res, 204, undefined);
          else sendJson(res, 200, out);
        }
      } catch (err) {
        const status = err instanceof NavigatorError ? statusOf(err.code) : 500;
        if (status >= 500) this.opts.log.error({ event: 'http-handler-failed', path: url.pathname, err: errorMessage(err) }, 'HTTP handler failed');
        if (!res.headersSent) sendJson(res, status, { error: err instanceof NavigatorError ? err.code : 'INTERNAL', message: errorMessage(err) });
        else res.destroy();
      }
      this.opts.log.debug({ event: 'http-request', method: req.method, path: url.pathname, status: res.statusCode, durationMs: Date.now() - started }, 'request');
      return;
    }
    if (pathMatched) sendJson(res, 405, { error: 'METHOD_NOT_ALLOWED', message: `${req.method} not allowed on ${url.pathname}` });
    else sendJson(res, 404, { error: 'NOT_FOUND', message: `no route for ${url.pathname}` });
  }
}

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  if (body === undefined) {
    res.writeHead(status);
    res.end();
    return;
  }
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
  });
  res.end(text);
}

/** An error the client caused or must act on: `{error: message}` with the given status. */
export function sendError(res: ServerResponse, status: number, message: string): void {
  sendJson(res, status, { error: message });
}

export function sendText(res: ServerResponse, status: number, body: string, contentType = 'text/plain; charset=utf-8'): void {
  res.writeHead(status, { 'content-type': contentType, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
  res.end(body);
}

function splitPath(path: string): string[] {
  return path.split('/').filter(Boolean);
}

function matchSegments(pattern: string[], actual: string[]): Record<string, string> | undefined {
  if (pattern.length !== actual.length) return undefined;
  const params: Record<string, string> = {};
  for (let i = 0; i < pattern.length; i++) {
    const p = pattern[i]!;
    const a = actual[i]!;
    if (p.startsWith(':')) {
      try {
        params[p.slice(1)] = decodeURIComponent(a);
      } catch {
        return undefined;
      }
    } else if (p !== a) return undefined;
  }
  return params;
}

function statusOf(code: string): number {
  switch (code) {
    case 'BAD_REQUEST':
    case 'CONFIG_INVALID':
    case 'MESSAGE_INVALID':
      return 400;
    case 'UNAUTHORIZED':
      return 401;
    case 'NOT_FOUND':
      return 404;
    case 'CONFLICT':
      return 409;
    case 'MESSAGE_TOO_LARGE':
      return 413;
    default:
      return 500;
  }
}
