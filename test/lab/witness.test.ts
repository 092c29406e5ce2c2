import { afterEach, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { writeFile } from 'node:fs/promises';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { Lab } from '../../lab/lab.ts';
import { Prober } from '../../lab/prober.ts';
import { ArpWatch } from '../../lab/arp-watch.ts';
import { bootstrap, placement, startCluster, startDepot, waitFor } from '../../lab/cluster.ts';
import { loadOrCreateIdentity } from '../../depot/identity.ts';
import { REPO_ROOT } from '../../shared/repo-root.ts';

// Two depots and a `navigator witness` on a third machine (pilot/election/witness.ts): with two
// voters the witness is the third vote, so one depot dying no longer stops the service, and when
// the two depots cannot reach each other exactly the side that reaches the witness serves.

const OUTAGE_BOUND_MS = 4000;
let lab: Lab | undefined;
const closers: Array<() => Promise<void>> = [];

afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close().catch(() => undefined);
  await lab?.destroy();
  lab = undefined;
});

describe('witness lab', () => {
  it('two depots + witness: the primary dies -> the other takes over; a partition of the two -> exactly the side with the witness serves', async () => {
    lab = await Lab.create({ workstations: 3 });
    const witnessHost = 'w3';
    // The witness's identity first: its address goes into both depots' pilot.witness.
    const witnessDir = join(lab.dir, 'data', 'witness');
    const key = await loadOrCreateIdentity(join(witnessDir, 'identity.key'));
    const witnessAddr = `/ip4/${lab.host(witnessHost).ip}/tcp/7490/p2p/${peerIdFromPrivateKey(key).toString()}`;
    // The lab's swarm key is written by startCluster; the witness needs it before it starts.
    const env = { NAVIGATOR__pilot__witness: witnessAddr };
    const c = await startCluster(lab, 2, { env });
    const witnessCfg = join(lab.dir, 'witness.yaml');
    await writeFile(witnessCfg, `node:\n  dataDir: ${witnessDir}\nnetwork:\n  listen: ["/ip4/${lab.host(witnessHost).ip}/tcp/7490"]\n  swarmKeyFile: ${c.swarmKeyFile}\n`);
    const witness = lab.spawn(witnessHost, [process.execPath, join(REPO_ROOT, 'bin/navigator.mjs'), 'witness', '--config', witnessCfg], { name: 'witness' });
    await witness.waitForLine(/"event":"witness-started"/, 30_000);

    await bootstrap(c, 'w1', 1);
    const prober = await Prober.start(lab, { target: c.ip, port: 7000 });
    closers.push(() => prober.stop());
    const arp = await ArpWatch.start(lab, { address: c.ip });
    closers.push(() => arp.stop());
    await prober.waitForServer('w1', 10_000);
    await waitFor(async () => (await placement(c, 'w2')).standbys.includes('w2'), 30_000, 'a standby on w2');

    // 1. Power loss of the primary's host: w2 wins with its own vote and the witness's.
    const witnessVoted = witness.waitForLine(/"event":"vote".*"granted":true/, 30_000);
    const t0 = Date.now();
    await lab.powerOff('w1');
    await prober.waitForServer('w2', 20_000);
    const outage = prober.outage(t0);
    expect(outage.recovered).toBe(true);
    expect(outage.outageMs).toBeLessThan(OUTAGE_BOUND_MS);
    // The new primary's majority is its own vote and the witness's.
    expect(await witnessVoted).toMatch(/"candidate":"[^"]+"/);

    // w1 comes back as a standby.
    await lab.powerOn('w1');
    await startDepot(c, 'w1');
    await waitFor(async () => (await placement(c, 'w2')).standbys.includes('w1'), 60_000, 'w1 back as a standby');
    await new Promise((r) => setTimeout(r, 3000));

    // 2. The two depots cut from each other; the witness only on w1's side. The primary (w2)
    //    cannot renew with one vote of three: it fences; w1 wins with the witness.
    const holders: string[][] = [];
    let watching = true;
    const watch = (async () => {
      while (watching) {
        holders.push(await lab!.holders(c.ip));
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    const t1 = Date.now();
    await lab.partition([['w2'], ['w1', witnessHost]]);
    await waitFor(async () => (await lab!.holders(c.ip)).join() === 'w1', 20_000, 'only w1 to hold the address');
    const switchMs = Date.now() - t1;
    // Stays that way: w2, without the witness, never takes the address back.
    await new Promise((r) => setTimeout(r, 5000));
    watching = false;
    await watch;
    expect(await lab.holders(c.ip)).toEqual(['w1']);
    expect(Math.max(...holders.map((h) => h.length))).toBe(1);
    expect(switchMs).toBeLessThan(OUTAGE_BOUND_MS + 2000);
    expect(arp.splitBrainEvents()).toBe(0);
  }, 240_000);
});
