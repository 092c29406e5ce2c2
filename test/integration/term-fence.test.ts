import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startMariaDb, type MariaDbServer } from '../../lab/loopback/mariadb.ts';
import { DbSync } from '../../pilot/db/dbsync.ts';
import { holdTermFence, raiseTermFence, readFence } from '../../pilot/db/term-fence.ts';
import { silentLogger } from '../../shared/logger.ts';

// The term fence of a standby's database, between two real mariadbd servers: a sync swaps only
// when its primary's term is at least the copy's fence; a promotion kills the sessions of syncs
// in flight and raises the fence, so an old primary (paused, then resumed) never lands a snapshot
// over a newer primary's database.

let primary: MariaDbServer;
let standby: MariaDbServer;

// The sync account as deploy/examples/zabbix/scripts/schema.sh makes it: ALL on the database and
// its DB__nav_* schemas, SET USER, READ_ONLY ADMIN and PROCESS — nothing else.
const SYNC = { user: 'navsync', password: `sync-${Date.now()}` };

beforeAll(async () => {
  [primary, standby] = await Promise.all([startMariaDb({ name: 'fence-p' }), startMariaDb({ name: 'fence-s' })]);
  for (const s of [primary, standby]) {
    await s.query(`CREATE USER '${SYNC.user}'@'%' IDENTIFIED BY '${SYNC.password}'`);
    await s.query(`GRANT ALL PRIVILEGES ON \`app\`.* TO '${SYNC.user}'@'%'`);
    await s.query(`GRANT ALL PRIVILEGES ON \`app\\_\\_nav\\_%\`.* TO '${SYNC.user}'@'%'`);
    await s.query(`GRANT SET USER, READ_ONLY ADMIN, PROCESS ON *.* TO '${SYNC.user}'@'%'`);
  }
}, 120_000);

afterAll(async () => {
  await Promise.all([primary?.stop(), standby?.stop()]);
}, 60_000);

const ep = (s: MariaDbServer) => ({ host: s.host, port: s.port, user: SYNC.user, password: SYNC.password });
async function syncConn(s: MariaDbServer) {
  const { default: mysql } = await import('mysql2/promise');
  return mysql.createConnection(ep(s));
}
const rows = async (s: MariaDbServer) => (await s.query<{ v: string }>('SELECT v FROM app.t ORDER BY id')).map((r) => r.v);

describe('term fence of a copy\'s database', { timeout: 90_000 }, () => {
  it('a sync swaps only in a term at least the fence; a promotion kills syncs in flight and fences older primaries out', async () => {
    await primary.query('CREATE DATABASE app');
    await primary.query('CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(20))');
    await primary.query("INSERT INTO app.t VALUES (1, 'term5')");
    let term = 5;
    const sync = new DbSync({ source: ep(primary), target: ep(standby), database: 'app', logger: silentLogger(), term: () => term });
    await sync.syncNow();
    expect(await rows(standby)).toEqual(['term5']);
    // The promotion runs as the sync account on the copy's own server, as DbLink does.
    const conn = await syncConn(standby);
    try {
      expect(await readFence(conn, 'app')).toBe(5);

      // The standby is promoted in term 6 and writes on its own.
      expect(await raiseTermFence(conn, 'app', 6)).toEqual({ killed: 0 });
      await standby.query("INSERT INTO app.t VALUES (2, 'written-in-6')");
      // The old primary of term 5 resumes and syncs: refused where the swap happens.
      await primary.query("INSERT INTO app.t VALUES (3, 'stale')");
      await expect(sync.syncNow()).rejects.toThrow(/fenced: this copy's database belongs to term 6; a primary of term 5/);
      expect(await rows(standby)).toEqual(['term5', 'written-in-6']);
      // A copy that is no longer primary (-1) swaps nowhere, not even into an unfenced copy.
      term = -1;
      await expect(sync.syncNow()).rejects.toThrow(/no longer primary/);
      expect(await rows(standby)).toEqual(['term5', 'written-in-6']);

      // A swap in flight holds the fence lock; the promotion kills its session first.
      const inflight = await syncConn(standby);
      await holdTermFence(inflight, 'app', 6, 5);
      const r = await raiseTermFence(conn, 'app', 7);
      expect(r.killed).toBeGreaterThanOrEqual(1);
      await expect(inflight.query('SELECT 1')).rejects.toThrow();
      inflight.destroy();
      expect(await readFence(conn, 'app')).toBe(7);
      // The fence never goes down.
      await raiseTermFence(conn, 'app', 3);
      expect(await readFence(conn, 'app')).toBe(7);
    } finally {
      await conn.end();
      await sync.stop();
    }
  });
});
