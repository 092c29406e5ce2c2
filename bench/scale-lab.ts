// bench:scale, the namespace half: N depot processes in the network-namespace lab (started in
// batches, as a lab boots), the echo service bootstrapped with one standby, the 10 ms prober in
// the client namespace and the ARP watcher on the LAN. Then: power losses of the primary's host
// (each host comes back after a while), power losses of unrelated hosts (neither copy's host),
// and finally all but 3 hosts off within a minute, three of four cleanly (the evening shutdown).
import { availableParallelism } from 'node:os';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { Lab } from '../lab/lab.ts';
import { Prober } from '../lab/prober.ts';
import { ArpWatch } from '../lab/arp-watch.ts';
import { percentile } from '../lab/stats.ts';
import { bootstrap, observer, placement, serviceView, startCluster, startDepot, waitFor, type LabCluster } from '../lab/cluster.ts';

export interface ScaleLabResult {
  workstations: number;
  /** From every depot's log over the whole run: how often and how long a depot's own event loop was held, and lapsed leases. */
  depotLogs: DepotLogFacts;
  /** CPU hog run: seconds, hog processes, server changes and longest gap while it ran (null: not run). */
  cpuHog: { seconds: number; hogs: number; termChanges: number; longestGapMs: number } | null;
  startMs: number;
  primaryOutagesMs: number[];
  /** The new primary's own account of each failover (its `became-primary` log event), where seen. */
  primaryTimings: Array<{ detectMs: number; electMs: number; takeoverMs: number }>;
  unrelatedOutagesMs: number[];
  /** Longest gap in a 10 s window with no fault, before each unrelated loss. */
  baselineGapsMs: number[];
  /** Changes of the answering server outside the primary-loss trials. */
  spuriousTermChanges: number;
  splitBrainEvents: number;
  servedAfterMassShutdown: boolean;
  survivors: string[];
  groupAtShutdown: string[];
  /** --thread-probe: what a thread of its own beside each depot saw until the mass shutdown (null: not run). */
  threadProbe: ThreadProbeFacts | null;
}

export interface ThreadProbeFacts {
  /** 2 s windows reported by the probes. */
  windows: number;
  lateMaxMs: number;
  lateP99Ms: number;
  /** UDP renewals to the next 5 workstations' probes, and the time until 2 had answered. */
  renewals: number;
  majorityMsP50: number;
  majorityMsP99: number;
  majorityMsMax: number;
  /** Renewals without 2 answers within 1500 ms. */
  lapses: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface DepotLogFacts {
  loopStalls: number;
  loopStallMaxMs: number | null;
  leaseLapses: number;
}

/** Count `event-loop-stall` and `lease-lapsed` events in the depots' logs (their own account of being starved). */
async function depotLogFacts(dir: string): Promise<DepotLogFacts> {
  const facts: DepotLogFacts = { loopStalls: 0, loopStallMaxMs: null, leaseLapses: 0 };
  for (const f of (await readdir(dir)).filter((n) => n.includes('-depot-'))) {
    for (const line of (await readFile(join(dir, f), 'utf8')).split('\n')) {
      if (line.includes('"event":"lease-lapsed"')) facts.leaseLapses++;
      if (!line.includes('"event":"event-loop-stall"')) continue;
      const m = /"maxMs":(\d+)/.exec(line);
      facts.loopStalls++;
      if (m) facts.loopStallMaxMs = Math.max(facts.loopStallMaxMs ?? 0, Number(m[1]));
    }
  }
  return facts;
}
/** The thread probes' reports (bench/thread-probe.ts) up to `until` (epoch ms). */
async function threadProbeFacts(dir: string, until: number): Promise<ThreadProbeFacts> {
  const late: number[] = [];
  const majority: number[] = [];
  let lapses = 0;
  for (const f of (await readdir(dir)).filter((n) => n.includes('-thread-probe-'))) {
    for (const line of (await readFile(join(dir, f), 'utf8')).split('\n')) {
      if (!line.includes('"event":"thread-probe"')) continue;
      const e = JSON.parse(line) as { at: number; lateMaxMs: number | null; majorityMs: number[]; lapses: number };
      if (e.at > until) continue;
      if (e.lateMaxMs !== null) late.push(e.lateMaxMs);
      majority.push(...e.majorityMs);
      lapses += e.lapses;
    }
  }
  return {
    windows: late.length,
    lateMaxMs: Math.max(0, ...late),
    lateP99Ms: Math.round(percentile(late, 99)),
    renewals: majority.length + lapses,
    majorityMsP50: Math.round(percentile(majority, 50)),
    majorityMsP99: Math.round(percentile(majority, 99)),
    majorityMsMax: Math.max(0, ...majority),
    lapses,
  };
}

/** A thread probe beside `host`'s depot, renewing with the next 5 workstations' probes. */
function startThreadProbe(c: LabCluster, host: string): void {
  const i = c.hosts.indexOf(host);
  const peers = [1, 2, 3, 4, 5].map((k) => c.lab.host(c.hosts[(i + k) % c.hosts.length]!).ip);
  c.lab.spawn(host, [process.execPath, '--disable-warning=ExperimentalWarning', join(import.meta.dirname, 'thread-probe.ts'), c.lab.host(host).ip, '7999', ...peers], { name: 'thread-probe' });
}

const loadedAt = Date.now();
/** Each line with the seconds since the bench began, to line events up with the depots' logs. */
const log = (s: string) => void process.stderr.write(`[+${Math.round((Date.now() - loadedAt) / 1000)} s] ${s}\n`);

/** A busy loop at normal priority on every core (a student's job on a lab PC), for `seconds`. */
async function cpuHog(seconds: number): Promise<number> {
  const n = availableParallelism();
  const code = `const end = Date.now() + ${seconds * 1000}; let x = 0; while (Date.now() < end) { x = (x * 31 + 7) % 1000003; }`;
  await Promise.all(Array.from({ length: n }, () => execa(process.execPath, ['-e', code], { reject: false })));
  return n;
}

/**
 * The first `became-primary` event any other running depot logs from now on: where a failover's
 * time went (detection by the standby, the election, the takeover), as the new primary saw it.
 */
function becamePrimary(c: LabCluster, except: string): { first: (timeoutMs: number) => Promise<ScaleLabResult['primaryTimings'][number] | undefined> } {
  let found: ScaleLabResult['primaryTimings'][number] | undefined;
  const offs = [...c.depots].filter(([h, d]) => h !== except && d.running).map(([, d]) =>
    d.onLine((line) => {
      if (found || !line.includes('"became-primary"')) return;
      try {
        const e = JSON.parse(line) as { detectMs?: number; electMs?: number; takeoverMs?: number };
        if (typeof e.electMs === 'number') found = { detectMs: e.detectMs ?? 0, electMs: e.electMs, takeoverMs: e.takeoverMs ?? 0 };
      } catch {
        // not a log line of ours
      }
    }),
  );
  return {
    first: async (timeoutMs) => {
      const end = Date.now() + timeoutMs;
      while (!found && Date.now() < end) await sleep(100);
      for (const off of offs) off();
      return found;
    },
  };
}

export async function scaleLab(opts: { workstations: number; primaryLosses: number; unrelatedLosses: number; batch: number; cpuHogS?: number; threadProbe?: boolean }): Promise<ScaleLabResult> {
  const lab = await Lab.create({ workstations: opts.workstations });
  try {
    const t0 = Date.now();
    const c: LabCluster = await startCluster(lab, opts.workstations, { batch: opts.batch, startTimeoutMs: 120_000 });
    const startMs = Date.now() - t0;
    log(`${opts.workstations} depots started in batches of ${opts.batch} in ${startMs} ms`);
    // Probes start before the bootstrap, so their own start (32 Node processes) is not part of
    // what the service lives through.
    const probe = (h: string) => opts.threadProbe && startThreadProbe(c, h);
    for (const h of c.hosts) probe(h);
    if (opts.threadProbe) await sleep(5000);
    await bootstrap(c, 'w1', 1);
    const prober = await Prober.start(lab, { target: c.ip, port: 7000 });
    const arp = await ArpWatch.start(lab, { address: c.ip });
    const primaryWindows: Array<[number, number]> = [];
    const primaryOutagesMs: number[] = [];
    const primaryTimings: ScaleLabResult['primaryTimings'] = [];
    const unrelatedOutagesMs: number[] = [];
    const baselineGapsMs: number[] = [];
    try {
      // w1 bootstrapped the service; a lease it lost at once (the cluster is busy just after the
      // start) shows in the prober's timeline as a spurious change, it does not end the run.
      const first = await prober.waitForServer(/./, 20_000);
      if (first.server !== 'w1') log(`the service answers from ${first.server}, not w1 that bootstrapped it`);
      const protectedNow = async () => {
        const p = await placement(c, observer(c, []));
        return p.primary !== undefined && p.standbys.length >= 1;
      };
      let hog: ScaleLabResult['cpuHog'] = null;
      if (opts.cpuHogS) {
        await waitFor(protectedNow, 120_000, 'protection before the CPU hog');
        const termBefore = (await placement(c, observer(c, []))).term;
        const th = Date.now();
        const hogs = await cpuHog(opts.cpuHogS);
        const longestGapMs = Math.round(prober.outage(th, Date.now()).outageMs);
        // A term change shows as a new term (a re-election of the same host included).
        await sleep(2000);
        const termChanges = (await placement(c, observer(c, []))).term - termBefore;
        hog = { seconds: opts.cpuHogS, hogs, termChanges, longestGapMs };
        log(`CPU hog: ${hogs} busy loops for ${opts.cpuHogS} s: ${termChanges} term changes, longest gap ${longestGapMs} ms`);
      }
      for (let i = 1; i <= opts.primaryLosses; i++) {
        await waitFor(protectedNow, 120_000, `protection before primary loss ${i}`);
        await sleep(2000);
        // One depot's view can miss the primary for a moment (it suspects the primary's depot, or
        // restarted and has not heard its heartbeat yet) while the service answers: ask again,
        // and say so, rather than end the run.
        let before = await placement(c, observer(c, []));
        for (let k = 0; !before.primary && k < 50; k++) {
          if (k === 0) log(`primary loss ${i}: ${observer(c, [])} sees no primary for now (the prober's last answer came from ${prober.serverTimeline().at(-1)?.server ?? 'nobody'})`);
          await sleep(200);
          before = await placement(c, observer(c, []));
        }
        if (!before.primary) throw new Error(`primary loss ${i}: no primary`);
        await sleep(500 + Math.random() * 1000);
        const timing = becamePrimary(c, before.primary);
        const t = Date.now();
        await lab.powerOff(before.primary);
        await prober.waitForServer(new RegExp(`^(?!${before.primary}$)`), 30_000);
        const outage = prober.outage(t);
        primaryOutagesMs.push(Math.round(outage.outageMs));
        primaryWindows.push([t - 100, Date.now() + 1000]);
        const seen = await timing.first(5000);
        if (seen) primaryTimings.push(seen);
        log(`primary loss ${i}: ${before.primary} outage ${Math.round(outage.outageMs)} ms${seen ? ` (new primary: detect ${seen.detectMs} ms, elect ${seen.electMs} ms, takeover ${seen.takeoverMs} ms)` : ''}`);
        // The host comes back after a while (a reboot) and its depot restarts.
        await sleep(3000);
        await lab.powerOn(before.primary);
        await startDepot(c, before.primary);
        probe(before.primary);
      }
      for (let i = 1; i <= opts.unrelatedLosses; i++) {
        await waitFor(protectedNow, 120_000, `protection before unrelated loss ${i}`);
        const p = await placement(c, observer(c, []));
        const holders = new Set([p.primary, ...p.standbys]);
        const pool = c.hosts.filter((h) => !holders.has(h) && c.depots.get(h)?.running);
        const victim = pool[Math.floor(Math.random() * pool.length)]!;
        // The same 10 s with no fault first: gaps the shared machine makes anyway (scheduling of
        // 30+ processes on two cores, the prober's own pauses) are not the loss's doing.
        const tb = Date.now();
        await sleep(10_000);
        baselineGapsMs.push(Math.round(prober.outage(tb, Date.now()).outageMs));
        const t = Date.now();
        await lab.powerOff(victim);
        // Watch the service for 10 s after the loss: it must not notice.
        await sleep(10_000);
        const outage = prober.outage(t, Date.now());
        unrelatedOutagesMs.push(Math.round(outage.outageMs));
        log(`unrelated loss ${i}: ${victim}, longest gap ${Math.round(outage.outageMs)} ms (the 10 s before, no fault: ${baselineGapsMs.at(-1)} ms)`);
        await lab.powerOn(victim);
        await startDepot(c, victim);
        probe(victim);
      }
      // Server changes (a term change that moved the service) outside the primary-loss trials.
      const timeline = prober.serverTimeline();
      let spurious = 0;
      for (let k = 1; k < timeline.length; k++) {
        const at = timeline[k]!.since;
        if (primaryWindows.some(([a, b]) => at >= a && at <= b)) continue;
        spurious++;
        // Say when and how, so a spurious move can be traced in the depots' logs.
        const gap = prober.outage(timeline[k - 1]!.since, at);
        log(`spurious server change: ${timeline[k - 1]!.server} -> ${timeline[k]!.server} at ${new Date(at).toISOString()} (+${Math.round((at - loadedAt) / 1000)} s; longest gap before it ${Math.round(gap.outageMs)} ms)`);
      }

      // All but 3 off within a minute, three of four cleanly. The survivors: the primary's
      // host, the standby's host and one voter of the group.
      await waitFor(protectedNow, 120_000, 'protection before the mass shutdown');
      await sleep(3000);
      const p = await placement(c, observer(c, []));
      const group = (await serviceView(c, p.primary!))?.voters?.hosts ?? [];
      const survivors = [...new Set([p.primary!, ...p.standbys.slice(0, 1), ...group.filter((h) => h !== p.primary && !p.standbys.includes(h))])].slice(0, 3);
      const victims = c.hosts.filter((h) => !survivors.includes(h)).sort(() => Math.random() - 0.5);
      const tm = Date.now();
      for (const [k, h] of victims.entries()) {
        if (k % 4 === 3) await lab.powerOff(h);
        else c.depots.get(h)?.kill('SIGTERM');
        await sleep(60_000 / victims.length);
      }
      log(`mass shutdown: ${victims.length} hosts off in ${Date.now() - tm} ms; survivors ${survivors.join(', ')} (group was ${group.join(', ')})`);
      // Served after the shutdown: 30 s later, the prober gets an answer (its results arrive in
      // batches, so wait for a fresh one rather than read the last seconds).
      await sleep(30_000);
      const served = await prober.waitForServer(/./, 10_000).then(
        () => true,
        () => false,
      );
      return {
        workstations: opts.workstations,
        depotLogs: await depotLogFacts(join(lab.dir, 'logs')),
        cpuHog: hog,
        startMs,
        primaryOutagesMs,
        primaryTimings,
        unrelatedOutagesMs,
        baselineGapsMs,
        spuriousTermChanges: spurious,
        splitBrainEvents: arp.splitBrainEvents(),
        servedAfterMassShutdown: served,
        threadProbe: opts.threadProbe ? await threadProbeFacts(join(lab.dir, 'logs'), tm) : null,
        survivors,
        groupAtShutdown: group,
      };
    } finally {
      await prober.stop();
      await arp.stop();
    }
  } finally {
    await lab.destroy();
  }
}

export function summarize(r: ScaleLabResult) {
  return {
    primary_outage_ms_p50: r.primaryOutagesMs.length ? Math.round(percentile(r.primaryOutagesMs, 50)) : null,
    primary_outage_ms_p95: r.primaryOutagesMs.length ? Math.round(percentile(r.primaryOutagesMs, 95)) : null,
    unrelated_outage_ms_max: r.unrelatedOutagesMs.length ? Math.max(...r.unrelatedOutagesMs) : null,
    no_fault_gap_ms_max: r.baselineGapsMs.length ? Math.max(...r.baselineGapsMs) : null,
    lab_lease_lapses: r.depotLogs.leaseLapses,
    depot_loop_stalls: r.depotLogs.loopStalls,
    depot_loop_stall_max_ms: r.depotLogs.loopStallMaxMs,
    ...timingSummary(r.primaryTimings),
  };
}

/** p50/p95 of each part of the failover, from the new primaries' own events. */
function timingSummary(t: ScaleLabResult['primaryTimings']) {
  const pct = (xs: number[], q: number) => (xs.length ? Math.round(percentile(xs, q)) : null);
  return {
    failover_detect_ms_p50: pct(t.map((x) => x.detectMs), 50),
    failover_detect_ms_p95: pct(t.map((x) => x.detectMs), 95),
    failover_elect_ms_p50: pct(t.map((x) => x.electMs), 50),
    failover_elect_ms_p95: pct(t.map((x) => x.electMs), 95),
    failover_takeover_ms_p50: pct(t.map((x) => x.takeoverMs), 50),
    failover_takeover_ms_p95: pct(t.map((x) => x.takeoverMs), 95),
  };
}
