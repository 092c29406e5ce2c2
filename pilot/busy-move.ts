import type { MovementRecord } from '../shared/movement.ts';
import type { BusySignal } from '../shared/wire.ts';
import { quietWindowAt } from './policy.ts';

// Leave a busy workstation, pure: whether the primary of a service moves off its host because
// the host's user is working on it, and where to. It moves when the host has been busy (config
// busy.cpuPct or an active local session) for busy.sustainMs without a break, outside the
// policy's quiet hours, no sooner than busy.minIntervalMs after the service's last busy move
// (hysteresis, whichever depot made it), and only to a standby that is alive, running, in sync
// and whose host reports that it is not busy (a host that cannot say is not a target). The move
// itself is the planned switchover (zero loss: writes stop, the standby catches up, then it
// takes over); its movement record carries `reason`, with the figures.

/** Every busy move's record says this (after "planned switchover: "): how the journal finds the last one. */
export const BUSY_REASON = 'host busy';

export interface BusyMoveSettings {
  enabled: boolean;
  cpuPct: number;
  sustainMs: number;
  minIntervalMs: number;
}

export interface BusyMoveCandidate {
  host: string;
  peerId: string;
  /** Its depot is alive and its copy running. */
  up: boolean;
  /** Its database follows the primary's (replicating, or a recent good sync): the hand-over can catch it up. */
  inSync: boolean;
  /** Its host's busy signal; undefined: its depot does not measure one. */
  busy: BusySignal | undefined;
}

export interface BusyMoveInput {
  service: string;
  /** The primary's host (this depot's). */
  host: string;
  /** The busy signal of the primary's host. */
  own: BusySignal | undefined;
  /** The service's standbys, best first (the switchover's freshness order). */
  standbys: BusyMoveCandidate[];
  /** When the service last moved for a busy host (ms since the epoch), if ever. */
  lastBusyMoveAt: number | undefined;
  quietHours: string[];
  /** Minutes east of UTC for the quiet hours (default: this host's zone). */
  utcOffsetMin?: number;
  now: number;
  settings: BusyMoveSettings;
}

export type BusyMoveDecision =
  | { move: true; to: string; peerId: string; reason: string }
  | { move: false; why: string; /** Earliest time worth asking again, when waiting is the only reason. */ retryAt?: number };

export function decideBusyMove(i: BusyMoveInput): BusyMoveDecision {
  const s = i.settings;
  if (!s.enabled) return { move: false, why: 'busy moves are disabled (busy.enabled)' };
  const own = i.own;
  if (!own) return { move: false, why: `${i.host} does not measure its busy signal` };
  if (!own.busy || own.since === undefined) return { move: false, why: `${i.host} is not busy (user CPU ${own.cpuPct} %)` };
  const busyMs = Math.max(0, i.now - own.since);
  if (busyMs < s.sustainMs) return { move: false, why: `${i.host} busy for ${secs(busyMs)} s of ${secs(s.sustainMs)} s`, retryAt: own.since + s.sustainMs };
  const quiet = quietWindowAt({ quietHours: i.quietHours }, i.now, i.utcOffsetMin);
  if (quiet) return { move: false, why: `quiet hours "${quiet.text}": no planned moves` };
  if (i.lastBusyMoveAt !== undefined && i.now - i.lastBusyMoveAt < s.minIntervalMs) {
    return { move: false, why: `the last busy move of ${i.service} was ${secs(i.now - i.lastBusyMoveAt)} s ago (busy.minIntervalMs ${secs(s.minIntervalMs)} s)`, retryAt: i.lastBusyMoveAt + s.minIntervalMs };
  }
  const refused: string[] = [];
  for (const c of i.standbys) {
    if (c.host === i.host) continue;
    const not = !c.up ? 'not running' : !c.inSync ? 'not in sync' : !c.busy ? 'no busy signal' : c.busy.busy ? `busy itself (user CPU ${c.busy.cpuPct} %${c.busy.sessions ? `, ${c.busy.sessions} local sessions` : ''})` : undefined;
    if (not) {
      refused.push(`${c.host}: ${not}`);
      continue;
    }
    return { move: true, to: c.host, peerId: c.peerId, reason: busyReason(i.host, own, busyMs, s.cpuPct, c.host, c.busy!) };
  }
  return { move: false, why: refused.length ? `no standby to move to (${refused.join('; ')})` : `${i.service} has no standby to move to` };
}

/** The movement's reason, with the figures: "host busy: w1 user CPU 87 % (threshold 50 %) for 125 s; to w2 (user CPU 3 %)". */
export function busyReason(host: string, own: BusySignal, busyMs: number, thresholdPct: number, to: string, target: BusySignal): string {
  const what = [...(own.cpuPct >= thresholdPct ? [`user CPU ${own.cpuPct} % (threshold ${thresholdPct} %)`] : []), ...(own.sessions > 0 ? [`${own.sessions} local session${own.sessions === 1 ? '' : 's'}`] : [])];
  return `${BUSY_REASON}: ${host} ${what.join(', ') || 'busy'} for ${secs(busyMs)} s; to ${to} (user CPU ${target.cpuPct} %)`;
}

/** When `service` last moved for a busy host, from the movement records held (its switchover records naming BUSY_REASON). */
export function lastBusyMoveAt(records: Iterable<MovementRecord>, service: string): number | undefined {
  let last: number | undefined;
  for (const r of records) {
    if (r.service === service && r.event === 'switchover' && r.role === 'primary' && r.reason.includes(`${BUSY_REASON}:`) && (last === undefined || r.time > last)) last = r.time;
  }
  return last;
}

function secs(ms: number): number {
  return Math.round(ms / 1000);
}
