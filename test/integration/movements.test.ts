import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startMariaDb, type MariaDbServer } from '../../lab/loopback/mariadb.ts';
import { Journal } from '../../depot/journal/journal.ts';
import { MovementRecorder, MOVEMENTS_TABLE } from '../../pilot/db/movements-table.ts';
import { silentLogger } from '../../shared/logger.ts';
import { DbLink } from '../../pilot/db/db-link.ts';
import { parseConfig } from '../../shared/config.ts';
import type { MovementRecord } from '../../shared/movement.ts';

// MovementRecorder against a real private mariadbd: rows land in navigator_movements, re-writes
// are idempotent, and a record made while the database is down is journaled and gossiped at once
// and written when the server is back.

const log = silentLogger();
let db: MariaDbServer;
let dir: string;

beforeAll(async () => {
  db = await startMariaDb({ name: 'movements' });
  await db.query('CREATE DATABASE zabbix');
  dir = await mkdtemp(join(tmpdir(), 'nav-movements-'));
});
afterAll(async () => {
  await db?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('MovementRecorder', () => {
  it('writes to the service database, gossips and journals; survives the database being down', async () => {
    const journal = new Journal({ path: join(dir, 'journal.jsonl'), logger: log });
    await journal.open();
    const gossiped: MovementRecord[] = [];
    const recorder = new MovementRecorder({
      db: { host: db.host, port: db.port, user: db.user, password: db.password, database: 'zabbix' },
      journal,
      publish: async (r) => {
        gossiped.push(r);
      },
      logger: log,
      retryMs: 100,
      retryMaxMs: 400,
    });
    try {
      const first = await recorder.record({
        service: 'zabbix',
        role: 'primary',
        host: 'ws-01',
        address: '10.0.0.50',
        event: 'bootstrap',
        failover: false,
        reason: "first start by 'admin'; quotes \"kept\"",
        term: 1,
      });
      await recorder.flush();
      expect(recorder.pendingCount).toBe(0);
      const rows = await recorder.read('zabbix');
      expect(rows).toEqual([first]);
      expect(journal.get(first.id)).toEqual(first);
      expect(gossiped).toEqual([first]);

      // The table is keyed by id: writing the same records again changes nothing.
      expect(await recorder.reconcile('zabbix')).toBe(1);
      expect(await db.query(`SELECT COUNT(*) AS n FROM zabbix.${MOVEMENTS_TABLE}`)).toEqual([{ n: 1 }]);

      // The database dies: the failover record is still journaled and gossiped at once, queued for the DB.
      await db.kill();
      const failover = await recorder.record({
        service: 'zabbix',
        role: 'primary',
        host: 'ws-02',
        fromHost: 'ws-01',
        address: '10.0.0.50',
        event: 'failover',
        failover: true,
        reason: 'ws-01 stopped answering',
        term: 2,
        timings: { detect: 900, elect: 250, takeover: 180 },
      });
      expect(journal.get(failover.id)).toEqual(failover);
      expect(gossiped.map((r) => r.id)).toEqual([first.id, failover.id]);
      await recorder.flush();
      expect(recorder.pendingCount).toBe(1);

      // Back up: the retry writes it without anyone calling flush().
      await db.restart();
      const deadline = Date.now() + 15_000;
      while (recorder.pendingCount > 0) {
        if (Date.now() > deadline) throw new Error('queued movement was never written');
        await new Promise((r) => setTimeout(r, 100));
      }
      const after = await recorder.read('zabbix');
      expect(after.map((r) => r.id)).toEqual([failover.id, first.id]);
      expect(after[0]).toEqual(failover);

      // Bad input is refused and nothing is recorded anywhere.
      await expect(recorder.record({ service: 'zabbix', role: 'primary', host: '', address: '', event: 'failover', failover: true, reason: '', term: 3 })).rejects.toThrow(/host/);
      expect(journal.size).toBe(2);
    } finally {
      await recorder.stop();
      await journal.close();
    }
  });

  it('reconcile() backfills records a new primary\'s database missed (they were only in the journal)', async () => {
    await db.query('CREATE DATABASE IF NOT EXISTS other');
    const journal = new Journal({ path: join(dir, 'journal2.jsonl'), logger: log });
    await journal.open();
    const t = Date.now();
    const recs = [0, 1, 2].map((i) => ({
      id: `rec-${i}`,
      time: t + i,
      service: i === 2 ? 'elsewhere' : 'svc',
      role: 'standby' as const,
      host: `ws-0${i}`,
      address: '',
      fromHost: '',
      event: 'placed' as const,
      failover: false,
      reason: 'placed',
      term: 1,
      timings: { ship: 1200, boot: 3000 },
    }));
    for (const r of recs) await journal.append(r);
    const recorder = new MovementRecorder({
      db: { socketPath: db.socket, user: db.user, password: db.password, database: 'other' },
      journal,
      publish: async () => undefined,
      logger: log,
    });
    try {
      expect(await recorder.reconcile('svc')).toBe(2);
      expect((await recorder.read()).map((r) => r.id)).toEqual(['rec-1', 'rec-0']);
    } finally {
      await recorder.stop();
      await journal.close();
    }
  });
});

describe('DbLink', () => {
  it('loads mysql2 and the recorder when it becomes primary, and reads its own sync state as a standby', async () => {
    const containerDir = await mkdtemp(join(dir, 'copy-'));
    await writeFile(join(containerDir, 'db.password'), `${db.password}\n`);
    const journal = new Journal({ path: join(dir, 'journal-link.jsonl'), logger: log });
    await journal.open();
    const link = new DbLink({
      db: { database: 'zabbix', user: db.user, passwordFile: 'db.password', port: db.port },
      containerDir,
      dbsync: parseConfig({ dbsync: { mode: 'dump' } }).dbsync,
      journal,
      publish: async () => undefined,
      logger: log,
    });
    try {
      expect(link.movements).toBeUndefined();
      await link.becomePrimary('zabbix');
      const recorder = link.movements;
      expect(recorder).toBeDefined();
      const r = await recorder!.record({ service: 'zabbix', role: 'primary', host: 'ws-03', address: '10.0.0.50', event: 'failover', failover: true, reason: 'test', term: 3 });
      await recorder!.flush();
      expect((await recorder!.read('zabbix')).map((x) => x.id)).toContain(r.id);
      await link.becomeStandby();
      expect(link.movements).toBeUndefined();
      // No sync has run into this copy: nothing to report, and no failure either.
      expect(await link.ownSync(Date.now())).toMatchObject({ syncFailing: false });
    } finally {
      await link.stop();
      await journal.close();
    }
  });
});
