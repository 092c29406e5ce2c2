import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { LastResortRunner } from '../../pilot/last-resort-runner.ts';
import type { RecoveryKit, RecoveryKits } from '../../pilot/recovery-kits.ts';
import type { PilotSupervisor } from '../../pilot/supervisor.ts';
import type { PilotAssignment } from '../../pilot/service-spec.ts';
import type { ContainerManager } from '../../depot/containers/manager.ts';
import type { DepotComponents } from '../../depot/components.ts';
import type { MemberState } from '../../shared/member-state.ts';
import type { NoticeInput } from '../../shared/alert.ts';
import { ConfigSchema } from '../../shared/config.ts';
import { silentLogger } from '../../shared/logger.ts';

// The last-resort runner on a fake clock, with the membership view, the container manager and the
// supervisor as plain objects: it gets a copy ready only when no copy is alive and it is the one
// named, removes it when a copy is heard again, recovers exactly once when every copy is lost (a
// pilot that campaigns, with the window in its movement reason, and one alert), and alerts once
// instead when there is no database copy and the policy does not allow an empty start.

const IMAGE = 'b'.repeat(64);
const T = 1_800_000_000_000;

function spec(database: boolean): RecoveryKit['spec'] {
  return {
    name: 'svc',
    image: IMAGE,
    container: { driver: 'process' } as RecoveryKit['spec']['container'],
    address: '10.9.9.9/24',
    iface: 'eth0',
    port: 8080,
    standbys: 1,
    memoryBytes: 0,
    diskBytes: 0,
    ...(database ? { database: { database: 'svc', user: 'nav', passwordFile: '', port: 3306 } } : {}),
  };
}

function hb(name: string, extra: Record<string, unknown> = {}) {
  return { name, addresses: [`/ip4/10.0.0.${name.slice(1)}/tcp/1/p2p/p-${name}`], uptimeS: 3600, load: [0.1, 0.1, 0.1], cpus: 2, memFreeBytes: 4e9, memTotalBytes: 8e9, diskFreeBytes: 1e11, images: [IMAGE], staging: [], containers: [], sentAt: T, incarnation: 1, ...extra };
}

class World {
  now = T;
  states: Record<string, MemberState> = { w1: 'alive', w2: 'alive', w3: 'alive', w4: 'alive' };
  since: Record<string, number> = {};
  dbAt: Record<string, number | undefined> = { w3: T - 5000, w4: undefined };
  started: string[] = [];
  removed: string[] = [];
  assigned: PilotAssignment[] = [];
  notices: NoticeInput[] = [];
  /** What w2's standby reports of its database (undefined: the field absent, as from an older depot). */
  w2Seeded: boolean | undefined;
  runner: LastResortRunner;

  constructor(private readonly database: boolean) {
    const kit: RecoveryKit = { spec: spec(database), view: { voters: ['p-w1', 'p-w2', 'p-w3', 'p-w4', 'p-w5'], epoch: [1, 0] } as RecoveryKit['view'], term: 4, stagedBy: 'w1' };
    const members = {
      view: () =>
        ['w1', 'w2', 'w3', 'w4'].map((n) => ({
          peerId: `p-${n}`,
          name: n,
          state: this.states[n]!,
          incarnation: 1,
          seq: 1,
          lastHeardAt: this.states[n] === 'alive' ? this.now : T,
          since: this.since[n] ?? 0,
          reason: '',
          self: n === 'w3',
          heartbeat: hb(n, {
            containers: n === 'w1' ? [{ id: 'svc-1', service: 'svc', role: 'primary', term: 5, state: 'running' }] : n === 'w2' ? [{ id: 'svc-2', service: 'svc', role: 'standby', term: 5, state: 'running', ...(this.w2Seeded !== undefined ? { seeded: this.w2Seeded } : {}) }] : [],
            ...(n === 'w3' || n === 'w4' ? { recoveryKits: [{ service: 'svc', image: IMAGE, ...(this.dbAt[n] !== undefined ? { dbAt: this.dbAt[n] } : {}) }] } : {}),
          }),
        })),
      get: () => undefined,
      countByState: () => ({}),
      events: new EventEmitter(),
    } as unknown as DepotComponents['members'];
    const kits = { services: () => ['svc'], kit: () => kit, dbCopy: () => undefined, drop: async () => undefined } as unknown as RecoveryKits;
    const containers = {
      root: '/nonexistent',
      list: () => [],
      startContainer: async (i: { id: string }) => void this.started.push(i.id),
      removeContainer: async (id: string) => void this.removed.push(id),
    } as unknown as ContainerManager;
    const supervisor = {
      pilotFor: () => (this.assigned.length > 0 ? {} : undefined),
      assign: async (a: PilotAssignment) => void this.assigned.push(a),
    } as unknown as PilotSupervisor;
    this.runner = new LastResortRunner({
      self: { peerId: 'p-w3', name: 'w3' } as DepotComponents['self'],
      members,
      notices: { report: (n: NoticeInput) => void this.notices.push(n) } as DepotComponents['notices'],
      kits,
      containers,
      supervisor,
      config: ConfigSchema.parse({}),
      logger: silentLogger(),
      now: () => this.now,
    });
  }

  lose(hosts: string[], state: MemberState, at: number): void {
    for (const h of hosts) {
      this.states[h] = state;
      this.since[h] = at;
    }
  }

  async check(): Promise<void> {
    this.runner.check();
    for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
  }
}

describe('last-resort runner', () => {
  it('gets ready while no copy is alive, backs off when one is heard again, then recovers exactly once', async () => {
    const w = new World(false);
    await w.check();
    expect(w.started).toEqual([]);
    // Both copies suspect: nothing served, but w3 (the best holder) gets a copy ready.
    w.now = T + 2000;
    w.lose(['w1', 'w2'], 'suspect', T + 2000);
    await w.check();
    expect(w.started).toHaveLength(1);
    expect(w.runner.preparing('svc')).toBe(w.started[0]);
    expect(w.assigned).toEqual([]);
    // The primary answers again: the prepared copy goes.
    w.states.w1 = 'alive';
    await w.check();
    expect(w.removed).toEqual([w.started[0]]);
    expect(w.runner.preparing('svc')).toBeUndefined();
    // Both dead for good.
    w.now = T + 5000;
    w.lose(['w1', 'w2'], 'dead', T + 5000);
    await w.check();
    expect(w.started).toHaveLength(2);
    expect(w.assigned).toEqual([]);
    w.now = T + 5000 + 3000;
    await w.check();
    expect(w.assigned).toHaveLength(1);
    const a = w.assigned[0]!;
    expect(a).toMatchObject({ container: w.started[1], campaign: true, term: 5, lastResort: { fromHost: 'w1' } });
    expect(a.lastResort!.reason).toContain('started on w3 from the pristine image');
    expect(w.notices).toHaveLength(1);
    expect(w.notices[0]).toMatchObject({ kind: 'last-resort-recovery', service: 'svc', details: { recovered: true, host: 'w3' } });
    // Nothing more: the copy is the pilot's now.
    w.now += 5000;
    await w.check();
    expect(w.assigned).toHaveLength(1);
    expect(w.started).toHaveLength(2);
    expect(w.removed).toHaveLength(1);
  });

  it('leaves the recovery to the holder of the fresher database copy', async () => {
    const w = new World(true);
    w.dbAt = { w3: T - 9000, w4: T - 1000 };
    w.lose(['w1', 'w2'], 'dead', T);
    w.now = T + 10_000;
    await w.check();
    expect(w.started).toEqual([]);
    expect(w.assigned).toEqual([]);
    expect(w.notices).toEqual([]);
  });

  it('with no database copy anywhere and the default policy: one loud alert, nothing started', async () => {
    const w = new World(true);
    w.dbAt = { w3: undefined, w4: undefined };
    w.lose(['w1', 'w2'], 'dead', T);
    w.now = T + 10_000;
    await w.check();
    await w.check();
    expect(w.started).toEqual([]);
    expect(w.notices).toHaveLength(1);
    expect(w.notices[0]!.summary).toContain('svc is DOWN');
    expect(w.notices[0]!.summary).toContain('startWithoutData is false');
  });

  it('a standby whose database never completed a seed is not a copy: with the primary lost, the service is recovered from the kit', async () => {
    for (const seeded of [undefined, true, false]) {
      // (No database in the kit's spec: the fake kits hold no dump to load; the choice is what is tested.)
      const w = new World(false);
      w.w2Seeded = seeded;
      // The primary's host is gone; w2's standby is alive.
      w.lose(['w1'], 'dead', T);
      w.now = T + 10_000;
      await w.check();
      await w.check();
      if (seeded === false) {
        // Its data is not the service's and it does not campaign: w3, holding the freshest copy, recovers.
        expect(w.started).toHaveLength(1);
        expect(w.assigned).toHaveLength(1);
        expect(w.assigned[0]).toMatchObject({ campaign: true, seeded: true, lastResort: { fromHost: 'w1' } });
      } else {
        // A seeded standby (or one from a depot that does not report it) takes over by election itself.
        expect(w.started).toEqual([]);
        expect(w.assigned).toEqual([]);
      }
    }
  });
});
