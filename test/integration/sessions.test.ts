import { describe, it, expect, afterAll } from 'vitest';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Depot } from '../../depot/depot.ts';
import { makeSwarmKey } from '../../depot/swarm-key.ts';
import { sessionsPlugin } from '../../plugins/sessions.ts';
import { candidatesOf } from '../../pilot/cluster-view.ts';
import { parseConfig } from '../../shared/config.ts';
import { silentLogger } from '../../shared/logger.ts';
import type { DepotsResponse } from '../../shared/api/depots.ts';
import { waitFor } from '../../lab/loopback/depot-procs.ts';

// Two real depots in one process (TCP on loopback) with the sessions plugin: one depot's
// recorded sessions reach the other in its heartbeat (GET /api/depots, the placement
// candidates), and survive that depot's restart, which adds the session it ended cleanly.

const swarmKey = makeSwarmKey();
const log = silentLogger();
const dirs: string[] = [];
const running: Depot[] = [];
const HOUR = 3_600_000;

afterAll(async () => {
  for (const d of running) await d.stop().catch(() => undefined);
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function startDepot(name: string, dataDir: string, bootstrap: string[] = []): Promise<Depot> {
  const config = parseConfig({
    node: { name, dataDir },
    network: { listen: ['/ip4/127.0.0.1/tcp/0'], mdns: false, bootstrap },
    http: { host: '127.0.0.1', port: 0 },
    membership: { heartbeatMs: 200 },
    sessions: { rejoinMs: 1 },
    log: { level: 'silent' },
  });
  const depot = new Depot({ config, log, swarmKey, plugins: [sessionsPlugin()] });
  await depot.start();
  running.push(depot);
  return depot;
}

describe('session history between depots', () => {
  it('reaches another depot in the heartbeat and survives a restart', async () => {
    const dirA = await mkdtemp(join(tmpdir(), 'nav-sess-a-'));
    const dirB = await mkdtemp(join(tmpdir(), 'nav-sess-b-'));
    dirs.push(dirA, dirB);
    // Five past working days of A, 8:00 to 18:00, on other boots.
    const day0 = Date.now() - 6 * 24 * HOUR;
    const past = [0, 1, 2, 3, 4].map((d) => {
      const start = day0 + d * 24 * HOUR;
      return { bootTime: start, startMs: start, lastSeenMs: start + 10 * HOUR, endMs: start + 10 * HOUR, end: 'clean' };
    });
    await writeFile(join(dirA, 'sessions.json'), JSON.stringify({ v: 1, sessions: past }));

    let a = await startDepot('sess-a', dirA);
    const b = await startDepot('sess-b', dirB, a.node.getMultiaddrs().map((m) => m.toString()));
    const rowOfA = async (n: number) => {
      const res = (await (await fetch(`http://127.0.0.1:${b.httpPort}/api/depots`)).json()) as DepotsResponse;
      const row = res.depots.find((d) => d.name === 'sess-a' && d.state === 'alive');
      return row?.sessions?.length === n ? row : undefined;
    };
    const row = await waitFor('B to see five sessions of A', () => rowOfA(5), 15_000);
    expect(row.sessions![0]!.startMs).toBe(Math.floor(day0 / 60_000) * 60_000);
    expect(row.sessions![0]!.endMs - row.sessions![0]!.startMs).toBeGreaterThanOrEqual(10 * HOUR);
    expect(row.sessions![0]!.endMs - row.sessions![0]!.startMs).toBeLessThanOrEqual(10 * HOUR + 60_000);
    const cand = candidatesOf(b.components.members).find((c) => c.name === 'sess-a')!;
    expect(cand.history).toHaveLength(5);

    // A restarts: its history comes back from disk, with the session it just ended cleanly.
    await a.stop();
    running.splice(running.indexOf(a), 1);
    await new Promise((r) => setTimeout(r, 20));
    a = await startDepot('sess-a', dirA, b.node.getMultiaddrs().map((m) => m.toString()));
    await waitFor('B to see six sessions of A', () => rowOfA(6), 15_000);
  }, 60_000);
});
