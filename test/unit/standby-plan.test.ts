import { describe, it, expect } from 'vitest';
import { planStandbys, type RecentPlacement, type StandbyPlanInput } from '../../pilot/standby-plan.ts';
import type { CopyView } from '../../pilot/pilot.ts';
import type { PlacementCandidate } from '../../pilot/placement.ts';
import type { ContainerReport } from '../../shared/wire.ts';
import { mulberry32 } from '../helpers/election-sim.ts';

// Standby keeping as a pure decision, with a fake clock: place, retire the surplus, pre-stage,
// or wait; a just-placed standby counts until its heartbeat shows it; a host where a placement
// failed is skipped until placementRetryMs has passed.

const GiB = 1024 ** 3;
const IMAGE = 'a'.repeat(64);
const SERVICE = { name: 'zabbix', standbys: 1, memoryBytes: GiB, diskBytes: GiB, image: IMAGE };

function host(name: string, over: Partial<PlacementCandidate> = {}): PlacementCandidate {
  return {
    name,
    peerId: `peer-${name}`,
    state: 'alive',
    uptimeS: 86_400,
    load: [0.2, 0.2, 0.2],
    cpus: 4,
    memFreeBytes: 8 * GiB,
    memTotalBytes: 16 * GiB,
    diskFreeBytes: 100 * GiB,
    images: [],
    copies: [],
    ...over,
  };
}

function copy(hostName: string, role: 'primary' | 'standby', over: Partial<ContainerReport> = {}, depotState: CopyView['depotState'] = 'alive'): CopyView {
  return {
    peerId: `peer-${hostName}`,
    host: hostName,
    depotState,
    incarnation: 1,
    address: '10.0.0.1',
    report: { id: `zabbix-${hostName}`, service: 'zabbix', image: IMAGE, driver: 'process', state: 'running', role, term: 3, ...over } as ContainerReport,
  };
}

function input(over: Partial<StandbyPlanInput> = {}): StandbyPlanInput {
  const copies = over.copies ?? [copy('w1', 'primary')];
  return {
    service: SERVICE,
    copies,
    candidates: over.candidates ?? ['w1', 'w2', 'w3', 'w4'].map((n) => host(n, { copies: copies.some((c) => c.host === n) ? ['zabbix'] : [] })),
    recentlyPlaced: [],
    failedHosts: new Map(),
    now: 1_000_000,
    placedGraceMs: 10_000,
    placementRetryMs: 30_000,
    ...over,
  };
}

describe('planStandbys', () => {
  it('places a standby on the best host when there is none, and says whether it replaces a lost one', () => {
    const first = planStandbys(input());
    expect(first.decision).toMatchObject({ kind: 'place', replacing: false });
    expect(first.decision.kind === 'place' && first.decision.target.name).not.toBe('w1');
    const lost = planStandbys(input({ copies: [copy('w1', 'primary'), copy('w2', 'standby', {}, 'dead')] }));
    expect(lost.decision).toMatchObject({ kind: 'place', replacing: true });
    // The dead host is not a candidate (it holds a copy and is dead).
    expect(lost.decision.kind === 'place' && lost.decision.target.name).not.toBe('w2');
  });

  it('counts a just-placed standby until its heartbeat shows it, then forgets it', () => {
    const placed: RecentPlacement = { service: 'zabbix', peerId: 'peer-w3', container: 'zabbix-w3', at: 1_000_000 };
    // Not in the heartbeats yet: protected, nothing more is placed.
    const pending = planStandbys(input({ recentlyPlaced: [placed], now: 1_005_000 }));
    expect(pending.decision.kind).toBe('prestage');
    expect(pending.recentlyPlaced).toEqual([placed]);
    // Seen in a heartbeat: no longer counted separately.
    const seen = planStandbys(input({ copies: [copy('w1', 'primary'), copy('w3', 'standby')], recentlyPlaced: [placed], now: 1_005_000 }));
    expect(seen.recentlyPlaced).toEqual([]);
    expect(seen.decision.kind).toBe('prestage');
    // Never seen and past the grace: forgotten, so a new standby is placed.
    const late = planStandbys(input({ recentlyPlaced: [placed], now: 1_000_000 + 10_001 }));
    expect(late.recentlyPlaced).toEqual([]);
    expect(late.decision.kind).toBe('place');
  });

  it('retires the surplus standby with the oldest DB sync, but not while a placement is pending', () => {
    const copies = [copy('w1', 'primary'), copy('w2', 'standby', { lastSyncAt: 500 }), copy('w3', 'standby', { lastSyncAt: 100 }), copy('w4', 'standby', { lastSyncAt: 900 })];
    const two = planStandbys(input({ service: { ...SERVICE, standbys: 2 }, copies }));
    expect(two.decision).toMatchObject({ kind: 'retire', copy: { host: 'w3' } });
    // A standby that is still starting is never the one retired; with only starting extras, wait.
    const starting = [copy('w1', 'primary'), copy('w2', 'standby', { state: 'starting' }), copy('w3', 'standby', { state: 'starting' })];
    expect(planStandbys(input({ copies: starting })).decision.kind).toBe('wait');
    // bench:failover's "not protected before the trial": after a failover a replacement standby
    // runs and the old primary's host brings its copy back, still starting. Retiring the running
    // one would leave no running standby: wait until the returning copy runs, then retire the staler.
    const back = [copy('w2', 'primary'), copy('w3', 'standby', { lastSyncAt: 900 }), copy('w1', 'standby', { state: 'starting' })];
    expect(planStandbys(input({ copies: back })).decision).toEqual({ kind: 'wait', reason: 'surplus standby still starting' });
    const up = [copy('w2', 'primary'), copy('w3', 'standby', { lastSyncAt: 900 }), copy('w1', 'standby', { lastSyncAt: 100 })];
    expect(planStandbys(input({ copies: up })).decision).toMatchObject({ kind: 'retire', copy: { host: 'w1' } });
    // A pending placement may be what makes the surplus: wait for its heartbeat first.
    const placed: RecentPlacement = { service: 'zabbix', peerId: 'peer-w4', container: 'zabbix-w4', at: 999_000 };
    const pending = planStandbys(input({ copies: [copy('w1', 'primary'), copy('w2', 'standby')], recentlyPlaced: [placed] }));
    expect(pending.decision.kind).toBe('prestage');
  });

  it('does not count standbys on suspect or dead depots, nor failed copies', () => {
    for (const c of [copy('w2', 'standby', {}, 'suspect'), copy('w2', 'standby', { state: 'failed' }), copy('w2', 'standby', { state: 'stopped' })]) {
      expect(planStandbys(input({ copies: [copy('w1', 'primary'), c] })).decision.kind).toBe('place');
    }
  });

  it('skips a host where a placement failed until placementRetryMs has passed, and waits when every host failed', () => {
    const failed = new Map([['peer-w2', 1_000_000 - 1000]]);
    const candidates = [host('w1', { copies: ['zabbix'] }), host('w2', { uptimeS: 10 * 86_400 }), host('w3')];
    const d = planStandbys(input({ candidates, failedHosts: failed })).decision;
    expect(d).toMatchObject({ kind: 'place', target: { name: 'w3' } });
    const again = planStandbys(input({ candidates, failedHosts: failed, now: 1_000_000 + 29_001 })).decision;
    expect(again).toMatchObject({ kind: 'place', target: { name: 'w2' } });
    const all = planStandbys(input({ candidates, failedHosts: new Map([['peer-w2', 1_000_000], ['peer-w3', 1_000_000]]) })).decision;
    expect(all).toEqual({ kind: 'wait', reason: 'every eligible host failed lately' });
    expect(planStandbys(input({ candidates: [host('w1', { copies: ['zabbix'] })] })).decision).toEqual({ kind: 'wait', reason: 'no eligible host' });
  });

  it('random histories with flapping hosts: never more than one step, never a place while protected, never a retire below the count', () => {
    const rnd = mulberry32(20261207);
    for (let run = 0; run < 300; run++) {
      const names = ['w1', 'w2', 'w3', 'w4', 'w5', 'w6'];
      const standbys = 1 + Math.floor(rnd() * 2);
      const states: CopyView['depotState'][] = ['alive', 'alive', 'alive', 'suspect', 'dead', 'left'];
      const copies: CopyView[] = [copy('w1', 'primary')];
      for (const n of names.slice(1)) {
        if (rnd() < 0.4) copies.push(copy(n, 'standby', { state: rnd() < 0.8 ? 'running' : 'starting', lastSyncAt: Math.floor(rnd() * 1000) }, states[Math.floor(rnd() * states.length)]!));
      }
      const candidates = names.map((n) => host(n, { state: copies.find((c) => c.host === n)?.depotState ?? (rnd() < 0.8 ? 'alive' : 'dead'), copies: copies.some((c) => c.host === n) ? ['zabbix'] : [] }));
      const plan = planStandbys(input({ service: { ...SERVICE, standbys }, copies, candidates }));
      const healthy = copies.filter((c) => c.depotState === 'alive' && c.report.role === 'standby' && ['running', 'starting'].includes(c.report.state));
      const d = plan.decision;
      if (healthy.length < standbys) expect(['place', 'wait']).toContain(d.kind);
      if (healthy.length === standbys) expect(d.kind).toBe('prestage');
      if (d.kind === 'place') {
        expect(healthy.length).toBeLessThan(standbys);
        // Never onto a host that holds a copy or is not alive.
        expect(copies.some((c) => c.peerId === d.target.peerId)).toBe(false);
        expect(candidates.find((c) => c.peerId === d.target.peerId)?.state).toBe('alive');
      }
      if (d.kind === 'retire') {
        // Never below the count of RUNNING standbys (a starting one may not come up).
        expect(healthy.filter((c) => c.report.state === 'running').length).toBeGreaterThan(standbys);
        expect(d.copy.report.state).toBe('running');
        const oldest = Math.min(...healthy.filter((c) => c.report.state === 'running').map((c) => c.report.lastSyncAt ?? 0));
        expect(d.copy.report.lastSyncAt ?? 0).toBe(oldest);
      }
    }
  });

  it('never places a second copy on a host whose placement its heartbeat does not show yet', () => {
    const pending: RecentPlacement = { service: 'zabbix', peerId: 'peer-w2', container: 'zabbix-new', at: 999_000 };
    const plan = planStandbys(input({ service: { ...SERVICE, standbys: 2 }, recentlyPlaced: [pending] }));
    expect(plan.decision.kind).toBe('place');
    if (plan.decision.kind !== 'place') return;
    expect(plan.decision.target.name).not.toBe('w2');
    expect(plan.decision.ranking.excluded.find((e) => e.name === 'w2')?.reasons).toEqual(['already holds a copy of zabbix']);
  });
});
