import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { EventEmitter } from 'node:events';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { HttpServer } from '../../web/server.ts';
import { registerTrackingRoutes, type TrackingRoutes } from '../../web/tracking-routes.ts';
import type { DepotView, ServiceView } from '../../shared/api/tracking.ts';
import { Journal } from '../../depot/journal/journal.ts';
import { silentLogger } from '../../shared/logger.ts';
import type { MovementRecord } from '../../shared/movement.ts';

// The tracking page in real chromium, served by the real HTTP server with a real journal and
// in-process data providers whose state the test changes (interim: the full live-cluster browser
// test with real depots comes with the daemon). Live update within 3 s without reload, the
// offline banner and its recovery, escaping, and screenshots for laptop and phone.

const log = silentLogger();
const OUT = resolve('test-output');
const events = new EventEmitter();
let dir: string;
let journal: Journal;
let server: HttpServer | undefined;
let routes: TrackingRoutes | undefined;
let port = 0;
let browser: Browser | undefined;

const start = Date.now();
const MIN = 60_000;
let services: ServiceView[];
let depots: DepotView[];

function depot(name: string, over: Partial<DepotView> = {}): DepotView {
  return {
    name,
    peerId: `12D3KooW${name.replace(/\W/g, '')}xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx`,
    state: 'alive',
    uptimeS: 3 * 86_400 + 4 * 3600,
    load: [0.42, 0.35, 0.3],
    cpus: 4,
    memFreeBytes: 5.2 * 2 ** 30,
    memTotalBytes: 16 * 2 ** 30,
    diskFreeBytes: 182 * 2 ** 30,
    images: ['sha256-9f2c41d0'],
    transfers: [],
    lastSeen: Date.now(),
    ...over,
  };
}

let n = 0;
function rec(over: Partial<MovementRecord>): MovementRecord {
  n++;
  return {
    id: `m-${n}-${Math.random().toString(36).slice(2, 8)}`,
    time: start - 3 * 3_600_000 + n * 60_000,
    service: 'zabbix',
    role: 'primary',
    host: 'ws-01',
    address: '10.0.0.50',
    fromHost: '',
    event: 'placed',
    failover: false,
    reason: '',
    term: 1,
    timings: {},
    ...over,
  };
}

async function startServer(): Promise<void> {
  server = new HttpServer({ host: '127.0.0.1', port, log });
  routes = registerTrackingRoutes(server, {
    journal,
    services: () => services,
    depots: () => depots,
    events,
    admin: { token: '', host: '127.0.0.1' },
    logger: log,
    serveDepots: true,
    coalesceMs: 100,
  });
  // Alerts and the policy in force (served by the alerts and pilots plugins on a real depot).
  server.route('GET', '/api/alerts', () => ({
    now: Date.now(),
    enabled: true,
    sender: { name: 'ws-01', peerId: '12D3KooWws01', self: true, sending: true },
    channels: [
      { channel: 'webhook', target: 'https://chat.lab.example/hook', pending: 1, failures: 3, sent: 4, lastError: 'POST https://chat.lab.example/hook: ECONNREFUSED', lastErrorAt: Date.now() - 5000, nextAttemptAt: Date.now() + 15_000 },
      { channel: 'mail', target: 'admin@lab.example via smtp.lab.example:25', pending: 0, failures: 0, sent: 5, lastOkAt: Date.now() - 60_000 },
    ],
    alerts: [
      { id: 'failover/zabbix/m-3@1', key: 'failover/zabbix/m-3', type: 'failover', severity: 'critical', service: 'zabbix', host: 'ws-01', summary: 'zabbix failed over from ws-03 to ws-01 (term 2): <b>ws-03</b> lost power', details: {}, openedAt: Date.now() - 120_000, count: 1, lastAt: Date.now() - 120_000, events: ['m-3'], sentOpen: ['mail'], sentResolve: [], skipped: [], superseded: false, openedBy: 'ws-01' },
      { id: 'unprotected/zabbix@2', key: 'unprotected/zabbix', type: 'unprotected', severity: 'warning', service: 'zabbix', host: 'ws-01', summary: 'zabbix runs on ws-01 with no running standby', details: {}, openedAt: Date.now() - 3_600_000, resolvedAt: Date.now() - 3_000_000, resolveSummary: 'unprotected cleared after 10 min', count: 1, lastAt: Date.now() - 3_600_000, events: [], sentOpen: ['mail', 'webhook'], sentResolve: ['mail', 'webhook'], skipped: [], superseded: false, openedBy: 'ws-03' },
    ],
  }));
  server.route('GET', '/api/policy', () => ({
    depot: 'ws-01',
    policy: {},
    quietNow: null,
    preferredVoters: [],
    explained: ['placement weights: uptime 0.2, memory 0.2, cpu 0.2, session 0.25, image 0.15', 'anti-affinity groups (never primary and standby in one): strip-a: ws-01, ws-02; strip-b: ws-03'],
    warnings: ['policy.services.zabbix.pinned names ws-09, which policy.excludedHosts excludes: it never gets a copy'],
  }));
  await server.start();
  port = server.port!;
}

async function stopServer(): Promise<void> {
  routes?.close();
  routes = undefined;
  await server?.stop();
  server = undefined;
}

beforeAll(async () => {
  await mkdir(OUT, { recursive: true });
  dir = await mkdtemp(join(tmpdir(), 'nav-browser-'));
  journal = new Journal({ path: join(dir, 'journal.jsonl'), logger: log });
  await journal.open();
  services = [
    {
      service: 'zabbix',
      address: '10.0.0.50',
      term: 3,
      copies: [
        { host: 'ws-01', role: 'primary', term: 3, state: 'running', since: start - 95 * MIN, lastSyncAt: null },
        { host: 'ws-02', role: 'standby', term: 3, state: 'running', since: start - 80 * MIN, lastSyncAt: start - 42_000 },
      ],
      voters: { epoch: [3, 2], hosts: ['lab-pc-17', 'ws-01', 'ws-03'] },
    },
  ];
  depots = [
    depot('ws-01'),
    depot('ws-02', { load: [1.12, 0.9, 0.7], memFreeBytes: 2.1 * 2 ** 30 }),
    depot('ws-03', { state: 'suspect', uptimeS: 5400 }),
    depot('lab-pc-17', { uptimeS: 7200, images: [], transfers: [{ image: 'sha256-9f2c41d0', bytes: 620e6, total: 1.25e9 }] }),
  ];
  // A history: bootstrap, a failover with its re-protection, a planned switchover, and a reason
  // carrying markup that must show as text.
  await journal.appendMany([
    rec({ event: 'bootstrap', reason: 'registered by admin on ws-03', host: 'ws-03' }),
    rec({ event: 'placed', role: 'standby', host: 'ws-01', address: '10.0.0.11', reason: 'best score: uptime 3 d, 11 GiB free, image staged', timings: { ship: 0, boot: 21_000 } }),
    rec({ event: 'failover', failover: true, host: 'ws-01', fromHost: 'ws-03', term: 2, reason: 'ws-03 lost power: no heartbeat, probes failed', timings: { detect: 1100, elect: 260, takeover: 310 } }),
    rec({ event: 'replaced', role: 'standby', host: 'ws-02', address: '10.0.0.12', term: 2, reason: 'replaces the standby promoted on ws-01', timings: { ship: 38_000, boot: 19_500 } }),
    rec({ event: 'switchover', host: 'ws-01', fromHost: 'ws-01', term: 3, reason: '<img src=x onerror="window.__xss=1">planned by admin' }),
  ]);
  await startServer();
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await stopServer();
  await journal?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('tracking page in chromium', () => {
  it('shows depots and the primary, follows a failover live, and shows the offline banner', async () => {
    const page = await browser!.newPage({ viewport: { width: 1366, height: 900 } });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(m.text());
    });
    await page.goto(`http://127.0.0.1:${port}/`);

    await page.locator('#conn', { hasText: 'live' }).waitFor({ timeout: 5000 });
    await expect.poll(() => page.locator('[data-service="zabbix"] .primary-host').textContent()).toBe('ws-01');
    // The voter group of the service.
    await expect.poll(() => page.locator('[data-service="zabbix"] .voters-line').textContent()).toBe('Voters (3): lab-pc-17, ws-01, ws-03');
    await expect.poll(() => page.locator('#depots tbody tr[data-depot]').count()).toBe(4);
    expect(await page.locator('#depots tr[data-depot="ws-03"] .badge').textContent()).toBe('suspect');
    await expect.poll(() => page.locator('#movements tbody tr[data-id]').count()).toBe(5);
    expect(await page.locator('#chart svg rect.outage').count()).toBe(1);
    expect(await page.locator('#banner').isVisible()).toBe(false);
    // Markup in data is shown as text, never parsed.
    expect(await page.locator('#movements td.reason', { hasText: '<img src=x' }).count()).toBe(1);
    expect(await page.locator('#movements img').count()).toBe(0);
    expect(await page.evaluate(() => (window as unknown as { __xss?: number }).__xss)).toBeUndefined();
    // Alerts: open first, a failing channel shown with its error; the policy in force with its warning.
    await expect.poll(() => page.locator('#alerts tbody tr').count()).toBe(2);
    expect(await page.locator('#alerts tbody tr').first().textContent()).toContain('<b>ws-03</b> lost power');
    expect(await page.locator('#alerts b').count()).toBe(0);
    expect(await page.locator('#alert-channels li.failing').textContent()).toContain('failing (3 in a row: POST https://chat.lab.example/hook: ECONNREFUSED');
    expect(await page.locator('#alert-count').textContent()).toBe('1 open');
    await expect.poll(() => page.locator('#policy li').count()).toBe(3);
    expect(await page.locator('#policy li.failing').textContent()).toContain('warning: policy.services.zabbix.pinned');

    // Failover: ws-01 dies, ws-02 takes over. The page must follow without a reload.
    await page.evaluate(() => ((window as unknown as { __noReload: boolean }).__noReload = true));
    const lastUpdateBefore = await page.locator('#last-update').textContent();
    const failover = rec({
      time: Date.now(),
      event: 'failover',
      failover: true,
      host: 'ws-02',
      fromHost: 'ws-01',
      term: 4,
      reason: 'ws-01 stopped answering (service and host probes failed)',
      timings: { detect: 950, elect: 240, takeover: 280 },
    });
    const t0 = Date.now();
    services = [
      {
        service: 'zabbix',
        address: '10.0.0.50',
        term: 4,
        copies: [{ host: 'ws-02', role: 'primary', term: 4, state: 'running', since: Date.now(), lastSyncAt: null }],
      },
    ];
    depots = depots.map((d) => (d.name === 'ws-01' ? { ...d, state: 'dead' } : d));
    await journal.append(failover);
    events.emit('services');
    events.emit('depots');
    await page.locator('[data-service="zabbix"] .primary-host', { hasText: 'ws-02' }).waitFor({ timeout: 3000 });
    await page.locator(`#movements tr[data-id="${failover.id}"]`).waitFor({ timeout: 3000 - (Date.now() - t0) });
    const elapsed = Date.now() - t0;
    expect(elapsed).toBeLessThan(3000);
    expect(await page.evaluate(() => (window as unknown as { __noReload?: boolean }).__noReload)).toBe(true);
    // Newest first: the failover is the first row.
    expect(await page.locator('#movements tbody tr').first().getAttribute('data-id')).toBe(failover.id);
    expect(await page.locator(`#movements tr[data-id="${failover.id}"]`).textContent()).toContain('ws-01 stopped answering');
    expect(await page.locator('#depots tr[data-depot="ws-01"] .badge').textContent()).toBe('dead');
    await expect.poll(() => page.locator('#chart svg rect.outage').count()).toBe(2);
    expect(await page.locator('#last-update').textContent()).not.toBe('—');
    expect(lastUpdateBefore).not.toBe('—');

    // Filters: only failovers.
    await page.selectOption('#f-event', 'failover');
    await expect.poll(() => page.locator('#movements tbody tr[data-id]').count()).toBe(2);
    await page.selectOption('#f-event', '');
    await expect.poll(() => page.locator('#movements tbody tr[data-id]').count()).toBe(6);

    await page.screenshot({ path: join(OUT, 'tracking.png'), fullPage: true });

    // Phone: nothing overflows the viewport sideways (wide tables scroll inside their box).
    const phone = await browser!.newPage({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
    await phone.goto(`http://127.0.0.1:${port}/`);
    await phone.locator('[data-service="zabbix"] .primary-host', { hasText: 'ws-02' }).waitFor({ timeout: 5000 });
    await phone.locator('#movements tbody tr[data-id]').first().waitFor({ timeout: 5000 });
    const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    expect(overflow).toBeLessThanOrEqual(0);
    await phone.screenshot({ path: join(OUT, 'tracking-phone.png'), fullPage: true });
    await phone.close();

    // The server goes away: the banner shows; when it is back the banner disappears by itself.
    await stopServer();
    await page.locator('#banner').waitFor({ state: 'visible', timeout: 5000 });
    expect(await page.locator('#conn').textContent()).toBe('offline');
    await page.screenshot({ path: join(OUT, 'tracking-offline.png') });
    await startServer();
    await page.locator('#banner').waitFor({ state: 'hidden', timeout: 10_000 });
    expect(await page.locator('#conn').textContent()).toBe('live');
    expect(errors.filter((e) => !/Failed to load resource|ERR_CONNECTION_REFUSED|EventSource/.test(e))).toEqual([]);
    await page.close();
  }, 60_000);
});
