import { renewIntervalMs, type ElectionConfig } from './settings.ts';
import { nextGroupChange, type GroupChange, type VoterCandidate } from './voter-group.ts';
import type { ElectionView, LeaseAck, LeaseRelease, LeaseRenew, VoteReply, VoteRequest } from '../../shared/wire.ts';
import {
  WITNESS_ID,
  compareEpoch,
  contactSet,
  electionSets,
  epochKey,
  leaseExpiryFrom,
  leaseSets,
  majority,
  type Epoch,
  type MemberObservation,
} from './views.ts';

// The pilot of one copy of a service (standby, candidate or primary): pure, like the rest of the
// election. It keeps rule R2 (belief within the voters' promises) of the safety claim in
// views.ts: it counts grants from their requests' send times, renews, fences itself when its
// belief ends, and, as primary, moves the view one member at a time (R4).

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
  | { kind: 'view-changed'; view: ElectionView; committed: boolean; change?: GroupChange };

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

/** A view heard by gossip (another copy's heartbeat): adopted when its epoch is newer. Every view
 * was made by some primary (R4), and a joint one still needs both majorities, so adopting it is
 * as safe as learning it from a voter's reply. A primary keeps its own: it makes the views. */
export function pilotLearnView(state: PilotState, view: ElectionView): PilotState {
  if (state.role === 'primary') return state;
  return learnView(state, view);
}

/** A voter refusing for its promise to the old holder tells how long the promise still runs: the
 * next round goes out just after that (its clock may run up to ρ slower than ours), never sooner
 * than a fifth of a round (a voter cannot make a candidate spin), never later than planned. */
function retryWhenFree(state: PilotState, msg: VoteReply, now: number, cfg: ElectionConfig): number {
  if (msg.reason !== 'promised' || msg.freeInMs === undefined) return state.roundDeadline;
  const at = now + Math.max(cfg.electionRetryMs / 5, msg.freeInMs * (1 + cfg.maxClockDriftRate) + PROMISE_SLACK_MS);
  return Math.min(state.roundDeadline, at);
}

/** Ask this long after a promise should have run out (timer and message handling latency). */
const PROMISE_SLACK_MS = 5;

/** A reply from a voter (or the witness). */
export function pilotReceive(state: PilotState, msg: VoteReply | LeaseAck, now: number, cfg: ElectionConfig): PilotStep {
  if (msg.service !== state.service) return { state, decisions: [] };
  if (msg.type === 'vote-reply') {
    if (msg.candidate !== state.id) return { state, decisions: [] };
    let s = state;
    if (msg.votedTerm > s.term) s = { ...s, term: msg.votedTerm };
    if (s.role !== 'candidate' || msg.term !== s.electionTerm) return { state: learnView(s, msg.view), decisions: [] };
    if (!msg.granted) {
      const refused = { ...learnView(s, msg.view), refused: true, split: s.split || msg.reason === 'voted-other' };
      return { state: { ...refused, roundDeadline: retryWhenFree(refused, msg, now, cfg) }, decisions: [] };
    }
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

/** Membership observations as the voter ranking's candidates (missing facts rank neutral). */
export function groupCandidates(observations: readonly MemberObservation[]): VoterCandidate[] {
  return observations.map((o) => ({ peer: o.peer, host: o.host ?? o.peer, state: o.state, sessionS: o.sessionS ?? 0, restarts: o.restarts ?? 0, holdsCopy: o.holdsCopy ?? false, remainingS: o.remainingS }));
}

/** Membership news for the primary: may start one change of the voter group (voter-group.ts). */
export function pilotObserveMembership(state: PilotState, observations: MemberObservation[], now: number, cfg: ElectionConfig): PilotStep {
  void now;
  if (state.role !== 'primary' || state.view.prev || !state.viewSettled) return { state, decisions: [] };
  const dead = new Map(observations.map((o) => [o.peer, o.deadReportedBy ?? []]));
  const change = nextGroupChange(state.view.voters, groupCandidates(observations), { voters: cfg.voters, preferred: cfg.preferredVoters }, (p) => dead.get(p) ?? []);
  if (!change) return { state, decisions: [] };
  const n = state.view.epoch[0] === state.electionTerm ? (state.view.epoch[1] ?? 0) + 1 : 1;
  const view: ElectionView = { epoch: [state.electionTerm, n], voters: change.voters, prev: state.view.voters };
  return { state: { ...state, view, viewSettled: false }, decisions: [{ kind: 'view-changed', view, committed: false, change }] };
}
