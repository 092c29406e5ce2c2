import { NavigatorError } from '../../shared/errors.ts';
import type { ElectionConfig } from './settings.ts';
import type { ElectionView } from '../../shared/wire.ts';
import type { MemberState } from '../../shared/member-state.ts';

/*
 * Election and leases for one service: pure, deterministic. No I/O, no timers, no Date.now: each
 * function takes a state, the local clock reading `now` and an input, and returns the new state
 * plus decisions for the I/O layer (send these messages, start/stop the service, persist this).
 * Three modules: this one (views, epochs and quorums: what rules R3 and R4 below rest on, and the
 * lease formula of R2), voter-role.ts (the voter: R1) and pilot-role.ts (a copy's pilot: R2,
 * candidacy, renewal, fencing, view changes).
 *
 * Roles. Every depot runs a VOTER per service. Every copy of the service has a PILOT that is a
 * standby, a candidate or the primary. A candidate asks the voters of its view for a vote in
 * term+1; a primary renews every leaseMs/3. Quorum = a majority of the view's voters; with exactly
 * two voters and a witness configured, the witness is a third voter (quorum 2 of 3).
 *
 * SAFETY CLAIM: at no instant of real time do two pilots each believe, by their own clock, that
 * they hold a valid lease for the same service. It rests on four rules:
 *  (R1) Promise. A voter that grants (vote or renewal) to pilot H at its local time r promises
 *       not to grant any OTHER pilot until its own clock reads r + leaseMs, extended by every
 *       later grant to H. A restarted voter keeps silence for leaseMs first (quarantine; it may
 *       have lost an unexpired promise). A voter's promise intervals to different pilots are thus
 *       disjoint in real time. LeaseRelease ends a promise early; only the holder sends it, after
 *       it stopped believing in the lease.
 *  (R2) Belief ⊆ promise. The holder counts a grant from the LOCAL SEND TIME s of the request it
 *       answers (never the receipt time), and believes the lease valid until
 *         k-th latest acknowledged send time + leaseMs − leaseSafetyMarginMs   (k = quorum size).
 *       Clocks run at rates within [1−ρ, 1+ρ] of real time (offsets arbitrary, never compared).
 *       A grant sent at real t_s is received at t_r ≥ t_s, so the voter's promise lasts until at
 *       least t_s + leaseMs/(1+ρ) real; the holder's belief ends by t_s + (leaseMs−margin)/(1−ρ),
 *       and its service stops at most fenceLatencyMs later. Safe iff
 *         (leaseMs − margin)/(1−ρ) + fenceLatencyMs ≤ leaseMs/(1+ρ)
 *       i.e. margin ≥ leaseMs − (1−ρ)·(leaseMs/(1+ρ) − fenceLatencyMs)   (minSafetyMarginMs();
 *       ρ = 1 %, leaseMs 1500, fence 100 ms → 129 ms; the default 300 ms satisfies it). Message
 *       delay, loss and duplication only make a belief shorter (older send times); they never
 *       stretch it. The primary fences itself (stop service, drop address) when its belief ends,
 *       and at once when it sees a higher term.
 *  (R3) Intersection. Any two quorums that back beliefs at the same instant share a voter. With
 *       one fixed view this is majority intersection; with (R1)+(R2) that shared voter's promises
 *       to the two holders would overlap in time, contradicting (R1). So two valid beliefs cannot
 *       coexist.
 *  (R4) View changes keep (R3). Views are numbered epoch=[term, n]; only a primary creates one,
 *       one member at a time, as a JOINT view {voters: new, prev: old}; a candidate holding a joint
 *       view needs a majority of both sets; the change commits only when majorities of both sets
 *       acknowledged the joint epoch; voters refuse requests carrying an older epoch than theirs
 *       (and persist their view, term and promisee before answering). While joint, the primary's
 *       lease rests on a majority of the old set, which every competing quorum contains a majority
 *       of. After a commit, a majority of the old set refuses old-epoch requests, so no quorum of
 *       the old set alone can form.
 *       This is Raft's joint consensus with the view as the only log entry. "Left" removes a
 *       voter in one such change at once; "dead" only when a majority of the view reported it.
 *
 * Terms order primaries (voters grant a term at most once; a reply carrying a higher voted term
 * demotes the primary) and stale messages; the lease safety above does not depend on them.
 * Freshest-sync rule: a voter grants a VOTE only if the candidate's DB sync time is at least the
 * freshest sync it heard (recently) from any other standby copy; among candidates asking at the
 * same time it prefers the fresher, then the lower id (so N ≥ 2 standbys do not split the vote).
 *
 * Duties of the I/O layer: pass `now` from a MONOTONIC clock (a wall-clock step by NTP would
 * break the rate bound ρ; the Clock for this must not be Date.now); persist each 'persist' decision (fsync) before sending the replies that
 * follow it; give every pilot PROCESS its own candidate id (depot peer id + copy + incarnation), so
 * a restarted pilot cannot inherit promises made to its dead predecessor; feed pilotObserveTerm
 * only with terms of copies reporting role primary; call pilotTick at nextWakeAt(); hand the
 * lease expiry to the fence guard (pilot/fence-guard.ts, converted to its clock with the same
 * margin) so fencing happens even if the pilot hangs.
 *
 * THE WITNESS. A witness vote is a promise exactly like a depot's: the witness host runs a small
 * responder around voterReceive() (id WITNESS_ID, its record persisted) and so grants at most one
 * candidate per lease period. A plain gateway that only answers ping cannot be a safe tie breaker: with voters A and
 * B, "B is dead" and "A and B are cut from each other but both reach the gateway" look identical
 * to A and to B, so any rule that lets A keep (or take) the lease in the first case does so in the
 * second while B does the same. Reachability proofs are therefore never counted as votes here;
 * the I/O layer obtains the witness's grant (decision 'probe-witness') from a witness responder.
 * Without a witness, two voters need each other: safe, but no failover when one of them dies.
 *
 * Liveness needs bounded delays: after the primary dies, voters' promises run out within
 * leaseMs·(1+ρ)/(1−ρ) and a candidate's next round (every electionRetryMs, jittered per pilot)
 * wins; competing candidates that split the vote release their grants and back off.
 */

export const WITNESS_ID = 'witness';

// ---------------------------------------------------------------------------------------------
// Views and quorums

export type Epoch = [number, number];

export function compareEpoch(a: Epoch, b: Epoch): number {
  return a[0] - b[0] || a[1] - b[1];
}

export function epochKey(e: Epoch): string {
  return `${e[0]}.${e[1]}`;
}

/** The first view of a service (made at bootstrap from the depots alive then). */
export function initialView(voters: string[]): ElectionView {
  if (voters.length === 0) throw new NavigatorError('BAD_REQUEST', 'a view needs at least one voter');
  return { epoch: [0, 0], voters: [...new Set(voters)].sort() };
}

function effective(voters: string[], witness: boolean): string[] {
  return voters.length === 2 && witness ? [...voters, WITNESS_ID] : voters;
}

export function majority(n: number): number {
  return Math.floor(n / 2) + 1;
}

/** Sets that each need a majority for an election (both while a change is joint). */
export function electionSets(view: ElectionView, witness: boolean): string[][] {
  return view.prev ? [effective(view.voters, witness), effective(view.prev, witness)] : [effective(view.voters, witness)];
}

/** Sets that each need a majority for the primary's lease: the old set while a change is joint
 * (any competitor's quorum includes a majority of it), else the view's set. */
export function leaseSets(view: ElectionView, witness: boolean): string[][] {
  return [effective(view.prev ?? view.voters, witness)];
}

/** Everyone a pilot must talk to: the union of the effective sets. */
export function contactSet(view: ElectionView, witness: boolean): string[] {
  return [...new Set(electionSets(view, witness).flat())].sort();
}

/** Latest time (local to the holder) at which `acks` still back a lease; -Infinity when they don't. */
export function leaseExpiryFrom(acks: Record<string, number>, sets: string[][], cfg: ElectionConfig): number {
  let base = Number.POSITIVE_INFINITY;
  for (const set of sets) {
    const times = set.map((v) => acks[v]).filter((t): t is number => t !== undefined).sort((a, b) => b - a);
    const k = majority(set.length);
    if (times.length < k) return Number.NEGATIVE_INFINITY;
    base = Math.min(base, times[k - 1]!);
  }
  return base + cfg.leaseMs - cfg.leaseSafetyMarginMs;
}

/** What the membership layer tells the primary about one depot. */
export interface MemberObservation {
  peer: string;
  state: MemberState;
  /** Voters that currently judge this depot dead (crash removal needs a majority of the view). */
  deadReportedBy?: string[];
  /** For the voter ranking (voter-group.ts): host name, session length (s), restarts seen lately, holds a copy. */
  host?: string;
  sessionS?: number;
  restarts?: number;
  holdsCopy?: boolean;
  /** Expected remaining time the host stays on, from its past sessions (s); absent: no history. */
  remainingS?: number;
}
