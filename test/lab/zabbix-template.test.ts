import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { silentLogger } from '../../shared/logger.ts';
import { parseConfig } from '../../shared/config.ts';
import { REPO_ROOT } from '../../shared/repo-root.ts';
import type { ContainerReport } from '../../shared/wire.ts';
import { ProcessSpec } from '../../depot/containers/drivers/driver.ts';
import { createDriver } from '../../depot/containers/drivers/factory.ts';
import type { ProcessDriver } from '../../depot/containers/drivers/process.ts';
import { Depot } from '../../depot/depot.ts';
import { makeSwarmKey } from '../../depot/swarm-key.ts';
import { Journal } from '../../depot/journal/journal.ts';
import { trackingPlugin } from '../../plugins/tracking.ts';
import { alertsPlugin } from '../../plugins/alerts.ts';
import { freePort } from '../../lab/loopback/ports.ts';
import { prepareZabbixImage, type ZabbixImage } from './zabbix-fixture.ts';
import { frontendAvailable, startFrontend, type ZabbixFrontend } from './zabbix-frontend.ts';

// deploy/zabbix/navigator-template.yaml against a real Zabbix 6.0: the example service container
// runs MariaDB with the Zabbix schema and zabbix_server; Debian's web frontend (served by PHP's
// built-in server) imports the template through its API (configuration.import), as an admin's
// import does; a host linked to it points at a running depot, and its items — the HTTP agent
// reads of /metrics and /api/services, the values taken from them, the per-service items the
// discovery makes — collect values.

let root: string;
let image: ZabbixImage;
let driver: ProcessDriver;
let frontend: ZabbixFrontend | undefined;
let depot: Depot | undefined;

const TEMPLATE_FILE = join(REPO_ROOT, 'deploy/zabbix/navigator-template.yaml');

beforeAll(async () => {
  const missing = await frontendAvailable();
  if (missing) throw new Error(`the Zabbix frontend is needed: ${missing}`);
  root = await mkdtemp(join(tmpdir(), 'navzbx-template-'));
  await chmod(root, 0o755);
  image = await prepareZabbixImage(join(root, 'c'), { dbPort: await freePort(), zbxPort: await freePort(), cacheUpdateS: 1 });
  driver = createDriver(ProcessSpec.parse({ driver: 'process' }), { id: 'zabbix-template', dir: image.dir, logger: silentLogger() }) as ProcessDriver;
  await driver.start();
  await driver.setRole!('primary');
  const password = (await readFile(join(image.dir, 'secrets/zabbix.password'), 'utf8')).trim();
  frontend = await startFrontend(root, { port: image.dbPort, database: 'zabbix', user: 'zabbix', password });
}, 240_000);

afterAll(async () => {
  await depot?.stop().catch(() => undefined);
  await frontend?.stop().catch(() => undefined);
  await driver?.stop({ timeoutMs: 10_000 }).catch(() => undefined);
  if (root) await rm(root, { recursive: true, force: true });
});

/** A depot with a service on it (its copies set by the test, as a containers plugin would report them). */
async function startDepot(): Promise<Depot> {
  const dataDir = join(root, 'depot');
  const journal = new Journal({ path: join(dataDir, 'journal.jsonl'), logger: silentLogger() });
  const copies: ContainerReport[] = [
    { id: 'c1', service: 'monitor', driver: 'process', state: 'running', role: 'primary', term: 2, image: '', syncFailing: false },
    { id: 'c2', service: 'monitor', driver: 'process', state: 'running', role: 'standby', term: 2, image: '', lastSyncAt: Date.now() - 4000, syncFailing: false },
  ];
  const d = new Depot({
    config: parseConfig({
      node: { name: 'ws-z', dataDir },
      network: { listen: ['/ip4/127.0.0.1/tcp/0'], mdns: false },
      http: { host: '127.0.0.1', port: 0 },
      log: { level: 'silent' },
    }),
    log: silentLogger(),
    swarmKey: makeSwarmKey(),
    plugins: [
      trackingPlugin({ journal }),
      (c) => ({ name: 'copies', start: () => c.heartbeat.contribute(() => ({ containers: copies })), stop: () => undefined }),
      alertsPlugin({ journal }),
    ],
  });
  await d.start();
  // One failover in the journal (the failover counter is fed by the journal).
  await journal.append({ id: randomUUID(), time: Date.now(), service: 'monitor', role: 'primary', host: 'ws-z', address: '10.0.0.50/24', fromHost: 'ws-y', event: 'failover', failover: true, reason: 'ws-y stopped answering', term: 2, timings: { detect: 800, elect: 200, takeover: 100 } });
  return d;
}

interface Item {
  itemid: string;
  key_: string;
  lastclock: string;
  lastvalue: string;
  state: string;
  error: string;
  value_type: string;
}

describe('the Zabbix template', () => {
  it('imports into Zabbix 6.0 without errors, and its items collect values from a running depot', async () => {
    const api = frontend!.api;
    const version = await api<string>('apiinfo.version', []);
    expect(version).toMatch(/^6\.0\./);
    const source = await readFile(TEMPLATE_FILE, 'utf8');
    const t0 = Date.now();
    const yes = { createMissing: true, updateExisting: true };
    const imported = await api<boolean>('configuration.import', {
      format: 'yaml',
      source,
      rules: {
        groups: { createMissing: true },
        templates: yes,
        templateDashboards: { ...yes, deleteMissing: true },
        templateLinkage: { createMissing: true },
        items: { ...yes, deleteMissing: true },
        discoveryRules: { ...yes, deleteMissing: true },
        triggers: { ...yes, deleteMissing: true },
        graphs: { ...yes, deleteMissing: true },
        valueMaps: yes,
      },
    });
    expect(imported).toBe(true);
    console.log(`zabbix template: imported in ${Date.now() - t0} ms`);
    const [template] = await api<Array<{ templateid: string }>>('template.get', { filter: { host: ['Navigator by HTTP'] }, output: ['templateid'] });
    expect(template).toBeDefined();
    const templateItems = await api<Item[]>('item.get', { templateids: [template!.templateid], output: ['key_'] });
    const triggers = await api<unknown[]>('trigger.get', { templateids: [template!.templateid], output: ['description'] });
    const prototypes = await api<unknown[]>('triggerprototype.get', { templateids: [template!.templateid], output: ['description'] });
    const dashboards = await api<Array<{ pages: Array<{ widgets: unknown[] }> }>>('templatedashboard.get', { templateids: [template!.templateid], selectPages: 'extend' });
    expect(templateItems.length).toBeGreaterThanOrEqual(15);
    expect(triggers.length).toBeGreaterThanOrEqual(5);
    expect(prototypes.length).toBeGreaterThanOrEqual(6);
    expect(dashboards[0]?.pages[0]?.widgets.length).toBeGreaterThanOrEqual(5);
    // Importing again changes nothing and fails nothing (an admin re-imports after an update).
    expect(await api<boolean>('configuration.import', { format: 'yaml', source, rules: { templates: yes, items: yes, discoveryRules: yes, triggers: yes, graphs: yes, templateDashboards: yes } })).toBe(true);

    depot = await startDepot();
    const [group] = await api<Array<{ groupid: string }>>('hostgroup.get', { filter: { name: ['Linux servers'] }, output: ['groupid'] });
    const { hostids } = await api<{ hostids: string[] }>('host.create', {
      host: 'navigator-depot',
      interfaces: [{ type: 1, main: 1, useip: 1, ip: '127.0.0.1', dns: '', port: '10050' }],
      groups: [{ groupid: group!.groupid }],
      templates: [{ templateid: template!.templateid }],
      macros: [
        { macro: '{$NAVIGATOR.PORT}', value: String(depot.httpPort) },
        { macro: '{$NAVIGATOR.INTERVAL}', value: '2s' },
      ],
    });
    const hostid = hostids[0]!;
    const want: Record<string, (v: string) => boolean> = {
      'navigator.members[alive]': (v) => v === '1',
      'navigator.members[dead]': (v) => v === '0',
      'navigator.peers': (v) => v === '0',
      'navigator.failovers': (v) => v === '1',
      'navigator.alerts.open': (v) => v === '0',
      'navigator.notices[peer-refused]': (v) => v === '0',
      'navigator.service.primary[monitor]': (v) => v === '1',
      'navigator.service.standbys[monitor]': (v) => v === '1',
      'navigator.service.term[monitor]': (v) => v === '2',
      'navigator.service.failovers[monitor]': (v) => v === '1',
      'navigator.service.rpo[monitor]': (v) => Number(v) >= 4,
      'navigator.service.unprotected[monitor]': (v) => v === '0',
      'navigator.service.copies[monitor]': (v) => v === 'ws-z:primary:running, ws-z:standby:running',
      'navigator.service.primary_host[monitor]': (v) => v === 'ws-z',
    };
    const t1 = Date.now();
    let items: Item[] = [];
    const deadline = Date.now() + 120_000;
    for (;;) {
      items = await api<Item[]>('item.get', { hostids: [hostid], output: ['key_', 'lastclock', 'lastvalue', 'state', 'error', 'value_type'] });
      const ok = Object.entries(want).every(([key, check]) => {
        const it = items.find((i) => i.key_ === key);
        return it !== undefined && it.lastclock !== '0' && check(it.lastvalue);
      });
      if (ok) break;
      if (Date.now() > deadline) {
        const state = items.map((i) => `${i.key_}=${JSON.stringify(i.lastvalue)}${i.state === '1' ? ` (unsupported: ${i.error})` : ''}`).join('\n');
        throw new Error(`items did not collect the expected values within 120 s:\n${state}`);
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
    console.log(`zabbix template: ${items.length} items on the host, expected values after ${Date.now() - t1} ms`);
    // Every item is supported (no failed preprocessing, no unreachable URL).
    expect(items.filter((i) => i.state !== '0').map((i) => `${i.key_}: ${i.error}`)).toEqual([]);
  }, 240_000);
});
