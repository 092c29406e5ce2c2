import type { IncomingMessage, ServerResponse } from 'node:http';

// The HTTP route table every plugin adds to (web/server.ts HttpServer implements it). Paths are
// exact or have `:name` segments. A handler either writes the response itself or returns a value,
// sent as JSON with status 200 (nothing written and nothing returned: 204).

export type RouteHandler = (req: IncomingMessage, res: ServerResponse, url: URL, params: Record<string, string>) => unknown | Promise<unknown>;

export interface RouteTarget {
  route(method: string, path: string, handler: RouteHandler): unknown;
}
