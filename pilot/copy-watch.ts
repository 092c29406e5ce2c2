import type { MovementEvent } from '../shared/movement.ts';

// The rules a pilot follows around the election, pure (the election itself is in
// pilot/election/): what a standby remembers of the primary it watches, when it may stand for
// election after a planned hand-over, when it starts its own copy again, and how a won election
// is recorded (bootstrap, failover, switchover or promotion, with its detect and elect timings).
// Time is the pilot's monotonic clock, passed in.

export interface CopyWatch {
  /** When the primary's service was first seen missing (cleared when it answers again). */
  missingSince: number | undefined;
  /** Last time the primary's service answered: the detect timing of a failover starts there. */
  lastServiceOkAt: number | undefined;
  /** Host of the last primary seen in the heartbeats (the failover's "from"). */
  lastPrimaryHost: string | undefined;
  /** After a planned resign this copy leaves the election to the chosen target until then. */
  holdOffUntil: number;
  /** Last time this standby started its own copy again. */
  lastCopyRestartAt: number;
  /** When and why the current campaign started. */
  campaignStartedAt: number | undefined;
  campaignReason: string | undefined;
  /** What the planned move was asked for (a busy host: pilot/busy-move.ts), for its movement record. */
  campaignWhy?: string | undefined;
  /**
   * The primary announced a switchover to this copy (before it resigns): a campaign of this copy's
   * own until then is that switchover (it may see the primary go before the primary's call comes).
   */
  expected?: { why: string | undefined; until: number } | undefined;
  /** Bootstrapped and not served yet: the first win is the bootstrap. */
  bootstrapping: boolean;
  /** Started by a last-resort recovery and not served yet: the first win is recorded as that. */
  lastResort?: { reason: string; fromHost?: string | undefined } | undefined;
}

export function newCopyWatch(opts: { bootstrapping: boolean; lastResort?: { reason: string; fromHost?: string | undefined } | undefined }): CopyWatch {
  return {
    ...(opts.lastResort ? { lastResort: opts.lastResort } : {}),
    missingSince: undefined,
    lastServiceOkAt: undefined,
    lastPrimaryHost: undefined,
    holdOffUntil: Number.NEGATIVE_INFINITY,
    lastCopyRestartAt: Number.NEGATIVE_INFINITY,
    campaignStartedAt: undefined,
    campaignReason: undefined,
    bootstrapping: opts.bootstrapping,
  };
}

/** How long a copy that resigned on purpose keeps out of the election: three leases, time for the target to win. */
export function holdOffMs(leaseMs: number): number {
  return 3 * leaseMs;
}

/** The primary resigned for a planned move (switchover, drain). */
export function watchResigned(w: CopyWatch, now: number, leaseMs: number): CopyWatch {
  return { ...w, holdOffUntil: now + holdOffMs(leaseMs) };
}

/** Another depot's copy reports role primary: the hand-over happened, this copy stands for election like any standby again. */
export function watchPrimarySeen(w: CopyWatch, host: string): CopyWatch {
  return { ...w, lastPrimaryHost: host, holdOffUntil: Number.NEGATIVE_INFINITY };
}

/** The result of probing the primary's service from a standby. */
export function watchServiceProbe(w: CopyWatch, serviceOk: boolean, now: number): CopyWatch {
  return serviceOk ? { ...w, missingSince: undefined, lastServiceOkAt: now } : { ...w, missingSince: w.missingSince ?? now };
}

/** A standby whose primary's service does not answer may campaign, unless it just handed over on purpose. */
export function mayCampaign(w: CopyWatch, serviceOk: boolean, now: number): boolean {
  return serviceOk || now >= w.holdOffUntil;
}

/** A standby's own copy is failed or stopped: start it again, at most every copyRestartMs (a copy that keeps failing must not spin). */
export function watchOwnCopy(w: CopyWatch, ownState: string | undefined, now: number, copyRestartMs: number): { watch: CopyWatch; restart: boolean } {
  const down = ownState === 'failed' || ownState === 'stopped';
  if (!down || now - w.lastCopyRestartAt <= copyRestartMs) return { watch: w, restart: false };
  return { watch: { ...w, lastCopyRestartAt: now }, restart: true };
}

export function watchCampaign(w: CopyWatch, now: number, reason: string | undefined, why?: string): CopyWatch {
  const expected = w.expected && now <= w.expected.until ? w.expected : undefined;
  // A campaign of our own while a switchover to this copy is announced is that switchover.
  if (reason === undefined && expected) return { ...w, campaignStartedAt: now, campaignReason: 'switchover', campaignWhy: expected.why, expected: undefined };
  return { ...w, campaignStartedAt: now, campaignReason: reason ?? w.campaignReason, campaignWhy: why ?? (reason === undefined ? w.campaignWhy : undefined), expected: undefined };
}

/** The primary announced a switchover to this copy, to happen within `withinMs`. */
export function watchSwitchoverExpected(w: CopyWatch, now: number, withinMs: number, why: string | undefined): CopyWatch {
  return { ...w, expected: { why, until: now + withinMs } };
}

export interface TakeoverRecord {
  event: MovementEvent;
  failover: boolean;
  fromHost: string | undefined;
  reason: string;
  /** From the primary's last answer to the start of the campaign. */
  detect: number;
  /** From the start of the campaign to the win. */
  elect: number;
}

/**
 * This copy won its election at `now`: how the movement is recorded, and the watch after it.
 * A failover moves the service from another host; winning back our own lease is a promotion; a
 * planned move is a switchover even though the standby saw the service go away meanwhile.
 */
export function takeoverRecord(w: CopyWatch, now: number, selfName: string): { record: TakeoverRecord; watch: CopyWatch } {
  const elect = w.campaignStartedAt !== undefined ? Math.round(now - w.campaignStartedAt) : 0;
  if (w.lastResort) {
    return {
      record: { event: 'last-resort', failover: true, fromHost: w.lastResort.fromHost, reason: w.lastResort.reason, detect: 0, elect },
      watch: { ...w, lastResort: undefined, bootstrapping: false, campaignReason: undefined, missingSince: undefined, campaignStartedAt: undefined },
    };
  }
  const detect =
    w.lastServiceOkAt !== undefined && w.campaignStartedAt !== undefined && w.lastServiceOkAt <= w.campaignStartedAt ? Math.round(w.campaignStartedAt - w.lastServiceOkAt) : 0;
  const bootstrap = w.bootstrapping;
  const fromHost = w.lastPrimaryHost !== selfName ? w.lastPrimaryHost : undefined;
  const switchover = !bootstrap && w.campaignReason === 'switchover';
  const missing = w.missingSince !== undefined;
  const failover = !bootstrap && !switchover && missing && fromHost !== undefined;
  const event: MovementEvent = bootstrap ? 'bootstrap' : failover ? 'failover' : switchover ? 'switchover' : 'promoted';
  const reason = bootstrap
    ? 'service bootstrapped'
    : failover
      ? `primary on ${fromHost} missing`
      : switchover
        ? `planned switchover${w.campaignWhy ? `: ${w.campaignWhy}` : ''}`
        : missing
          ? 'primary missing; elected'
          : 'elected';
  return {
    record: { event, failover, fromHost, reason, detect, elect },
    // This copy is now the last primary it knows of: should it lose its lease and win it back with
    // no other primary in between, that is not a failover from the host before it.
    watch: { ...w, lastPrimaryHost: selfName, bootstrapping: false, campaignReason: undefined, campaignWhy: undefined, missingSince: undefined, campaignStartedAt: undefined },
  };
}
