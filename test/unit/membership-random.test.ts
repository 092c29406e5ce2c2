import { describe, expect, it } from 'vitest';
import { Membership, type MembershipAction } from '../../depot/membership/membership.ts';
import type { HeartbeatMessage } from '../../shared/wire.ts';

// Random histories of a small cluster seen from one depot: processes heartbeat, crash, leave
// cleanly and restart; messages are delayed, duplicated, reordered or lost; other depots send
// true and false death reports; probes answer late or never. After every step the state
// machine's invariants are checked. "Clean" runs (no loss, no false reports) also check the
// timing promises: a live depot is never suspected, a crashed one is dead in bounded time.
// Two modes: 'heartbeats' (routine probes off, liveness from heartbeats every second) and
// 'probes' (heartbeats once a minute here, one routine probe a second, a dropped
// connection probed at once).

import { mulberry32 } from '../../lab/seeded-random.ts';

const SELF = '12D3KooWSelfSelfSelf';
const HB = 1000;
const STEP = 50;
const PROBE_TIMEOUT = 500;

function assert(cond: boolean, what: string): void {
  if (!cond) throw new Error(`invariant broken: ${what}`);
}

interface Proc {
  id: string;
  running: boolean;
  incarnation: number;
  seq: number;
  nextBeat: number;
  left: boolean;
  lastSentAt: number;
}

type Pending =
  | { at: number; kind: 'hb'; msg: HeartbeatMessage }
  | { at: number; kind: 'left'; peer: string; incarnation: number }
  | { at: number; kind: 'dead'; peer: string; incarnation: number; truthful: boolean }
  | { at: number; kind: 'probe'; peer: string; ok: boolean; id: number }
  | { at: number; kind: 'conn-lost'; peer: string };

function heartbeat(p: Proc, now: number): HeartbeatMessage {
  return {
    type: 'heartbeat', v: 1, peerId: p.id, name: p.id, seq: p.seq, incarnation: p.incarnation, sentAt: now,
    addresses: [], hostAddresses: [], bootTime: 0, uptimeS: 1, load: [0, 0, 0], cpus: 1, memFreeBytes: 1,
    memTotalBytes: 1, diskFreeBytes: 1, images: [], staging: [], containers: [], version: 't',
  };
}

interface RunOptions {
  clean: boolean;
  seed: number;
  durationMs: number;
  mode?: 'heartbeats' | 'probes';
}

const PROBE_INTERVAL = 1000;
const REFRESH = 60_000;

function run({ clean, seed, durationMs, mode = 'heartbeats' }: RunOptions): { transitions: number; deaths: number; leaves: number; probes: number } {
  const rnd = mulberry32(seed);
  const t0 = 1_000_000;
  const nPeers = 2 + Math.floor(rnd() * 7);
  const probing = mode === 'probes';
  const beatEvery = probing ? REFRESH : HB;
  const timing = {
    heartbeatMs: HB,
    heartbeatRefreshMs: beatEvery,
    probeIntervalMs: probing ? PROBE_INTERVAL : 0,
    suspectAfterMissed: 3,
    probeTimeoutMs: PROBE_TIMEOUT,
    indirectProbes: 2,
    suspectTimeoutMs: 1500,
    forgetAfterMs: 20_000,
  };
  const m = new Membership({ selfId: SELF, timing, random: rnd });
  const suspectAfter = timing.suspectAfterMissed * timing.heartbeatRefreshMs;
  let probes = 0;
  const procs: Proc[] = Array.from({ length: nPeers }, (_, i) => ({
    id: `12D3KooWPeer${String(i).padStart(8, '0')}`,
    running: true,
    incarnation: t0 - 1000 - i,
    seq: 0,
    nextBeat: t0 + Math.floor(rnd() * beatEvery),
    left: false,
    lastSentAt: t0,
  }));
  const byId = new Map(procs.map((p) => [p.id, p]));
  let pending: Pending[] = [];

  // What the checker knows about the model's history.
  const maxSeen = new Map<string, [number, number]>(); // peer -> [incarnation, seq] of newest heartbeat fed
  const lastHeard = new Map<string, number>(); // when a newer heartbeat or a probe success was fed
  const probeStarted = new Map<string, number>(); // peer -> time of the probe of the current suspicion
  const routineStarted = new Map<string, { id: number; at: number }>(); // peer -> its routine probe in flight
  const probeFailedFed = new Set<string>();
  const leftInc = new Map<string, number>(); // peer -> incarnation announced left
  const lastDelivered = new Map<string, number>(); // per peer: last time one of its heartbeats was delivered
  let transitions = 0;
  let deaths = 0;
  let leaves = 0;
  let now = t0;

  const check = (acts: MembershipAction[], cause: { kind: string; peer?: string; newer?: boolean; ok?: boolean }) => {
    const resolved: string[] = [];
    for (const a of acts) {
      if (a.kind === 'probe') {
        assert(a.peer !== SELF, 'never probes itself');
        assert(!a.indirectVia.includes(a.peer) && !a.indirectVia.includes(SELF), 'helpers exclude target and self');
        assert(new Set(a.indirectVia).size === a.indirectVia.length, 'helpers distinct');
        assert(a.indirectVia.length <= timing.indirectProbes, 'at most indirectProbes helpers');
        for (const v of a.indirectVia) assert(m.get(v)?.state === 'alive' || m.get(v)?.state === 'suspect', 'helpers were alive (may turn suspect later in the same tick)');
        assert(probing || !a.routine, 'no routine probes when they are off');
        if (a.routine) {
          assert(m.get(a.peer)?.state === 'alive', 'routine probes only of alive depots');
          routineStarted.set(a.peer, { id: a.id, at: now });
        } else routineStarted.delete(a.peer);
        probes++;
        probeStarted.set(a.peer, now);
        probeFailedFed.delete(a.peer);
        const proc = byId.get(a.peer)!;
        const r = rnd();
        // The probe never answers: suspectTimeoutMs must end it (in clean probing runs every probe answers).
        if (r < 0.1 && !(clean && probing)) continue;
        const ok = proc.running && !(!clean && r < 0.2);
        pending.push({ at: now + 5 + Math.floor(rnd() * (PROBE_TIMEOUT + 100)), kind: 'probe', peer: a.peer, ok, id: a.id });
        continue;
      }
      if (a.kind === 'declare-dead') {
        // Own verdicts only after a probe round of this suspicion that failed or timed out.
        const started = probeStarted.get(a.peer);
        assert(started !== undefined, `declare-dead without a probe (${a.peer})`);
        assert(probeFailedFed.has(a.peer) || now - started! >= timing.suspectTimeoutMs, 'declare-dead before the probe failed or timed out');
        assert(m.get(a.peer)?.state === 'dead', 'declared dead is dead');
        continue;
      }
      if (a.kind === 'forget') {
        leftInc.delete(a.peer); // forgotten: a later report starts from nothing
        maxSeen.delete(a.peer);
        continue;
      }
      if (a.kind !== 'transition') continue;
      transitions++;
      assert(a.peer !== SELF, 'self never transitions');
      const left = leftInc.get(a.peer);
      if (a.to === 'dead') {
        deaths++;
        // A left depot is never marked dead (same incarnation).
        if (left !== undefined) assert(a.incarnation > left, `left depot marked dead: ${JSON.stringify({ a, cause })}`);
        if (cause.kind === 'tick' || cause.kind === 'probe') {
          assert(a.from === 'suspect', 'dead only from suspect');
          assert(probeStarted.has(a.peer), 'dead without a probe round');
        } else {
          assert(cause.kind === 'dead-report', 'dead only by own probe round or a report');
        }
      }
      if (a.to === 'alive' && a.from !== 'unknown') {
        if (a.from === 'suspect') assert(cause.kind === 'hb' ? cause.newer === true : cause.kind === 'probe' && cause.ok === true, 'suspect->alive needs newer heartbeat or answered probe');
        if (a.from === 'dead' || a.from === 'left') {
          assert(cause.kind === 'hb' && cause.newer === true, `${a.from}->alive needs a newer heartbeat`);
        }
        if (a.from === 'left') assert(a.incarnation > left!, 'left->alive needs a new incarnation');
      }
      if (a.to === 'suspect') {
        if (cause.kind === 'tick') {
          const routine = routineStarted.get(a.peer);
          assert(
            now - (lastHeard.get(a.peer) ?? -Infinity) > suspectAfter || (routine !== undefined && now - routine.at >= timing.suspectTimeoutMs),
            `suspect too early: ${JSON.stringify({ a, now, lh: lastHeard.get(a.peer), rs: routineStarted.get(a.peer), ps: probeStarted.get(a.peer), seed })}`,
          );
        } else assert(cause.kind === 'dead-report' || (cause.kind === 'probe' && cause.ok === false), 'suspect only by tick, failed routine probe or doubted report');
        routineStarted.delete(a.peer);
      }
      if (a.to === 'left') leaves++;
      if (a.to !== 'suspect') resolved.push(a.peer);
    }
    for (const p of resolved) probeStarted.delete(p);
  };

  const feed = (p: Pending) => {
    if (p.kind === 'hb') {
      const prev = maxSeen.get(p.msg.peerId);
      const newer = !prev || p.msg.incarnation > prev[0] || (p.msg.incarnation === prev[0] && p.msg.seq > prev[1]);
      const before = m.get(p.msg.peerId)?.state;
      const acts = m.observeHeartbeat(p.msg, now);
      check(acts, { kind: 'hb', peer: p.msg.peerId, newer });
      if (newer) {
        maxSeen.set(p.msg.peerId, [p.msg.incarnation, p.msg.seq]);
        const left = leftInc.get(p.msg.peerId);
        if (!(before === 'left' && left === p.msg.incarnation)) lastHeard.set(p.msg.peerId, now);
      }
      lastDelivered.set(p.msg.peerId, now);
    } else if (p.kind === 'left') {
      const prevLeft = leftInc.get(p.peer);
      const acts = m.observeLeft({ type: 'left', v: 1, peerId: p.peer, name: p.peer, incarnation: p.incarnation, sentAt: now }, now);
      const known = m.get(p.peer)!;
      if (known.incarnation === p.incarnation) leftInc.set(p.peer, Math.max(prevLeft ?? 0, p.incarnation));
      check(acts, { kind: 'left', peer: p.peer });
      assert(known.state === 'left' || known.incarnation > p.incarnation, 'left applied');
    } else if (p.kind === 'dead') {
      check(m.observeDead({ type: 'dead', v: 1, peerId: p.peer, incarnation: p.incarnation, by: '12D3KooWOtherOther', sentAt: now }, now), {
        kind: 'dead-report',
        peer: p.peer,
      });
    } else if (p.kind === 'conn-lost') {
      check(m.connectionLost(p.peer, now), { kind: 'conn-lost', peer: p.peer });
    } else {
      const current = m.get(p.peer);
      const wasRoutine = routineStarted.has(p.peer);
      if (!p.ok) probeFailedFed.add(p.peer);
      const acts = m.probeResult(p.peer, p.ok, now, p.id);
      if (p.ok && m.get(p.peer)?.lastHeardAt === now && current) lastHeard.set(p.peer, now);
      if (wasRoutine && routineStarted.get(p.peer)?.id === p.id) routineStarted.delete(p.peer);
      check(acts, { kind: 'probe', peer: p.peer, ok: p.ok });
    }
  };

  const crashedAt = new Map<string, number>();
  const lastAliveWindow = new Map<string, number>();

  for (; now < t0 + durationMs; now += STEP) {
    // Processes act.
    for (const p of procs) {
      if (p.running && now >= p.nextBeat) {
        p.seq += 1;
        p.lastSentAt = now;
        const delay = Math.floor(rnd() * 200);
        const lost = !clean && rnd() < 0.15;
        if (!lost) pending.push({ at: now + delay, kind: 'hb', msg: heartbeat(p, now) });
        if (rnd() < 0.1) pending.push({ at: now + Math.floor(rnd() * 2500), kind: 'hb', msg: heartbeat(p, now) }); // late duplicate
        p.nextBeat = now + beatEvery;
      }
      const r = rnd();
      if (p.running && r < 0.002) {
        p.running = false; // kill -9
        crashedAt.set(p.id, now);
        // The kernel resets its connections (a power loss would not): half the crashes tell.
        if (probing && rnd() < 0.5) pending.push({ at: now + Math.floor(rnd() * 50), kind: 'conn-lost', peer: p.id });
      } else if (p.running && r < 0.003) {
        p.running = false; // clean stop announces left
        p.left = true;
        pending.push({ at: now + Math.floor(rnd() * 200), kind: 'left', peer: p.id, incarnation: p.incarnation });
      } else if (!p.running && r < 0.004) {
        p.running = true; // restart: new incarnation, seq from 0
        p.left = false;
        p.incarnation = now;
        p.seq = 0;
        p.nextBeat = now;
        crashedAt.delete(p.id);
      }
      // A connection of a live depot drops now and then (it must be probed, and answer).
      if (probing && p.running && rnd() < 0.001) pending.push({ at: now + Math.floor(rnd() * 50), kind: 'conn-lost', peer: p.id });
      // Another depot's death report: truthful about a crashed one, or (unclean runs) false.
      if (rnd() < 0.003 && ((!p.running && !p.left) || !clean)) {
        pending.push({ at: now + Math.floor(rnd() * 300), kind: 'dead', peer: p.id, incarnation: p.incarnation, truthful: !p.running });
      }
    }
    // Deliver what is due, in random order among the due ones (reordering).
    const due = pending.filter((x) => x.at <= now);
    pending = pending.filter((x) => x.at > now);
    due.sort(() => rnd() - 0.5);
    for (const x of due) feed(x);
    check(m.tick(now), { kind: 'tick' });

    // Global invariants on the view.
    for (const v of m.view()) {
      assert(v.state === 'alive' || v.state === 'suspect' || v.state === 'dead' || v.state === 'left', 'known state');
      const left = leftInc.get(v.peerId);
      if (left !== undefined && v.incarnation === left) assert(v.state === 'left', 'left stays left');
    }
    if (clean) {
      for (const p of procs) {
        const v = m.get(p.id);
        if (!v) continue;
        // A live depot whose heartbeats arrive on time is never suspected or dead.
        if (p.running && v.incarnation === p.incarnation && now - p.incarnation > 500) {
          assert(v.state === 'alive', `live ${p.id} is ${v.state} at +${now - t0} (seed ${seed})`);
        }
        // A crashed depot is dead within: last delivery + suspicion window + a step + probe answer.
        const crashed = crashedAt.get(p.id);
        const lastD = lastDelivered.get(p.id);
        if (!p.running && crashed !== undefined && lastD !== undefined && v.incarnation === p.incarnation && !p.left) {
          // Probing: its turn comes within two rounds (one probe in flight may still answer ok),
          // then the routine probe fails and the suspicion round runs out.
          const bound = probing
            ? crashed + (2 * nPeers + 1) * PROBE_INTERVAL + 2 * STEP + PROBE_TIMEOUT + 100 + timing.suspectTimeoutMs
            : Math.max(lastD, lastHeard.get(p.id) ?? 0) + suspectAfter + STEP + timing.suspectTimeoutMs;
          if (now > bound) assert(v.state === 'dead', `crashed ${p.id} is ${v.state} at +${now - t0} (seed ${seed}, ${mode})`);
        }
        lastAliveWindow.set(p.id, now);
      }
    }
  }
  // Forgetting: nothing dead or left lingers longer than forgetAfterMs (+ a step).
  for (const v of m.view()) {
    if (v.state === 'dead' || v.state === 'left') assert(now - v.since <= timing.forgetAfterMs + STEP, 'forgotten in time');
  }
  return { transitions, deaths, leaves, probes };
}

describe('Membership under random histories', () => {
  it('keeps its invariants over 200 seeds with loss, duplicates, reordering and false reports', () => {
    let transitions = 0;
    let deaths = 0;
    let leaves = 0;
    for (let seed = 1; seed <= 200; seed++) {
      const r = run({ clean: false, seed, durationMs: 60_000 });
      transitions += r.transitions;
      deaths += r.deaths;
      leaves += r.leaves;
    }
    // The histories really exercised the machine.
    expect(transitions).toBeGreaterThan(1000);
    expect(deaths).toBeGreaterThan(100);
    expect(leaves).toBeGreaterThan(50);
  });

  it('keeps its timing promises over 200 clean seeds (no loss, no false reports)', () => {
    let deaths = 0;
    for (let seed = 1001; seed <= 1200; seed++) deaths += run({ clean: true, seed, durationMs: 60_000 }).deaths;
    expect(deaths).toBeGreaterThan(100);
  });

  it('probing mode keeps its invariants over 200 seeds with loss, false reports and dropped connections', () => {
    let deaths = 0;
    let probes = 0;
    for (let seed = 2001; seed <= 2200; seed++) {
      const r = run({ clean: false, seed, durationMs: 60_000, mode: 'probes' });
      deaths += r.deaths;
      probes += r.probes;
    }
    expect(deaths).toBeGreaterThan(100);
    expect(probes).toBeGreaterThan(10_000);
  });

  it('probing mode keeps its timing promises over 200 clean seeds (live never suspected, crashed dead in bounded time)', () => {
    let deaths = 0;
    for (let seed = 3001; seed <= 3200; seed++) deaths += run({ clean: true, seed, durationMs: 60_000, mode: 'probes' }).deaths;
    expect(deaths).toBeGreaterThan(100);
  });

});
