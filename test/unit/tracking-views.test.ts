import { describe, it, expect } from 'vitest';
import { buildServiceViews } from '../../web/service-views.ts';
import type { MovementRecord } from '../../shared/movement.ts';

const base = { address: '', fromHost: '', failover: false, reason: '', timings: {} } as const;
const records: MovementRecord[] = [
  { ...base, id: 'a', time: 1000, service: 'zabbix', role: 'primary', host: 'ws-01', address: '10.0.0.50', event: 'bootstrap', term: 1 },
  { ...base, id: 'b', time: 2000, service: 'zabbix', role: 'standby', host: 'ws-02', event: 'placed', term: 1 },
  { ...base, id: 'c', time: 3000, service: 'zabbix', role: 'primary', host: 'ws-02', address: '10.0.0.50', event: 'failover', failover: true, term: 2 },
  { ...base, id: 'd', time: 4000, service: 'zabbix', role: 'standby', host: 'ws-03', event: 'replaced', term: 2 },
  { ...base, id: 'e', time: 500, service: 'gone', role: 'primary', host: 'ws-09', address: '10.0.0.60', event: 'bootstrap', term: 5 },
];

describe('buildServiceViews', () => {
  it('joins heartbeat containers with the journal: roles, since, RPO, address; stale depots left out', () => {
    const views = buildServiceViews(
      [
        { name: 'ws-01', state: 'dead', containers: [{ service: 'zabbix', role: 'primary', term: 1, state: 'running' }] },
        { name: 'ws-03', state: 'alive', containers: [{ service: 'zabbix', role: 'standby', term: 2, state: 'running', lastSyncAt: 3900, syncFailing: true }] },
        { name: 'ws-02', state: 'suspect', containers: [{ service: 'zabbix', role: 'primary', term: 2, state: 'running', lastSyncAt: 1234 }, { bogus: true }] },
      ],
      records,
    );
    expect(views).toEqual([
      { service: 'gone', address: '10.0.0.60', term: 5, copies: [] },
      {
        service: 'zabbix',
        address: '10.0.0.50',
        term: 2,
        copies: [
          { host: 'ws-02', role: 'primary', term: 2, state: 'running', since: 3000, lastSyncAt: null, syncFailing: false },
          { host: 'ws-03', role: 'standby', term: 2, state: 'running', since: 4000, lastSyncAt: 3900, syncFailing: true },
        ],
      },
    ]);
  });

  it('a standby reporting its database not seeded is marked so (the page: "not seeded: cannot take over"); a primary never is', () => {
    const v = buildServiceViews(
      [
        { name: 'ws-07', state: 'alive', containers: [{ service: 'zabbix', role: 'standby', term: 2, state: 'running', seeded: false }] },
        { name: 'ws-08', state: 'alive', containers: [{ service: 'zabbix', role: 'standby', term: 2, state: 'running', seeded: true, lastSyncAt: 3900 }] },
        { name: 'ws-09', state: 'alive', containers: [{ service: 'zabbix', role: 'primary', term: 2, state: 'running', seeded: false }] },
      ],
      records,
    );
    const copies = v.find((s) => s.service === 'zabbix')!.copies;
    expect(copies.map((c) => [c.host, c.notSeeded])).toEqual([
      ['ws-09', undefined],
      ['ws-07', true],
      ['ws-08', undefined],
    ]);
  });

  it('a copy without a matching record has no since', () => {
    const v = buildServiceViews([{ name: 'ws-07', state: 'alive', containers: [{ service: 'zabbix', role: 'standby', term: 2, state: 'starting' }] }], records);
    expect(v.find((s) => s.service === 'zabbix')?.copies).toEqual([{ host: 'ws-07', role: 'standby', term: 2, state: 'starting', since: null, lastSyncAt: null, syncFailing: false }]);
  });

  it('shows the newest voter group any live copy reports, peer ids as host names', () => {
    const old = { epoch: [1, 0], voters: ['peer-1', 'peer-2', 'peer-3'] };
    const joint = { epoch: [2, 1], voters: ['peer-1', 'peer-2', 'peer-4'], prev: ['peer-1', 'peer-2', 'peer-3'] };
    const stale = { epoch: [9, 9], voters: ['peer-9'] };
    const v = buildServiceViews(
      [
        { name: 'ws-01', peerId: 'peer-1', state: 'alive', containers: [{ service: 'zabbix', role: 'primary', term: 2, state: 'running', view: joint }] },
        { name: 'ws-02', peerId: 'peer-2', state: 'alive', containers: [{ service: 'zabbix', role: 'standby', term: 1, state: 'running', view: old }] },
        { name: 'ws-03', peerId: 'peer-3', state: 'dead', containers: [{ service: 'zabbix', role: 'standby', term: 1, state: 'running', view: stale }] },
      ],
      [],
    );
    expect(v[0]!.voters).toEqual({ epoch: [2, 1], hosts: ['peer-4', 'ws-01', 'ws-02'], prev: ['ws-01', 'ws-02', 'ws-03'] });
  });

  it('replicate/semisync: each standby\'s lag in transactions from the GTID positions, its replication state, a semisync fallback', () => {
    const v = buildServiceViews(
      [
        { name: 'ws-02', state: 'alive', containers: [{ service: 'zabbix', role: 'primary', term: 2, state: 'running', gtid: '0-7-120', semisyncFallback: true }] },
        { name: 'ws-03', state: 'alive', containers: [{ service: 'zabbix', role: 'standby', term: 2, state: 'running', lastSyncAt: 3900, gtid: '0-7-117', replState: 'replicating' }] },
        { name: 'ws-04', state: 'alive', containers: [{ service: 'zabbix', role: 'standby', term: 2, state: 'running', gtid: '0-7-3', replState: 'broken', replReason: 'error 1236' }] },
      ],
      records,
    );
    expect(v.find((s) => s.service === 'zabbix')?.copies).toEqual([
      { host: 'ws-02', role: 'primary', term: 2, state: 'running', since: 3000, lastSyncAt: null, syncFailing: false, semisyncFallback: true },
      { host: 'ws-03', role: 'standby', term: 2, state: 'running', since: 4000, lastSyncAt: 3900, syncFailing: false, replState: 'replicating', lagTx: 3 },
      { host: 'ws-04', role: 'standby', term: 2, state: 'running', since: null, lastSyncAt: null, syncFailing: false, replState: 'broken', replReason: 'error 1236', lagTx: 117 },
    ]);
  });
});
