import type { ElectionConfig } from './settings.ts';
import type { ElectionView, LeaseAck, LeaseRelease, LeaseRenew, VoteReply, VoteRequest } from '../../shared/wire.ts';
import { compareEpoch, type Epoch } from './views.ts';

// The voter of one service (runs on every depot, and on the witness): pure, like the rest of the
// election. It keeps rule R1 (promise) of the safety claim in views.ts, and the freshest-sync
// rule and the tie break between candidates.


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
  /**
   * Primaries renewing their lease, per holder: the wall time of their latest renewal minus a
   * lease (their data is that fresh at least), with when it was heard (local).
   */
  writers: Record<string, { syncTime: number; seenAt: number }>;
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
    writers: {},
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

function freshestKnownSync(state: VoterState, except: string, now: number, cfg: ElectionConfig, candidateSync: number): number {
  let best = Number.NEGATIVE_INFINITY;
  // A renewing primary's writes count only against candidates that report a sync time at all:
  // a service without a database has none, and nothing to lose.
  const entries = candidateSync > 0 ? [...Object.entries(state.syncs), ...Object.entries(state.writers ?? {})] : Object.entries(state.syncs);
  for (const [copy, s] of entries) {
    if (copy === except || now - s.seenAt > cfg.syncInfoTtlMs) continue;
    best = Math.max(best, s.syncTime);
  }
  return best;
}

/** Writers heard within syncInfoTtlMs (older entries count for nothing; dropped so the map stays small). */
function pruneWriters(writers: VoterState['writers'] | undefined, now: number, cfg: ElectionConfig): VoterState['writers'] {
  const out: VoterState['writers'] = {};
  for (const [id, w] of Object.entries(writers ?? {})) if (now - w.seenAt <= cfg.syncInfoTtlMs) out[id] = w;
  return out;
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
  wallNow?: number,
): { state: VoterState; decisions: VoterDecision[] } {
  if (msg.service !== state.service) return { state, decisions: [] };
  if (msg.type === 'lease-release') {
    // A planned hand-over: the holder brought its standbys up to date before it let go, so its
    // own writes no longer make anyone stale (see the lease-renew case below).
    const writers = { ...state.writers };
    delete writers[msg.holder];
    if (state.promisedTo === msg.holder && state.votedTerm === msg.term && now < state.promiseUntil) {
      return { state: { ...state, writers, promiseUntil: now }, decisions: [] };
    }
    return { state: { ...state, writers }, decisions: [] };
  }
  const pilot = msg.type === 'vote-request' ? msg.candidate : msg.holder;
  const promiseFree = now >= state.promiseUntil || state.promisedTo === pilot;
  let reason: RejectReason | undefined;
  if (state.view && compareEpoch(msg.view.epoch as Epoch, state.view.epoch as Epoch) < 0) reason = 'stale-view';
  else if (msg.term < state.votedTerm) reason = 'stale-term';
  else if (msg.term === state.votedTerm && state.promisedTo !== pilot) reason = 'voted-other';
  else if (msg.term > state.votedTerm && !promiseFree) reason = 'promised';
  else if (msg.type === 'vote-request' && msg.term > state.votedTerm && msg.syncTime < freshestKnownSync(state, pilot, now, cfg, msg.syncTime)) reason = 'stale-sync';
  else if (msg.type === 'vote-request' && msg.term > state.votedTerm && state.promisedTo !== pilot && preferOther(state, msg, now, cfg)) reason = 'prefer-other';

  let next = state;
  if (msg.type === 'vote-request') next = { ...next, asked: recordAsk(state.asked, msg, now, cfg) };
  const decisions: VoterDecision[] = [];
  if (reason === undefined) {
    const view = !state.view || compareEpoch(msg.view.epoch as Epoch, state.view.epoch as Epoch) > 0 ? msg.view : state.view;
    next = { ...next, votedTerm: msg.term, promisedTo: pilot, promiseUntil: now + cfg.leaseMs, view };
    // A primary renewing its lease is writing: its data is fresh up to about now. Counted like a
    // standby's sync (minus cfg.writerLagMs: a lease for its beat interval, replication lag and
    // clock skew; in dump mode also a sync interval), so
    // a candidate whose data predates this primary's term — an earlier primary back from a
    // partition or a pause, say — is refused as stale-sync for syncInfoTtlMs after the last
    // renewal, and cannot win over this primary's writes. A standby that followed this primary
    // holds its beats (every dbsync.heartbeatMs; a candidate rereads them every probe round)
    // and passes; one lagging more than writerLagMs waits out the TTL after a crash. A resigned primary's entry goes with its lease-release.
    if (msg.type === 'lease-renew' && wallNow !== undefined) next = { ...next, writers: { ...pruneWriters(next.writers, now, cfg), [pilot]: { syncTime: wallNow - cfg.writerLagMs, seenAt: now } } };
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
    // A refused candidate learns when the promise runs out: it asks again right then, not up to a
    // round (electionRetryMs + jitter) later; that round was the tail of the failover time.
    ...(reason === 'promised' && msg.type === 'vote-request' ? { freeInMs: Math.max(0, Math.ceil(state.promiseUntil - now)) } : {}),
    votedTerm: next.votedTerm,
    view: next.view,
  };
  const message: VoteReply | LeaseAck =
    msg.type === 'vote-request' ? { type: 'vote-reply', candidate: msg.candidate, ...common } : { type: 'lease-ack', holder: msg.holder, ...common };
  decisions.push({ kind: 'reply', message });
  return { state: next, decisions };
}
