// A discrete-event simulation of pilots and voters running pilot/election/ over an adversarial
// network, used by test/unit/election-sim.test.ts. Everything is driven by one seeded PRNG, so a
// failing seed replays exactly. Real time is the simulator's `t`; every host has its own clock
// local = t·rate + offset with rate in [1−ρ, 1+ρ], and the election code only ever sees local time.
import { WITNESS_ID, compareEpoch, initialView, type Epoch, type MemberObservation } from '../../pilot/election/views.ts';
import { createVoter, voterObserveSync, voterReceive, type VoterDurable, type VoterState } from '../../pilot/election/voter-role.ts';
import { initialGroup } from '../../pilot/election/voter-group.ts';
import { createPilot, groupCandidates, leaseValid, nextWakeAt, pilotCampaign, pilotLearnView, pilotObserveMembership, pilotObserveTerm, pilotProbe, pilotReceive, pilotSetSyncTime, pilotTick, type PilotDecision, type PilotState, type PilotStep } from '../../pilot/election/pilot-role.ts';
import { type ElectionConfig } from '../../pilot/election/settings.ts';
import type { LeaseAck, LeaseRelease, LeaseRenew, VoteReply, VoteRequest } from '../../shared/wire.ts';

export { mulberry32 } from '../../lab/seeded-random.ts';
import { mulberry32 } from '../../lab/seeded-random.ts';

export type BrokenVariant = 'no-promise' | 'lease-from-receipt' | 'no-quarantine';

export interface SimFaults {
  /** Mean real time between host crashes (0: none). */
  crashEveryMs: number;
  /** Mean real time between network splits (0: none). A split puts every host in one of 1–3 groups. */
  partitionEveryMs: number;
  loss: number;
  dup: number;
  /** Ordinary delays are uniform in [0, maxDelayMs]; with longDelayProb a delay up to longDelayMaxMs. */
  maxDelayMs: number;
  longDelayProb: number;
  longDelayMaxMs: number;
  /** Probe results are sometimes wrong (standbys campaign for no reason, primaries restart/resign). */
  wrongProbes: number;
  /** The primary gets membership observations (true and, with wrongProbes, false ones) and changes views. */
  viewChanges: boolean;
  /** Some host stops go through a clean "left". */
  leaves: boolean;
  /** A crashed host comes back after a time uniform in [restartMinMs, restartMaxMs]. */
  restartMinMs: number;
  restartMaxMs: number;
  /** Long delays hit only replies (requests arrive fast, answers are late). */
  slowRepliesOnly?: boolean;
  /** Share of crashes that hit a member of the current voter group (else any depot). */
  voterCrashBias?: number;
  /** Some crashes take down this many voters of the group at once (a power strip); 0: never. */
  massCrashEveryMs?: number;
}

export interface SimOptions {
  seed: number;
  /** Depots (each runs a voter; only the group's votes count). The first view is the best-ranked
   * cfg.voters of them, as at a bootstrap. */
  voters: number;
  pilots: number;
  durationMs: number;
  cfg: ElectionConfig;
  faults: SimFaults;
  broken?: BrokenVariant;
  /** Crash the serving primary's host at this real time and measure how long until another serves. */
  crashPrimaryAt?: number;
  /** At this real time every fault stops: hosts restart, the network heals, loss and long delays end. */
  healAt?: number;
  /** At the heal, restart only a bare majority of each set of the newest voter group (and the
   * copies' hosts); every other depot stays down. */
  healBareMajority?: boolean;
  /** Receives one line per role change and vote reply, for replaying a failing seed. */
  trace?: (line: string) => void;
}

export interface SimResult {
  violations: string[];
  events: number;
  elections: number;
  maxTerm: number;
  viewChanges: number;
  /** Most election messages (requests) one renewal or vote round sent. */
  maxRoundMessages: number;
  /** Voters of the last view any primary held, and its epoch key. */
  lastGroup: string[];
  /** Real ms from crashPrimaryAt until another pilot serves (undefined if never). */
  failoverMs?: number;
  /** Real ms from healAt until a pilot serves (0 if one already serves; undefined if never). */
  recoveryMs?: number;
}

interface Host {
  id: string;
  up: boolean;
  incarnation: number;
  rate: number;
  offset: number;
  group: number;
  downSince: number;
  left: boolean;
}

interface PilotSlot {
  host: string;
  state: PilotState | null;
  servingUntil: number; // real time the service keeps answering after a fence (fence latency)
  wakeToken: number;
  syncTime: number; // last DB sync of this copy (kept on disk across crashes)
}

interface Ev {
  t: number;
  seq: number;
  run: () => void;
}

class Heap {
  private a: Ev[] = [];
  get size(): number {
    return this.a.length;
  }
  push(e: Ev): void {
    const a = this.a;
    a.push(e);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (less(a[p]!, a[i]!)) break;
      [a[p], a[i]] = [a[i]!, a[p]!];
      i = p;
    }
  }
  pop(): Ev | undefined {
    const a = this.a;
    const top = a[0];
    const last = a.pop();
    if (a.length && last) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < a.length && less(a[l]!, a[m]!)) m = l;
        if (r < a.length && less(a[r]!, a[m]!)) m = r;
        if (m === i) break;
        [a[m], a[i]] = [a[i]!, a[m]!];
        i = m;
      }
    }
    return top;
  }
}
const less = (x: Ev, y: Ev) => x.t < y.t || (x.t === y.t && x.seq < y.seq);

const SERVICE = 'svc';

export function runElectionSim(opts: SimOptions): SimResult {
  const rnd = mulberry32(opts.seed);
  const { cfg, faults } = opts;
  const rho = cfg.maxClockDriftRate;
  const heap = new Heap();
  let seq = 0;
  let t = 0;
  const at = (time: number, run: () => void) => heap.push({ t: time, seq: seq++, run });

  const voterIds = Array.from({ length: opts.voters }, (_, i) => `h${i}`);
  const hosts = new Map<string, Host>();
  const allHostIds = cfg.witness ? [...voterIds, 'W'] : voterIds;
  for (const id of allHostIds) {
    hosts.set(id, { id, up: true, incarnation: 0, rate: 1 - rho + 2 * rho * rnd(), offset: Math.floor(rnd() * 100_000), group: 0, downSince: 0, left: false });
  }
  const local = (h: Host) => t * h.rate + h.offset;
  const toReal = (h: Host, localTime: number) => (localTime - h.offset) / h.rate;

  // Per depot: a session start (s before the run) and whether it holds a copy, for the ranking.
  const sessionBase = new Map(voterIds.map((id) => [id, Math.floor(rnd() * 200_000)]));
  const restarts = new Map<string, number>();
  const upSince = new Map<string, number>();
  const observation = (id: string): MemberObservation => {
    const h = hosts.get(id)!;
    return {
      peer: id,
      state: 'alive',
      host: id,
      sessionS: (h.incarnation ? 0 : (sessionBase.get(id) ?? 0)) + (t - (upSince.get(id) ?? 0)) / 1000,
      restarts: restarts.get(id) ?? 0,
      holdsCopy: voterIds.indexOf(id) < opts.pilots,
    };
  };
  const view0 = initialView(initialGroup(groupCandidates(voterIds.map(observation)), { voters: cfg.voters, preferred: cfg.preferredVoters }, voterIds[0]!));
  let lastGroup = view0.voters;
  let lastGroupEpoch: Epoch = [0, 0];
  let lastView = view0;
  let maxRoundMessages = 0;
  const voters = new Map<string, VoterState>();
  const durable = new Map<string, VoterDurable>();
  const voterHost = (id: string) => (id === WITNESS_ID ? 'W' : id);
  const startVoter = (hostId: string) => {
    const h = hosts.get(hostId)!;
    let v = createVoter({ id: hostId === 'W' ? WITNESS_ID : hostId, service: SERVICE, now: local(h), cfg, durable: durable.get(hostId) });
    if (opts.broken === 'no-quarantine') v = { ...v, promiseUntil: Number.NEGATIVE_INFINITY };
    voters.set(hostId, v);
  };
  for (const id of allHostIds) startVoter(id);

  const pilots: PilotSlot[] = [];
  const pilotIndex = new Map<string, number>();
  for (let i = 0; i < opts.pilots; i++) {
    const host = voterIds[i]!;
    const id = `p${i}@${host}#0`;
    pilotIndex.set(id.split('#')[0]!, i);
    pilots.push({ host, state: createPilot({ id, service: SERVICE, view: view0 }), servingUntil: -1, wakeToken: 0, syncTime: 0 });
  }

  const violations: string[] = [];
  let events = 0;
  let elections = 0;
  let viewChanges = 0;
  let maxTerm = 0;
  const termHolder = new Map<number, string>();
  const lastPilotTerm = new Map<string, number>();
  let lastPrimaryHost: string | null = null;
  let lastPrimaryTerm = 0;
  let failoverMs: number | undefined;
  const violate = (what: string) => {
    if (violations.length < 20) violations.push(`t=${t.toFixed(3)} ${what}`);
  };

  // ---- network
  const connected = (a: Host, b: Host) => a.up && b.up && a.group === b.group;
  let healed = false;
  let recoveryMs: number | undefined;
  const delay = (reply: boolean) =>
    healed ? rnd() * 5 : (reply || !faults.slowRepliesOnly) && rnd() < faults.longDelayProb ? rnd() * faults.longDelayMaxMs : rnd() * faults.maxDelayMs;
  function send(from: string, to: string, deliver: () => void, reply = false): void {
    const a = hosts.get(from)!;
    const b = hosts.get(to)!;
    if (!connected(a, b)) return;
    const copies = rnd() < faults.dup ? 2 : 1;
    for (let c = 0; c < copies; c++) {
      if (!healed && rnd() < faults.loss) continue;
      const inc = b.incarnation;
      at(t + delay(reply), () => {
        if (b.up && b.incarnation === inc) deliver();
      });
    }
  }

  // ---- pilots
  function schedule(i: number): void {
    const slot = pilots[i]!;
    const s = slot.state;
    if (!s) return;
    const wake = nextWakeAt(s);
    if (!Number.isFinite(wake)) return;
    const h = hosts.get(slot.host)!;
    const token = ++slot.wakeToken;
    const inc = h.incarnation;
    at(Math.max(t, toReal(h, wake)), () => {
      if (slot.wakeToken !== token || !h.up || h.incarnation !== inc || !slot.state) return;
      // Floating-point rounding of local→real→local can land a hair early; never tick before the wake time.
      apply(i, pilotTick(slot.state, Math.max(local(h), wake), cfg));
    });
  }

  function apply(i: number, step: PilotStep): void {
    const slot = pilots[i]!;
    const before = slot.state!;
    slot.state = step.state;
    const prevTerm = lastPilotTerm.get(before.id) ?? 0;
    if (step.state.term < prevTerm) violate(`pilot ${before.id} term went back ${prevTerm} -> ${step.state.term}`);
    lastPilotTerm.set(before.id, step.state.term);
    let roundMessages = 0;
    for (const d of step.decisions) if ((d.kind === 'send' || d.kind === 'probe-witness') && d.message.type !== 'lease-release') roundMessages++;
    maxRoundMessages = Math.max(maxRoundMessages, roundMessages);
    if (step.state.role === 'primary' && compareEpoch(step.state.view.epoch as Epoch, lastGroupEpoch) >= 0) {
      lastGroupEpoch = step.state.view.epoch as Epoch;
      lastGroup = step.state.view.voters;
      lastView = step.state.view;
    }
    if (opts.trace && step.state.role !== before.role) opts.trace(`${t.toFixed(1)} ${before.id} ${before.role} -> ${step.state.role} term ${step.state.electionTerm}`);
    maxTerm = Math.max(maxTerm, step.state.term);
    for (const d of step.decisions) handleDecision(i, d);
    schedule(i);
  }

  function handleDecision(i: number, d: PilotDecision): void {
    const slot = pilots[i]!;
    const id = slot.state!.id;
    switch (d.kind) {
      case 'send':
      case 'probe-witness': {
        const target = voterHost(d.kind === 'send' ? d.to : WITNESS_ID);
        if (!hosts.has(target)) return;
        const msg = d.message;
        send(slot.host, target, () => deliverToVoter(target, msg, slot.host));
        return;
      }
      case 'become-primary': {
        elections++;
        const other = termHolder.get(d.term);
        if (other && other !== id) violate(`two primaries in term ${d.term}: ${other} and ${id}`);
        termHolder.set(d.term, id);
        if (d.term <= lastPrimaryTerm) violate(`primary ${id} elected in term ${d.term} after a primary of term ${lastPrimaryTerm}`);
        lastPrimaryTerm = d.term;
        lastPrimaryHost = slot.host;
        if (opts.crashPrimaryAt !== undefined && failoverMs === undefined && t > opts.crashPrimaryAt) failoverMs = t - opts.crashPrimaryAt;
        return;
      }
      case 'fence':
        slot.servingUntil = t + rnd() * cfg.fenceLatencyMs;
        return;
      case 'view-changed':
        viewChanges++;
        return;
      default:
        return;
    }
  }

  function deliverToVoter(hostId: string, msg: VoteRequest | LeaseRenew | LeaseRelease, replyTo: string): void {
    const h = hosts.get(hostId)!;
    let v = voters.get(hostId)!;
    if (opts.broken === 'no-promise') v = { ...v, promiseUntil: Number.NEGATIVE_INFINITY };
    const out = voterReceive(v, msg, local(h), cfg);
    voters.set(hostId, out.state);
    for (const d of out.decisions) {
      if (d.kind === 'persist') {
        const old = durable.get(hostId);
        if (old && d.durable.votedTerm < old.votedTerm) violate(`voter ${hostId} votedTerm went back`);
        durable.set(hostId, d.durable);
      } else {
        const reply = d.message;
        send(hostId, replyTo, () => deliverToPilot(reply), true);
      }
    }
  }

  function deliverToPilot(msg: VoteReply | LeaseAck): void {
    const pid = msg.type === 'vote-reply' ? msg.candidate : msg.holder;
    const i = pilotIndex.get(pid.split('#')[0]!);
    if (i === undefined) return;
    const slot = pilots[i]!;
    if (!slot.state || slot.state.id !== pid) return; // for an earlier incarnation of that pilot
    const h = hosts.get(slot.host)!;
    let s = slot.state;
    if (opts.trace && s.role === 'candidate' && msg.type === 'vote-reply') opts.trace(`${t.toFixed(1)} ${pid} <- ${msg.voter} t${msg.term} ${msg.granted ? 'granted' : msg.reason} voted ${msg.votedTerm}`);
    if (opts.broken === 'lease-from-receipt' && s.sent[msg.seq] !== undefined) s = { ...s, sent: { ...s.sent, [msg.seq]: local(h) } };
    apply(i, pilotReceive(s, msg, local(h), cfg));
  }

  // ---- invariants, checked after every event
  function check(): void {
    let holders = 0;
    let serving = 0;
    for (const slot of pilots) {
      const h = hosts.get(slot.host)!;
      if (!h.up || !slot.state) continue;
      const now = local(h);
      const valid = leaseValid(slot.state, now);
      if (valid) holders++;
      if (slot.state.role === 'primary' && now > slot.state.leaseExpiry + 1e-3) violate(`${slot.state.id} is primary past its lease`);
      if (slot.state.role === 'primary' || t < slot.servingUntil) serving++;
    }
    if (holders > 1) violate(`${holders} pilots hold a valid lease`);
    if (serving > 1) violate(`${serving} pilots serve at once`);
  }

  // ---- host faults
  function crash(hostId: string, cleanly: boolean): void {
    const h = hosts.get(hostId)!;
    if (!h.up) return;
    h.up = false;
    h.left = cleanly;
    h.downSince = t;
    h.incarnation++;
    voters.delete(hostId);
    for (const slot of pilots) {
      if (slot.host !== hostId) continue;
      slot.state = null;
      slot.servingUntil = -1; // power is gone, so is the service
    }
  }
  function restart(hostId: string): void {
    const h = hosts.get(hostId)!;
    if (h.up) return;
    h.up = true;
    h.left = false;
    h.incarnation++;
    upSince.set(hostId, t);
    restarts.set(hostId, (restarts.get(hostId) ?? 0) + 1);
    startVoter(hostId);
    for (const [i, slot] of pilots.entries()) {
      if (slot.host !== hostId) continue;
      // Candidate ids name the pilot incarnation: promises to a crashed incarnation must run out.
      const id = `p${i}@${hostId}#${h.incarnation}`;
      const d = durable.get(hostId);
      lastPilotTerm.delete(id); // a new pilot process: its term restarts from the depot's record
      // The copy's database survives the crash, and so does its last sync time.
      slot.state = createPilot({ id, service: SERVICE, view: d?.view ?? view0, term: d?.votedTerm ?? 0, syncTime: slot.syncTime });
    }
  }

  function scheduleFaults(): void {
    if (faults.crashEveryMs > 0) {
      const next = () => {
        at(t + -Math.log(1 - rnd()) * faults.crashEveryMs, () => {
          if (healed) return;
          const ids = rnd() < (faults.voterCrashBias ?? 0) ? lastGroup.map(voterHost) : [...hosts.keys()];
          const victim = ids[Math.floor(rnd() * ids.length)]!;
          const cleanly = faults.leaves && rnd() < 0.3;
          crash(victim, cleanly);
          at(t + faults.restartMinMs + rnd() * (faults.restartMaxMs - faults.restartMinMs), () => restart(victim));
          next();
        });
      };
      next();
    }
    if ((faults.massCrashEveryMs ?? 0) > 0) {
      // A power strip: a majority of the current group goes down at once, and comes back later.
      const next = () => {
        at(t + -Math.log(1 - rnd()) * faults.massCrashEveryMs!, () => {
          if (healed) return;
          const group = lastGroup.map(voterHost).filter((id) => hosts.get(id)?.up);
          const k = Math.floor(lastGroup.length / 2) + 1;
          for (const victim of group.sort(() => rnd() - 0.5).slice(0, k)) {
            crash(victim, false);
            at(t + faults.restartMinMs + rnd() * (faults.restartMaxMs - faults.restartMinMs), () => restart(victim));
          }
          next();
        });
      };
      next();
    }
    if (faults.partitionEveryMs > 0) {
      const next = () => {
        at(t + -Math.log(1 - rnd()) * faults.partitionEveryMs, () => {
          if (healed) return;
          const groups = 1 + Math.floor(rnd() * 3);
          for (const h of hosts.values()) h.group = Math.floor(rnd() * groups);
          at(t + rnd() * 4000, () => {
            for (const h of hosts.values()) h.group = 0;
          });
          next();
        });
      };
      next();
    }
  }

  // ---- periodic inputs: probes, heartbeats (sync times, primary terms), DB syncs, membership
  function servingPilotVisibleFrom(host: Host): PilotSlot | undefined {
    return pilots.find((p) => p.state?.role === 'primary' && connected(hosts.get(p.host)!, host));
  }
  function periodic(): void {
    for (const [i, slot] of pilots.entries()) {
      const h = hosts.get(slot.host)!;
      if (!h.up || !slot.state) continue;
      const s = slot.state;
      let probe: { serviceOk: boolean; hostOk: boolean };
      if (s.role === 'primary') probe = { serviceOk: true, hostOk: true };
      else {
        const server = servingPilotVisibleFrom(h);
        const ph = lastPrimaryHost ? hosts.get(lastPrimaryHost)! : undefined;
        const primaryThere = pilots.some((p) => p.host === lastPrimaryHost && p.state?.role === 'primary');
        probe = { serviceOk: server !== undefined && server !== slot, hostOk: ph !== undefined && ph !== h && connected(ph, h) && primaryThere };
      }
      if (!healed && rnd() < faults.wrongProbes) probe = { serviceOk: rnd() < 0.5, hostOk: rnd() < 0.5 };
      apply(i, pilotProbe(s, probe, local(h), cfg));
    }
    at(t + 100, periodic);
  }
  function heartbeats(): void {
    for (const slot of pilots) {
      const h = hosts.get(slot.host)!;
      const s = slot.state;
      if (!h.up || !s) continue;
      for (const vh of voterIds) {
        if (s.role === 'primary') continue;
        const syncTime = s.syncTime;
        const copy = s.id;
        send(slot.host, vh, () => {
          const target = hosts.get(vh)!;
          voters.set(vh, voterObserveSync(voters.get(vh)!, copy, syncTime, local(target)));
        });
      }
      if (s.role === 'primary') {
        const term = s.electionTerm;
        const view = s.view;
        for (const [j, other] of pilots.entries()) {
          if (other === slot) continue;
          send(slot.host, other.host, () => {
            const os = pilots[j]!.state;
            // The heartbeat carries the term and the voter group (gossip).
            if (os) apply(j, pilotObserveTerm(pilotLearnView(os, view), term, local(hosts.get(other.host)!), cfg));
          });
        }
        // DB sync to the standbys it reaches (dump time on the primary's clock; one shared clock
        // base here so sync times are comparable, as they are when one primary stamps them).
        for (const [j, other] of pilots.entries()) {
          if (other === slot || rnd() < 0.3) continue;
          const stamp = t;
          send(slot.host, other.host, () => {
            const os = pilots[j]!.state;
            if (os && os.role !== 'primary') {
              pilots[j]!.state = pilotSetSyncTime(os, stamp);
              pilots[j]!.syncTime = stamp;
            }
          });
        }
      }
    }
    if (faults.viewChanges) {
      for (const [i, slot] of pilots.entries()) {
        const h = hosts.get(slot.host)!;
        if (!h.up || slot.state?.role !== 'primary') continue;
        const upVoters = voterIds.filter((v) => hosts.get(v)!.up);
        const obs: MemberObservation[] = voterIds.map((v) => {
          const vh = hosts.get(v)!;
          const o = observation(v);
          if (vh.up) return o;
          if (vh.left) return { ...o, state: 'left' };
          return t - vh.downSince > 2000 ? { ...o, state: 'dead', deadReportedBy: upVoters } : { ...o, state: 'suspect' };
        });
        if (!healed && rnd() < faults.wrongProbes * 5) {
          const k = Math.floor(rnd() * obs.length);
          obs[k] = rnd() < 0.5 ? { peer: obs[k]!.peer, state: 'dead', deadReportedBy: voterIds } : { peer: obs[k]!.peer, state: 'left' };
        }
        apply(i, pilotObserveMembership(slot.state, obs, local(h), cfg));
      }
    }
    at(t + 500, heartbeats);
  }

  // ---- run
  at(0, () => apply(0, pilotCampaign(pilots[0]!.state!, local(hosts.get(pilots[0]!.host)!), cfg)));
  at(50, periodic);
  at(75, heartbeats);
  scheduleFaults();
  if (opts.crashPrimaryAt !== undefined) {
    at(opts.crashPrimaryAt, () => {
      const server = pilots.find((p) => p.state?.role === 'primary');
      if (server) crash(server.host, false);
      else violate('no primary to crash at crashPrimaryAt');
    });
  }
  if (opts.healAt !== undefined) {
    at(opts.healAt, () => {
      healed = true;
      for (const h of hosts.values()) h.group = 0;
      if (opts.healBareMajority) {
        const keep = new Set<string>(pilots.map((p) => p.host));
        for (const set of [lastView.voters, ...(lastView.prev ? [lastView.prev] : [])]) {
          const need = Math.floor(set.length / 2) + 1;
          const ids = set.map(voterHost).sort();
          for (const id of ids.slice(0, need)) keep.add(id);
        }
        if (cfg.witness) keep.add('W');
        for (const id of hosts.keys()) {
          if (keep.has(id)) restart(id);
          else crash(id, false);
        }
      } else for (const id of hosts.keys()) restart(id);
    });
  }
  while (heap.size) {
    const ev = heap.pop()!;
    if (ev.t > opts.durationMs) break;
    t = ev.t;
    ev.run();
    events++;
    check();
    if (healed && recoveryMs === undefined && pilots.some((p) => p.state?.role === 'primary')) recoveryMs = t - opts.healAt!;
  }
  return {
    violations,
    events,
    elections,
    maxTerm,
    viewChanges,
    maxRoundMessages,
    lastGroup,
    ...(failoverMs !== undefined ? { failoverMs } : {}),
    ...(recoveryMs !== undefined ? { recoveryMs } : {}),
  };
}
