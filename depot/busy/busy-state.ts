import type { BusySignal } from '../../shared/wire.ts';

// Whether the host is busy, pure: one sample of its user's CPU use and local sessions against
// the thresholds (config section busy), and since when the current busy spell runs. A sample
// under the thresholds ends the spell; the next one that is over starts a new one, so "busy for
// sustainMs" means sustainMs of samples that were all over.

export interface BusySample {
  /** CPU use of the host's user work, percent of all its CPUs, since the sample before. */
  cpuPct: number;
  /** Active local login sessions (0 where they are not counted). */
  sessions: number;
}

export interface BusyThresholds {
  cpuPct: number;
  /** Count active local sessions as busy. */
  sessions: boolean;
}

/** The signal after `sample` taken at `now` (ms since the epoch), given the one before. */
export function nextBusySignal(prev: BusySignal | undefined, sample: BusySample, t: BusyThresholds, now: number): BusySignal {
  const cpuPct = Math.round(Math.min(100, Math.max(0, sample.cpuPct)) * 10) / 10;
  const sessions = t.sessions ? Math.max(0, Math.floor(sample.sessions)) : 0;
  const busy = cpuPct >= t.cpuPct || sessions > 0;
  if (!busy) return { busy, cpuPct, sessions };
  return { busy, cpuPct, sessions, since: prev?.busy && prev.since !== undefined ? prev.since : now };
}

/** CPU use as a percentage of all `cpus` CPUs: `usedNs` of CPU time over `elapsedNs` of wall time. */
export function cpuPercent(usedNs: number, elapsedNs: number, cpus: number): number {
  if (!(elapsedNs > 0) || !(cpus > 0)) return 0;
  return Math.min(100, Math.max(0, (usedNs / (elapsedNs * cpus)) * 100));
}
