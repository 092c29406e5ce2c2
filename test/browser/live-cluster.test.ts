import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdir, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Page } from 'playwright-core';
import { Lab } from '../../lab/lab.ts';
import { SERVICE, api, bootstrap, placement, startCluster, waitFor, type LabCluster, type Placement } from '../../lab/cluster.ts';
import type { MovementRecord } from '../../shared/movement.ts';
import { launchChromiumInNetns, type NetnsBrowser } from './netns-chromium.ts';

// The tracking page in real chromium against a live cluster: three real depot processes in lab
// namespaces, the echo service bootstrapped with one standby, chromium running inside the lab's
// client namespace (see netns-chromium.ts). The page is loaded from a depot that is not the
// primary's (preferably the one without a copy); the primary's host loses power; the page must show the new primary and the
// failover movement within 3 s of the record being written, over its event stream, without a
// reload. Screenshot: test-output/tracking-live.png (tracking-live-failed.png on failure).

const OUT = resolve('test-output');
const LIVE_WITHIN_MS = 3000;

let lab: Lab | undefined;
let cluster: LabCluster;
let chromium: NetnsBrowser | undefined;
/** The depot the page is loaded from; never the host whose power is cut. */
let pageHost: string;
let tornDown = false;

interface Seen {
  primary?: { host: string; at: number };
  rows: Record<string, number>;
}

/** The HTTP port a depot was started with (from its command line, so it follows cluster.ts). */
function httpPort(host: string): number {
  const argv = cluster.depots.get(host)!.argv;
  const i = argv.indexOf('--http-port');
  const port = Number(argv[i + 1]);
  if (i < 0 || !Number.isInteger(port)) throw new Error(`depot ${host} was started without --http-port`);
  return port;
}

function pageUrl(host: string, path = '/'): string {
  return `http://${lab!.host(host).ip}:${httpPort(host)}${path}`;
}

async function apiText(host: string, path: string): Promise<string> {
  const r = await lab!.exec('client', ['curl', '-s', '--max-time', '2', pageUrl(host, path)], { reject: false });
  return r.stdout || r.stderr;
}

/**
 * Records in the page, as the DOM changes, when the primary shown first differs from `oldPrimary`
 * and when each failover row first appears (browser Date.now(): the same clock the depots stamp
 * their records with, everything runs on this machine). Also sets the no-reload marker.
 */
async function watchDom(page: Page, oldPrimary: string): Promise<void> {
  await page.evaluate(
    ({ service, oldPrimary }) => {
      const w = window as unknown as { __seen: Seen; __noReload: boolean };
      w.__noReload = true;
      w.__seen = { rows: {} };
      const check = () => {
        const host = document.querySelector(`[data-service="${service}"] .primary-host`)?.textContent ?? '';
        if (host && host !== oldPrimary && !w.__seen.primary) w.__seen.primary = { host, at: Date.now() };
        document.querySelectorAll<HTMLElement>('#movements tbody tr[data-event="failover"]').forEach((tr) => {
          const id = tr.dataset.id;
          if (id && w.__seen.rows[id] === undefined) w.__seen.rows[id] = Date.now();
        });
      };
      check();
      new MutationObserver(check).observe(document.body, { subtree: true, childList: true, characterData: true });
    },
    { service: SERVICE, oldPrimary },
  );
}

const samePlacement = (a: Placement, b: Placement) => a.primary === b.primary && a.term === b.term && a.standbys.join() === b.standbys.join();

/**
 * Waits until the cluster holds still (the same running primary, not on the page's depot, and
 * at least one running standby, for 2 s: on a heavily loaded machine a primary can lose its
 * lease and the service moves by itself), then until the page shows that placement, installs
 * the DOM watch, and returns the placement if it still holds afterwards.
 */
async function syncWithCluster(page: Page): Promise<Placement> {
  const deadline = Date.now() + 40_000;
  let stable: Placement | undefined;
  let since = 0;
  let pageError: unknown;
  const seen: string[] = [];
  while (Date.now() < deadline) {
    const p = await placement(cluster, pageHost);
    const text = `${p.primary ?? '-'}@${p.term}[${p.standbys.join(',')}]`;
    if (seen.at(-1) !== text) seen.push(text);
    const usable = p.primary !== undefined && p.primary !== pageHost && p.standbys.length >= 1;
    if (!usable || !stable || !samePlacement(p, stable)) {
      stable = usable ? p : undefined;
      since = Date.now();
    } else if (Date.now() - since >= 2000) {
      try {
        await expect.poll(() => page.locator(`[data-service="${SERVICE}"] .primary-host`).textContent(), { timeout: 5000 }).toBe(p.primary);
        // (A host may also list a failed copy left from an earlier placement attempt.)
        for (const s of p.standbys) {
          await page.locator(`[data-service="${SERVICE}"] tr[data-role="standby"][data-host="${s}"]`).filter({ hasText: 'running' }).first().waitFor({ timeout: 5000 });
        }
        await watchDom(page, p.primary!);
        if (samePlacement(await placement(cluster, pageHost), p)) return p;
      } catch (err) {
        pageError = err;
      }
      stable = undefined;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(
    `the cluster never held still with a primary and a standby shown by the page; placements seen: ${seen.slice(-20).join(' ')}${pageError ? `; last page check: ${String(pageError)}` : ''}`,
  );
}

beforeAll(async () => {
  const t0 = Date.now();
  const phase = (what: string) => console.log(JSON.stringify({ event: 'live-cluster-setup', phase: what, elapsedMs: Date.now() - t0 }));
  await mkdir(OUT, { recursive: true });
  await rm(join(OUT, 'tracking-live-failed.png'), { force: true });
  lab = await Lab.create({ workstations: 3 });
  cluster = await startCluster(lab, 3);
  phase('depots up');
  await bootstrap(cluster, cluster.hosts[0]!, 1);
  phase('bootstrapped');
  let p: Placement | undefined;
  await waitFor(async () => {
    p = await placement(cluster, cluster.hosts[2]!);
    return p.primary !== undefined && p.standbys.length >= 1;
  }, 30_000, 'a primary and a standby');
  // Preferably the depot without a copy: it never becomes primary, so the power cut spares it.
  const others = cluster.hosts.filter((h) => h !== p!.primary);
  pageHost = others.find((h) => !p!.standbys.includes(h)) ?? others[0]!;
  const b = await launchChromiumInNetns(lab.client.ns);
  // A hook that timed out keeps running: never leave a browser behind a finished afterAll.
  if (tornDown) await b.close();
  else chromium = b;
  phase('chromium up');
}, 150_000);

afterAll(async () => {
  tornDown = true;
  // Both, even if the first fails.
  const results = await Promise.allSettled([chromium?.close(), lab?.destroy()]);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}, 30_000);

describe('tracking page on a live cluster in chromium', () => {
  it('shows depots and primary, then follows a real failover live without reload', async () => {
    const page = await chromium!.browser.newPage({ viewport: { width: 1366, height: 900 } });
    // Single reads (textContent, getAttribute) must not sit out playwright's 30 s default.
    page.setDefaultTimeout(5000);
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(m.text());
    });
    let navigations = 0;
    page.on('framenavigated', (f) => {
      if (f === page.mainFrame()) navigations++;
    });
    try {
      await followFailover(page, () => navigations);
      expect(errors).toEqual([]);
    } catch (err) {
      // What the page and the API showed, for the failure report.
      await page.screenshot({ path: join(OUT, 'tracking-live-failed.png'), fullPage: true }).catch(() => undefined);
      const services = await page.locator('#services').innerText({ timeout: 1000 }).catch((e: unknown) => String(e));
      throw new Error(`${String(err)}\npage errors: ${JSON.stringify(errors)}\npage services: ${services}\napi services: ${await apiText(pageHost, '/api/services')}`, { cause: err });
    } finally {
      await page.close();
    }
  }, 90_000);
});

async function followFailover(page: Page, navigations: () => number): Promise<void> {
  await page.goto(pageUrl(pageHost));
  await page.locator('#conn', { hasText: 'live' }).waitFor({ timeout: 5000 });

  // Before: the three depots, all alive; the primary and the standby where the cluster says.
  await expect.poll(() => page.locator('#depots tbody tr[data-depot]').count(), { timeout: 10_000 }).toBe(3);
  for (const h of cluster.hosts) expect(await page.locator(`#depots tr[data-depot="${h}"]`).count()).toBe(1);
  await expect.poll(() => page.locator('#depots tbody tr[data-depot][data-state="alive"]').count(), { timeout: 10_000 }).toBe(3);
  const before = await syncWithCluster(page);
  const primary = before.primary!;
  const navigationsBefore = navigations();
  const idsBefore = new Set((await api<{ records: MovementRecord[] }>(cluster, pageHost, '/api/movements?limit=500'))?.records.map((r) => r.id) ?? []);
  expect(idsBefore.size).toBeGreaterThan(0);
  expect(await page.locator('#banner').isVisible()).toBe(false);
  const barsBefore = await page.locator('#chart svg rect.outage').count();

  // Failover: the primary's host loses power (link down, every process in it killed).
  await lab!.powerOff(primary);

  // The failover record as the page's depot has it (written by the new primary, gossiped here).
  let record: MovementRecord | undefined;
  await waitFor(async () => {
    const res = await api<{ records: MovementRecord[] }>(cluster, pageHost, '/api/movements?event=failover&limit=50');
    record = res?.records.find((r) => !idsBefore.has(r.id) && r.host !== primary);
    return record !== undefined;
  }, 30_000, `a failover movement to a host other than ${primary}`);
  const rec = record!;
  expect(rec.failover).toBe(true);
  expect(rec.role).toBe('primary');
  expect(rec.fromHost).toBe(primary);
  expect(cluster.hosts).toContain(rec.host);

  // The page, by itself: the new primary and the new movement, each within 3 s of the record.
  const row = page.locator(`#movements tr[data-id="${rec.id}"]`);
  const left = () => Math.max(200, rec.time + LIVE_WITHIN_MS + 1000 - Date.now());
  await row.waitFor({ timeout: left() });
  await page.locator(`[data-service="${SERVICE}"] .primary-host`, { hasText: rec.host }).waitFor({ timeout: left() });
  const seen = await page.evaluate(() => (window as unknown as { __seen: Seen }).__seen);
  const rowLagMs = seen.rows[rec.id]! - rec.time;
  const primaryLagMs = seen.primary!.at - rec.time;
  console.log(JSON.stringify({ event: 'tracking-live', oldPrimary: primary, newPrimary: rec.host, page: pageHost, rowLagMs, primaryLagMs }));
  expect(seen.primary!.host).toBe(rec.host);
  expect(rowLagMs).toBeLessThan(LIVE_WITHIN_MS);
  expect(primaryLagMs).toBeLessThan(LIVE_WITHIN_MS);

  // No reload: the marker set before survives and the main frame never navigated again.
  expect(await page.evaluate(() => (window as unknown as { __noReload?: boolean }).__noReload)).toBe(true);
  expect(navigations()).toBe(navigationsBefore);

  // The row says what happened and is the newest; the lost depot is declared dead.
  const text = (await row.textContent()) ?? '';
  expect(text).toContain(rec.host);
  expect(text).toContain(primary);
  expect(await row.locator('.badge.b-yes').count()).toBe(1);
  // Newest first: above every movement that was there before the power cut.
  const order = await page.locator('#movements tbody tr[data-id]').evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-id')));
  const firstOld = order.findIndex((id) => id !== null && idsBefore.has(id));
  expect(firstOld).toBeGreaterThan(0);
  expect(order.indexOf(rec.id)).toBeLessThan(firstOld);
  await expect.poll(() => page.locator(`#depots tr[data-depot="${primary}"]`).getAttribute('data-state'), { timeout: 10_000 }).toBe('dead');
  expect(await page.locator('#depots tbody tr[data-depot]').count()).toBe(3);
  await expect.poll(() => page.locator(`[data-service="${SERVICE}"] tr[data-host="${primary}"]`).count(), { timeout: 5000 }).toBe(0);
  await expect.poll(() => page.locator('#chart svg rect.outage').count(), { timeout: 5000 }).toBeGreaterThan(barsBefore);
  expect(await page.locator('#banner').isVisible()).toBe(false);
  expect(await page.evaluate(() => (window as unknown as { __noReload?: boolean }).__noReload)).toBe(true);
  expect(navigations()).toBe(navigationsBefore);

  await page.screenshot({ path: join(OUT, 'tracking-live.png'), fullPage: true });
}
