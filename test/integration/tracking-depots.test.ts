import { describe, it, expect, afterAll } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { Depot } from '../../depot/depot.ts';
import { makeSwarmKey } from '../../depot/swarm-key.ts';
import { trackingPlugin, type TrackingPlugin } from '../../plugins/tracking.ts';
import { Journal } from '../../depot/journal/journal.ts';
import { publishMovement } from '../helpers/movement-gossip.ts';
import { parseConfig } from '../../shared/config.ts';
import { silentLogger } from '../../shared/logger.ts';
import type { MovementRecord } from '../../shared/movement.ts';

// Two real depots in one process (TCP on loopback, own data folders) with the tracking part:
// movements gossiped from one reach the other's journal and API; a depot stopped while
// movements happen fetches them from its peer when it starts again.

const swarmKey = makeSwarmKey();
const log = silentLogger();
const dirs: string[] = [];
const running: Depot[] = [];

afterAll(async () => {
  for (const d of running) await d.stop().catch(() => undefined);
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function startDepot(name: string, dataDir: string, bootstrap: string[] = []): Promise<{ depot: Depot; part: TrackingPlugin; api: string }> {
  const config = parseConfig({
    node: { name, dataDir },
    network: { listen: ['/ip4/127.0.0.1/tcp/0'], mdns: false, bootstrap },
    http: { host: '127.0.0.1', port: 0 },
    membership: { heartbeatMs: 300 },
    journal: { initialFillWindowMs: 10_000 },
    log: { level: 'silent' },
  });
  let part: TrackingPlugin | undefined;
  const factory = trackingPlugin({ journal: new Journal({ path: join(dataDir, 'journal.jsonl'), logger: log }) });
  const depot = new Depot({
    config,
    log,
    swarmKey,
    plugins: [
      (c) => {
        part = factory(c);
        return part;
      },
    ],
  });
  await depot.start();
  running.push(depot);
  return { depot, part: part!, api: `http://127.0.0.1:${depot.httpPort}` };
}

let n = 0;
function rec(over: Partial<MovementRecord> = {}): MovementRecord {
  n++;
  return {
    id: randomUUID(),
    time: Date.now() + n,
    service: 'zabbix',
    role: 'primary',
    host: 'ws-a',
    address: '10.0.0.50',
    fromHost: '',
    event: 'placed',
    failover: false,
    reason: `record ${n}`,
    term: 1,
    timings: {},
    ...over,
  };
}

async function waitFor<T>(what: string, fn: () => Promise<T | undefined> | T | undefined, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const total = async (api: string) => ((await (await fetch(`${api}/api/movements?limit=1`)).json()) as { total: number }).total;

describe('tracking on real depots', () => {
  it('gossips movements between depots and fills the gap of a depot that was stopped', async () => {
    const dirA = await mkdtemp(join(tmpdir(), 'nav-track-a-'));
    const dirB = await mkdtemp(join(tmpdir(), 'nav-track-b-'));
    dirs.push(dirA, dirB);
    const a = await startDepot('depot-a', dirA);
    const addrA = `${a.depot.node.getMultiaddrs()[0]!.toString()}`;
    let b = await startDepot('depot-b', dirB, [addrA]);
    await waitFor('B to see A alive', () => b.depot.membership.view().some((m) => m.name === 'depot-a' && m.state === 'alive') || undefined);
    await waitFor('A to see B subscribed to events', () =>
      a.depot.node.services.pubsub.getSubscribers('navigator/v1/events').some((p) => p.equals(b.depot.node.peerId)) || undefined,
    );

    // Live: a movement recorded on A reaches B's journal and API.
    const live = rec({ event: 'failover', failover: true, host: 'depot-a', fromHost: 'depot-b', term: 2, timings: { detect: 800, elect: 200, takeover: 100 } });
    await a.part.journal.append(live);
    await publishMovement(a.depot.node, live);
    await waitFor('B to journal the gossiped movement', () => b.part.journal.get(live.id));
    const page = (await (await fetch(`${b.api}/api/movements?event=failover`)).json()) as { records: MovementRecord[] };
    expect(page.records.map((r) => r.id)).toEqual([live.id]);
    expect(await (await fetch(`${b.api}/`)).text()).toContain('Navigator');
    const metrics = await (await fetch(`${b.api}/metrics`)).text();
    expect(metrics).toMatch(/navigator_movement_gossip_total\{result="appended"\} 1/);
    expect(metrics).toMatch(/navigator_failovers_total\{service="zabbix"\} 1/);

    // B stops; A records 40 more movements B cannot hear.
    await b.depot.stop();
    running.splice(running.indexOf(b.depot), 1);
    const missed = Array.from({ length: 40 }, () => rec({ event: 'replaced', role: 'standby' }));
    for (const r of missed) {
      await a.part.journal.append(r);
      await publishMovement(a.depot.node, r);
    }
    expect(await total(a.api)).toBe(41);

    // B starts again on its data folder: it fetches what it missed from A, without duplicates.
    b = await startDepot('depot-b', dirB, [addrA]);
    await b.part.initialFill;
    expect(await total(b.api)).toBe(41);
    expect(new Set(b.part.journal.all().map((r) => r.id))).toEqual(new Set(a.part.journal.all().map((r) => r.id)));
  }, 60_000);
});
