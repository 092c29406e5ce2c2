import { NavigatorError } from '../../shared/errors.ts';
import { DbSyncSection, ElectionSection, PilotSection, type Config } from '../../shared/config.ts';

// The election's settings, taken from config section `pilot` (where each field is described),
// and the one place their safety rule is checked (rule R2 in pilot/election/views.ts).

export interface ElectionConfig {
  /** Lease granted by a majority; voters promise this long (their clock). */
  leaseMs: number;
  /** The primary fences itself this long before its lease would end without renewal. */
  leaseSafetyMarginMs: number;
  /** ρ: every clock runs at a rate within [1−ρ, 1+ρ] of real time. */
  maxClockDriftRate: number;
  /** Longest time from the fence decision to the service being stopped and the address gone. */
  fenceLatencyMs: number;
  /** A candidate's round lasts this long (plus up to 100 % jitter) before it asks again. */
  electionRetryMs: number;
  /** A witness voter completes the quorum when exactly two voters remain. */
  witness: boolean;
  /** Sync times heard from other copies count for the freshest-sync rule this long. */
  syncInfoTtlMs: number;
  /**
   * A primary renewing its lease counts as a copy this far behind its renewal's time for the
   * freshest-sync rule (voter-role.ts): a lease (beat interval, replication lag, clock skew), and
   * in dump mode also the sync interval (a standby there is always up to one interval behind).
   */
  writerLagMs: number;
  /** Restart the service in place once on a healthy host before failing over. */
  restartInPlace: boolean;
  /** After a restart in place, probe failures are ignored this long (the service is booting). */
  restartGraceMs: number;
  /** The one restart in place is available again after this long of healthy service. */
  restartResetMs: number;
  /** A standby campaigns when the service has been down this long although its host answers. */
  serviceDownFailoverMs: number;
  /** Target size of the voter group (config election.voters; odd). */
  voters: number;
  /** Host names preferred as voters (config election.preferredVoters). */
  preferredVoters: readonly string[];
}

/** Smallest safety margin for which (R2) holds. */
export function minSafetyMarginMs(leaseMs: number, rho: number, fenceLatencyMs: number): number {
  return leaseMs - (1 - rho) * (leaseMs / (1 + rho) - fenceLatencyMs);
}

export function renewIntervalMs(cfg: Pick<ElectionConfig, 'leaseMs'>): number {
  return cfg.leaseMs / 3;
}

/** Throws CONFIG_INVALID naming each violated condition with its config field. */
export function validateElectionConfig(cfg: ElectionConfig): ElectionConfig {
  const problems: string[] = [];
  const { leaseMs, leaseSafetyMarginMs: margin, maxClockDriftRate: rho, fenceLatencyMs } = cfg;
  if (!(leaseMs > 0)) problems.push(`pilot.leaseMs must be positive (got ${leaseMs})`);
  if (!(rho >= 0 && rho < 0.5)) problems.push(`pilot.maxClockDriftRate must be in [0, 0.5) (got ${rho})`);
  if (!(fenceLatencyMs >= 0)) problems.push(`pilot.fenceLatencyMs must be >= 0 (got ${fenceLatencyMs})`);
  if (problems.length === 0) {
    const min = minSafetyMarginMs(leaseMs, rho, fenceLatencyMs);
    if (margin < min) {
      problems.push(
        `pilot.leaseSafetyMarginMs ${margin} is below the safe minimum ${Math.ceil(min)} ms for leaseMs ${leaseMs}, ` +
          `clock drift ±${rho * 100}% and fence latency ${fenceLatencyMs} ms (margin ≥ lease − (1−ρ)(lease/(1+ρ) − fence))`,
      );
    }
    // Two renewal rounds must fit before the primary would fence, or one lost message fences it.
    if (leaseMs - margin <= 2 * renewIntervalMs(cfg)) {
      problems.push(`pilot.leaseSafetyMarginMs ${margin} leaves no room for two renewals (every ${Math.round(renewIntervalMs(cfg))} ms) in leaseMs ${leaseMs}; keep it below leaseMs/3`);
    }
  }
  if (!(cfg.electionRetryMs > 0)) problems.push(`pilot.electionRetryMs must be positive`);
  if (!(Number.isInteger(cfg.voters) && cfg.voters >= 1 && cfg.voters % 2 === 1)) problems.push(`election.voters must be an odd whole number >= 1 (got ${cfg.voters})`);
  if (problems.length) {
    throw new NavigatorError('CONFIG_INVALID', `invalid election timing:\n  ${problems.join('\n  ')}`, { problems });
  }
  return cfg;
}

/** Election settings from the pilot and election sections of the configuration (validated). */
export function electionConfigFrom(
  pilot: Config['pilot'],
  overrides: Partial<ElectionConfig> = {},
  election: Config['election'] = ElectionSection.parse({}),
  dbsync: Pick<Config['dbsync'], 'mode' | 'syncIntervalMs'> = DbSyncSection.parse({}),
): ElectionConfig {
  return validateElectionConfig({
    leaseMs: pilot.leaseMs,
    leaseSafetyMarginMs: pilot.leaseSafetyMarginMs,
    maxClockDriftRate: pilot.maxClockDriftRate,
    fenceLatencyMs: pilot.fenceLatencyMs,
    electionRetryMs: pilot.electionRetryMs,
    witness: pilot.witness !== '',
    syncInfoTtlMs: pilot.syncInfoTtlMs,
    writerLagMs: pilot.leaseMs + (dbsync.mode === 'dump' ? dbsync.syncIntervalMs : 0),
    restartInPlace: pilot.restartInPlace,
    restartGraceMs: pilot.restartGraceMs,
    restartResetMs: pilot.restartResetMs,
    serviceDownFailoverMs: pilot.serviceDownFailoverMs,
    voters: election.voters,
    preferredVoters: election.preferredVoters,
    ...overrides,
  });
}

/** The settings of a default configuration (tests and simulations start from these). */
export const DEFAULT_ELECTION_CONFIG: ElectionConfig = electionConfigFrom(PilotSection.parse({}));
