import { describe, it, expect } from 'vitest';
import { DEFAULT_ELECTION_CONFIG, minSafetyMarginMs, type ElectionConfig } from '../../pilot/election/settings.ts';
import { runElectionSim, type BrokenVariant, type SimFaults, type SimResult } from '../helpers/election-sim.ts';

// Randomized proof of election safety (pilot/election/): thousands of seeded runs of 2–7 voters
// (two only with a witness) and 2–3 pilots, with host crashes and restarts (voters keep only their
// persisted record), clean leaves, splits of the network into any groups, loss, duplicates, delays
// (bounded, heavy-tailed, or reply-only), wrong probe results and wrong membership reports driving
// view changes, and every clock running at its own rate within ±ρ with an arbitrary offset.
//
// Checked after every event (lease beliefs only start at events; they end on their own, so a
// check at each event sees every overlap): never two pilots holding a valid lease by their own
// clocks, never two serving (including the fence latency tail), no primary past its lease, terms
// of successive primaries increasing, pilots' and voters' terms never going back.
// The voter-group runs put 30–200 depots in one cluster with a group of 5 (crashes aimed at the
// group, power-strip crashes of a majority of it, the group gossiped in heartbeats).

const rho = DEFAULT_ELECTION_CONFIG.maxClockDriftRate;
const minMargin = Math.ceil(minSafetyMarginMs(DEFAULT_ELECTION_CONFIG.leaseMs, rho, DEFAULT_ELECTION_CONFIG.fenceLatencyMs));

const base: SimFaults = {
  crashEveryMs: 3000,
  partitionEveryMs: 3000,
  loss: 0.1,
  dup: 0.05,
  maxDelayMs: 30,
  longDelayProb: 0.02,
  longDelayMaxMs: 3000,
  wrongProbes: 0.02,
  viewChanges: true,
  leaves: true,
  restartMinMs: 200,
  restartMaxMs: 5000,
};

const PROFILES: Record<string, SimFaults> = {
  base,
  slow: { ...base, maxDelayMs: 700, partitionEveryMs: 1500, loss: 0.2 },
  flapping: { ...base, crashEveryMs: 700, restartMinMs: 20, restartMaxMs: 400, partitionEveryMs: 1500 },
  heavyTail: { ...base, longDelayProb: 0.15, longDelayMaxMs: 800, partitionEveryMs: 1000, crashEveryMs: 1500, restartMinMs: 20, restartMaxMs: 600 },
  lateReplies: { ...base, slowRepliesOnly: true, longDelayProb: 0.3, longDelayMaxMs: 1000, partitionEveryMs: 500, crashEveryMs: 0, loss: 0, wrongProbes: 0 },
  chaos: { ...base, crashEveryMs: 1000, restartMinMs: 20, restartMaxMs: 1000, partitionEveryMs: 800, maxDelayMs: 400, loss: 0.2, dup: 0.2, wrongProbes: 0.1 },
};

function shape(seed: number): { voters: number; pilots: number; witness: boolean } {
  const voters = 2 + (seed % 6);
  return { voters, pilots: Math.min(voters, 2 + ((seed >> 3) % 2)), witness: voters === 2 || seed % 3 === 0 };
}

function config(seed: number, witness: boolean): ElectionConfig {
  // Half the runs at the smallest margin the drift bound allows: the proof must hold right at the edge.
  return { ...DEFAULT_ELECTION_CONFIG, witness, leaseSafetyMarginMs: seed % 2 ? minMargin : DEFAULT_ELECTION_CONFIG.leaseSafetyMarginMs };
}

function run(seed: number, faults: SimFaults, broken?: BrokenVariant): SimResult {
  const { voters, pilots, witness } = shape(seed);
  return runElectionSim({ seed, voters, pilots, durationMs: 10_000, cfg: config(seed, witness), faults, ...(broken ? { broken } : {}) });
}

describe('election simulation', () => {
  // 2000 runs in all, split by fault profile; each run is 10 s of simulated time.
  const RUNS_PER_PROFILE = 334;
  let totals = { elections: 0, views: 0, maxTerm: 0, witnessRuns: 0 };
  Object.keys(PROFILES).forEach((profile, p) => {
    it(`never two valid leases (nor two serving copies) for one service: ${profile} faults, ${RUNS_PER_PROFILE} runs`, { timeout: 120_000 }, () => {
      const failures: string[] = [];
      for (let k = 0; k < RUNS_PER_PROFILE; k++) {
        const seed = 1 + p * RUNS_PER_PROFILE + k;
        const r = run(seed, PROFILES[profile]!);
        totals = {
          elections: totals.elections + r.elections,
          views: totals.views + r.viewChanges,
          maxTerm: Math.max(totals.maxTerm, r.maxTerm),
          witnessRuns: totals.witnessRuns + (shape(seed).witness ? 1 : 0),
        };
        if (r.violations.length) failures.push(`seed ${seed} (${profile}, ${JSON.stringify(shape(seed))}): ${r.violations.slice(0, 3).join('; ')}`);
      }
      expect(failures).toEqual([]);
    });
  });

  it('the runs above exercised the protocol: many elections, view changes, witness configurations', () => {
    expect(totals.elections).toBeGreaterThan(2000);
    expect(totals.views).toBeGreaterThan(1000);
    expect(totals.maxTerm).toBeGreaterThan(5);
    expect(totals.witnessRuns).toBeGreaterThan(400);
  });

  it('elects a new primary within the lease plus a bound after the primary host dies on a healthy network', { timeout: 60_000 }, () => {
    const healthy: SimFaults = { ...base, crashEveryMs: 0, partitionEveryMs: 0, loss: 0, dup: 0, maxDelayMs: 5, longDelayProb: 0, wrongProbes: 0, leaves: false };
    const cfg = DEFAULT_ELECTION_CONFIG;
    // Voters' promises run out within leaseMs·(1+ρ)/(1−ρ) of the last renewal; a refused
    // candidate asks again just after (the voters say when their promise ends: pilot-role.ts
    // retryWhenFree), so only message delays and, when two standbys split the vote, the
    // tie break are left on top (it was a whole round, ≤ 2·electionRetryMs, before).
    const bound = (cfg.leaseMs * (1 + rho)) / (1 - rho) + 300;
    const times: number[] = [];
    for (let seed = 1; seed <= 300; seed++) {
      const voters = 3 + (seed % 5);
      const r = runElectionSim({
        seed,
        voters,
        pilots: 2 + (seed % 2),
        durationMs: 12_000,
        cfg,
        faults: healthy,
        crashPrimaryAt: 4000 + ((seed * 37) % 1000),
      });
      expect(r.violations, `seed ${seed}`).toEqual([]);
      expect(r.failoverMs, `seed ${seed}: no new primary`).toBeDefined();
      times.push(r.failoverMs!);
    }
    times.sort((a, b) => a - b);
    expect(times[times.length - 1]!).toBeLessThanOrEqual(bound);
    expect(times[Math.floor(times.length / 2)]!).toBeLessThanOrEqual(cfg.leaseMs + 200);
  });

  it('after any chaos, once the faults stop, a primary is back within a bound (no deadlock, no livelock)', { timeout: 60_000 }, () => {
    const cfg = DEFAULT_ELECTION_CONFIG;
    // At the heal every crashed host restarts: its voter keeps silent for a lease (quarantine), the
    // promises made before the heal run out within another, then one candidate round wins.
    const bound = (2 * cfg.leaseMs * (1 + rho)) / (1 - rho) + 1000;
    const times: number[] = [];
    for (let seed = 1; seed <= 300; seed++) {
      const { voters, pilots, witness } = shape(seed);
      const r = runElectionSim({ seed, voters, pilots, durationMs: 20_000, cfg: { ...cfg, witness }, faults: PROFILES.chaos!, healAt: 8000 });
      expect(r.violations, `seed ${seed}`).toEqual([]);
      expect(r.recoveryMs, `seed ${seed}: no primary after the heal`).toBeDefined();
      times.push(r.recoveryMs!);
    }
    expect(Math.max(...times)).toBeLessThanOrEqual(bound);
  });

  // A voter group of 5 among 30–200 depots (pilot/election/voter-group.ts): only the group votes
  // and renews, the group changes one member at a time through joint views as its members die,
  // leave and come back, under splits, loss, delays and drift. Crashes aim at the group.
  const groupFaults: SimFaults = { ...base, voterCrashBias: 0.7, crashEveryMs: 800, restartMinMs: 300, restartMaxMs: 4000, partitionEveryMs: 2000, massCrashEveryMs: 6000 };
  const groupCfg = (seed: number): ElectionConfig => ({ ...config(seed, false), voters: 5 });
  const depots = (seed: number) => 30 + ((seed * 7919) % 171);

  it('a group of 5 among 30–200 depots: never two valid leases, requests per round bounded by the group', { timeout: 180_000 }, () => {
    const failures: string[] = [];
    let views = 0;
    let elections = 0;
    let maxMsgs = 0;
    for (let seed = 1; seed <= 200; seed++) {
      const r = runElectionSim({ seed, voters: depots(seed), pilots: 2 + (seed % 2), durationMs: 20_000, cfg: groupCfg(seed), faults: seed % 3 === 0 ? { ...PROFILES.chaos!, voterCrashBias: 0.7, massCrashEveryMs: 4000 } : groupFaults });
      views += r.viewChanges;
      elections += r.elections;
      maxMsgs = Math.max(maxMsgs, r.maxRoundMessages);
      if (r.violations.length) failures.push(`seed ${seed} (${depots(seed)} depots): ${r.violations.slice(0, 3).join('; ')}`);
    }
    expect(failures).toEqual([]);
    // Exercised: replacements happened, elections happened; a round asks at most the group (a
    // change removes before it adds, so even a joint view's union is 5).
    expect(views).toBeGreaterThan(400);
    expect(elections).toBeGreaterThan(500);
    expect(maxMsgs).toBeGreaterThan(0);
    expect(maxMsgs).toBeLessThanOrEqual(5);
  });

  it('the group runs can fail: without the promise rule they find two leases', { timeout: 60_000 }, () => {
    let found: string | undefined;
    for (let seed = 1; seed <= 100 && !found; seed++) {
      const r = runElectionSim({ seed, voters: depots(seed), pilots: 3, durationMs: 10_000, cfg: groupCfg(seed), faults: groupFaults, broken: 'no-promise' });
      if (r.violations.length) found = `seed ${seed}: ${r.violations[0]}`;
    }
    expect(found).toBeDefined();
  });

  it('a group of 5 among 30–200 depots: once only a bare majority of the last group is back (the rest stays down), a primary serves again', { timeout: 180_000 }, () => {
    const cfg = DEFAULT_ELECTION_CONFIG;
    // Restarted voters keep silent a lease, old promises run out within another, then rounds win.
    const bound = (2 * cfg.leaseMs * (1 + rho)) / (1 - rho) + 1000;
    const failures: string[] = [];
    for (let seed = 1; seed <= 150; seed++) {
      const r = runElectionSim({ seed, voters: depots(seed), pilots: 2 + (seed % 2), durationMs: 16_000, cfg: { ...cfg, voters: 5 }, faults: groupFaults, healAt: 8000, healBareMajority: true });
      if (r.violations.length) failures.push(`seed ${seed}: ${r.violations.slice(0, 3).join('; ')}`);
      else if (r.recoveryMs === undefined || r.recoveryMs > bound) failures.push(`seed ${seed} (${depots(seed)} depots): recovery ${r.recoveryMs ?? 'never'} ms (bound ${Math.round(bound)})`);
    }
    expect(failures).toEqual([]);
  });

  // The checker must be able to fail: each deliberately broken rule is caught.
  const brokenCases: Array<[BrokenVariant, string, number]> = [
    ['no-promise', 'base', 100],
    ['no-quarantine', 'flapping', 400],
    ['lease-from-receipt', 'lateReplies', 600],
  ];
  for (const [variant, profile, seeds] of brokenCases) {
    it(`finds a violation when the ${variant} rule is broken`, { timeout: 60_000 }, () => {
      let found: string | undefined;
      for (let seed = 1; seed <= seeds && !found; seed++) {
        const r = run(seed, PROFILES[profile]!, variant);
        if (r.violations.length) found = `seed ${seed}: ${r.violations[0]}`;
      }
      expect(found, `${variant} should be caught within ${seeds} seeds`).toBeDefined();
    });
  }
});
