import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import type { EventEmitter } from 'node:events';
import { z } from 'zod';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { Logger } from '../shared/logger.ts';
import { REPO_ROOT } from '../shared/repo-root.ts';
import { compareNames } from '../shared/order.ts';
import { NavigatorError, errorMessage, isNavigatorError } from '../shared/errors.ts';
import { MovementEvent, failoverSummaries, outageOf, type MovementRecord } from '../shared/movement.ts';
import type { Journal } from '../depot/journal/journal.ts';
import { SseHub } from './sse.ts';
import type { RouteHandler } from './server.ts';

// The tracking page's routes on a depot's HTTP server: the static page, the read-only JSON API
// (services, movements, failovers), the event stream that keeps the page live, and the two
// mutating endpoints (switchover, drain) behind the admin token and the admin host.

/** What the depot's HTTP server offers (web/server.ts HttpServer.route). */
export interface RouteTarget {
  route(method: string, path: string, handler: RouteHandler): unknown;
}

/** One copy of a service as the page shows it. */
export interface CopyView {
  host: string;
  role: 'primary' | 'standby' | 'none';
  term: number;
  /** Container state on its depot (running, starting, ...). */
  state: string;
  /** When the copy took its current role (ms), null if unknown. */
  since: number | null;
  /** Last good DB sync into this copy (ms); the RPO is its age. Null for the primary or never synced. */
  lastSyncAt: number | null;
  syncFailing?: boolean;
}

export interface ServiceView {
  service: string;
  /** Service address (moves with the primary). */
  address: string;
  term: number;
  copies: CopyView[];
}

/** One depot as the page shows it; web/depot-api.ts DepotRow fits (transfers optional). */
export interface DepotView {
  name: string;
  peerId?: string;
  state: 'alive' | 'suspect' | 'dead' | 'left';
  uptimeS: number | null;
  load: [number, number, number] | null;
  cpus?: number | null;
  memFreeBytes: number | null;
  memTotalBytes?: number | null;
  diskFreeBytes: number | null;
  /** Images staged (content ids). */
  images: string[];
  /** Transfers in progress (the heartbeat's `staging`). */
  transfers?: Array<{ image: string; bytes: number; total: number }>;
  /** When the last heartbeat arrived (ms). */
  lastSeen?: number;
}

/** What buildServiceViews needs of a depot: its name, state and the containers its heartbeat reports. */
export interface DepotContainers {
  name: string;
  state: 'alive' | 'suspect' | 'dead' | 'left';
  containers: ReadonlyArray<unknown>;
}

/**
 * Where each copy of each service is now, from the depots' heartbeats (containers with role,
 * term, state, last DB sync) and the journal (since when, service address). Copies on dead or
 * left depots are not shown: their last heartbeat is stale. A service known only from the
 * journal is listed with no copies (the page then says it has no primary).
 */
export function buildServiceViews(depots: readonly DepotContainers[], records: readonly MovementRecord[]): ServiceView[] {
  const byService = new Map<string, ServiceView>();
  const get = (service: string) => {
    let v = byService.get(service);
    if (!v) byService.set(service, (v = { service, address: '', term: 0, copies: [] }));
    return v;
  };
  // Latest record per (service, host, role) and the latest primary record per service.
  const lastRole = new Map<string, MovementRecord>();
  const lastPrimary = new Map<string, MovementRecord>();
  for (const r of records) {
    lastRole.set(`${r.service}\u0000${r.host}\u0000${r.role}`, r);
    if (r.role === 'primary') lastPrimary.set(r.service, r);
    const v = get(r.service);
    v.term = Math.max(v.term, r.term);
  }
  for (const d of depots) {
    if (d.state === 'dead' || d.state === 'left') continue;
    for (const raw of d.containers) {
      const c = raw as { service?: unknown; role?: unknown; term?: unknown; state?: unknown; lastSyncAt?: unknown; syncFailing?: unknown };
      if (typeof c.service !== 'string') continue;
      const role = c.role === 'primary' || c.role === 'standby' ? c.role : 'none';
      const term = typeof c.term === 'number' ? c.term : 0;
      const v = get(c.service);
      v.term = Math.max(v.term, term);
      v.copies.push({
        host: d.name,
        role,
        term,
        state: typeof c.state === 'string' ? c.state : 'unknown',
        since: lastRole.get(`${c.service}\u0000${d.name}\u0000${role}`)?.time ?? null,
        lastSyncAt: role === 'standby' && typeof c.lastSyncAt === 'number' ? c.lastSyncAt : null,
        syncFailing: c.syncFailing === true,
      });
    }
  }
  for (const v of byService.values()) {
    v.address = lastPrimary.get(v.service)?.address ?? '';
    const order = { primary: 0, standby: 1, none: 2 } as const;
    v.copies.sort((a, b) => order[a.role] - order[b.role] || compareNames(a.host, b.host));
  }
  return [...byService.values()].sort((a, b) => compareNames(a.service, b.service));
}

export interface TrackingOptions {
  journal: Journal;
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

const MovementsQuery = z
  .object({
    service: z.string().max(128).optional(),
    host: z.string().max(253).optional(),
    event: MovementEvent.optional(),
    before: z.string().max(160).optional(),
    limit: z.coerce.number().int().min(1).max(500).default(50),
  })
  .strict();

export const SwitchoverRequest = z
  .object({
    service: z.string().min(1).max(128).describe('Service to switch over'),
    to: z.string().min(1).max(253).optional().describe('Depot to make primary (default: the best standby)'),
  })
  .strict();
export const DrainRequest = z.object({ host: z.string().min(1).max(253).describe('Depot to move every copy away from') }).strict();

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

/**
 * A mutating endpoint: served only to the admin host, only with the admin token (constant-time
 * check), body checked by `schema`; 401/403/400 leave everything untouched. Shared by the
 * tracking routes (switchover, drain) and the pilots (bootstrap).
 */
export function registerAdminPost<T>(
  server: RouteTarget,
  opts: { admin: { token: string; host: string }; logger: Logger },
  path: string,
  schema: z.ZodType<T>,
  action: ((args: T) => Promise<unknown>) | undefined,
  name: string,
): void {
  const log = opts.logger.child({ component: 'tracking' });
  server.route('POST', path, async (req, res) => {
    const from = normalizeAddress(req.socket.remoteAddress ?? '');
    if (!adminHostAllows(opts.admin.host, from)) {
      log.warn({ event: 'admin-refused', action: name, from, reason: 'host' }, 'admin request from a host that is not the admin host');
      return sendError(res, 403, `${name} is only served to ${opts.admin.host}`);
    }
    if (!opts.admin.token) return sendError(res, 403, `${name} is disabled: no admin token configured (http.adminToken)`);
    if (!tokenMatches(req.headers.authorization, opts.admin.token)) {
      log.warn({ event: 'admin-refused', action: name, from, reason: 'token' }, 'admin request with a missing or wrong token');
      res.setHeader('www-authenticate', 'Bearer realm="navigator"');
      return sendError(res, 401, 'missing or wrong admin token');
    }
    let body: unknown;
    try {
      body = await readJson(req, 16_384);
    } catch (err) {
      return sendError(res, 400, errorMessage(err));
    }
    const parsed = schema.safeParse(body);
    if (!parsed.success) return sendError(res, 400, issueText(parsed.error));
    if (!action) return sendError(res, 503, `${name} is not available on this depot`);
    log.info({ event: `admin-${name}`, from, ...(parsed.data as object) }, `admin ${name} requested`);
    try {
      const result = await action(parsed.data);
      sendJson(res, 200, { ok: true, result: result ?? null });
    } catch (err) {
      const status = isNavigatorError(err, 'BAD_REQUEST') ? 400 : isNavigatorError(err, 'NOT_FOUND') ? 404 : isNavigatorError(err, 'CONFLICT') ? 409 : 500;
      log.warn({ event: `admin-${name}-failed`, err: errorMessage(err) }, `admin ${name} failed`);
      sendError(res, status, errorMessage(err));
    }
  });
}

/** Constant-time comparison of a `Bearer TOKEN` header against the configured token. */
export function tokenMatches(header: string | undefined, token: string): boolean {
  if (!token) return false;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
  const given = m?.[1] ?? '';
  // Hash both so the comparison takes the same time whatever the lengths.
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(token).digest();
  return timingSafeEqual(a, b) && given.length > 0;
}

function normalizeAddress(addr: string): string {
  return addr.startsWith('::ffff:') ? addr.slice(7) : addr;
}

/** adminHost: an IP, `localhost` (any loopback), or `*` / 0.0.0.0 / :: for any client. */
export function adminHostAllows(adminHost: string, remote: string): boolean {
  const want = adminHost.trim();
  if (want === '*' || want === '0.0.0.0' || want === '::') return true;
  const from = normalizeAddress(remote);
  if (want === 'localhost') return from === '::1' || from.startsWith('127.');
  return normalizeAddress(want) === from;
}

function issueText(error: z.ZodError): string {
  return error.issues.map((i) => `${i.path.join('.') || '(body)'}: ${i.message}`).join('; ');
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' });
  res.end(text);
}

function sendError(res: ServerResponse, status: number, message: string): void {
  sendJson(res, status, { error: message });
}

async function readJson(req: IncomingMessage, maxBytes: number): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > maxBytes) throw new NavigatorError('BAD_REQUEST', `request body larger than ${maxBytes} bytes`);
    chunks.push(chunk as Buffer);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.trim() === '') return {};
  try {
    return JSON.parse(text);
  } catch {
    throw new NavigatorError('BAD_REQUEST', 'request body is not valid JSON');
  }
}

export interface TrackingMetrics {
  /** Bytes of image transfers; the shipper calls inc({direction}, n). */
  transferBytes: Counter<'direction'>;
  /** Movement gossip received, by result (appended, duplicate, bad, error). */
  movementGossip: Counter<'result'>;
  close(): void;
}

/**
 * Prometheus metrics of the tracking part on an injected registry: failovers, outage and
 * re-protection durations (from journal records as they arrive), DB sync age per standby, and
 * image transfer bytes.
 */
export function registerTrackingMetrics(registry: Registry, opts: { journal: Journal; services: () => ServiceView[]; now?: () => number }): TrackingMetrics {
  const now = opts.now ?? Date.now;
  const failovers = new Counter({ name: 'navigator_failovers_total', help: 'Failovers seen in the movement journal', labelNames: ['service'] as const, registers: [registry] });
  const outage = new Histogram({
    name: 'navigator_failover_outage_seconds',
    help: 'Service outage of a failover: detect + elect + takeover',
    labelNames: ['service'] as const,
    buckets: [0.25, 0.5, 1, 1.5, 2, 3, 5, 10, 30, 60, 120],
    registers: [registry],
  });
  const reprotect = new Histogram({
    name: 'navigator_reprotection_seconds',
    help: 'From a failure until a new standby was in place',
    labelNames: ['service'] as const,
    buckets: [1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600],
    registers: [registry],
  });
  new Gauge({
    name: 'navigator_sync_age_seconds',
    help: 'Age of the last good DB sync of each standby (the RPO)',
    labelNames: ['service', 'host'] as const,
    registers: [registry],
    collect() {
      this.reset();
      const t = now();
      for (const s of opts.services()) {
        for (const c of s.copies) {
          if (c.role === 'standby' && c.lastSyncAt !== null) this.set({ service: s.service, host: c.host }, Math.max(0, (t - c.lastSyncAt) / 1000));
        }
      }
    },
  });
  const transferBytes = new Counter({ name: 'navigator_transfer_bytes_total', help: 'Bytes of image transfers', labelNames: ['direction'] as const, registers: [registry] });
  const movementGossip = new Counter({ name: 'navigator_movement_gossip_total', help: 'Movement gossip messages received, by result', labelNames: ['result'] as const, registers: [registry] });

  // Failovers still waiting for their new standby, per service.
  const waiting = new Map<string, MovementRecord[]>();
  const onMovement = (r: MovementRecord) => {
    if (r.event === 'failover') {
      failovers.inc({ service: r.service });
      outage.observe({ service: r.service }, outageOf(r) / 1000);
      waiting.set(r.service, [...(waiting.get(r.service) ?? []), r]);
    } else if ((r.event === 'replaced' || r.event === 'placed') && r.role === 'standby') {
      for (const f of waiting.get(r.service) ?? []) {
        if (r.time >= f.time) reprotect.observe({ service: r.service }, Math.max(0, r.time - (f.time - outageOf(f))) / 1000);
      }
      waiting.delete(r.service);
    }
  };
  opts.journal.on('movement', onMovement);
  return { transferBytes, movementGossip, close: () => opts.journal.off('movement', onMovement) };
}
