import type { DeadMessage, HeartbeatMessage, LeftMessage } from '../../shared/wire.ts';
import { compareNames } from '../../shared/order.ts';
import type { MemberState } from '../../shared/member-state.ts';
import { MembershipSection, type Config } from '../../shared/config.ts';

// Membership and failure detection as a pure state machine (memberlist/SWIM style). It never
// reads a clock, opens a socket or sets a timer: the daemon feeds it what it observed together
// with `now`, and carries out the actions it returns (probe a peer, gossip a death). That keeps
// every timing rule in this one file and lets the tests replay thousands of random histories.
//
// Liveness costs every depot the same whatever the cluster size (SWIM): each probeIntervalMs a
// depot probes ONE other depot, round-robin over a shuffled list (a direct ping, then ping-req
// through indirectProbes others). Heartbeats carry the content (resources, images, containers)
// and are gossiped when it changes, and at least every heartbeatRefreshMs; they are not what
// keeps a depot alive in the others' views. A lost connection is probed at once (a killed
// process resets its TCP connections, so its death is known in well under a second).
//
// States per depot and incarnation (the incarnation is the start time of the depot process):
//   alive   --(routine probe failed, or nothing heard for suspectAfterMissed × heartbeatRefreshMs)--> suspect (+ probe)
//   suspect --(newer heartbeat, or a probe answered)--> alive
//   alive   --(another depot reports it dead)--> suspect (+ probe: reports are checked, not trusted)
//   suspect --(probe failed, or no answer within suspectTimeoutMs)--> dead (+ gossip DeadMessage)
//   any     --(LeftMessage of this incarnation)--> left
//   dead    --(heartbeat newer than the last one seen: the verdict was wrong)--> alive
//   dead/left --(heartbeat of a newer incarnation: the depot restarted)--> alive
//   dead/left --(forgetAfterMs)--> removed from the view
// A left depot is never marked dead, and a heartbeat of an old incarnation never resurrects one.
// A depot told it is dead refutes with a heartbeat at once (newer sequence number).

/** Every timing parameter of failure detection (config section `membership`). */
export interface MembershipTiming {
  /** A depot samples its heartbeat content this often and gossips it when it changed. */
  heartbeatMs: number;
  /** Longest time between two heartbeats of a depot, changed or not. */
  heartbeatRefreshMs: number;
  /** One routine probe of one other depot per interval (0: no routine probes). */
  probeIntervalMs: number;
  /** Refresh intervals with nothing heard (no heartbeat, no probe answer) before a depot is suspect. */
  suspectAfterMissed: number;
  /** Timeout of one direct or indirect ping (used by the prober; kept here so all timing is in one place). */
  probeTimeoutMs: number;
  /** How many other depots are asked to ping a suspect. */
  indirectProbes: number;
  /** Longest time a depot stays suspect with its probe unanswered before it is declared dead. */
  suspectTimeoutMs: number;
  /** Dead or left depots are removed from the view after this long. */
  forgetAfterMs: number;
}

/** The failure detector's part of config section `membership`. */
export function membershipTiming(m: Config['membership']): MembershipTiming {
  const { heartbeatMs, heartbeatRefreshMs, probeIntervalMs, suspectAfterMissed, probeTimeoutMs, indirectProbes, suspectTimeoutMs, forgetAfterMs } = m;
  return { heartbeatMs, heartbeatRefreshMs, probeIntervalMs, suspectAfterMissed, probeTimeoutMs, indirectProbes, suspectTimeoutMs, forgetAfterMs };
}

/** The config's defaults, for fields a caller leaves out. */
const DEFAULT_TIMING = membershipTiming(MembershipSection.parse({}));

export interface Member {
  peerId: string;
  name: string;
  state: MemberState;
  incarnation: number;
  /** Highest heartbeat sequence number seen in this incarnation (-1: none yet). */
  seq: number;
  /** Local time the last newer heartbeat (or a successful probe) was observed. */
  lastHeardAt: number;
  /** Local time of the last state change. */
  since: number;
  /** Last heartbeat received from this incarnation, if any. */
  heartbeat: HeartbeatMessage | undefined;
  self: boolean;
  /** Probe in flight: a routine one (alive depot) or the round of the current suspicion. */
  probe: { id: number; startedAt: number; via: string[]; routine: boolean } | undefined;
  /** Why the current state was entered. */
  reason: string;
}

export type MembershipAction =
  /** State change, for logs, metrics and the API. `from` is 'unknown' for a newly seen depot. */
  | { kind: 'transition'; peer: string; name: string; from: MemberState | 'unknown'; to: MemberState; reason: string; incarnation: number }
  /**
   * Probe `peer` and report with probeResult(). Routine (an alive depot): a direct ping, then
   * ping-req through `indirectVia` if it failed. A suspect: all of them at once.
   */
  | { kind: 'probe'; peer: string; indirectVia: string[]; routine: boolean; id: number }
  /** This depot judged `peer` dead after a failed probe round: gossip a DeadMessage. */
  | { kind: 'declare-dead'; peer: string; incarnation: number }
  /** Another depot claims this one is dead; our next heartbeat refutes it. */
  | { kind: 'refute'; by: string }
  /** A dead or left depot was removed from the view. */
  | { kind: 'forget'; peer: string; name: string };

/** A member as others see it: everything but the probe round in progress. */
export type MemberView = Omit<Member, 'probe'>;

export interface MembershipOptions {
  selfId: string;
  timing?: Partial<MembershipTiming>;
  /** Random source in [0, 1) for choosing indirect probers (seeded in tests). */
  random?: () => number;
}

export class Membership {
  readonly selfId: string;
  readonly timing: MembershipTiming;
  private readonly random: () => number;
  private readonly members = new Map<string, Member>();
  /** Round-robin order of routine probes (memberlist: shuffled once per round). */
  private probeOrder: string[] = [];
  private probeNextAt = -Infinity;
  private probeSeq = 0;

  constructor(opts: MembershipOptions) {
    this.selfId = opts.selfId;
    this.timing = { ...DEFAULT_TIMING, ...opts.timing };
    this.random = opts.random ?? Math.random;
  }

  /** Time with nothing heard from a depot (heartbeat or probe answer) after which it becomes suspect. */
  get suspectAfterMs(): number {
    return this.timing.suspectAfterMissed * this.timing.heartbeatRefreshMs;
  }

  observeHeartbeat(hb: HeartbeatMessage, now: number): MembershipAction[] {
    const m = this.members.get(hb.peerId);
    if (!m) {
      const fresh = this.newMember(hb.peerId, hb.name, 'alive', hb.incarnation, now, hb.peerId === this.selfId ? 'self' : 'first heartbeat');
      fresh.seq = hb.seq;
      fresh.heartbeat = hb;
      this.members.set(hb.peerId, fresh);
      return [this.transition(fresh, 'unknown')];
    }
    if (hb.incarnation < m.incarnation) return []; // an old process's message: never resurrects
    if (hb.incarnation > m.incarnation) {
      // The depot restarted: a new incarnation starts alive whatever the old one was.
      const from = m.state;
      m.incarnation = hb.incarnation;
      m.seq = hb.seq;
      m.heartbeat = hb;
      m.name = hb.name;
      m.lastHeardAt = now;
      m.probe = undefined;
      return [this.enter(m, 'alive', now, 'new incarnation', from, true)];
    }
    if (hb.seq <= m.seq) return []; // duplicate or reordered
    if (m.state === 'left') return []; // sent before it left; left is final for an incarnation
    const from = m.state;
    m.seq = hb.seq;
    m.heartbeat = hb;
    m.name = hb.name;
    m.lastHeardAt = now;
    if (from === 'alive') return [];
    m.probe = undefined;
    return [this.enter(m, 'alive', now, from === 'dead' ? 'newer heartbeat after dead' : 'heartbeat while suspect', from)];
  }

  observeLeft(msg: LeftMessage, now: number): MembershipAction[] {
    if (msg.peerId === this.selfId) return [];
    const m = this.members.get(msg.peerId);
    if (!m) {
      // Keep a tombstone so a late heartbeat of that incarnation does not bring it back.
      const t = this.newMember(msg.peerId, msg.name, 'left', msg.incarnation, now, 'left');
      this.members.set(msg.peerId, t);
      return [this.transition(t, 'unknown')];
    }
    if (msg.incarnation < m.incarnation) return [];
    if (msg.incarnation > m.incarnation) {
      m.incarnation = msg.incarnation;
      m.seq = -1;
      m.heartbeat = undefined;
    } else if (m.state === 'left') return [];
    const from = m.state;
    m.probe = undefined;
    if (msg.name) m.name = msg.name;
    return [this.enter(m, 'left', now, 'left', from, true)];
  }

  observeDead(msg: DeadMessage, now: number): MembershipAction[] {
    if (msg.peerId === this.selfId) return [{ kind: 'refute', by: msg.by }];
    const m = this.members.get(msg.peerId);
    if (!m) {
      const t = this.newMember(msg.peerId, msg.peerId, 'dead', msg.incarnation, now, `reported dead by ${msg.by}`);
      this.members.set(msg.peerId, t);
      return [this.transition(t, 'unknown')];
    }
    if (msg.incarnation < m.incarnation) return [];
    if (msg.incarnation > m.incarnation) {
      m.incarnation = msg.incarnation;
      m.seq = -1;
      m.heartbeat = undefined;
      const from = m.state;
      m.probe = undefined;
      return [this.enter(m, 'dead', now, `reported dead by ${msg.by}`, from, true)];
    }
    if (m.state === 'left' || m.state === 'dead' || m.state === 'suspect') return [];
    // Never taken on trust: the reporter may be the slow one (a starved host whose pings time
    // out). Suspect it and let this depot's own probe round decide; a depot that really died
    // fails that round at once (its connections were reset, or nothing answers).
    return this.suspect(m, now, `reported dead by ${msg.by}`);
  }

  /**
   * Outcome of the probe started by a 'probe' action (ok: any direct or indirect ping answered).
   * `id` is the action's; a result of an earlier probe of the same depot is ignored.
   */
  probeResult(peerId: string, ok: boolean, now: number, id?: number): MembershipAction[] {
    const m = this.members.get(peerId);
    if (!m || !m.probe || (id !== undefined && id !== m.probe.id)) return []; // stale: resolved meanwhile
    if (m.probe.routine) {
      m.probe = undefined;
      if (m.state !== 'alive') return [];
      if (ok) {
        m.lastHeardAt = now;
        return [];
      }
      return this.suspect(m, now, 'routine probe failed');
    }
    if (m.state !== 'suspect') return [];
    m.probe = undefined;
    if (ok) {
      m.lastHeardAt = now; // it answered: give it a fresh window to resume heartbeats
      return [this.enter(m, 'alive', now, 'probe answered', 'suspect')];
    }
    return this.declareDead(m, now, 'probe failed');
  }

  /**
   * The connection to `peerId` closed: probe it now rather than at its turn. A process that died
   * resets its connections, so this is how a crash is noticed at once; a live depot answers.
   */
  connectionLost(peerId: string, now: number): MembershipAction[] {
    const m = this.members.get(peerId);
    if (!m || m.self || m.state !== 'alive' || m.probe) return [];
    return [this.startProbe(m, now, true)];
  }

  /**
   * Advance timers: routine probes, suspicion, probe timeouts, forgetting. Call at least every
   * probeIntervalMs / 4. `slackMs`: extra time probes get while this depot itself is starved
   * (its event loop lags), so its own slowness is not taken for the others' death.
   */
  tick(now: number, slackMs = 0): MembershipAction[] {
    const probeLimit = this.timing.suspectTimeoutMs + slackMs;
    // A routine probe is a direct ping, then ping-req (each up to probeTimeoutMs, ping-req two),
    // one after the other: it must be given that long before its silence counts as a failure.
    const routineLimit = probeLimit + 3 * this.timing.probeTimeoutMs + slackMs;
    const out: MembershipAction[] = [];
    for (const m of [...this.members.values()]) {
      if (m.self) continue;
      if (m.state === 'alive' && m.probe?.routine && now - m.probe.startedAt >= routineLimit) {
        // The daemon always reports; a probe this late counts as failed.
        m.probe = undefined;
        out.push(...this.suspect(m, now, `routine probe unanswered for ${routineLimit} ms`));
      } else if (m.state === 'alive' && now - m.lastHeardAt > this.suspectAfterMs) {
        out.push(...this.suspect(m, now, `nothing heard for ${now - m.lastHeardAt} ms`));
      } else if (m.state === 'suspect') {
        if (!m.probe || m.probe.routine) out.push(this.startProbe(m, now, false));
        else if (now - m.probe.startedAt >= probeLimit) {
          out.push(...this.declareDead(m, now, `probe unanswered for ${now - m.probe.startedAt} ms`));
        }
      } else if ((m.state === 'dead' || m.state === 'left') && now - m.since >= this.timing.forgetAfterMs) {
        this.members.delete(m.peerId);
        out.push({ kind: 'forget', peer: m.peerId, name: m.name });
      }
    }
    if (this.timing.probeIntervalMs > 0 && now >= this.probeNextAt) {
      const target = this.nextRoutineTarget();
      if (target) {
        out.push(this.startProbe(target, now, true));
        this.probeNextAt = now + this.timing.probeIntervalMs;
      }
    }
    return out;
  }

  /** Next alive depot in the round-robin, skipping any with a probe in flight; a new shuffled round when done. */
  private nextRoutineTarget(): Member | undefined {
    for (let pass = 0; pass < 2; pass++) {
      while (this.probeOrder.length > 0) {
        const m = this.members.get(this.probeOrder.shift()!);
        if (m && !m.self && m.state === 'alive' && !m.probe) return m;
      }
      const ids = [...this.members.values()].filter((m) => !m.self && m.state === 'alive').map((m) => m.peerId);
      for (let i = ids.length - 1; i > 0; i--) {
        const j = Math.min(i, Math.floor(this.random() * (i + 1)));
        [ids[i], ids[j]] = [ids[j]!, ids[i]!];
      }
      this.probeOrder = ids;
    }
    return undefined;
  }

  get(peerId: string): MemberView | undefined {
    const m = this.members.get(peerId);
    return m ? snapshot(m) : undefined;
  }

  view(): MemberView[] {
    return [...this.members.values()].map(snapshot).sort((a, b) => (a.self === b.self ? compareNames(a.name, b.name) : a.self ? -1 : 1));
  }

  countByState(): Record<MemberState, number> {
    const out: Record<MemberState, number> = { alive: 0, suspect: 0, dead: 0, left: 0 };
    for (const m of this.members.values()) out[m.state] += 1;
    return out;
  }

  private suspect(m: Member, now: number, reason: string): MembershipAction[] {
    m.probe = undefined;
    return [this.enter(m, 'suspect', now, reason, m.state), this.startProbe(m, now, false)];
  }

  private startProbe(m: Member, now: number, routine: boolean): Extract<MembershipAction, { kind: 'probe' }> {
    const candidates = [...this.members.values()].filter((o) => !o.self && o.peerId !== m.peerId && o.state === 'alive').map((o) => o.peerId);
    const via: string[] = [];
    while (via.length < this.timing.indirectProbes && candidates.length > 0) {
      const i = Math.min(candidates.length - 1, Math.floor(this.random() * candidates.length));
      via.push(candidates.splice(i, 1)[0]!);
    }
    const id = ++this.probeSeq;
    m.probe = { id, startedAt: now, via, routine };
    return { kind: 'probe', peer: m.peerId, indirectVia: via, routine, id };
  }

  private declareDead(m: Member, now: number, reason: string): MembershipAction[] {
    m.probe = undefined;
    return [this.enter(m, 'dead', now, reason, 'suspect'), { kind: 'declare-dead', peer: m.peerId, incarnation: m.incarnation }];
  }

  private enter(m: Member, to: MemberState, now: number, reason: string, from: MemberState, force = false): MembershipAction {
    if (m.state !== to || force) m.since = now;
    m.state = to;
    m.reason = reason;
    return this.transition(m, from);
  }

  private transition(m: Member, from: MemberState | 'unknown'): MembershipAction {
    return { kind: 'transition', peer: m.peerId, name: m.name, from, to: m.state, reason: m.reason, incarnation: m.incarnation };
  }

  private newMember(peerId: string, name: string, state: MemberState, incarnation: number, now: number, reason: string): Member {
    return {
      peerId,
      name,
      state,
      incarnation,
      seq: -1,
      lastHeardAt: now,
      since: now,
      heartbeat: undefined,
      self: peerId === this.selfId,
      probe: undefined,
      reason,
    };
  }
}

function snapshot(m: Member): MemberView {
  return {
    peerId: m.peerId,
    name: m.name,
    state: m.state,
    incarnation: m.incarnation,
    seq: m.seq,
    lastHeardAt: m.lastHeardAt,
    since: m.since,
    reason: m.reason,
    self: m.self,
    heartbeat: m.heartbeat,
  };
}
