// A host's sessions as this depot saw them: when it was up, and how each stretch ended. Pure:
// every function takes the records and the time and returns new records, so the rules are
// tested with a fake clock (test/unit/session-history.test.ts); session-log.ts keeps them on disk.
//
// A session is one stretch of the depot running on its host. It begins when the depot starts,
// and ends at a clean stop (`clean`) or, when the depot never said goodbye, at its last sign of
// life (`lost`: a power cut, a crash, a switch that cut the room). A depot that starts again
// within `rejoinMs` of the last sign of life on the same host boot continues the same session: a
// restart or a package upgrade is not the end of a workstation's day. A new host boot always
// begins a new session.

export type SessionEnd = 'clean' | 'lost';

export interface SessionRecord {
  /** Host boot time (ms) the session ran under; another boot is another session. */
  bootTime: number;
  startMs: number;
  /** Last sign of life: refreshed while the depot runs (sessions.markMs). */
  lastSeenMs: number;
  endMs?: number;
  end?: SessionEnd;
}

export interface SessionRules {
  /** A start this soon after the last sign of life, on the same boot, continues the session. */
  rejoinMs: number;
  /** Records kept (oldest dropped first). */
  keep: number;
}

/** The depot starts: close what the last run left open, then open or continue a session. */
export function sessionStarted(records: readonly SessionRecord[], at: { now: number; bootTime: number }, rules: SessionRules): SessionRecord[] {
  const out = records.map((r) => ({ ...r }));
  const last = out.at(-1);
  if (last && last.bootTime === at.bootTime && at.now - last.lastSeenMs <= rules.rejoinMs && at.now >= last.startMs) {
    delete last.endMs;
    delete last.end;
    last.lastSeenMs = at.now;
    return out.slice(-rules.keep);
  }
  if (last && last.endMs === undefined) {
    last.endMs = last.lastSeenMs;
    last.end = 'lost';
  }
  out.push({ bootTime: at.bootTime, startMs: at.now, lastSeenMs: at.now });
  return out.slice(-rules.keep);
}

/** The depot is alive at `now` (periodic mark). */
export function sessionAlive(records: readonly SessionRecord[], now: number): SessionRecord[] {
  const out = records.map((r) => ({ ...r }));
  const last = out.at(-1);
  if (last && last.endMs === undefined && now > last.lastSeenMs) last.lastSeenMs = now;
  return out;
}

/** The depot stops cleanly at `now`. */
export function sessionStopped(records: readonly SessionRecord[], now: number): SessionRecord[] {
  const out = records.map((r) => ({ ...r }));
  const last = out.at(-1);
  if (last && last.endMs === undefined) {
    last.lastSeenMs = Math.max(last.lastSeenMs, now);
    last.endMs = last.lastSeenMs;
    last.end = 'clean';
  }
  return out;
}

/** A past session in the compact form a heartbeat carries: [start minute since epoch, length in minutes]. */
export type SessionSummary = [number, number];

const MINUTE = 60_000;

/**
 * What other depots need for placement and voter ranking: the ended sessions of the last
 * `maxAgeMs`, newest last, at most `max` of them, to the minute.
 */
export function summarizeSessions(records: readonly SessionRecord[], now: number, limits: { max: number; maxAgeMs: number }): SessionSummary[] {
  return records
    .filter((r) => r.endMs !== undefined && r.endMs > r.startMs && now - r.endMs <= limits.maxAgeMs)
    .slice(-limits.max)
    .map((r) => {
      const startMin = Math.floor(r.startMs / MINUTE);
      return [startMin, Math.max(1, Math.ceil(r.endMs! / MINUTE) - startMin)];
    });
}

/** A summary back into the start/end times placement ranks by. */
export function sessionsFromSummary(summary: readonly SessionSummary[]): Array<{ startMs: number; endMs: number }> {
  return summary.map(([startMin, minutes]) => ({ startMs: startMin * MINUTE, endMs: (startMin + minutes) * MINUTE }));
}
