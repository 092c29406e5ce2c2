import { describe, expect, it } from 'vitest';
import { extraGtids, gtidCount, gtidCovers, parseGtidPos, replicateFilter, replicationPassword, serverIdFor, brokenReason, type ReplicaStatus } from '../../pilot/db/replication.ts';
import { byFreshness, gtidTransactions } from '../../pilot/admin-operations.ts';
import type { CopyView } from '../../pilot/pilot.ts';

// The pure parts of replication: GTID arithmetic, divergence, the derived ids and secrets, and
// the order in which standbys are preferred for promotion.

describe('GTID positions', () => {
  it('parses, counts and compares per domain', () => {
    expect(parseGtidPos('0-7-8,1-3-20')).toEqual(
      new Map([
        [0, { server: 7, seq: 8 }],
        [1, { server: 3, seq: 20 }],
      ]),
    );
    expect(parseGtidPos('')).toEqual(new Map());
    expect(() => parseGtidPos('0-7')).toThrow(/not a GTID: 0-7/);
    expect(gtidCount('0-7-8,1-3-20')).toBe(28);
    expect(gtidCovers('0-9-10', '0-7-8')).toBe(true);
    expect(gtidCovers('0-9-7', '0-7-8')).toBe(false);
    expect(gtidCovers('0-9-10', '0-7-8,1-1-1')).toBe(false);
    expect(gtidCovers('', '')).toBe(true);
  });

  it('finds the transactions a diverged old primary holds that the new primary lacks', () => {
    // The old primary (server 5) wrote up to 105; the new one (server 6) received up to 100, then wrote its own.
    expect(extraGtids('0-5-105', '0-5-100,0-6-103')).toEqual([{ domain: 0, server: 5, fromSeq: 101, toSeq: 105 }]);
    // Caught up before it stopped: nothing extra.
    expect(extraGtids('0-5-100', '0-5-100,0-6-103')).toEqual([]);
    // A replica that only applied what it received: nothing extra.
    expect(extraGtids('0-5-90', '0-5-100')).toEqual([]);
    // A server the new primary never heard of: all of it; server_id 1 (installation) is not data.
    expect(extraGtids('0-1-5,0-8-3', '0-5-100')).toEqual([{ domain: 0, server: 8, fromSeq: 1, toSeq: 3 }]);
  });
});

describe('derived values', () => {
  it('replication password: stable per service password and database, never the password itself', () => {
    const p = replicationPassword('secret', 'zabbix');
    expect(p).toBe(replicationPassword('secret', 'zabbix'));
    expect(p).not.toBe(replicationPassword('secret', 'other'));
    expect(p).not.toBe(replicationPassword('secret2', 'zabbix'));
    expect(p).not.toContain('secret');
    expect(p.length).toBe(32);
  });

  it('server ids: stable, distinct for copies, never 0 or 1', () => {
    const ids = new Set<number>();
    for (let i = 0; i < 500; i++) {
      const id = serverIdFor(`peer-${i}/copy-${i}`);
      expect(id).toBeGreaterThanOrEqual(2);
      expect(id).toBeLessThan(2 ** 32);
      ids.add(id);
    }
    expect(ids.size).toBe(500);
    expect(serverIdFor('x/y')).toBe(serverIdFor('x/y'));
  });

  it('replication filter: the service database and Navigator schema, underscores escaped', () => {
    expect(replicateFilter('my_db')).toBe('my\\_db.%,my\\_db\\_\\_nav\\_repl.%');
  });
});

describe('broken replica', () => {
  const base: ReplicaStatus = {
    configured: true,
    masterHost: '10.0.0.1',
    masterPort: 3306,
    ioRunning: 'Yes',
    sqlRunning: 'Yes',
    ioErrno: 0,
    ioError: '',
    sqlErrno: 0,
    sqlError: '',
    secondsBehind: 0,
    gtidSlavePos: '0-5-1',
    gtidIoPos: '0-5-1',
    gtidBinlogPos: '0-5-1',
    readOnly: true,
    serverId: 7,
  };
  it('is told apart from one that is only connecting', () => {
    expect(brokenReason(base)).toBeUndefined();
    expect(brokenReason({ ...base, ioRunning: 'Connecting', ioErrno: 2003, ioError: "Can't connect" })).toBeUndefined();
    expect(brokenReason({ ...base, ioRunning: 'No', ioErrno: 1236, ioError: 'log purged' })).toMatch(/error 1236.*log purged/);
    expect(brokenReason({ ...base, sqlRunning: 'No', sqlErrno: 1146, sqlError: "Table 'x' doesn't exist" })).toMatch(/SQL thread error 1146/);
  });
});

describe('promotion preference', () => {
  const copy = (host: string, report: Partial<CopyView['report']>): CopyView =>
    ({
      peerId: host,
      host,
      depotState: 'alive',
      incarnation: 1,
      address: '10.0.0.1',
      report: { id: host, service: 's', driver: 'process', state: 'running', role: 'standby', term: 1, image: '', syncFailing: false, ...report },
    }) as CopyView;

  it('healthy before broken, then newest data, then most transactions', () => {
    const list = [
      copy('broken-fresh', { lastSyncAt: 2000, replState: 'broken', gtid: '0-5-99' }),
      copy('old', { lastSyncAt: 1000, gtid: '0-5-90' }),
      copy('new-fewer', { lastSyncAt: 1500, gtid: '0-5-95' }),
      copy('new-more', { lastSyncAt: 1500, gtid: '0-5-97' }),
    ];
    expect(list.sort(byFreshness).map((c) => c.host)).toEqual(['new-more', 'new-fewer', 'old', 'broken-fresh']);
    expect(gtidTransactions('0-5-97,1-2-3')).toBe(100);
    expect(gtidTransactions(undefined)).toBe(0);
  });
});
