import type { MemberState } from '../shared/member-state.ts';

// Last-resort recovery, the decision (pure: state and time in, decision out). When every copy of
// a service is lost — every depot that held one is dead or gone by the membership layer, for
// longer than the grace, and the last primary's lease has surely run out — the service comes back
// on the best live host that holds its pristine image and a recovery kit (pilot/recovery-kits.ts):
// the one with the freshest database copy, then the best placement rank. The data written between
// that copy and the loss is gone, and the decision says which window that is. With no database
// copy anywhere, the service starts empty only when its policy says so (recovery.startWithoutData).
// Every live kit holder computes the same decision from the same gossip; only the chosen one acts,
// and it must still win an election term through the voter group like any campaign.

/** A copy of the service as the last heartbeat of its depot reported it. */
export interface LostCopy {
  peerId: string;
  host: string;
  /** Membership state of the copy's depot. */
  state: MemberState;
  role: string;
  term: number;
  /** Local time (ms) this depot last heard from the copy's depot. */
  lastHeardAt: number;
  /** Local time (ms) of the depot's last state change (when it was judged dead or left). */
  since: number;
}

/** A live-or-dead depot holding the service's image and recovery kit. */
export interface KitHolder {
  peerId: string;
  host: string;
  alive: boolean;
  /** The depot holds the service's image (its heartbeat lists it). */
  hasImage: boolean;
  /** Time (ms) of the database copy it holds (the dump's start: everything committed before is in it); undefined: none. */
  dbAt: number | undefined;
}

export interface LastResortInput {
  service: string;
  /** Local wall clock (ms), the clock lastHeardAt and since are in. */
  now: number;
  copies: readonly LostCopy[];
  /** Kit holders, best placement rank first. */
  holders: readonly KitHolder[];
  /** The service has a database (spec.database). */
  hasDatabase: boolean;
  /** Policy recovery.startWithoutData of the service. */
  startWithoutData: boolean;
  /** recovery.lostGraceMs: every copy must have been lost this long. */
  graceMs: number;
  /** pilot.leaseMs: a lease granted before the last word heard from a copy ends at most this long after it. */
  leaseMs: number;
}

/** The data lost: written after `from` (the database copy used) and up to `to` (the last word from any copy). */
export interface DataWindow {
  from: number | undefined;
  to: number;
}

export type LastResortDecision =
  | { kind: 'none'; reason: string }
  /** `prepare`: the holder that would recover now; it may boot the copy and load the data meanwhile (nothing served before `recover`). */
  | { kind: 'wait'; reason: string; until?: number; prepare?: { peerId: string; host: string; dbAt: number | undefined } }
  | { kind: 'recover'; peerId: string; host: string; dbAt: number | undefined; withoutData: boolean; lostAt: number; window: DataWindow; fromHost: string | undefined; term: number }
  | { kind: 'refuse'; peerId: string; host: string; lostAt: number; reason: string };

const GONE: ReadonlySet<MemberState> = new Set(['dead', 'left']);

export function decideLastResort(input: LastResortInput): LastResortDecision {
  const { copies, now } = input;
  // Fail closed: a service no copy of which was ever heard of here is not ours to start.
  if (copies.length === 0) return { kind: 'none', reason: 'no copy of the service known' };
  const alive = copies.filter((c) => c.state === 'alive');
  if (alive.length > 0) return { kind: 'none', reason: `a copy runs (${alive.map((c) => c.host).join(', ')})` };
  const lostAt = Math.max(...copies.map((c) => c.lastHeardAt));
  const choice = choose(input, lostAt);
  const prepare = choice.kind === 'recover' ? { peerId: choice.peerId, host: choice.host, dbAt: choice.dbAt } : undefined;
  // No copy alive, but some only suspect: nothing starts, the likely recoverer may get ready.
  const suspect = copies.filter((c) => !GONE.has(c.state));
  if (suspect.length > 0) return { kind: 'wait', reason: `no copy alive; ${suspect.map((c) => `${c.host} ${c.state}`).join(', ')}`, ...(prepare ? { prepare } : {}) };
  const goneSince = Math.max(...copies.map((c) => c.since));
  // The last primary (any copy could have become one just before its last heartbeat) holds no
  // lease a lease length after the last word heard from it; the grace runs from the last verdict.
  const until = Math.max(goneSince + input.graceMs, lostAt + input.leaseMs);
  if (now < until) return { kind: 'wait', reason: 'every copy lost: waiting out the grace and the last lease', until, ...(prepare ? { prepare } : {}) };
  return choice;
}

/** Who would recover if every copy were lost for good now. */
function choose(input: LastResortInput, lostAt: number): Exclude<LastResortDecision, { kind: 'none' }> {
  const { copies } = input;
  const last = [...copies].sort((a, b) => b.term - a.term || Number(b.role === 'primary') - Number(a.role === 'primary') || b.lastHeardAt - a.lastHeardAt || (a.peerId < b.peerId ? -1 : a.peerId > b.peerId ? 1 : 0))[0]!;
  const fromHost = last.host;
  const term = Math.max(...copies.map((c) => c.term));
  const holders = input.holders.filter((h) => h.alive && h.hasImage && !copies.some((c) => c.peerId === h.peerId));
  if (holders.length === 0) return { kind: 'wait', reason: 'every copy lost and no live depot holds the image and a recovery kit' };
  if (!input.hasDatabase) {
    const h = holders[0]!;
    return { kind: 'recover', peerId: h.peerId, host: h.host, dbAt: undefined, withoutData: false, lostAt, window: { from: undefined, to: lostAt }, fromHost, term };
  }
  // The freshest database copy; among equals the best placement rank (the holders' order).
  let best: KitHolder | undefined;
  for (const h of holders) if (h.dbAt !== undefined && (best === undefined || h.dbAt > best.dbAt!)) best = h;
  if (best) return { kind: 'recover', peerId: best.peerId, host: best.host, dbAt: best.dbAt, withoutData: false, lostAt, window: { from: best.dbAt, to: lostAt }, fromHost, term };
  const first = holders[0]!;
  if (input.startWithoutData) {
    return { kind: 'recover', peerId: first.peerId, host: first.host, dbAt: undefined, withoutData: true, lostAt, window: { from: undefined, to: lostAt }, fromHost, term };
  }
  return {
    kind: 'refuse',
    peerId: first.peerId,
    host: first.host,
    lostAt,
    reason: `every copy of ${input.service} is lost and no live depot holds a copy of its database; not starting it empty (policy services.${input.service}.recovery.startWithoutData is false)`,
  };
}

/** The window in words, for the movement record, the alert and the log. */
export function describeWindow(w: DataWindow, withoutData: boolean): string {
  const iso = (t: number) => new Date(t).toISOString();
  if (w.from === undefined) return withoutData ? `started WITHOUT its data: everything written up to ${iso(w.to)} is lost` : 'no database';
  const s = Math.max(0, (w.to - w.from) / 1000);
  return `data written from ${iso(w.from)} to ${iso(w.to)} lost (${s.toFixed(1)} s; database copy of ${iso(w.from)})`;
}

/** Which kit holders a primary keeps a recovery kit on: the pre-staging targets that hold the image (ship/prestage-plan.ts). */
export function kitTargets(staged: readonly string[], copyHosts: ReadonlySet<string>, self: string): string[] {
  return staged.filter((h) => h !== self && !copyHosts.has(h));
}
