import { describe, expect, it } from 'vitest';
import { AdminOperations, type AdminOperationsOptions } from '../../pilot/admin-operations.ts';
import { silentLogger } from '../../shared/logger.ts';

// A switchover never hands the service to a standby whose database is not a complete copy yet
// (pilot/data-completeness.ts): it is skipped when the target is chosen, and named in the error
// when it is the one asked for or the only one there. The refusal comes before any call to
// another depot (control calls record here and would show up).

function ops(standbys: Array<{ host: string; seeded?: boolean; lastSyncAt?: number }>) {
  const calls: string[] = [];
  const member = (name: string, containers: unknown[]) => ({ peerId: `p-${name}`, name, state: 'alive', incarnation: 1, heartbeat: { name, addresses: [], containers } });
  const view = [
    member('w1', [{ id: 'svc-1', service: 'svc', role: 'primary', term: 3, state: 'running' }]),
    ...standbys.map((s, i) => member(s.host, [{ id: `svc-${i + 2}`, service: 'svc', role: 'standby', term: 3, state: 'running', ...(s.seeded !== undefined ? { seeded: s.seeded } : {}), ...(s.lastSyncAt !== undefined ? { lastSyncAt: s.lastSyncAt } : {}) }])),
  ];
  const o = {
    self: { peerId: 'p-w1', name: 'w1' },
    members: { view: () => view },
    control: { call: async (peer: string, method: string) => void calls.push(`${peer} ${method}`) },
    supervisor: { pilotFor: () => ({ term: 3 }) },
    logger: silentLogger(),
  } as unknown as AdminOperationsOptions;
  return { admin: new AdminOperations(o), calls };
}

describe('switchover target', () => {
  it('skips a standby that is not seeded, even the freshest-looking one', async () => {
    const { admin, calls } = ops([{ host: 'w2', seeded: false }, { host: 'w3', lastSyncAt: 5 }]);
    await expect(admin.switchover({ service: 'svc' })).resolves.toEqual({ from: 'w1', to: 'w3' });
    expect(calls).toEqual(['p-w3 pilot.expect', 'p-w1 pilot.resign', 'p-w3 pilot.campaign']);
  });

  it('refuses one asked for by name, or the only one there, saying why, before calling anyone', async () => {
    for (const to of ['w2', undefined]) {
      const { admin, calls } = ops([{ host: 'w2', seeded: false }]);
      await expect(admin.switchover({ service: 'svc', to })).rejects.toThrow('the standby of svc on w2 is not seeded yet');
      expect(calls).toEqual([]);
    }
  });
});
