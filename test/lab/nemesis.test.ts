import { afterAll, describe, expect, it } from 'vitest';
import { Lab } from '../../lab/lab.ts';
import { ArpWatch } from '../../lab/arp-watch.ts';
import { startDepot, waitFor } from '../../lab/cluster.ts';
import { DbWriter, type WriteResult } from '../../lab/db-writer.ts';
import { DB_SERVICE_PORT, bootstrapDbService, dbMovements, dbPlacement, dbSql, startDbCluster, switchover, type DbCluster, type DbPlacement } from '../../lab/db-service.ts';
import {
  CRASH_KINDS, classifyLosses, lostOnPlannedMove, planFaults, seededRandom, staleWrites, termStarts,
  type AckedWrite, type FaultKind, type FaultStep, type InjectedFault, type Promotion,
} from '../../lab/nemesis.ts';
import { PilotSection } from '../../shared/config.ts';

// The nemesis test (Jepsen-style): a DB-backed service (lab/db-service.ts: MariaDB per copy,
// standbys GTID replicas, a write front on the primary) on five workstations with one standby,
// a writer in the client namespace committing a row every 100 ms through the service address,
// and for NEMESIS_S seconds (default 150; the whole `npm test` must stay under 30 min on 2 cores) a seeded random fault every 15-20 s: SIGSTOP of a
// depot for 2-4 leases, kill -9 of a depot (restarted 1-4 s later, as systemd would), a
// partition cutting one host off for 3-8 s, a power loss of 2-5 s (fresh boot, depot started
// again); three faults in four hit the primary's host. Two planned switchovers at 1/3 and 2/3.
// Each fault waits until the cluster recovered from the last (a primary, a replicating standby,
// the writer acknowledged again). Checked:
//  - never two MACs answering ARP for the service address (ArpWatch), never two hosts holding it;
//  - no write committed by a stale primary: no row (acknowledged, or present in the final
//    database) of term T committed after a newer term began (promotion records, first commits);
//  - the new primary's database never overwritten by an old snapshot, and no acknowledged write
//    lost except by a crash fault on the primary that committed it, within the replication
//    window before the fault (or while the fault lasted);
//  - every write acknowledged before or during a planned move is in the new primary's database.
// Replay a run: NEMESIS_SEED=<printed seed>.

const LEASE_MS = PilotSection.parse({}).leaseMs;
const SEED = process.env.NEMESIS_SEED ? Number(process.env.NEMESIS_SEED) : Math.floor(Math.random() * 2 ** 31);
const DURATION_MS = Number(process.env.NEMESIS_S ?? 150) * 1000;
const WORKSTATIONS = 5;
const STANDBYS = 1;
const WRITE_INTERVAL_MS = 100;
// A crash may lose what the standby had not replicated. Before each fault the standby reported a
// replication heartbeat younger than FRESH_MS; the loop's own checks and a loaded 2-core machine
// (other labs running) add up to a few seconds before the fault actually lands. A write older
// than this at the fault's start that is missing is a real loss (an overwrite by an old snapshot,
// a lost acknowledged commit), not replication lag.
const FRESH_MS = 2000;
const LOSS_WINDOW_MS = 5000;
// How long the cluster may take to recover from one fault: a new election, a standby re-seeded
// (a dump of the small database) or re-pointed, on a loaded machine; failover itself is ~2 s.
const RECOVER_MS = 120_000;

let lab: Lab | undefined;
let writer: DbWriter | undefined;
let watch: ArpWatch | undefined;

afterAll(async () => {
  await writer?.stop().catch(() => undefined);
  await watch?.stop().catch(() => undefined);
  await lab?.destroy();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function ackedOf(results: readonly WriteResult[]): AckedWrite[] {
  return results.filter((r) => r.ok).map((r) => ({ seq: r.seq, end: r.end, host: r.host!, term: r.term!, committedMs: r.committedMs! }));
}

async function seqsOn(c: DbCluster, host: string): Promise<Set<number>> {
  return new Set((await dbSql(c, host, 'SELECT seq FROM writes')).map((r) => Number(r[0])));
}

describe('nemesis', () => {
  it(`random SIGSTOP, kill -9, partitions and power losses for ${DURATION_MS / 1000} s under a writer: one MAC, no stale write, nothing acknowledged lost beyond the crash window, nothing lost on planned moves`, async () => {
    const t0 = Date.now();
    const step = (what: string) => console.log(`[nemesis +${((Date.now() - t0) / 1000).toFixed(1)} s] ${what}`);
    console.log(`nemesis seed ${SEED} (replay: NEMESIS_SEED=${SEED}), ${DURATION_MS / 1000} s of faults`);
    lab = await Lab.create({ workstations: WORKSTATIONS });
    const c = await startDbCluster(lab, WORKSTATIONS);
    await bootstrapDbService(c, 'w1', STANDBYS);

    // The cluster's view from a depot not under a fault (a paused or cut-off one answers late or stale).
    let faulty: string | undefined;
    const view = async (): Promise<DbPlacement | undefined> => {
      for (const h of c.hosts) {
        if (h === faulty || !c.depots.get(h)?.running) continue;
        const p = await dbPlacement(c, h).catch(() => undefined);
        if (p) return p;
      }
      return undefined;
    };
    let lastHealedAt = 0;
    let lastSeen: DbPlacement | undefined;
    const healthy = async (): Promise<DbPlacement | undefined> => {
      const p = await view();
      lastSeen = p;
      if (!p?.primary) return undefined;
      // Enough replicating standbys (a copy being placed or re-seeded does not count yet).
      if (p.standbys.filter((s) => s.lastSyncAt !== null && Date.now() - s.lastSyncAt < FRESH_MS).length < STANDBYS) return undefined;
      if (writer && !writer.results.some((r) => r.ok && r.start > lastHealedAt && r.host === p.primary)) return undefined;
      return p;
    };
    const waitHealthy = async (what: string): Promise<DbPlacement> => {
      let p: DbPlacement | undefined;
      try {
        await waitFor(async () => (p = await healthy()) !== undefined, RECOVER_MS, what);
      } catch (err) {
        const acks = writer?.acked() ?? [];
        throw new Error(`${(err as Error).message}; last view ${JSON.stringify(lastSeen)}, now ${Date.now()}, last acknowledged write ${JSON.stringify(acks.at(-1))}`);
      }
      return p!;
    };
    await waitHealthy('a primary on w1 and a replicating standby');
    watch = await ArpWatch.start(lab, { address: c.ip });
    // Which hosts carry the address, every 50 ms: two at once is a split brain too. A powered-off
    // host is left out: the lab's power cut kills its processes and pulls its cable, but its
    // namespace keeps the address configured until power-on (a real host's memory is gone).
    const poweredOff = new Set<string>();
    let polling = true;
    let holderSamples = 0;
    const overlaps: Array<{ t: number; holders: string[] }> = [];
    const poll = (async () => {
      while (polling) {
        const off = new Set(poweredOff);
        const holders = (await lab!.holders(c.ip).catch(() => [] as string[])).filter((h) => !off.has(h) && !poweredOff.has(h));
        holderSamples++;
        if (holders.length > 1) overlaps.push({ t: Date.now(), holders });
        await sleep(50);
      }
    })();
    writer = await DbWriter.start(lab, { target: c.ip, port: DB_SERVICE_PORT, intervalMs: WRITE_INTERVAL_MS });
    await waitFor(async () => writer!.acked().length >= 20, 30_000, 'the writer to commit');
    step(`cluster up, writer committing (${writer.acked().length} acknowledged)`);

    const plan = planFaults(SEED, { leaseMs: LEASE_MS, gapMs: [15_000, 20_000], steps: 200 });
    const pick = seededRandom(SEED ^ 0x5bd1e995);
    const faults: InjectedFault[] = [];
    const moves: Array<{ from: string; to: string; start: number; done: number; lost: AckedWrite[] }> = [];
    const faultsStart = Date.now();
    let prevStart = faultsStart;
    let next = 0;
    while (Date.now() - faultsStart < DURATION_MS) {
      const s: FaultStep = plan[next]!;
      await sleep(Math.max(0, prevStart + s.gapMs - Date.now()));
      const p = await waitHealthy(`recovery before fault ${faults.length + 1}`);
      const primary = p.primary!;
      if (moves.length < 2 && Date.now() - faultsStart >= ((moves.length + 1) * DURATION_MS) / 3) {
        // A planned move: the primary hands over to its standby through the admin API.
        const to = p.standbys[0]!.host;
        const start = Date.now();
        prevStart = start;
        const before = await seqsOn(c, primary);
        step(`switchover ${primary} -> ${to} (${before.size} rows on ${primary})`);
        const r = await switchover(c, primary, to);
        expect(r.ok, `switchover ${primary} -> ${to}: ${r.text}`).toBe(true);
        await waitFor(async () => (await view())?.primary === to, 30_000, `${to} primary after the switchover`);
        await waitFor(async () => writer!.results.some((w) => w.ok && w.start > start && w.host === to), 30_000, `a write committed by ${to}`);
        const done = Date.now();
        const after = await seqsOn(c, to);
        const lost = lostOnPlannedMove(ackedOf(writer.results), { start, done }, before, after);
        moves.push({ from: primary, to, start, done, lost });
        faults.push({ kind: 'switchover', host: primary, wasPrimary: true, start, end: done });
        lastHealedAt = done;
        step(`switchover done in ${done - start} ms; ${lost.length} acknowledged writes missing on ${to}`);
        continue;
      }
      next++;
      const host = s.target === 'primary' ? primary : p.standbys[Math.floor(pick() * p.standbys.length)]!.host;
      const depot = c.depots.get(host)!;
      faulty = host;
      const start = Date.now();
      prevStart = start;
      step(`${s.kind} on ${host} (${s.target}) for ${s.holdMs} ms`);
      switch (s.kind) {
        case 'sigstop':
          depot.kill('SIGSTOP');
          await sleep(s.holdMs);
          depot.kill('SIGCONT');
          break;
        case 'kill9':
          depot.kill('SIGKILL');
          await depot.exited;
          await sleep(s.holdMs);
          await startDepot(c, host);
          break;
        case 'partition':
          await lab.partition([[host]]);
          await sleep(s.holdMs);
          await lab.heal();
          break;
        case 'power':
          poweredOff.add(host);
          await lab.powerOff(host);
          await sleep(s.holdMs);
          await lab.powerOn(host);
          poweredOff.delete(host);
          await startDepot(c, host);
          break;
      }
      const end = Date.now();
      faults.push({ kind: s.kind, host, wasPrimary: s.target === 'primary', start, end });
      faulty = undefined;
      lastHealedAt = end;
    }
    const final = await waitHealthy('recovery after the last fault');
    await sleep(2000);
    await writer.stop();
    polling = false;
    await poll;
    await watch.stop();
    // Let the standby apply the last writes (its view is not what is checked; the primary's is).
    await sleep(1000);

    const primary = final.primary!;
    const acked = ackedOf(writer.results);
    const rows = (await dbSql(c, primary, 'SELECT seq, host, term, ROUND(UNIX_TIMESTAMP(committed_at) * 1000) FROM writes')).map((r) => ({
      seq: Number(r[0]), host: r[1]!, term: Number(r[2]), committedMs: Number(r[3]), end: Number(r[3]),
    }));
    const present = new Set(rows.map((r) => r.seq));
    const records = await dbMovements(c, primary);
    const promotions: Promotion[] = records.filter((m) => m.role === 'primary').map((m) => ({ term: m.term, host: m.host, at: m.time - (m.timings.takeover ?? 0) }));
    const starts = termStarts(promotions, acked);
    const stale = staleWrites([...acked, ...rows], starts);
    const losses = classifyLosses(acked, present, faults, LOSS_WINDOW_MS);
    const split = watch.splitBrainMoments();
    const count = (k: FaultKind, onPrimary?: boolean) => faults.filter((f) => f.kind === k && (onPrimary === undefined || f.wasPrimary === onPrimary)).length;
    const figures = {
      seed: SEED,
      faultSeconds: Math.round((Date.now() - faultsStart) / 1000),
      faults: Object.fromEntries(CRASH_KINDS.map((k) => [k, `${count(k)} (${count(k, true)} on the primary)`])),
      switchovers: moves.length,
      terms: starts.size,
      writesAttempted: writer.results.length,
      acked: acked.length,
      lostOnCrash: losses.onCrash.length,
      lostOnCrashPerFault: faults.map((f, i) => `${f.kind}@${f.host}${f.wasPrimary ? '(P)' : ''}:${losses.perFault[i]}`).join(' '),
      maxLostAgeBeforeFaultMs: losses.maxAgeBeforeFaultMs,
      lostUnexplained: losses.unexplained.length,
      lostOnPlannedMoves: moves.reduce((n, m) => n + m.lost.length, 0),
      staleWrites: stale.length,
      splitBrainEvents: split.length,
      addressOverlaps: overlaps.length,
      holderSamples,
      totalS: Math.round((Date.now() - t0) / 1000),
    };
    console.log(`nemesis figures: ${JSON.stringify(figures)}`);

    // The run did what it claims: faults of every kind (with 3 min: ~9 crash faults), moves, writes.
    const crashes = faults.filter((f) => f.kind !== 'switchover');
    expect(crashes.length).toBeGreaterThanOrEqual(Math.floor(DURATION_MS / 20_000) - 2);
    if (DURATION_MS >= 60_000) expect(moves.length).toBe(2);
    expect(acked.length).toBeGreaterThan(DURATION_MS / WRITE_INTERVAL_MS / 4);
    expect(rows.length).toBeGreaterThan(0);
    expect(split, 'moments with two MACs answering').toEqual([]);
    expect(overlaps, 'moments with two hosts holding the address').toEqual([]);
    expect(stale, 'writes committed by a stale primary').toEqual([]);
    expect(losses.unexplained, 'acknowledged writes lost outside any crash window').toEqual([]);
    for (const m of moves) expect(m.lost, `acknowledged writes lost on the switchover ${m.from} -> ${m.to}`).toEqual([]);
  }, 1_200_000);
});
