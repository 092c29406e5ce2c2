import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { EventEmitter } from 'node:events';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { Registry } from 'prom-client';
import { HttpServer } from '../../web/server.ts';
import { registerTrackingRoutes, type TrackingRoutes } from '../../web/tracking-routes.ts';
import { registerTrackingMetrics } from '../../web/tracking-metrics.ts';
import { adminHostAllows, hostHeaderAllowed, tokenMatches } from '../../web/admin-routes.ts';
import type { DepotView, ServiceView } from '../../shared/api/tracking.ts';
import { Journal } from '../../depot/journal/journal.ts';
import { silentLogger } from '../../shared/logger.ts';
import type { MovementRecord } from '../../shared/movement.ts';

// The tracking routes on the depot's real HTTP server: paging and filters, the event stream,
// the admin endpoints' token and host checks, and the metrics.

const log = silentLogger();
const TOKEN = 'correct-horse-battery-staple';
let dir: string;
let journal: Journal;
let server: HttpServer;
let routes: TrackingRoutes;
let base: string;
let port: number;
const events = new EventEmitter();
const calls: Array<[string, unknown]> = [];
let services: ServiceView[] = [];
/** How often a view was built (services() or depots() called). */
let viewBuilds = 0;
const depots: DepotView[] = [
  { name: 'ws-01', state: 'alive', uptimeS: 3600, load: [0.1, 0.2, 0.3], memFreeBytes: 2e9, memTotalBytes: 8e9, diskFreeBytes: 5e10, images: ['sha256-a'], transfers: [] },
];
const registry = new Registry();

let n = 0;
function rec(over: Partial<MovementRecord> = {}): MovementRecord {
  n++;
  return {
    id: randomUUID(),
    time: 1_700_000_000_000 + n * 1000,
    service: 'zabbix',
    role: 'primary',
    host: 'ws-01',
    address: '10.0.0.50',
    fromHost: '',
    event: 'placed',
    failover: false,
    reason: 'test',
    term: 1,
    timings: {},
    ...over,
  };
}

interface Reply {
  status: number;
  headers: IncomingMessage['headers'];
  body: string;
  json(): any;
}

function call(method: string, path: string, opts: { headers?: Record<string, string>; body?: string; localAddress?: string } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, method, path, headers: opts.headers, localAddress: opts.localAddress }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body, json: () => JSON.parse(body) }));
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

/** Reads an SSE stream and lets the test wait for the next event of a name. */
function openEvents(): Promise<{ next(name: string, timeoutMs?: number): Promise<any>; comments(): number; close(): void }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path: '/api/events', headers: { accept: 'text/event-stream' } }, (res) => {
      expect(res.headers['content-type']).toMatch(/text\/event-stream/);
      const queue: Array<{ event: string; data: any }> = [];
      let comments = 0;
      const waiters: Array<() => void> = [];
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buf += chunk;
        let i: number;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          if (block.startsWith(': keepalive')) comments++;
          const ev = /^event: (.+)$/m.exec(block)?.[1];
          const data = /^data: (.+)$/m.exec(block)?.[1];
          if (ev && data) queue.push({ event: ev, data: JSON.parse(data) });
        }
        for (const w of waiters.splice(0)) w();
      });
      resolve({
        async next(name, timeoutMs = 3000) {
          const deadline = Date.now() + timeoutMs;
          for (;;) {
            const k = queue.findIndex((q) => q.event === name);
            if (k >= 0) return queue.splice(k, 1)[0]!.data;
            const left = deadline - Date.now();
            if (left <= 0) throw new Error(`no ${name} event within ${timeoutMs} ms`);
            await new Promise<void>((r) => {
              waiters.push(r);
              setTimeout(r, left);
            });
          }
        },
        comments: () => comments,
        close: () => req.destroy(),
      });
    });
    req.on('error', reject);
    req.end();
  });
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'nav-tracking-api-'));
  journal = new Journal({ path: join(dir, 'journal.jsonl'), logger: log });
  await journal.open();
  services = [
    {
      service: 'zabbix',
      address: '10.0.0.50',
      term: 1,
      copies: [
        { host: 'ws-01', role: 'primary', term: 1, state: 'running', since: Date.now() - 60_000, lastSyncAt: null },
        { host: 'ws-02', role: 'standby', term: 1, state: 'running', since: Date.now() - 50_000, lastSyncAt: Date.now() - 12_000 },
      ],
    },
  ];
  server = new HttpServer({ host: '127.0.0.1', port: 0, log });
  routes = registerTrackingRoutes(server, {
    journal,
    services: () => (viewBuilds++, services),
    depots: () => (viewBuilds++, depots),
    events,
    admin: { token: TOKEN, host: '127.0.0.1' },
    switchover: async (args) => {
      calls.push(['switchover', args]);
      return { to: args.to ?? 'ws-02' };
    },
    drain: async (args) => {
      calls.push(['drain', args]);
      return { moved: 1 };
    },
    logger: log,
    serveDepots: true,
    coalesceMs: 50,
    heartbeatMs: 100,
  });
  await server.start();
  port = server.port!;
  base = `http://127.0.0.1:${port}`;
});

afterAll(async () => {
  routes?.close();
  await server?.stop();
  await journal?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('tracking API', () => {
  it('serves the page and its assets with a strict CSP', async () => {
    const page = await call('GET', '/');
    expect(page.status).toBe(200);
    expect(page.headers['content-type']).toMatch(/text\/html/);
    expect(page.headers['content-security-policy']).toMatch(/script-src 'self'/);
    expect(page.body).toContain('<script type="module" src="app.js">');
    expect((await call('GET', '/app.js')).headers['content-type']).toMatch(/javascript/);
    expect((await call('GET', '/style.css')).headers['content-type']).toMatch(/text\/css/);
  });

  it('pages movements newest first with filters, and refuses bad queries', async () => {
    const added: MovementRecord[] = [];
    for (let i = 0; i < 120; i++) {
      added.push(rec({ service: i % 2 ? 'zabbix' : 'db', host: `ws-0${i % 3}`, event: i % 5 === 1 ? 'failover' : 'replaced', failover: i % 5 === 1 }));
    }
    await journal.appendMany(added);
    const seen: string[] = [];
    let before = '';
    let pages = 0;
    do {
      const r = await call('GET', `/api/movements?limit=50${before ? `&before=${encodeURIComponent(before)}` : ''}`);
      expect(r.status).toBe(200);
      const body = r.json();
      expect(body.total).toBe(120);
      seen.push(...body.records.map((x: MovementRecord) => x.id));
      before = body.nextBefore ?? '';
      pages++;
    } while (before);
    expect(pages).toBe(3);
    expect(seen).toEqual(added.map((r) => r.id).reverse());

    const f = (await call('GET', '/api/movements?service=zabbix&host=ws-01&event=failover&limit=500')).json();
    const want = added.filter((r) => r.service === 'zabbix' && r.host === 'ws-01' && r.event === 'failover');
    expect(want.length).toBeGreaterThan(0);
    expect(f.records.map((x: MovementRecord) => x.id)).toEqual(want.map((r) => r.id).reverse());
    expect(f.total).toBe(want.length);
    // Empty parameters mean "no filter".
    expect((await call('GET', '/api/movements?service=&host=&event=&limit=1')).json().total).toBe(120);

    const bad = await call('GET', '/api/movements?event=exploded');
    expect(bad.status).toBe(400);
    expect(bad.json().error).toMatch(/event/);
    expect((await call('GET', '/api/movements?limit=0')).status).toBe(400);
    expect((await call('GET', '/api/movements?before=xyz')).status).toBe(400);
    expect((await call('GET', '/api/movements?colour=red')).status).toBe(400);
  });

  it('serves services, depots and failover summaries', async () => {
    const s = (await call('GET', '/api/services')).json();
    expect(s.services[0].copies.map((c: { host: string }) => c.host)).toEqual(['ws-01', 'ws-02']);
    expect(typeof s.now).toBe('number');
    expect((await call('GET', '/api/depots')).json().depots[0].name).toBe('ws-01');
    const f = (await call('GET', '/api/failovers?service=db')).json();
    expect(f.failovers.length).toBeGreaterThan(0);
    expect(f.failovers.every((x: { service: string }) => x.service === 'db')).toBe(true);
  });

  it('streams the state, then new movements and changed views, and forgets closed clients', async () => {
    const es = await openEvents();
    try {
      expect((await es.next('services')).services[0].service).toBe('zabbix');
      expect((await es.next('depots')).depots[0].name).toBe('ws-01');
      expect(routes.hub.size).toBe(1);

      const r = rec({ event: 'failover', failover: true, host: 'ws-02', fromHost: 'ws-01', term: 2, timings: { detect: 800, elect: 200, takeover: 150 } });
      const t0 = Date.now();
      await journal.append(r);
      const got = await es.next('movement');
      expect(got.record).toEqual(r);
      expect(Date.now() - t0).toBeLessThan(1000);
      // A duplicate is not pushed again.
      await journal.append(r);

      services = [{ ...services[0]!, term: 2, copies: [{ host: 'ws-02', role: 'primary', term: 2, state: 'running', since: Date.now(), lastSyncAt: null }] }];
      // Many change signals in a burst are coalesced into few pushes.
      for (let i = 0; i < 20; i++) events.emit('services');
      const pushed = await es.next('services');
      expect(pushed.services[0].copies[0].host).toBe('ws-02');
      await new Promise((res) => setTimeout(res, 200));
      await expect(es.next('services', 50)).rejects.toThrow(/no services event/);
      await expect(es.next('movement', 50)).rejects.toThrow(/no movement event/);
      // Keepalive comments flow while nothing happens.
      expect(es.comments()).toBeGreaterThanOrEqual(1);
    } finally {
      es.close();
    }
    const deadline = Date.now() + 2000;
    while (routes.hub.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(routes.hub.size).toBe(0);
  });

  it('builds no view while nobody watches (an idle depot hears heartbeats all the time)', async () => {
    expect(routes.hub.size).toBe(0);
    const before = viewBuilds;
    for (let i = 0; i < 20; i++) {
      events.emit('services');
      events.emit('depots');
      await new Promise((res) => setTimeout(res, 10));
    }
    await new Promise((res) => setTimeout(res, 200)); // well past coalesceMs
    expect(viewBuilds).toBe(before);
    // A page that connects afterwards still gets the current views at once.
    const es = await openEvents();
    try {
      expect((await es.next('services')).services.length).toBeGreaterThan(0);
      expect(viewBuilds).toBeGreaterThan(before);
    } finally {
      es.close();
    }
  });

  it('admin endpoints: 401 without or with a wrong token, nothing done', async () => {
    const body = JSON.stringify({ service: 'zabbix' });
    const json = { 'content-type': 'application/json' };
    const none = await call('POST', '/api/switchover', { headers: json, body });
    expect(none.status).toBe(401);
    expect(none.headers['www-authenticate']).toMatch(/Bearer/);
    expect((await call('POST', '/api/switchover', { headers: { ...json, authorization: `Bearer ${TOKEN}x` }, body })).status).toBe(401);
    expect((await call('POST', '/api/switchover', { headers: { ...json, authorization: `Basic ${TOKEN}` }, body })).status).toBe(401);
    expect((await call('POST', '/api/drain', { headers: { ...json, authorization: 'Bearer ' }, body: JSON.stringify({ host: 'ws-01' }) })).status).toBe(401);
    expect(calls).toEqual([]);
  });

  it('admin endpoints: 421 for a foreign Host header (DNS rebinding), even with the token; IP, localhost and this host\'s name pass', async () => {
    const headers = { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}` };
    const body = JSON.stringify({ service: 'zabbix' });
    for (const host of ['evil.example', 'evil.example:7480', 'attacker.localhost.evil.example']) {
      const r = await call('POST', '/api/switchover', { headers: { ...headers, host }, body });
      expect(r.status, host).toBe(421);
      expect(r.json().error).toContain('is not this depot');
    }
    expect(calls).toEqual([]);
    expect(hostHeaderAllowed('127.0.0.1:7480')).toBe(true);
    expect(hostHeaderAllowed('[::1]:7480')).toBe(true);
    expect(hostHeaderAllowed('localhost:7480')).toBe(true);
    expect(hostHeaderAllowed('ws-07.lab.example:7480', ['ws-07.lab.example'])).toBe(true);
    expect(hostHeaderAllowed('ws-07.lab.example:7480', ['ws-07'])).toBe(false);
    expect(hostHeaderAllowed('ws-07', ['ws-07.lab.example'])).toBe(true);
    expect(hostHeaderAllowed('ws-07.evil.example', ['ws-08'])).toBe(false);
    expect(hostHeaderAllowed(undefined)).toBe(false);
    // The same request with this host's address goes through.
    expect((await call('POST', '/api/switchover', { headers: { ...headers, host: `127.0.0.1:${port}` }, body })).status).toBe(200);
    calls.length = 0;
  });

  it('admin endpoints: refused from a host other than the admin host, even with the token', async () => {
    const r = await call('POST', '/api/switchover', {
      headers: { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}` },
      body: JSON.stringify({ service: 'zabbix' }),
      localAddress: '127.0.0.2',
    });
    expect(r.status).toBe(403);
    expect(r.json().error).toMatch(/only served to 127\.0\.0\.1/);
    expect(calls).toEqual([]);
  });

  it('admin endpoints: with the token from the admin host they run; bad bodies are 400', async () => {
    const auth = { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}` };
    expect((await call('POST', '/api/switchover', { headers: auth, body: '{"service":' })).status).toBe(400);
    const missing = await call('POST', '/api/switchover', { headers: auth, body: JSON.stringify({ to: 'ws-03' }) });
    expect(missing.status).toBe(400);
    expect(missing.json().error).toMatch(/service/);
    expect(calls).toEqual([]);

    const ok = await call('POST', '/api/switchover', { headers: auth, body: JSON.stringify({ service: 'zabbix', to: 'ws-03' }) });
    expect(ok.status).toBe(200);
    expect(ok.json()).toEqual({ ok: true, result: { to: 'ws-03' } });
    const drained = await call('POST', '/api/drain', { headers: auth, body: JSON.stringify({ host: 'ws-01' }) });
    expect(drained.status).toBe(200);
    expect(calls).toEqual([
      ['switchover', { service: 'zabbix', to: 'ws-03' }],
      ['drain', { host: 'ws-01' }],
    ]);
  });

  it('admin endpoints are off (403) when no token is configured', async () => {
    const other = new HttpServer({ host: '127.0.0.1', port: 0, log });
    let called = false;
    const r = registerTrackingRoutes(other, {
      journal,
      services: () => [],
      depots: () => [],
      admin: { token: '', host: '127.0.0.1' },
      switchover: async () => (called = true),
      logger: log,
    });
    await other.start();
    try {
      const res = await fetch(`http://127.0.0.1:${other.port}/api/switchover`, { method: 'POST', headers: { authorization: 'Bearer ' }, body: '{"service":"zabbix"}' });
      expect(res.status).toBe(403);
      expect(((await res.json()) as { error: string }).error).toMatch(/disabled/);
      expect(called).toBe(false);
    } finally {
      r.close();
      await other.stop();
    }
  });

  it('token and host checks', () => {
    expect(tokenMatches(`Bearer ${TOKEN}`, TOKEN)).toBe(true);
    expect(tokenMatches(`bearer   ${TOKEN} `, TOKEN)).toBe(true);
    expect(tokenMatches(`Bearer ${TOKEN.slice(0, -1)}`, TOKEN)).toBe(false);
    expect(tokenMatches(undefined, TOKEN)).toBe(false);
    expect(tokenMatches('Bearer ', '')).toBe(false);
    expect(adminHostAllows('127.0.0.1', '::ffff:127.0.0.1')).toBe(true);
    expect(adminHostAllows('127.0.0.1', '127.0.0.2')).toBe(false);
    expect(adminHostAllows('localhost', '::1')).toBe(true);
    expect(adminHostAllows('localhost', '10.0.0.5')).toBe(false);
    expect(adminHostAllows('*', '10.0.0.5')).toBe(true);
  });

  it('metrics: failovers, outage and re-protection, sync age, transfer bytes', async () => {
    const m = registerTrackingMetrics(registry, { journal, services: () => services });
    try {
      const f = rec({ service: 'm', event: 'failover', failover: true, timings: { detect: 1000, elect: 300, takeover: 200 } });
      await journal.append(f);
      await journal.append(rec({ service: 'm', event: 'replaced', role: 'standby', time: f.time + 8500 }));
      m.transferBytes.inc({ direction: 'out' }, 1234);
      services = [{ service: 'm', address: '', term: 2, copies: [{ host: 'ws-05', role: 'standby', term: 2, state: 'running', since: null, lastSyncAt: Date.now() - 30_000 }] }];
      const text = await registry.metrics();
      expect(text).toMatch(/navigator_failovers_total\{service="m"\} 1/);
      expect(text).toMatch(/navigator_failover_outage_seconds_sum\{service="m"\} 1\.5/);
      expect(text).toMatch(/navigator_reprotection_seconds_sum\{service="m"\} 10/);
      expect(text).toMatch(/navigator_transfer_bytes_total\{direction="out"\} 1234/);
      const age = /navigator_sync_age_seconds\{service="m",host="ws-05"\} ([\d.]+)/.exec(text);
      expect(Number(age?.[1])).toBeGreaterThanOrEqual(30);
      expect(Number(age?.[1])).toBeLessThan(40);
    } finally {
      m.close();
    }
  });
});
