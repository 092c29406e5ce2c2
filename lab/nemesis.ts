// The nemesis test's decisions and checks as pure functions (test/lab/nemesis.test.ts runs them
// against a real cluster; test/unit/nemesis.test.ts checks them on made-up histories):
//  - the seeded random fault schedule;
//  - stale writes: a write committed in term T after a newer term's primary was promoted;
//  - lost writes: acknowledged writes missing from the final database, each either explained by a
//    crash fault on the host that committed it (it was acknowledged shortly before the fault, in
//    the replication window, or during it) or not (a loss the design does not allow);
//  - planned moves: every write acknowledged before (and during) a switchover is in the new
//    primary's database after it.
import { mulberry32 } from './seeded-random.ts';

export const CRASH_KINDS = ['sigstop', 'kill9', 'partition', 'power'] as const;
export type CrashKind = (typeof CRASH_KINDS)[number];
export type FaultKind = CrashKind | 'switchover';

/** The nemesis schedule's PRNG (lab/seeded-random.ts). */
export const seededRandom = mulberry32;

export interface FaultStep {
  kind: CrashKind;
  /** Whose host: the primary's (most faults) or a standby's. */
  target: 'primary' | 'standby';
  /** How long the fault lasts: paused, dead, cut off or powered off. */
  holdMs: number;
  /** Time from the previous fault's start to this one's (at least: the cluster must have recovered). */
  gapMs: number;
}

export interface ScheduleOptions {
  /** Primary lease (ms): a SIGSTOP lasts 2 to 4 leases, so the lease always runs out. */
  leaseMs: number;
  /** Time between fault starts, [min, max] ms. */
  gapMs: readonly [number, number];
  /** Share of faults on the primary's host (default 0.75). */
  primaryShare?: number;
  steps: number;
}

/** Hold range of each fault kind (ms). */
export function holdRange(kind: CrashKind, leaseMs: number): [number, number] {
  switch (kind) {
    case 'sigstop':
      return [2 * leaseMs, 4 * leaseMs];
    case 'kill9':
      return [1000, 4000];
    case 'partition':
      return [3000, 8000];
    case 'power':
      return [2000, 5000];
  }
}

/** The random schedule of `seed`: the same seed gives the same faults, targets, holds and gaps. */
export function planFaults(seed: number, o: ScheduleOptions): FaultStep[] {
  const rnd = seededRandom(seed);
  const between = (lo: number, hi: number) => Math.round(lo + rnd() * (hi - lo));
  const out: FaultStep[] = [];
  for (let i = 0; i < o.steps; i++) {
    const kind = CRASH_KINDS[Math.floor(rnd() * CRASH_KINDS.length)]!;
    const target = rnd() < (o.primaryShare ?? 0.75) ? 'primary' : 'standby';
    const [lo, hi] = holdRange(kind, o.leaseMs);
    out.push({ kind, target, holdMs: between(lo, hi), gapMs: between(o.gapMs[0], o.gapMs[1]) });
  }
  return out;
}

export interface AckedWrite {
  seq: number;
  /** When the writer got the acknowledgement. */
  end: number;
  host: string;
  term: number;
  /** The front's clock right after COMMIT returned. */
  committedMs: number;
}

export interface Promotion {
  term: number;
  host: string;
  /** When the new primary won its term (or an upper bound of it). */
  at: number;
}

/**
 * When each term began: the promotion records' election time (record time minus the takeover
 * phase) and, when earlier, the first write committed in that term (a primary commits only once
 * it is promoted). Keyed by term; the earliest moment wins.
 */
export function termStarts(promotions: readonly Promotion[], acked: readonly AckedWrite[]): Map<number, number> {
  const out = new Map<number, number>();
  const put = (term: number, at: number) => out.set(term, Math.min(out.get(term) ?? Infinity, at));
  for (const p of promotions) put(p.term, p.at);
  for (const w of acked) put(w.term, w.committedMs);
  return out;
}

/** Writes committed in term T after some newer term had begun: a stale primary still writing. */
export function staleWrites(acked: readonly AckedWrite[], starts: ReadonlyMap<number, number>): Array<AckedWrite & { newerTerm: number; newerAt: number }> {
  const out: Array<AckedWrite & { newerTerm: number; newerAt: number }> = [];
  for (const w of acked) {
    for (const [term, at] of starts) {
      if (term > w.term && at < w.committedMs) {
        out.push({ ...w, newerTerm: term, newerAt: at });
        break;
      }
    }
  }
  return out;
}

export interface InjectedFault {
  kind: FaultKind;
  /** The host the fault hit. */
  host: string;
  /** Whether that host was the primary when the fault began. */
  wasPrimary: boolean;
  start: number;
  /** When the fault was healed (the process continued/restarted, the partition healed, power back). */
  end: number;
}

export interface LossReport {
  /** Missing writes acknowledged by a primary shortly before or during a crash fault on its host. */
  onCrash: AckedWrite[];
  /** Missing writes no crash explains. The design allows none. */
  unexplained: AckedWrite[];
  /** Per crash fault (index into the faults), how many of its window's writes are missing. */
  perFault: number[];
  /** Longest time from a write's commit to the start of the fault that lost it (ms). */
  maxAgeBeforeFaultMs: number;
}

/**
 * Acknowledged writes missing from the final database. A crash of the primary's host (SIGSTOP of
 * its depot past the lease, kill -9, partition, power loss) may lose what the standby had not yet
 * replicated: writes committed at most `windowMs` before the fault began, and writes the cut-off
 * primary committed while the fault lasted. Any other missing write is unexplained.
 */
export function classifyLosses(acked: readonly AckedWrite[], present: ReadonlySet<number>, faults: readonly InjectedFault[], windowMs: number): LossReport {
  const report: LossReport = { onCrash: [], unexplained: [], perFault: faults.map(() => 0), maxAgeBeforeFaultMs: 0 };
  for (const w of acked) {
    if (present.has(w.seq)) continue;
    const i = faults.findIndex((f) => f.kind !== 'switchover' && f.wasPrimary && f.host === w.host && w.committedMs >= f.start - windowMs && w.committedMs <= f.end);
    if (i < 0) {
      report.unexplained.push(w);
      continue;
    }
    report.onCrash.push(w);
    report.perFault[i]!++;
    report.maxAgeBeforeFaultMs = Math.max(report.maxAgeBeforeFaultMs, faults[i]!.start - w.committedMs);
  }
  return report;
}

/**
 * A planned move (switchover) between `start` and `done`: the writes that must be in the new
 * primary's database after it: those acknowledged before the move that the old primary's
 * database held just before it, and every write acknowledged during the move. Returns the missing.
 */
export function lostOnPlannedMove(acked: readonly AckedWrite[], move: { start: number; done: number }, oldPrimaryBefore: ReadonlySet<number>, newPrimaryAfter: ReadonlySet<number>): AckedWrite[] {
  return acked.filter((w) => {
    const must = (w.end < move.start && oldPrimaryBefore.has(w.seq)) || (w.end >= move.start && w.end <= move.done);
    return must && !newPrimaryAfter.has(w.seq);
  });
}
