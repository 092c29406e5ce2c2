import { NavigatorError } from '../../shared/errors.ts';
import { renewIntervalMs, type ElectionConfig } from './settings.ts';
import type { ElectionView, LeaseAck, LeaseRelease, LeaseRenew, VoteReply, VoteRequest } from '../../shared/wire.ts';

/*
 * Election and leases for one service: pure, deterministic. No I/O, no timers, no Date.now: each
 * function takes a state, the local clock reading `now` and an input, and returns the new state
 * plus decisions for the I/O layer (send these messages, start/stop the service, persist this).
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

function epochKey(e: Epoch): string {
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
function leaseSets(view: ElectionView, witness: boolean): string[][] {
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

export type MemberState = 'alive' | 'suspect' | 'dead' | 'left';

/** What the membership layer tells the primary about one depot. */
export interface MemberObservation {
  peer: string;
  state: MemberState;
  /** Voters that currently judge this depot dead (crash removal needs a majority of the view). */
  deadReportedBy?: string[];
}

/**
 * The voter set the view should move to next, one member at a time (or null: nothing to do).
 * Order: a cleanly left voter (removed at once), then a voter a majority reported dead, then an
 * alive depot that is not a voter yet; lowest peer id first, so every primary decides alike.
 */
export function nextAgreedView(voters: string[], observations: MemberObservation[]): string[] | null {
  const current = new Set(voters);
  const byPeer = [...observations].sort((a, b) => (a.peer < b.peer ? -1 : a.peer > b.peer ? 1 : 0));
  if (current.size > 1) {
    const left = byPeer.find((o) => o.state === 'left' && current.has(o.peer));
    if (left) return voters.filter((v) => v !== left.peer);
    const need = majority(current.size);
    const dead = byPeer.find((o) => o.state === 'dead' && current.has(o.peer) && new Set((o.deadReportedBy ?? []).filter((r) => current.has(r))).size >= need);
    if (dead) return voters.filter((v) => v !== dead.peer);
  }
  const join = byPeer.find((o) => o.state === 'alive' && !current.has(o.peer));
  if (join) return [...voters, join.peer].sort();
  return null;
}

// ---------------------------------------------------------------------------------------------
// Voter (runs on every depot, and on the witness)

/** What a voter must keep on disk (fsync before sending the replies of the same step). */
export interface VoterDurable {
  votedTerm: number;
  promisedTo: string | null;
  view: ElectionView | null;
}

export interface VoterState extends VoterDurable {
  readonly id: string;
  readonly service: string;
  /** Local time until which no pilot but `promisedTo` gets a grant. */
  promiseUntil: number;
  /** Latest DB sync time heard per standby copy, with when it was heard (local). */
  syncs: Record<string, { syncTime: number; seenAt: number }>;
  /** Candidates that asked for a vote lately (local time of the request), for the tie break. */
  asked: Record<string, { syncTime: number; at: number }>;
}

export type VoterDecision = { kind: 'persist'; durable: VoterDurable } | { kind: 'reply'; message: VoteReply | LeaseAck };

/** A voter starting (or restarting): silent for leaseMs, since it may have forgotten a promise. */
export function createVoter(opts: { id: string; service: string; now: number; cfg: ElectionConfig; durable?: VoterDurable | undefined }): VoterState {
  return {
    id: opts.id,
    service: opts.service,
    votedTerm: opts.durable?.votedTerm ?? 0,
    promisedTo: opts.durable?.promisedTo ?? null,
    view: opts.durable?.view ?? null,
    promiseUntil: opts.now + opts.cfg.leaseMs,
    syncs: {},
    asked: {},
  };
}

/** A standby copy's last good DB sync, from its depot's heartbeat (primaries report none). */
export function voterObserveSync(state: VoterState, copy: string, syncTime: number, now: number): VoterState {
  return { ...state, syncs: { ...state.syncs, [copy]: { syncTime, seenAt: now } } };
}

/** Forget a copy whose depot left or died, so its sync time no longer blocks others. */
export function voterForgetCopy(state: VoterState, copy: string): VoterState {
  const { [copy]: _gone, ...syncs } = state.syncs;
  return { ...state, syncs };
}

export function freshestKnownSync(state: VoterState, except: string, now: number, cfg: ElectionConfig): number {
  let best = Number.NEGATIVE_INFINITY;
  for (const [copy, s] of Object.entries(state.syncs)) {
    if (copy === except || now - s.seenAt > cfg.syncInfoTtlMs) continue;
    best = Math.max(best, s.syncTime);
  }
  return best;
}

type RejectReason = NonNullable<VoteReply['reason']>;

/** How long a candidate's request counts for the tie break between candidates. */
function askWindowMs(cfg: ElectionConfig): number {
  return 4 * cfg.electionRetryMs;
}

/**
 * Tie break among candidates that campaign at the same time (N ≥ 2 standbys see the primary die
 * together): a new vote goes only to the best candidate that asked lately, by fresher sync, then
 * lower id, so every voter that heard the same candidates chooses alike and the vote does not
 * split. A candidate that stops asking stops counting after askWindowMs. Liveness only.
 */
function preferOther(state: VoterState, msg: VoteRequest, now: number, cfg: ElectionConfig): boolean {
  for (const [id, a] of Object.entries(state.asked)) {
    if (id === msg.candidate || now - a.at > askWindowMs(cfg)) continue;
    if (a.syncTime > msg.syncTime || (a.syncTime === msg.syncTime && id < msg.candidate)) return true;
  }
  return false;
}

function recordAsk(asked: VoterState['asked'], msg: VoteRequest, now: number, cfg: ElectionConfig): VoterState['asked'] {
  const out: VoterState['asked'] = {};
  for (const [id, a] of Object.entries(asked)) if (now - a.at <= askWindowMs(cfg)) out[id] = a;
  out[msg.candidate] = { syncTime: msg.syncTime, at: now };
  return out;
}

/** Handle one request addressed to this voter. Messages for another service are ignored. */
export function voterReceive(
  state: VoterState,
  msg: VoteRequest | LeaseRenew | LeaseRelease,
  now: number,
  cfg: ElectionConfig,
): { state: VoterState; decisions: VoterDecision[] } {
  if (msg.service !== state.service) return { state, decisions: [] };
  if (msg.type === 'lease-release') {
    if (state.promisedTo === msg.holder && state.votedTerm === msg.term && now < state.promiseUntil) {
      return { state: { ...state, promiseUntil: now }, decisions: [] };
    }
    return { state, decisions: [] };
  }
  const pilot = msg.type === 'vote-request' ? msg.candidate : msg.holder;
  const promiseFree = now >= state.promiseUntil || state.promisedTo === pilot;
  let reason: RejectReason | undefined;
  if (state.view && compareEpoch(msg.view.epoch as Epoch, state.view.epoch as Epoch) < 0) reason = 'stale-view';
  else if (msg.term < state.votedTerm) reason = 'stale-term';
  else if (msg.term === state.votedTerm && state.promisedTo !== pilot) reason = 'voted-other';
  else if (msg.term > state.votedTerm && !promiseFree) reason = 'promised';
  else if (msg.type === 'vote-request' && msg.term > state.votedTerm && msg.syncTime < freshestKnownSync(state, pilot, now, cfg)) reason = 'stale-sync';
  else if (msg.type === 'vote-request' && msg.term > state.votedTerm && state.promisedTo !== pilot && preferOther(state, msg, now, cfg)) reason = 'prefer-other';

  let next = state;
  if (msg.type === 'vote-request') next = { ...next, asked: recordAsk(state.asked, msg, now, cfg) };
  const decisions: VoterDecision[] = [];
  if (reason === undefined) {
    const view = !state.view || compareEpoch(msg.view.epoch as Epoch, state.view.epoch as Epoch) > 0 ? msg.view : state.view;
    next = { ...next, votedTerm: msg.term, promisedTo: pilot, promiseUntil: now + cfg.leaseMs, view };
    if (next.votedTerm !== state.votedTerm || next.promisedTo !== state.promisedTo || next.view !== state.view) {
      decisions.push({ kind: 'persist', durable: { votedTerm: next.votedTerm, promisedTo: next.promisedTo, view: next.view } });
    }
  }
  const common = {
    v: 1 as const,
    service: state.service,
    term: msg.term,
    voter: state.id,
    seq: msg.seq,
    granted: reason === undefined,
    ...(reason ? { reason } : {}),
    votedTerm: next.votedTerm,
    view: next.view,
  };
  const message: VoteReply | LeaseAck =
    msg.type === 'vote-request' ? { type: 'vote-reply', candidate: msg.candidate, ...common } : { type: 'lease-ack', holder: msg.holder, ...common };
  decisions.push({ kind: 'reply', message });
  return { state: next, decisions };
}

// ---------------------------------------------------------------------------------------------
// Pilot (one per copy of the service)

export type PilotRole = 'standby' | 'candidate' | 'primary';
export type FenceReason = 'lease-expired' | 'higher-term' | 'service-failed' | 'resigned';

export type PilotDecision =
  | { kind: 'send'; to: string; message: VoteRequest | LeaseRenew | LeaseRelease }
  /** Same as send, to the witness responder (configured address). */
  | { kind: 'probe-witness'; message: VoteRequest | LeaseRenew | LeaseRelease }
  /** Start serving: take the address, start the service; feed leaseExpiry to the fence guard. */
  | { kind: 'become-primary'; term: number; leaseExpiry: number }
  | { kind: 'lease-extended'; term: number; leaseExpiry: number }
  /** Stop serving now: drop the address, stop the service. */
  | { kind: 'fence'; term: number; reason: FenceReason }
  | { kind: 'restart-service'; term: number }
  | { kind: 'view-changed'; view: ElectionView; committed: boolean };

export interface PilotState {
  readonly id: string;
  readonly service: string;
  role: PilotRole;
  /** Highest term known (own candidacy, won elections seen, voters' replies). */
  term: number;
  view: ElectionView;
  /** This copy's last good DB sync (sent in vote requests). */
  syncTime: number;
  /** Term of the current candidacy or lease. */
  electionTerm: number;
  seq: number;
  /** Local send time per round of the current candidacy/lease (pruned). */
  sent: Record<number, number>;
  /** Per voter: latest send time of a request it granted in electionTerm. */
  acks: Record<string, number>;
  /** Per voter: epoch key of the view it reported in its last grant (primary). */
  viewAcks: Record<string, string>;
  /** The current (non-joint) view is known to a majority; a new change may start. */
  viewSettled: boolean;
  leaseExpiry: number;
  nextRenewAt: number;
  roundDeadline: number;
  campaignSince: number;
  contentionAt: number;
  /** A round in the current candidacy was refused by someone. */
  refused: boolean;
  /** ...by a voter that voted for another candidate in the same term: a split vote. */
  split: boolean;
  serviceDownSince: number | null;
  restartedAt: number | null;
  healthySince: number | null;
}

export interface PilotStep {
  state: PilotState;
  decisions: PilotDecision[];
}

export function createPilot(opts: { id: string; service: string; view: ElectionView; syncTime?: number; term?: number }): PilotState {
  return {
    id: opts.id,
    service: opts.service,
    role: 'standby',
    term: opts.term ?? 0,
    view: opts.view,
    syncTime: opts.syncTime ?? 0,
    electionTerm: 0,
    seq: 0,
    sent: {},
    acks: {},
    viewAcks: {},
    viewSettled: false,
    leaseExpiry: Number.NEGATIVE_INFINITY,
    nextRenewAt: Number.POSITIVE_INFINITY,
    roundDeadline: Number.POSITIVE_INFINITY,
    campaignSince: 0,
    contentionAt: Number.POSITIVE_INFINITY,
    refused: false,
    split: false,
    serviceDownSince: null,
    restartedAt: null,
    healthySince: null,
  };
}

/** Does this pilot hold a valid lease at its local time `now`? */
export function leaseValid(state: PilotState, now: number): boolean {
  return state.role === 'primary' && now < state.leaseExpiry;
}

/** When the I/O layer must call pilotTick next (local time). */
export function nextWakeAt(state: PilotState): number {
  if (state.role === 'primary') return Math.min(state.nextRenewAt, state.leaseExpiry);
  if (state.role === 'candidate') return state.roundDeadline;
  return Number.POSITIVE_INFINITY;
}

/** Deterministic value in [0, 1) from a string: per-pilot jitter without a random source. */
function jitter(s: string): number {
  let h = 2166136261;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 16777619);
  }
  return ((h >>> 0) % 10_000) / 10_000;
}

function outbound(to: string, message: VoteRequest | LeaseRenew | LeaseRelease): PilotDecision {
  return to === WITNESS_ID ? { kind: 'probe-witness', message } : { kind: 'send', to, message };
}

function broadcast(state: PilotState, cfg: ElectionConfig, message: VoteRequest | LeaseRenew | LeaseRelease, only?: string[]): PilotDecision[] {
  return (only ?? contactSet(state.view, cfg.witness)).map((to) => outbound(to, message));
}

function pruneSent(sent: Record<number, number>, now: number, cfg: ElectionConfig): Record<number, number> {
  const out: Record<number, number> = {};
  for (const [k, t] of Object.entries(sent)) if (now - t < cfg.leaseMs) out[Number(k)] = t;
  return out;
}

function voteRound(state: PilotState, now: number, cfg: ElectionConfig): PilotStep {
  const seq = state.seq + 1;
  const next: PilotState = {
    ...state,
    seq,
    sent: { ...pruneSent(state.sent, now, cfg), [seq]: now },
    roundDeadline: now + cfg.electionRetryMs * (1 + jitter(`${state.id}/${state.electionTerm}/${seq}`)),
    refused: false,
    split: false,
  };
  const request: VoteRequest = {
    type: 'vote-request',
    v: 1,
    service: state.service,
    term: state.electionTerm,
    candidate: state.id,
    syncTime: state.syncTime,
    seq,
    view: state.view,
  };
  return { state: next, decisions: broadcast(next, cfg, request) };
}

/** Stand for election now (bootstrap, the primary is missing, a planned switchover). */
export function pilotCampaign(state: PilotState, now: number, cfg: ElectionConfig): PilotStep {
  if (state.role !== 'standby') return { state, decisions: [] };
  const term = state.term + 1;
  const next: PilotState = {
    ...state,
    role: 'candidate',
    term,
    electionTerm: term,
    sent: {},
    acks: {},
    viewAcks: {},
    campaignSince: now,
    contentionAt: now + (cfg.leaseMs * (1 + cfg.maxClockDriftRate)) / (1 - cfg.maxClockDriftRate) + 2 * cfg.electionRetryMs,
  };
  return voteRound(next, now, cfg);
}

function release(state: PilotState, cfg: ElectionConfig, to: string[]): PilotDecision[] {
  const message: LeaseRelease = { type: 'lease-release', v: 1, service: state.service, term: state.electionTerm, holder: state.id };
  return broadcast(state, cfg, message, to);
}

function toStandby(state: PilotState): PilotState {
  return {
    ...state,
    role: 'standby',
    acks: {},
    sent: {},
    viewAcks: {},
    leaseExpiry: Number.NEGATIVE_INFINITY,
    nextRenewAt: Number.POSITIVE_INFINITY,
    roundDeadline: Number.POSITIVE_INFINITY,
    contentionAt: Number.POSITIVE_INFINITY,
    restartedAt: null,
  };
}

function fence(state: PilotState, reason: FenceReason, cfg: ElectionConfig, releasePromises: boolean): PilotStep {
  const decisions: PilotDecision[] = [{ kind: 'fence', term: state.electionTerm, reason }];
  if (releasePromises) decisions.push(...release(state, cfg, Object.keys(state.acks)));
  return { state: toStandby(state), decisions };
}

/** A candidate goes back to standby (the primary is back): gives its grants back. */
function standDown(state: PilotState, cfg: ElectionConfig): PilotStep {
  return { state: toStandby(state), decisions: release(state, cfg, Object.keys(state.acks)) };
}

/** Planned hand-over (switchover, drain, failed service): stop serving and free the voters. */
export function pilotResign(state: PilotState, now: number, cfg: ElectionConfig, reason: FenceReason = 'resigned'): PilotStep {
  void now;
  if (state.role === 'primary') return fence(state, reason, cfg, true);
  if (state.role === 'candidate') return standDown(state, cfg);
  return { state, decisions: [] };
}

function renewRound(state: PilotState, now: number, cfg: ElectionConfig): PilotStep {
  const seq = state.seq + 1;
  const next: PilotState = { ...state, seq, sent: { ...pruneSent(state.sent, now, cfg), [seq]: now }, nextRenewAt: now + renewIntervalMs(cfg) };
  const renew: LeaseRenew = { type: 'lease-renew', v: 1, service: state.service, term: state.electionTerm, holder: state.id, seq, view: state.view };
  return { state: next, decisions: broadcast(next, cfg, renew) };
}

/** Timers: renew, fence on expiry, next election round. Call at nextWakeAt() (or more often). */
export function pilotTick(state: PilotState, now: number, cfg: ElectionConfig): PilotStep {
  if (state.role === 'primary') {
    if (now >= state.leaseExpiry) return fence(state, 'lease-expired', cfg, false);
    if (now >= state.nextRenewAt) return renewRound(state, now, cfg);
    return { state, decisions: [] };
  }
  if (state.role === 'candidate' && now >= state.roundDeadline) {
    let s = state;
    const decisions: PilotDecision[] = [];
    if (s.term > s.electionTerm) {
      // Someone voted in a higher term: move past it; grants of the old term are void.
      s = { ...s, term: s.term + 1, electionTerm: s.term + 1, acks: {}, sent: {} };
    } else if (s.split || (s.refused && now >= s.contentionAt)) {
      // A voter chose another candidate in our term, or we are still refused long after any old
      // primary's promises ran out: another candidate holds the rest. Give our grants back and
      // wait a pilot-specific while, so that one of us can collect them all.
      decisions.push(...release(s, cfg, Object.keys(s.acks)));
      const backoff = cfg.electionRetryMs * (1 + 4 * jitter(`${s.id}/backoff/${s.seq}`));
      s = { ...s, acks: {}, sent: {}, term: s.term + 1, electionTerm: s.term + 1, contentionAt: now + backoff + 3 * cfg.electionRetryMs, roundDeadline: now + backoff, refused: false, split: false };
      return { state: s, decisions };
    }
    const round = voteRound(s, now, cfg);
    return { state: round.state, decisions: [...decisions, ...round.decisions] };
  }
  return { state, decisions: [] };
}

function learnView(state: PilotState, view: ElectionView | null): PilotState {
  if (!view || compareEpoch(view.epoch as Epoch, state.view.epoch as Epoch) <= 0) return state;
  return { ...state, view };
}

/** A reply from a voter (or the witness). */
export function pilotReceive(state: PilotState, msg: VoteReply | LeaseAck, now: number, cfg: ElectionConfig): PilotStep {
  if (msg.service !== state.service) return { state, decisions: [] };
  if (msg.type === 'vote-reply') {
    if (msg.candidate !== state.id) return { state, decisions: [] };
    let s = state;
    if (msg.votedTerm > s.term) s = { ...s, term: msg.votedTerm };
    if (s.role !== 'candidate' || msg.term !== s.electionTerm) return { state: learnView(s, msg.view), decisions: [] };
    if (!msg.granted) return { state: { ...learnView(s, msg.view), refused: true, split: s.split || msg.reason === 'voted-other' }, decisions: [] };
    const sentAt = s.sent[msg.seq];
    if (sentAt === undefined) return { state: s, decisions: [] };
    s = { ...s, acks: { ...s.acks, [msg.voter]: Math.max(s.acks[msg.voter] ?? Number.NEGATIVE_INFINITY, sentAt) } };
    const expiry = leaseExpiryFrom(s.acks, electionSets(s.view, cfg.witness), cfg);
    if (now < expiry) {
      const won: PilotState = {
        ...s,
        role: 'primary',
        leaseExpiry: expiry,
        nextRenewAt: now,
        roundDeadline: Number.POSITIVE_INFINITY,
        contentionAt: Number.POSITIVE_INFINITY,
        serviceDownSince: null,
        restartedAt: null,
        healthySince: now,
        viewSettled: false,
        viewAcks: {},
      };
      const renew = renewRound(won, now, cfg);
      return { state: renew.state, decisions: [{ kind: 'become-primary', term: won.electionTerm, leaseExpiry: expiry }, ...renew.decisions] };
    }
    return { state: s, decisions: [] };
  }
  // lease-ack
  if (msg.holder !== state.id || state.role !== 'primary' || msg.term !== state.electionTerm) {
    return { state: msg.votedTerm > state.term ? { ...state, term: msg.votedTerm } : state, decisions: [] };
  }
  if (!msg.granted) {
    const newer = msg.view !== null && compareEpoch(msg.view.epoch as Epoch, state.view.epoch as Epoch) > 0;
    if (msg.votedTerm > state.electionTerm || newer) {
      const s = learnView({ ...state, term: Math.max(state.term, msg.votedTerm) }, msg.view);
      return fence(s, 'higher-term', cfg, false);
    }
    return { state, decisions: [] };
  }
  const sentAt = state.sent[msg.seq];
  if (sentAt === undefined) return { state, decisions: [] };
  let s: PilotState = {
    ...state,
    acks: { ...state.acks, [msg.voter]: Math.max(state.acks[msg.voter] ?? Number.NEGATIVE_INFINITY, sentAt) },
    viewAcks: msg.view ? { ...state.viewAcks, [msg.voter]: epochKey(msg.view.epoch as Epoch) } : state.viewAcks,
  };
  const decisions: PilotDecision[] = [];
  // Commit a joint view once majorities of both sets run it; settle a plain view once a majority does.
  const key = epochKey(s.view.epoch as Epoch);
  const sets = electionSets(s.view, cfg.witness);
  const known = sets.every((set) => set.filter((v) => s.viewAcks[v] === key).length >= majority(set.length));
  if (known && s.view.prev) {
    const committed: ElectionView = { epoch: [s.electionTerm, (s.view.epoch[1] ?? 0) + 1], voters: s.view.voters };
    s = { ...s, view: committed, viewSettled: false };
    decisions.push({ kind: 'view-changed', view: committed, committed: true });
  } else if (known && !s.viewSettled) {
    s = { ...s, viewSettled: true };
  }
  const expiry = leaseExpiryFrom(s.acks, leaseSets(s.view, cfg.witness), cfg);
  if (expiry > s.leaseExpiry) {
    s = { ...s, leaseExpiry: expiry };
    decisions.push({ kind: 'lease-extended', term: s.electionTerm, leaseExpiry: expiry });
  }
  return { state: s, decisions };
}

/**
 * Health probes. For the primary: its own service. For a standby: the primary's service
 * (serviceOk) and the primary's host (hostOk: its depot answers AND still reports a copy in role
 * primary; a host that answers but whose copy fenced itself counts as missing).
 */
export function pilotProbe(state: PilotState, probe: { serviceOk: boolean; hostOk: boolean }, now: number, cfg: ElectionConfig): PilotStep {
  if (state.role === 'primary') {
    if (probe.serviceOk) {
      const healthySince = state.healthySince ?? now;
      const restartedAt = state.restartedAt !== null && now - healthySince >= cfg.restartResetMs ? null : state.restartedAt;
      return { state: { ...state, healthySince, restartedAt, serviceDownSince: null }, decisions: [] };
    }
    const s = { ...state, healthySince: null, serviceDownSince: state.serviceDownSince ?? now };
    if (state.restartedAt === null && cfg.restartInPlace) {
      return { state: { ...s, restartedAt: now }, decisions: [{ kind: 'restart-service', term: state.electionTerm }] };
    }
    if (state.restartedAt !== null && now - state.restartedAt < cfg.restartGraceMs) return { state: s, decisions: [] };
    return fence(s, 'service-failed', cfg, true);
  }
  if (probe.serviceOk) {
    const s = { ...state, serviceDownSince: null };
    return s.role === 'candidate' ? standDown(s, cfg) : { state: s, decisions: [] };
  }
  const s = { ...state, serviceDownSince: state.serviceDownSince ?? now };
  if (s.role === 'standby' && (!probe.hostOk || now - s.serviceDownSince >= cfg.serviceDownFailoverMs)) return pilotCampaign(s, now, cfg);
  return { state: s, decisions: [] };
}

/** A term won by some primary, seen in a heartbeat. Feed only terms of copies in role primary:
 * a losing candidate's term must not demote a healthy primary. */
export function pilotObserveTerm(state: PilotState, term: number, now: number, cfg: ElectionConfig): PilotStep {
  void now;
  if (term <= state.term && !(state.role === 'primary' && term > state.electionTerm)) return { state, decisions: [] };
  const s = { ...state, term: Math.max(state.term, term) };
  if (s.role === 'primary' && term > s.electionTerm) return fence(s, 'higher-term', cfg, false);
  return { state: s, decisions: [] };
}

export function pilotSetSyncTime(state: PilotState, syncTime: number): PilotState {
  return { ...state, syncTime };
}

/** Membership news for the primary: may start one view change (see nextAgreedView). */
export function pilotObserveMembership(state: PilotState, observations: MemberObservation[], now: number, cfg: ElectionConfig): PilotStep {
  void now;
  if (state.role !== 'primary' || state.view.prev || !state.viewSettled) return { state, decisions: [] };
  const voters = nextAgreedView(state.view.voters, observations);
  if (!voters) return { state, decisions: [] };
  const n = state.view.epoch[0] === state.electionTerm ? (state.view.epoch[1] ?? 0) + 1 : 1;
  const view: ElectionView = { epoch: [state.electionTerm, n], voters, prev: state.view.voters };
  return { state: { ...state, view, viewSettled: false }, decisions: [{ kind: 'view-changed', view, committed: false }] };
}
