import { describe, it, expect } from 'vitest';
import { groupSize, initialGroup, nextGroupChange, rankVoters, stabilityClass, type GroupSettings, type VoterCandidate } from '../../pilot/election/voter-group.ts';
import { majority } from '../../pilot/election/views.ts';
import { mulberry32 } from '../helpers/election-sim.ts';
import { RestartHistory, voterObservations } from '../../pilot/cluster-view.ts';
import type { DepotComponents } from '../../depot/components.ts';

// The voter group (pilot/election/voter-group.ts): ranking, size, one change at a time. The
// property runs drive a made-up cluster with a fake clock (depots start, restart, leave, die) and
// check that the group always converges to what the ranking says, one member per step.

const S5: GroupSettings = { voters: 5, preferred: [] };

function cand(peer: string, over: Partial<VoterCandidate> = {}): VoterCandidate {
  return { peer, host: `host-${peer}`, state: 'alive', sessionS: 7200, restarts: 0, holdsCopy: false, ...over };
}

describe('voter ranking', () => {
  it('orders by preferred host, then stability class, then holding no copy, then peer id; with reasons', () => {
    const ranked = rankVoters(
      [
        cand('a', { holdsCopy: true }),
        cand('b'),
        cand('c', { sessionS: 30 }),
        cand('d', { host: 'always-on' , sessionS: 10 }),
        cand('e', { state: 'dead' }),
        cand('f', { restarts: 2 }),
        cand('g', { state: 'suspect' }),
      ],
      { preferred: ['always-on'] },
    );
    expect(ranked.map((r) => r.peer)).toEqual(['d', 'b', 'a', 'f', 'c']);
    expect(ranked[0]).toMatchObject({ rank: 1, preferred: true, reasons: ['preferred host', 'up < 1 min', 'holds no copy'] });
    expect(ranked[1]!.reasons).toEqual(['up ≥ 1 h', 'holds no copy']);
    expect(ranked[2]!.reasons).toEqual(['up ≥ 1 h', 'holds a copy']);
    expect(ranked[3]!.reasons).toEqual(['up ≥ 1 h, 2 restarts lately', 'holds no copy']);
  });

  it("outlook from the hosts' past sessions comes before stability: a PC that goes off at 18:00 ranks low at 17:30, one left on at night high", () => {
    const ranked = rankVoters(
      [
        cand('evening', { sessionS: 90_000, remainingS: 1800 }),
        cand('unknown', { sessionS: 7200 }),
        cand('night', { sessionS: 700, remainingS: 15 * 3600 }),
        cand('off', { sessionS: 7200, remainingS: 0 }),
        cand('day', { sessionS: 7200, remainingS: 3 * 3600 }),
      ],
      { preferred: [] },
    );
    expect(ranked.map((r) => r.peer)).toEqual(['night', 'day', 'unknown', 'evening', 'off']);
    expect(ranked[0]!.reasons).toEqual(['usually on 8 h or more', 'up ≥ 10 min', 'holds no copy']);
    expect(ranked[1]!.reasons).toEqual(['usually on 3 h more', 'up ≥ 1 h', 'holds no copy']);
    expect(ranked[3]!.reasons).toEqual(['usually off within the hour', 'up ≥ 1 day', 'holds no copy']);
    expect(ranked[4]!.reasons[0]).toBe('usually off at this hour');
    // A replacement voter is the host that will stay on.
    const change = nextGroupChange(['unknown', 'evening'], [cand('unknown'), cand('evening', { remainingS: 600 }), cand('night', { remainingS: 40_000 }), cand('day', { remainingS: 4 * 3600 })], { voters: 3, preferred: [] });
    expect(change).toMatchObject({ kind: 'add', peer: 'night' });
  });

  it('stability classes step at 1 min, 10 min, 1 h, 1 day; each recent restart costs a class', () => {
    const at = (sessionS: number, restarts = 0) => stabilityClass({ sessionS, restarts });
    expect([0, 59, 60, 599, 600, 3599, 3600, 86_399, 86_400, 10 ** 7].map((s) => at(s))).toEqual([0, 0, 1, 1, 2, 2, 3, 3, 4, 4]);
    expect(at(86_400, 1)).toBe(3);
    expect(at(86_400, 9)).toBe(0);
  });

  it('does not depend on the order candidates are listed in', () => {
    const rnd = mulberry32(7);
    for (let run = 0; run < 200; run++) {
      const cs = Array.from({ length: 1 + Math.floor(rnd() * 20) }, (_, i) =>
        cand(`p${String(i).padStart(2, '0')}`, { sessionS: Math.floor(rnd() * 100_000), restarts: Math.floor(rnd() * 3), holdsCopy: rnd() < 0.3, host: `h${Math.floor(rnd() * 10)}` }),
      );
      const shuffled = [...cs].sort(() => rnd() - 0.5);
      const settings = { preferred: ['h1', 'h2'] };
      expect(rankVoters(shuffled, settings)).toEqual(rankVoters(cs, settings));
    }
  });
});

describe('group size', () => {
  it('is election.voters, or every depot when fewer, odd from 3 up', () => {
    expect([0, 1, 2, 3, 4, 5, 6, 7, 30, 200].map((n) => groupSize(n, 5))).toEqual([1, 1, 2, 3, 3, 5, 5, 5, 5, 5]);
    expect([3, 4, 6, 7, 8, 9].map((n) => groupSize(n, 7))).toEqual([3, 3, 5, 7, 7, 7]);
    expect([1, 2, 5].map((n) => groupSize(n, 1))).toEqual([1, 1, 1]);
    expect(groupSize(2, 3)).toBe(2);
  });
});

describe('group changes', () => {
  const five = ['a', 'b', 'c', 'd', 'e'];
  const cluster = (over: Record<string, Partial<VoterCandidate>> = {}, extra = ['f', 'g']) => [...five, ...extra].map((p) => cand(p, over[p] ?? {}));

  it('a voter that left cleanly is replaced at once: removed, then the best-ranked depot outside joins', () => {
    const cs = cluster({ c: { state: 'left' }, f: { sessionS: 5 } });
    const out = nextGroupChange(five, cs, S5);
    expect(out).toMatchObject({ kind: 'remove-left', peer: 'c', voters: ['a', 'b', 'd', 'e'] });
    expect(nextGroupChange(out!.voters, cs, S5)).toMatchObject({ kind: 'add', peer: 'g', voters: ['a', 'b', 'd', 'e', 'g'] });
    expect(nextGroupChange(['a', 'b', 'd', 'e', 'g'], cs, S5)).toBeNull();
  });

  it('a dead voter goes only when a majority of the group reports it dead (non-voters and itself do not count)', () => {
    const cs = cluster({ c: { state: 'dead' } });
    const by = (list: string[]) => (p: string) => (p === 'c' ? list : []);
    expect(nextGroupChange(five, cs, S5, by(['a', 'b']))).toBeNull();
    expect(nextGroupChange(five, cs, S5, by(['a', 'b', 'c', 'f', 'g']))).toBeNull();
    expect(nextGroupChange(five, cs, S5, by(['a', 'b', 'd']))).toMatchObject({ kind: 'remove-dead', peer: 'c', reason: 'host-c dead for 3 of 5 voters' });
    // Suspect is not dead: the group waits (and a suspect voter keeps counting for the size).
    expect(nextGroupChange(five, cluster({ c: { state: 'suspect' } }), S5, by(['a', 'b', 'd']))).toBeNull();
  });

  it('a voter the membership forgot counts as dead, reported by the alive voters listed', () => {
    const cs = cluster().filter((c) => c.peer !== 'c');
    expect(nextGroupChange(five, cs, S5)).toMatchObject({ kind: 'remove-dead', peer: 'c' });
    // ...but not when fewer than a majority of the group is listed alive.
    const few = cluster({ d: { state: 'suspect' }, e: { state: 'suspect' } }).filter((c) => c.peer !== 'c');
    expect(nextGroupChange(five, few, S5)).toBeNull();
  });

  it('grows to its size with the best-ranked depots, never beyond', () => {
    const cs = cluster({ f: { holdsCopy: true } }, ['f', 'g', 'h']);
    expect(nextGroupChange(['a', 'b', 'c'], cs, S5)).toMatchObject({ kind: 'add', peer: 'd' });
    expect(nextGroupChange(five, cs, S5)).toBeNull();
    expect(nextGroupChange(['a'], [cand('a'), cand('b')], S5)).toMatchObject({ kind: 'add', peer: 'b', voters: ['a', 'b'] });
  });

  it('an old all-depots group shrinks to its size, the lowest-ranked first (not alive before alive)', () => {
    const all = ['a', 'b', 'c', 'd', 'e', 'f', 'g'];
    const cs = all.map((p) => cand(p, p === 'b' ? { state: 'suspect' } : p === 'g' ? { sessionS: 1 } : {}));
    const first = nextGroupChange(all, cs, S5);
    expect(first).toMatchObject({ kind: 'shrink', peer: 'b' });
    expect(nextGroupChange(first!.voters, cs, S5)).toMatchObject({ kind: 'shrink', peer: 'g' });
  });

  it('an alive preferred host displaces the lowest non-preferred voter, then joins', () => {
    const cs = cluster({ g: { host: 'server' }, e: { sessionS: 100 } });
    const settings = { voters: 5, preferred: ['server'] };
    const out = nextGroupChange(five, cs, settings);
    expect(out).toMatchObject({ kind: 'prefer', peer: 'e' });
    expect(nextGroupChange(out!.voters, cs, settings)).toMatchObject({ kind: 'add', peer: 'g' });
    // A group of one makes room by growing first (never empty), then drops the other.
    const one = { voters: 1, preferred: ['server'] };
    const grow = nextGroupChange(['a'], cs, one);
    expect(grow).toMatchObject({ kind: 'prefer', voters: ['a', 'g'] });
    expect(nextGroupChange(grow!.voters, cs, one)).toMatchObject({ kind: 'shrink', peer: 'a', voters: ['g'] });
    // When every voter is preferred, nothing moves.
    const allPreferred = { voters: 3, preferred: ['host-a', 'host-b', 'host-c', 'server'] };
    expect(nextGroupChange(['a', 'b', 'c'], cs, allPreferred)).toBeNull();
  });

  it('never removes the last voter', () => {
    expect(nextGroupChange(['a'], [cand('a', { state: 'left' })], S5)).toBeNull();
    expect(nextGroupChange(['a'], [cand('a', { state: 'dead' })], S5, () => ['a'])).toBeNull();
  });

  it('the first group is the best-ranked alive depots, self when none is known', () => {
    const cs = Array.from({ length: 30 }, (_, i) => cand(`p${String(i).padStart(2, '0')}`, { sessionS: i * 4000, holdsCopy: i === 29 }));
    // p22..p29 are up a day or more; p29 holds a copy; then the peer id decides.
    expect(initialGroup(cs, S5, 'self')).toEqual(['p22', 'p23', 'p24', 'p25', 'p26']);
    expect(initialGroup([], S5, 'self')).toEqual(['self']);
  });
});

describe('group maintenance over a cluster driven by a fake clock (seeded)', () => {
  interface Depot {
    peer: string;
    host: string;
    startedAt: number;
    restartsAt: number[];
    state: VoterCandidate['state'];
    holdsCopy: boolean;
  }

  function candidates(depots: Depot[], now: number): VoterCandidate[] {
    return depots.map((d) => ({
      peer: d.peer,
      host: d.host,
      state: d.state,
      sessionS: Math.max(0, (now - d.startedAt) / 1000),
      restarts: d.restartsAt.filter((t) => now - t < 3_600_000).length,
      holdsCopy: d.holdsCopy,
    }));
  }

  it('converges to a group of the right size, of alive depots, one member per step, and then stays put', () => {
    const failures: string[] = [];
    for (let seed = 1; seed <= 300; seed++) {
      const rnd = mulberry32(seed);
      const n = 1 + Math.floor(rnd() * 200);
      const target = [1, 3, 5, 7][Math.floor(rnd() * 4)]!;
      const preferred = rnd() < 0.5 ? [`h${Math.floor(rnd() * n)}`] : [];
      const settings: GroupSettings = { voters: target, preferred };
      let now = 1_000_000_000;
      const depots: Depot[] = Array.from({ length: n }, (_, i) => ({
        peer: `p${String(i).padStart(3, '0')}`,
        host: `h${i}`,
        startedAt: now - Math.floor(rnd() * 200_000_000),
        restartsAt: [],
        state: 'alive',
        holdsCopy: i < 2,
      }));
      let group = initialGroup(candidates(depots, now), settings, depots[0]!.peer);
      for (let round = 0; round < 30; round++) {
        // The fake clock runs; depots restart, die, leave or come back.
        now += Math.floor(rnd() * 120_000);
        for (const d of depots) {
          const r = rnd();
          if (r < 0.03) d.state = 'dead';
          else if (r < 0.04) d.state = 'left';
          else if (r < 0.05) d.state = 'suspect';
          else if (r < 0.15 && d.state !== 'alive') {
            d.state = 'alive';
            d.startedAt = now;
            d.restartsAt.push(now);
          }
        }
        const cs = candidates(depots, now);
        const alive = new Set(cs.filter((c) => c.state === 'alive').map((c) => c.peer));
        const everyone = () => [...alive];
        let steps = 0;
        for (;;) {
          const change = nextGroupChange(group, cs, settings, everyone);
          if (!change) break;
          const before = new Set(group);
          const diff = change.voters.filter((v) => !before.has(v)).length + group.filter((v) => !change.voters.includes(v)).length;
          if (diff !== 1) failures.push(`seed ${seed}: a step changed ${diff} members`);
          if (change.voters.length === 0) failures.push(`seed ${seed}: empty group`);
          // A dead voter goes only with a majority of the group reporting it.
          if (change.kind === 'remove-dead' && group.filter((v) => alive.has(v)).length < majority(group.length)) failures.push(`seed ${seed}: dead removed without a majority`);
          group = change.voters;
          if (++steps > 4 * n + 20) {
            failures.push(`seed ${seed}: no convergence`);
            break;
          }
        }
        // Where the group could settle (a majority of it alive), it is of alive depots and of its size.
        const liveMajority = group.filter((v) => alive.has(v)).length >= majority(group.length);
        const up = cs.filter((c) => c.state === 'alive' || c.state === 'suspect').length;
        if (liveMajority && alive.size > 0) {
          if (group.some((v) => cs.find((c) => c.peer === v)?.state === 'dead' || cs.find((c) => c.peer === v)?.state === 'left')) failures.push(`seed ${seed}: a gone voter stayed`);
          const size = groupSize(up, target);
          if (group.length > size) failures.push(`seed ${seed} round ${round}: group of ${group.length} above its size ${size}`);
          if (group.length < size && [...alive].some((p) => !group.includes(p))) failures.push(`seed ${seed} round ${round}: group of ${group.length} below its size ${size} with alive depots outside`);
          for (const p of preferred) {
            const d = cs.find((c) => c.host === p);
            if (d?.state === 'alive' && !group.includes(d.peer) && target > 0) failures.push(`seed ${seed}: preferred ${p} alive but outside`);
          }
        }
        // Settled: the same inputs an hour later (no faults) change nothing.
        const later = candidates(depots, now + 3_600_000).map((c) => ({ ...c, restarts: cs.find((x) => x.peer === c.peer)!.restarts }));
        const again = nextGroupChange(group, later, settings, everyone);
        if (again && liveMajority && again.kind !== 'add') failures.push(`seed ${seed}: churn after settling (${again.kind} ${again.reason})`);
      }
    }
    expect(failures.slice(0, 5)).toEqual([]);
  });
});

describe('voter observations from the membership view (pilot/cluster-view.ts)', () => {
  it('session = min(depot process age, host uptime); restarts counted within the hour; copies of the service; dead reported by the alive', () => {
    const hb = (over: object) => ({ sentAt: 10_000_000, incarnation: 10_000_000 - 600_000, uptimeS: 86_400, containers: [] as Array<{ service: string }>, ...over });
    let view = [
      { peerId: 'a', name: 'ws-a', state: 'alive', incarnation: 1, heartbeat: hb({ containers: [{ service: 'zabbix' }] }) },
      { peerId: 'b', name: 'ws-b', state: 'alive', incarnation: 1, heartbeat: hb({ uptimeS: 30 }) },
      { peerId: 'c', name: 'ws-c', state: 'dead', incarnation: 1, heartbeat: undefined },
    ];
    const members = { view: () => view } as unknown as DepotComponents['members'];
    const history = new RestartHistory(3_600_000);
    const obs = voterObservations(members, 'zabbix', history, 0);
    expect(obs).toEqual([
      { peer: 'a', state: 'alive', host: 'ws-a', sessionS: 600, restarts: 0, holdsCopy: true },
      { peer: 'b', state: 'alive', host: 'ws-b', sessionS: 30, restarts: 0, holdsCopy: false },
      { peer: 'c', state: 'dead', host: 'ws-c', sessionS: 0, restarts: 0, holdsCopy: false, deadReportedBy: ['a', 'b'] },
    ]);
    // b restarts (a new incarnation), twice; the first restart leaves the window after an hour.
    view = view.map((m) => (m.peerId === 'b' ? { ...m, incarnation: 2 } : m));
    expect(voterObservations(members, 'zabbix', history, 1000).find((o) => o.peer === 'b')!.restarts).toBe(1);
    view = view.map((m) => (m.peerId === 'b' ? { ...m, incarnation: 3 } : m));
    expect(voterObservations(members, 'zabbix', history, 2_000_000).find((o) => o.peer === 'b')!.restarts).toBe(2);
    expect(voterObservations(members, 'zabbix', history, 3_601_001).find((o) => o.peer === 'b')!.restarts).toBe(1);
  });

  it("the host's expected time on, from the past sessions in its heartbeat, at the wall-clock time asked", () => {
    const MIN = 60_000;
    const day0 = Date.UTC(2026, 10, 2);
    // Ten past days on 8:00–18:00, as the heartbeat carries them ([start minute, minutes]).
    const sessions = Array.from({ length: 10 }, (_, d) => [(day0 + d * 86_400_000 + 8 * 3_600_000) / MIN, 600]);
    const view = [{ peerId: 'a', name: 'ws-a', state: 'alive', incarnation: 1, heartbeat: { sentAt: 0, incarnation: 0, uptimeS: 1, containers: [], sessions } }];
    const members = { view: () => view } as unknown as DepotComponents['members'];
    const at1730 = day0 + 10 * 86_400_000 + 17.5 * 3_600_000;
    expect(voterObservations(members, 'zabbix', new RestartHistory(), at1730)[0]!.remainingS).toBe(1800);
    expect(voterObservations(members, 'zabbix', new RestartHistory(), at1730 + 3 * 3_600_000)[0]!.remainingS).toBe(0);
  });
});
