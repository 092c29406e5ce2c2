import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { EventEmitter } from 'node:events';
import { z } from 'zod';
import type { Logger } from '../shared/logger.ts';
import { REPO_ROOT } from '../shared/repo-root.ts';
import { NavigatorError, errorMessage, isNavigatorError } from '../shared/errors.ts';
import { MovementEvent, failoverSummaries, type MovementRecord } from '../shared/movement.ts';
import type { RouteTarget } from '../shared/api/routes.ts';
import { DrainRequest, SwitchoverRequest, type DepotView, type ServiceView } from '../shared/api/tracking.ts';
import { SseHub } from './sse.ts';
import { sendError, sendJson } from './server.ts';
import { issueText, registerAdminPost } from './admin-routes.ts';

// The tracking page's routes on a depot's HTTP server: the static page, the read-only JSON API
// (services, movements, failovers), the event stream that keeps the page live, and the two
// mutating endpoints (switchover, drain) behind the admin token and the admin host.

/** The movement journal as the routes read it (depot/journal Journal fits). */
export interface MovementLog {
  all(): readonly MovementRecord[];
  page(query: MovementsQuery): unknown;
  on(event: 'movement', listener: (record: MovementRecord, seq: number) => void): unknown;
  off(event: 'movement', listener: (record: MovementRecord, seq: number) => void): unknown;
}

export interface TrackingOptions {
  journal: MovementLog;
  services: () => ServiceView[];
  depots: () => DepotView[];
  /** Emits 'services' and 'depots' (no payload) when those views changed; pushes are coalesced. */
  events?: EventEmitter;
  switchover?: (args: { service: string; to?: string | undefined }) => Promise<unknown>;
  drain?: (args: { host: string }) => Promise<unknown>;
  /** config.http: adminToken (empty disables the mutating endpoints) and adminHost. */
  admin: { token: string; host: string };
  logger: Logger;
  /** Also serve GET /api/depots (when the server does not already). */
  serveDepots?: boolean;
  heartbeatMs?: number;
  /** Least time between two pushes of the same view. */
  coalesceMs?: number;
  now?: () => number;
}

export interface TrackingRoutes {
  hub: SseHub;
  /** Push the current services/depots now (e.g. after a role change). */
  push(kind: 'services' | 'depots'): void;
  close(): void;
}

const PAGE_DIR = join(REPO_ROOT, 'web', 'page');
const ASSETS: Record<string, { file: string; type: string }> = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/index.html': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/app.js': { file: 'app.js', type: 'text/javascript; charset=utf-8' },
  '/style.css': { file: 'style.css', type: 'text/css; charset=utf-8' },
  '/favicon.svg': { file: 'favicon.svg', type: 'image/svg+xml' },
};
const SECURITY_HEADERS = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
};

export const MovementsQuery = z
  .object({
    service: z.string().max(128).optional(),
    host: z.string().max(253).optional(),
    event: MovementEvent.optional(),
    before: z.string().max(160).optional(),
    limit: z.coerce.number().int().min(1).max(500).default(50),
  })
  .strict();

export type MovementsQuery = z.infer<typeof MovementsQuery>;

export function registerTrackingRoutes(server: RouteTarget, opts: TrackingOptions): TrackingRoutes {
  const log = opts.logger.child({ component: 'tracking' });
  const hub = new SseHub({ heartbeatMs: opts.heartbeatMs ?? 15_000 });
  const now = opts.now ?? Date.now;
  const coalesceMs = opts.coalesceMs ?? 250;

  // Static page: read once; the files are small and never change while the depot runs.
  const assets = new Map<string, { body: Buffer; type: string }>();
  for (const [path, a] of Object.entries(ASSETS)) {
    let body: Buffer;
    try {
      body = readFileSync(join(PAGE_DIR, a.file));
    } catch (err) {
      if (a.file === 'favicon.svg') continue;
      throw new NavigatorError('INTERNAL', `tracking page file ${a.file} is missing in ${PAGE_DIR}: ${errorMessage(err)}`);
    }
    assets.set(path, { body, type: a.type });
  }
  for (const [path, a] of assets) {
    server.route('GET', path, (_req, res) => {
      res.writeHead(200, { 'content-type': a.type, 'content-length': a.body.length, 'cache-control': 'no-cache', ...SECURITY_HEADERS });
      res.end(a.body);
    });
  }

  const snapshot = (kind: 'services' | 'depots') => ({ now: now(), [kind]: kind === 'services' ? opts.services() : opts.depots() });

  server.route('GET', '/api/services', (_req, res) => sendJson(res, 200, snapshot('services')));
  if (opts.serveDepots) server.route('GET', '/api/depots', (_req, res) => sendJson(res, 200, snapshot('depots')));

  server.route('GET', '/api/movements', (_req, res, url) => {
    const q = MovementsQuery.safeParse(Object.fromEntries([...url.searchParams].filter(([, v]) => v !== '')));
    if (!q.success) return sendError(res, 400, issueText(q.error));
    try {
      sendJson(res, 200, opts.journal.page(q.data));
    } catch (err) {
      if (isNavigatorError(err, 'BAD_REQUEST')) return sendError(res, 400, err.message);
      throw err;
    }
  });

  server.route('GET', '/api/failovers', (_req, res, url) => {
    const service = url.searchParams.get('service') || undefined;
    const limit = Math.min(Math.max(Number(url.searchParams.get('limit')) || 50, 1), 500);
    const all = failoverSummaries(opts.journal.all()).filter((s) => !service || s.service === service);
    sendJson(res, 200, { failovers: all.slice(-limit) });
  });

  server.route('GET', '/api/events', (req, res) => {
    hub.add(req, res, [
      ['services', snapshot('services')],
      ['depots', snapshot('depots')],
    ]);
  });

  // Live pushes. Movements go out at once; view changes are coalesced (heartbeats of many
  // depots would otherwise push many times a second).
  const onMovement = (record: MovementRecord, seq: number) => hub.broadcast('movement', { seq, record });
  opts.journal.on('movement', onMovement);
  const timers: Partial<Record<'services' | 'depots', NodeJS.Timeout>> = {};
  const lastPush: Record<'services' | 'depots', number> = { services: 0, depots: 0 };
  const push = (kind: 'services' | 'depots') => {
    // Nobody watching: building a view for no one costs every heartbeat of every depot (a page
    // that connects gets the current views at once).
    if (timers[kind] || hub.size === 0) return;
    const wait = Math.max(0, lastPush[kind] + coalesceMs - Date.now());
    timers[kind] = setTimeout(() => {
      timers[kind] = undefined;
      lastPush[kind] = Date.now();
      try {
        hub.broadcast(kind, snapshot(kind));
      } catch (err) {
        log.error({ event: 'tracking-push-failed', kind, err: errorMessage(err) }, 'could not push a view');
      }
    }, wait);
    timers[kind].unref();
  };
  const onServices = () => push('services');
  const onDepots = () => push('depots');
  opts.events?.on('services', onServices);
  opts.events?.on('depots', onDepots);

  // Mutating endpoints.
  registerAdminPost(server, opts, '/api/switchover', SwitchoverRequest, opts.switchover, 'switchover');
  registerAdminPost(server, opts, '/api/drain', DrainRequest, opts.drain, 'drain');

  return {
    hub,
    push,
    close() {
      opts.journal.off('movement', onMovement);
      opts.events?.off('services', onServices);
      opts.events?.off('depots', onDepots);
      for (const t of Object.values(timers)) if (t) clearTimeout(t);
      hub.close();
    },
  };
}

