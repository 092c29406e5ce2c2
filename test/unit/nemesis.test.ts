import { describe, expect, it } from 'vitest';
import {
  CRASH_KINDS, classifyLosses, holdRange, lostOnPlannedMove, planFaults, seededRandom, staleWrites, termStarts,
  type AckedWrite, type InjectedFault,
} from '../../lab/nemesis.ts';

// The nemesis test's schedule and checks (lab/nemesis.ts) on made-up histories: each check finds
// what it must (a stale write, an unexplained loss, a loss on a planned move) and nothing else.

const w = (seq: number, host: string, term: number, committedMs: number, end = committedMs + 1): AckedWrite => ({ seq, host, term, committedMs, end });

describe('nemesis schedule', () => {
  it('the same seed gives the same schedule; another seed another one', () => {
    const o = { leaseMs: 1500, gapMs: [15_000, 20_000] as const, steps: 50 };
    expect(planFaults(42, o)).toEqual(planFaults(42, o));
    expect(planFaults(43, o)).not.toEqual(planFaults(42, o));
  });

  it('every kind appears, holds and gaps stay in range, a SIGSTOP outlasts the lease, most faults hit the primary', () => {
    const o = { leaseMs: 1500, gapMs: [15_000, 20_000] as const, steps: 400 };
    for (const seed of [1, 2, 3, 12345, 2 ** 31 - 1]) {
      const plan = planFaults(seed, o);
      for (const k of CRASH_KINDS) expect(plan.some((s) => s.kind === k)).toBe(true);
      for (const s of plan) {
        const [lo, hi] = holdRange(s.kind, o.leaseMs);
        expect(s.holdMs).toBeGreaterThanOrEqual(lo);
        expect(s.holdMs).toBeLessThanOrEqual(hi);
        expect(s.gapMs).toBeGreaterThanOrEqual(15_000);
        expect(s.gapMs).toBeLessThanOrEqual(20_000);
        if (s.kind === 'sigstop') expect(s.holdMs).toBeGreaterThan(o.leaseMs);
      }
      const onPrimary = plan.filter((s) => s.target === 'primary').length / plan.length;
      expect(onPrimary).toBeGreaterThan(0.65);
      expect(onPrimary).toBeLessThan(0.85);
    }
  });

  it('seededRandom is uniform enough in [0, 1)', () => {
    const r = seededRandom(7);
    const xs = Array.from({ length: 10_000 }, r);
    expect(Math.min(...xs)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...xs)).toBeLessThan(1);
    expect(xs.reduce((a, b) => a + b, 0) / xs.length).toBeCloseTo(0.5, 1);
  });
});

describe('stale writes', () => {
  it('a write of term 1 committed after term 2 began is stale; before it, not', () => {
    const acked = [w(1, 'w1', 1, 1000), w(2, 'w1', 1, 1900), w(3, 'w2', 2, 2500), w(4, 'w1', 1, 2600)];
    const starts = termStarts([{ term: 1, host: 'w1', at: 500 }, { term: 2, host: 'w2', at: 2000 }], acked);
    expect(staleWrites(acked, starts).map((x) => x.seq)).toEqual([4]);
  });

  it('the first commit of a newer term bounds its start even without a promotion record', () => {
    const acked = [w(1, 'w1', 1, 1000), w(2, 'w2', 3, 1500), w(3, 'w1', 1, 1600)];
    const starts = termStarts([], acked);
    expect(starts.get(3)).toBe(1500);
    expect(staleWrites(acked, starts).map((x) => [x.seq, x.newerTerm])).toEqual([[3, 3]]);
  });

  it('a clean history has none', () => {
    const acked = [w(1, 'w1', 1, 1000), w(2, 'w2', 2, 3000), w(3, 'w3', 3, 5000), w(4, 'w3', 3, 5100)];
    expect(staleWrites(acked, termStarts([{ term: 2, host: 'w2', at: 2500 }, { term: 3, host: 'w3', at: 4500 }], acked))).toEqual([]);
  });
});

describe('lost writes', () => {
  const faults: InjectedFault[] = [
    { kind: 'kill9', host: 'w1', wasPrimary: true, start: 10_000, end: 13_000 },
    { kind: 'partition', host: 'w3', wasPrimary: false, start: 30_000, end: 35_000 },
    { kind: 'switchover', host: 'w2', wasPrimary: true, start: 40_000, end: 42_000 },
  ];

  it('a missing write just before or during a crash of its primary is a crash loss; an older one is unexplained', () => {
    const acked = [w(1, 'w1', 1, 4000), w(2, 'w1', 1, 9000), w(3, 'w1', 1, 11_000), w(4, 'w2', 2, 20_000), w(5, 'w2', 2, 29_500)];
    const present = new Set([4]);
    const r = classifyLosses(acked, present, faults, 5000);
    expect(r.onCrash.map((x) => x.seq)).toEqual([2, 3]);
    expect(r.perFault).toEqual([2, 0, 0]);
    expect(r.maxAgeBeforeFaultMs).toBe(1000);
    // seq 1: 6 s before the crash (outside the window); seq 5: w2 was not hit (a standby was).
    expect(r.unexplained.map((x) => x.seq)).toEqual([1, 5]);
  });

  it('a switchover explains no loss; nothing missing, nothing reported', () => {
    const acked = [w(1, 'w2', 2, 39_900), w(2, 'w1', 1, 12_000)];
    expect(classifyLosses(acked, new Set([2]), faults, 5000).unexplained.map((x) => x.seq)).toEqual([1]);
    expect(classifyLosses(acked, new Set([1, 2]), faults, 5000)).toEqual({ onCrash: [], unexplained: [], perFault: [0, 0, 0], maxAgeBeforeFaultMs: 0 });
  });

  it('planned move: writes acknowledged before it (held by the old primary) and during it must be on the new primary', () => {
    const acked = [w(1, 'w1', 1, 100, 100), w(2, 'w1', 1, 900, 900), w(3, 'w1', 1, 1100, 1100), w(4, 'w2', 2, 1900, 1900), w(5, 'w2', 2, 2600, 2600)];
    const move = { start: 1000, done: 2000 };
    // seq 1 was lost before the move (not on the old primary): not the move's loss.
    expect(lostOnPlannedMove(acked, move, new Set([2]), new Set([2, 3, 4]))).toEqual([]);
    expect(lostOnPlannedMove(acked, move, new Set([2]), new Set([4])).map((x) => x.seq)).toEqual([2, 3]);
  });
});
