import { describe, expect, it } from 'vitest';
import { copiesOf, replicationCell, syncCell } from '../../cli/commands/status.ts';
import type { DepotRow } from '../../shared/api/depots.ts';

// `navigator status` with replication: each standby's lag in time (age of the newest primary
// heartbeat it holds) and in transactions (the primary's GTID position minus its own), and its
// state with the reason when it is not replicating.

const depot = (name: string, containers: unknown[]): DepotRow => ({ name, state: 'alive', containers }) as unknown as DepotRow;

describe('status: replication lag', () => {
  const rows = copiesOf([
    depot('ws-1', [{ service: 'zabbix', role: 'primary', state: 'running', term: 3, gtid: '0-9-1500' }]),
    depot('ws-2', [{ service: 'zabbix', role: 'standby', state: 'running', term: 3, lastSyncAt: 10_000, gtid: '0-9-1496', replState: 'replicating' }]),
    depot('ws-3', [{ service: 'zabbix', role: 'standby', state: 'running', term: 3, gtid: '0-9-20', replState: 'broken', replReason: 'error 1236: binlog purged' }]),
  ]);

  it('counts the transactions each standby is behind the primary', () => {
    expect(rows.map((r) => [r.host, r.lagTx])).toEqual([
      ['ws-1', undefined],
      ['ws-2', 4],
      ['ws-3', 1480],
    ]);
  });

  it('shows time and transactions, and a broken replica with its reason', () => {
    expect(replicationCell(rows[1]!, 10_250)).toBe('250 ms / 4 tx');
    expect(replicationCell(rows[1]!, 13_500)).toBe('3.5 s / 4 tx');
    expect(replicationCell(rows[2]!, 13_500)).toEqual({ text: 'broken, reseeding (error 1236: binlog purged); - / 1480 tx', style: 'red' });
  });

  it('a standby whose database is not seeded says it cannot take over, whatever its replication shows', () => {
    const [primary, standby] = copiesOf([
      depot('ws-1', [{ service: 'zabbix', role: 'primary', state: 'running', term: 3, gtid: '0-9-1500', seeded: true }]),
      depot('ws-4', [{ service: 'zabbix', role: 'standby', state: 'running', term: 3, gtid: '0-9-2', replState: 'stopped', seeded: false }]),
    ]);
    expect(primary!.notSeeded).toBeUndefined();
    expect(syncCell(standby!, 1000)).toEqual({ text: 'not seeded: cannot take over (stopped)', style: 'red' });
    expect(syncCell(rows[1]!, 10_250)).toBe('250 ms / 4 tx');
  });
});
