// Failover benchmark: N trials of primary host power loss in the namespace lab, measured by the
// 10 ms prober in the client namespace (outage = longest gap between successful connections),
// beside the same lab running keepalived (VRRP, advert_int 1) as the yardstick.
//   npm run bench:failover -- [--trials 20] [--keepalived-trials 20]
// Prints a table, then one JSON line.
import { parseArgs } from 'node:util';
import { Lab } from '../lab/lab.ts';
import { Prober } from '../lab/prober.ts';
import { ArpWatch } from '../lab/arp-watch.ts';
import { keepalivedTrials } from '../lab/keepalived.ts';
import { percentile } from '../lab/stats.ts';
import { bootstrap, observer, placement, startCluster, startDepot, waitFor, type LabCluster } from '../lab/cluster.ts';

const { values } = parseArgs({
  options: {
    trials: { type: 'string', default: '20' },
    'keepalived-trials': { type: 'string', default: '20' },
    workstations: { type: 'string', default: '4' },
  },
});
const trials = Number(values.trials);
const kaTrials = Number(values['keepalived-trials']);
const workstations = Number(values.workstations);

interface Trial {
  trial: number;
  from: string;
  to: string;
  outageMs: number;
  reprotectMs: number;
  splitBrain: number;
}

async function navigatorTrials(): Promise<{ results: Trial[]; splitBrain: number }> {
  const lab = await Lab.create({ workstations });
  const results: Trial[] = [];
  let splitBrain = 0;
  try {
    const c: LabCluster = await startCluster(lab, workstations);
    await bootstrap(c, 'w1', 1);
    const prober = await Prober.start(lab, { target: c.ip, port: 7000 });
    const arp = await ArpWatch.start(lab, { address: c.ip });
    try {
      for (let i = 1; i <= trials; i++) {
        const obs0 = observer(c, []);
        // Each trial starts from a protected service (primary + a running standby, settled).
        await waitFor(async () => {
          const p = await placement(c, obs0);
          return p.primary !== undefined && p.standbys.length >= 1;
        }, 60_000, `protection before trial ${i}`);
        await new Promise((r) => setTimeout(r, 2000));
        const before = await placement(c, obs0);
        if (!before.primary || before.standbys.length === 0) throw new Error(`trial ${i}: service not protected before the trial`);
        await prober.waitForServer(before.primary, 10_000);
        // Cut at a random point of the renewal cycle, like a real power loss.
        await new Promise((r) => setTimeout(r, 500 + Math.random() * 1000));
        const t0 = Date.now();
        await lab.powerOff(before.primary);
        const reply = await prober.waitForServer(new RegExp(`^(?!${before.primary}$)`), 20_000);
        const outage = prober.outage(t0);
        const obs = observer(c, [before.primary]);
        await waitFor(async () => {
          const p = await placement(c, obs);
          return p.primary !== undefined && p.primary !== before.primary && p.standbys.filter((s) => s !== before.primary).length >= 1;
        }, 60_000, 'protection again');
        const reprotectMs = Date.now() - t0;
        const sb = arp.splitBrainEvents({ from: t0 });
        splitBrain += sb;
        results.push({ trial: i, from: before.primary, to: reply.server, outageMs: Math.round(outage.outageMs), reprotectMs, splitBrain: sb });
        process.stderr.write(`trial ${i}: ${before.primary} -> ${reply.server} outage ${Math.round(outage.outageMs)} ms, protected again after ${reprotectMs} ms\n`);
        // The host comes back (a fresh boot) and its depot restarts: the cluster is whole again.
        await lab.powerOn(before.primary);
        await startDepot(c, before.primary);
        await waitFor(async () => (await placement(c, obs)).standbys.length >= 1, 60_000, 'standby after rejoin');
      }
    } finally {
      await prober.stop();
      await arp.stop();
    }
  } finally {
    await lab.destroy();
  }
  return { results, splitBrain };
}

const nav = await navigatorTrials();
const ka = await keepalivedTrials(kaTrials, {
  onTrial: (i, t) => void process.stderr.write(`keepalived trial ${i + 1}: outage ${Math.round(t.outageMs)} ms\n`),
});

const outages = nav.results.map((r) => r.outageMs);
const reprotect = nav.results.map((r) => r.reprotectMs);
const kaOutages = ka.outages;
const row = (name: string, xs: number[]) =>
  `${name.padEnd(34)}${String(Math.round(percentile(xs, 50))).padStart(8)}${String(Math.round(percentile(xs, 95))).padStart(8)}${String(Math.round(Math.min(...xs))).padStart(8)}${String(Math.round(Math.max(...xs))).padStart(8)}`;
process.stdout.write(`\nFailover on primary host power loss (${workstations} workstations, 1 standby, defaults: lease 1500 ms)\n`);
process.stdout.write(`${'measure (ms)'.padEnd(34)}${'p50'.padStart(8)}${'p95'.padStart(8)}${'min'.padStart(8)}${'max'.padStart(8)}\n`);
process.stdout.write(`${row(`navigator outage (${outages.length} trials)`, outages)}\n`);
process.stdout.write(`${row('navigator re-protection', reprotect)}\n`);
process.stdout.write(`${row(`keepalived outage (${kaOutages.length} trials)`, kaOutages)}\n`);
process.stdout.write(`split-brain moments (two MACs answering): navigator ${nav.splitBrain}\n\n`);
const p50 = percentile(outages, 50);
const kaP50 = percentile(kaOutages, 50);
process.stdout.write(
  `${JSON.stringify({
    trials: outages.length,
    outage_ms_p50: Math.round(p50),
    outage_ms_p95: Math.round(percentile(outages, 95)),
    outage_ms_max: Math.round(Math.max(...outages)),
    reprotect_ms_p50: Math.round(percentile(reprotect, 50)),
    keepalived_trials: kaOutages.length,
    keepalived_outage_ms_p50: Math.round(kaP50),
    keepalived_outage_ms_p95: Math.round(percentile(kaOutages, 95)),
    ratio_vs_keepalived: Number((p50 / kaP50).toFixed(3)),
    split_brain_events: nav.splitBrain,
  })}\n`,
);
