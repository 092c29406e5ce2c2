import { describe, expect, it } from 'vitest';
import { Membership, type MembershipAction } from '../../depot/membership/membership.ts';
import type { HeartbeatMessage } from '../../shared/wire.ts';

const SELF = '12D3KooWSelf000000000000';
const A = '12D3KooWAaaa000000000000';
const B = '12D3KooWBbbb000000000000';
const C = '12D3KooWCccc000000000000';
const T0 = 1_700_000_000_000;

function hb(peerId: string, seq: number, incarnation = 100, name = peerId.slice(8, 12)): HeartbeatMessage {
  return {
    type: 'heartbeat',
    v: 1,
    peerId,
    name,
    seq,
    incarnation,
    sentAt: T0,
    addresses: [],
    hostAddresses: [],
    bootTime: 0,
    uptimeS: 1,
    load: [0, 0, 0],
    cpus: 1,
    memFreeBytes: 1,
    memTotalBytes: 2,
    diskFreeBytes: 3,
    images: [],
    staging: [],
    containers: [],
    version: '0.1.0',
  };
}

const kinds = (acts: MembershipAction[]) => acts.map((a) => (a.kind === 'transition' ? `${a.peer.slice(8, 12)}:${a.from}->${a.to}` : `${a.kind}`));

// Heartbeat mode (routine probes off, a heartbeat every second): liveness from heartbeats alone.
const HEARTBEATS = { heartbeatRefreshMs: 1000, probeIntervalMs: 0 };

function fresh(): Membership {
  const m = new Membership({ selfId: SELF, random: () => 0, timing: HEARTBEATS });
  m.observeHeartbeat(hb(SELF, 0), T0);
  m.observeHeartbeat(hb(A, 0), T0);
  m.observeHeartbeat(hb(B, 0), T0);
  m.observeHeartbeat(hb(C, 0), T0);
  return m;
}

describe('Membership (pure failure detector)', () => {
  it('adds depots alive on their first heartbeat and includes itself', () => {
    const m = fresh();
    expect(m.view().map((v) => [v.name, v.state, v.self])).toEqual([
      ['Self', 'alive', true],
      ['Aaaa', 'alive', false],
      ['Bbbb', 'alive', false],
      ['Cccc', 'alive', false],
    ]);
  });

  it('stays alive while heartbeats keep coming, suspects after 3 missed, then probes with 2 indirect helpers', () => {
    const m = fresh();
    for (let s = 1; s <= 5; s++) {
      for (const p of [A, B, C]) m.observeHeartbeat(hb(p, s), T0 + s * 1000);
      expect(m.tick(T0 + s * 1000 + 500)).toEqual([]);
    }
    // C stops after seq 5 (t=5000). Exactly 3000 ms later it is not yet suspect; just after, it is.
    for (let s = 6; s <= 8; s++) for (const p of [A, B]) m.observeHeartbeat(hb(p, s), T0 + s * 1000);
    expect(m.tick(T0 + 8000)).toEqual([]);
    const acts = m.tick(T0 + 8001);
    expect(kinds(acts)).toEqual(['Cccc:alive->suspect', 'probe']);
    const probe = acts[1] as Extract<MembershipAction, { kind: 'probe' }>;
    expect(probe.peer).toBe(C);
    expect(probe.indirectVia.sort()).toEqual([A, B].sort());
    expect(m.get(C)?.state).toBe('suspect');
  });

  it('declares dead after a failed probe round and asks to gossip it', () => {
    const m = fresh();
    m.tick(T0 + 3001);
    const acts = m.probeResult(A, false, T0 + 3400);
    expect(kinds(acts)).toEqual(['Aaaa:suspect->dead', 'declare-dead']);
    expect(acts[1]).toEqual({ kind: 'declare-dead', peer: A, incarnation: 100 });
  });

  it('returns to alive when the probe is answered, and suspects again if heartbeats still do not come', () => {
    const m = fresh();
    m.tick(T0 + 3001);
    expect(kinds(m.probeResult(A, true, T0 + 3100))).toEqual(['Aaaa:suspect->alive']);
    expect(m.tick(T0 + 6100).filter((a) => a.kind === 'transition' && a.peer === A)).toEqual([]);
    expect(kinds(m.tick(T0 + 6101).filter((a) => 'peer' in a && a.peer === A))).toEqual(['Aaaa:alive->suspect', 'probe']);
  });

  it('declares dead when the probe round gets no answer within suspectTimeoutMs', () => {
    const m = fresh();
    m.tick(T0 + 3001);
    expect(m.tick(T0 + 3001 + 1499).filter((a) => a.kind !== 'probe')).toEqual([]);
    expect(kinds(m.tick(T0 + 3001 + 1500).filter((a) => 'peer' in a && a.peer === A))).toEqual(['Aaaa:suspect->dead', 'declare-dead']);
  });

  it('ignores a late probe result once the suspicion was resolved by a heartbeat', () => {
    const m = fresh();
    m.tick(T0 + 3001);
    expect(kinds(m.observeHeartbeat(hb(A, 1), T0 + 3050))).toEqual(['Aaaa:suspect->alive']);
    expect(m.probeResult(A, false, T0 + 3200)).toEqual([]);
    expect(m.get(A)?.state).toBe('alive');
  });

  it('a left depot is final for its incarnation: not dead, not revived by its own late heartbeats', () => {
    const m = fresh();
    expect(kinds(m.observeLeft({ type: 'left', v: 1, peerId: A, name: 'Aaaa', incarnation: 100, sentAt: T0 }, T0 + 10))).toEqual(['Aaaa:alive->left']);
    expect(m.observeHeartbeat(hb(A, 7), T0 + 20)).toEqual([]);
    expect(m.observeDead({ type: 'dead', v: 1, peerId: A, incarnation: 100, by: B, sentAt: T0 }, T0 + 5000)).toEqual([]);
    expect(m.tick(T0 + 60_000).filter((a) => 'peer' in a && a.peer === A)).toEqual([]);
    expect(m.get(A)?.state).toBe('left');
    // A restart (new incarnation) is welcome back.
    expect(kinds(m.observeHeartbeat(hb(A, 0, 200), T0 + 61_000))).toEqual(['Aaaa:left->alive']);
    expect(m.get(A)?.incarnation).toBe(200);
  });

  it('a dead depot comes back only with a newer heartbeat or a new incarnation', () => {
    const m = fresh();
    m.observeHeartbeat(hb(A, 5), T0 + 100);
    m.tick(T0 + 3101);
    m.probeResult(A, false, T0 + 3200);
    expect(m.get(A)?.state).toBe('dead');
    expect(m.observeHeartbeat(hb(A, 5), T0 + 3300)).toEqual([]); // duplicate
    expect(m.observeHeartbeat(hb(A, 3), T0 + 3300)).toEqual([]); // reordered old one
    expect(m.observeHeartbeat(hb(A, 9, 50), T0 + 3300)).toEqual([]); // older incarnation
    expect(m.get(A)?.state).toBe('dead');
    expect(kinds(m.observeHeartbeat(hb(A, 6), T0 + 3400))).toEqual(['Aaaa:dead->alive']);
  });

  it('a death report is checked, never taken on trust: suspect, own probe round, own verdict', () => {
    const m = fresh();
    m.observeHeartbeat(hb(A, 1), T0 + 1000);
    const acts = m.observeDead({ type: 'dead', v: 1, peerId: A, incarnation: 100, by: B, sentAt: T0 }, T0 + 1500);
    expect(kinds(acts)).toEqual(['Aaaa:alive->suspect', 'probe']);
    // Not heard for a long time: still only suspect (the reporter may be the slow one).
    const acts2 = m.observeDead({ type: 'dead', v: 1, peerId: C, incarnation: 100, by: B, sentAt: T0 }, T0 + 2500);
    expect(kinds(acts2)).toEqual(['Cccc:alive->suspect', 'probe']);
    expect(m.observeDead({ type: 'dead', v: 1, peerId: C, incarnation: 100, by: A, sentAt: T0 }, T0 + 2600)).toEqual([]); // already checking
    // The probe answered: alive, nothing gossiped. The probe failed: dead by its own verdict.
    const probeA = acts.find((a) => a.kind === 'probe') as Extract<MembershipAction, { kind: 'probe' }>;
    expect(kinds(m.probeResult(A, true, T0 + 1700, probeA.id))).toEqual(['Aaaa:suspect->alive']);
    const probeC = acts2.find((a) => a.kind === 'probe') as Extract<MembershipAction, { kind: 'probe' }>;
    expect(kinds(m.probeResult(C, false, T0 + 2800, probeC.id))).toEqual(['Cccc:suspect->dead', 'declare-dead']);
  });

  it('refutes a death report about itself and never suspects itself', () => {
    const m = fresh();
    expect(m.observeDead({ type: 'dead', v: 1, peerId: SELF, incarnation: 100, by: B, sentAt: T0 }, T0)).toEqual([{ kind: 'refute', by: B }]);
    expect(m.tick(T0 + 100_000).some((a) => 'peer' in a && a.peer === SELF)).toBe(false);
    expect(m.get(SELF)?.state).toBe('alive');
  });

  it('keeps tombstones for unknown depots reported left or dead, and forgets them later', () => {
    const m = new Membership({ selfId: SELF, timing: { ...HEARTBEATS, forgetAfterMs: 10_000 } });
    expect(kinds(m.observeLeft({ type: 'left', v: 1, peerId: A, name: 'Aaaa', incarnation: 100, sentAt: T0 }, T0))).toEqual(['Aaaa:unknown->left']);
    expect(m.observeHeartbeat(hb(A, 50), T0 + 1)).toEqual([]);
    expect(m.tick(T0 + 9_999)).toEqual([]);
    expect(m.tick(T0 + 10_000)).toEqual([{ kind: 'forget', peer: A, name: 'Aaaa' }]);
    expect(m.get(A)).toBeUndefined();
  });

  it('counts members by state', () => {
    const m = fresh();
    m.tick(T0 + 3001);
    m.probeResult(A, false, T0 + 3100);
    expect(m.countByState()).toEqual({ alive: 1, suspect: 2, dead: 1, left: 0 });
  });

  it('uses the configured timing', () => {
    const m = new Membership({ selfId: SELF, timing: { heartbeatMs: 200, heartbeatRefreshMs: 200, probeIntervalMs: 0, suspectAfterMissed: 5, indirectProbes: 0 } });
    m.observeHeartbeat(hb(A, 0), T0);
    m.observeHeartbeat(hb(B, 0), T0);
    expect(m.tick(T0 + 1000)).toEqual([]);
    const acts = m.tick(T0 + 1001);
    expect(acts.filter((a) => a.kind === 'probe').map((a) => ({ ...a, id: 0 }))).toEqual([
      { kind: 'probe', peer: A, indirectVia: [], routine: false, id: 0 },
      { kind: 'probe', peer: B, indirectVia: [], routine: false, id: 0 },
    ]);
  });
});

describe('Membership with routine probes (the defaults: SWIM)', () => {
  const probesOf = (acts: MembershipAction[]) => acts.filter((a): a is Extract<MembershipAction, { kind: 'probe' }> => a.kind === 'probe');

  function probing(): Membership {
    const m = new Membership({ selfId: SELF, random: () => 0 });
    for (const p of [SELF, A, B, C]) m.observeHeartbeat(hb(p, 0), T0);
    return m;
  }

  it('probes one depot per interval, every alive one once per round, never itself; silence alone is no reason to suspect', () => {
    const m = probing();
    const probed: string[] = [];
    for (let t = T0; t < T0 + 6000; t += 100) {
      for (const p of probesOf(m.tick(t))) {
        expect(p.routine).toBe(true);
        probed.push(p.peer);
        m.probeResult(p.peer, true, t + 20, p.id);
      }
    }
    expect(probed).toHaveLength(6); // one per 1000 ms
    expect(new Set(probed.slice(0, 3))).toEqual(new Set([A, B, C]));
    expect(new Set(probed.slice(3, 6))).toEqual(new Set([A, B, C]));
    expect(probed).not.toContain(SELF);
    // No heartbeat for 6 s (refresh is 60 s), answered probes: everyone alive, heard recently.
    expect(m.view().every((v) => v.state === 'alive')).toBe(true);
    expect(m.get(A)!.lastHeardAt).toBeGreaterThan(T0 + 2000);
  });

  it('a failed routine probe makes the depot suspect and starts a full probe round; that failing too, it is dead', () => {
    const m = probing();
    const [p] = probesOf(m.tick(T0));
    const acts = m.probeResult(p!.peer, false, T0 + 900, p!.id);
    expect(acts.map((a) => (a.kind === 'transition' ? `${a.from}->${a.to}` : a.kind))).toEqual(['alive->suspect', 'probe']);
    const round = probesOf(acts)[0]!;
    expect(round.routine).toBe(false);
    expect(round.indirectVia).toHaveLength(2);
    expect(kinds(m.probeResult(p!.peer, false, T0 + 1200, round.id))).toEqual([`${p!.peer.slice(8, 12)}:suspect->dead`, 'declare-dead']);
  });

  it('a routine probe with no result within suspectTimeoutMs plus its own three ping timeouts counts as failed', () => {
    const m = probing();
    const [p] = probesOf(m.tick(T0));
    expect(m.tick(T0 + 2999).filter((a) => a.kind === 'transition')).toEqual([]);
    expect(m.tick(T0 + 3000).filter((a) => a.kind === 'transition' && a.peer === p!.peer).map((a) => (a as { to: string }).to)).toEqual(['suspect']);
  });

  it('a lost connection is probed at once, not at its turn; a result of an older probe is ignored', () => {
    const m = probing();
    const [first] = probesOf(m.tick(T0)); // routine probe of one depot in flight
    const other = [A, B, C].find((x) => x !== first!.peer)!;
    const now = probesOf(m.connectionLost(other, T0 + 100));
    expect(now).toHaveLength(1);
    expect(now[0]).toMatchObject({ peer: other, routine: true });
    expect(m.connectionLost(other, T0 + 150)).toEqual([]); // already being probed
    // The first probe's result, reported with another id, changes nothing.
    expect(m.probeResult(first!.peer, false, T0 + 200, first!.id + 100)).toEqual([]);
    expect(m.get(first!.peer)!.state).toBe('alive');
    expect(kinds(m.probeResult(other, false, T0 + 300, now[0]!.id))).toEqual([`${other.slice(8, 12)}:alive->suspect`, 'probe']);
  });

  it('a starved depot (slack from its own event-loop delay) gives probes longer before it blames the other', () => {
    const m = probing();
    const [p] = probesOf(m.tick(T0));
    expect(m.tick(T0 + 3000, 2000).filter((a) => a.kind === 'transition')).toEqual([]);
    expect(m.tick(T0 + 6999, 2000).filter((a) => a.kind === 'transition')).toEqual([]);
    expect(m.tick(T0 + 7000, 2000).filter((a) => a.kind === 'transition' && a.peer === p!.peer).map((a) => (a as { to: string }).to)).toEqual(['suspect']);
  });

  it('nothing heard at all for 3 refresh intervals (no heartbeat, no probe answer) still makes a depot suspect', () => {
    const m = new Membership({ selfId: SELF, random: () => 0, timing: { probeIntervalMs: 0 } });
    m.observeHeartbeat(hb(A, 0), T0);
    expect(m.tick(T0 + 90_000)).toEqual([]);
    expect(kinds(m.tick(T0 + 90_001))).toEqual(['Aaaa:alive->suspect', 'probe']);
  });
});
