import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Writable } from 'node:stream';
import { existsSync } from 'node:fs';
import { execa } from 'execa';
import type { Connection } from 'mysql2/promise';
import { startMariaDb, type MariaDbServer } from '../../lab/loopback/mariadb.ts';
import { DbSync, type DbSyncOptions } from '../../pilot/db/dbsync.ts';
import { readSyncHistory, syncHeartbeatFields } from '../../pilot/db/sync-history.ts';
import { createLogger, silentLogger } from '../../shared/logger.ts';

// Sync between two real mariadbd servers: objects and rows arrive intact (checksums on both
// sides), the movement table travels, schema changes follow, the snapshot is consistent under
// concurrent writes, and the password shows neither in `ps` nor in logs.

let primary: MariaDbServer;
let standby: MariaDbServer;

beforeAll(async () => {
  // Passwords with characters that need quoting in option files.
  [primary, standby] = await Promise.all([
    startMariaDb({ name: 'dbsync-p', password: `P#ri"ma\\ry;${Date.now()}` }),
    startMariaDb({ name: 'dbsync-s', password: `St'and by#${Date.now()}` }),
  ]);
}, 120_000);

afterAll(async () => {
  await Promise.all([primary?.stop(), standby?.stop()]);
}, 60_000);

function ep(s: MariaDbServer) {
  return { host: s.host, port: s.port, user: s.user, password: s.password };
}

function makeSync(database: string, extra: Partial<DbSyncOptions> = {}): DbSync {
  return new DbSync({ source: ep(primary), target: ep(standby), database, logger: silentLogger(), ...extra });
}

async function exec(conn: Connection, statements: string[]): Promise<void> {
  for (const sql of statements) await conn.query(sql);
}

async function checksums(s: MariaDbServer, db: string): Promise<Record<string, number>> {
  const tables = await s.query<{ t: string }>(
    "SELECT TABLE_NAME AS t FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
    [db],
  );
  if (tables.length === 0) return {};
  const rows = await s.query<{ Table: string; Checksum: number }>(`CHECKSUM TABLE ${tables.map((r) => `\`${db}\`.\`${r.t}\``).join(', ')}`);
  return Object.fromEntries(rows.map((r) => [r.Table.slice(db.length + 1), Number(r.Checksum)]));
}

async function definitions(s: MariaDbServer, db: string) {
  const views = await s.query('SELECT TABLE_NAME, VIEW_DEFINITION FROM information_schema.VIEWS WHERE TABLE_SCHEMA = ? ORDER BY TABLE_NAME', [db]);
  const routines = await s.query(
    'SELECT ROUTINE_NAME, ROUTINE_TYPE, ROUTINE_DEFINITION, DTD_IDENTIFIER FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = ? ORDER BY ROUTINE_NAME',
    [db],
  );
  const triggers = await s.query(
    'SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE, ACTION_TIMING, EVENT_MANIPULATION, ACTION_STATEMENT, ACTION_ORDER FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ? ORDER BY TRIGGER_NAME',
    [db],
  );
  const events = await s.query('SELECT EVENT_NAME, EVENT_DEFINITION, INTERVAL_VALUE, INTERVAL_FIELD FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ? ORDER BY EVENT_NAME', [db]);
  const columns = await s.query(
    'SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, ORDINAL_POSITION FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? ORDER BY TABLE_NAME, ORDINAL_POSITION',
    [db],
  );
  return { views, routines, triggers, events, columns };
}

const MOVEMENTS_DDL = `CREATE TABLE navigator_movements (
  id VARCHAR(128) NOT NULL PRIMARY KEY,
  time_ms BIGINT NOT NULL,
  service VARCHAR(128) NOT NULL,
  role VARCHAR(16) NOT NULL,
  host VARCHAR(253) NOT NULL,
  address VARCHAR(64) NOT NULL,
  from_host VARCHAR(253) NOT NULL DEFAULT '',
  event VARCHAR(16) NOT NULL,
  failover TINYINT(1) NOT NULL,
  reason TEXT NOT NULL,
  term BIGINT NOT NULL,
  timings JSON NOT NULL,
  KEY by_time (time_ms)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4`;

describe('dbsync between two real MariaDB servers', { timeout: 90_000 }, () => {
  it('syncs tables, rows, views, routines, triggers and events; checksums match on both sides', async () => {
    const c = await primary.connect();
    await exec(c, [
      'CREATE DATABASE shop CHARACTER SET utf8mb4 COLLATE utf8mb4_bin',
      'USE shop',
      'CREATE TABLE customer (id INT PRIMARY KEY, name VARCHAR(100) NOT NULL, note TEXT NULL, photo BLOB NULL)',
      'CREATE TABLE orders (id INT AUTO_INCREMENT PRIMARY KEY, customer_id INT NOT NULL, amount DECIMAL(10,2) NOT NULL, FOREIGN KEY (customer_id) REFERENCES customer(id))',
      'CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, msg VARCHAR(200) NOT NULL)',
      "CREATE TRIGGER order_audit AFTER INSERT ON orders FOR EACH ROW INSERT INTO audit(msg) VALUES (CONCAT('order ', NEW.id, ' of ', NEW.customer_id))",
      // Qualified with the database's own name, as some schemas do: must act on the standby's copy.
      "CREATE TRIGGER order_audit2 AFTER INSERT ON shop.orders FOR EACH ROW FOLLOWS order_audit INSERT INTO shop.audit(msg) VALUES ('second')",
      'CREATE VIEW customer_totals AS SELECT c.id, c.name, SUM(o.amount) AS total FROM customer c JOIN orders o ON o.customer_id = c.id GROUP BY c.id, c.name',
      'CREATE VIEW big_spenders AS SELECT id, name FROM customer_totals WHERE total > 100',
      'CREATE FUNCTION with_tax(x DECIMAL(10,2)) RETURNS DECIMAL(10,2) DETERMINISTIC RETURN x * 1.2',
      'CREATE PROCEDURE place_order(IN cid INT, IN amt DECIMAL(10,2)) BEGIN INSERT INTO orders(customer_id, amount) VALUES (cid, amt); END',
      "CREATE EVENT nightly ON SCHEDULE EVERY 1 DAY DISABLE DO DELETE FROM audit WHERE msg = 'x'",
      MOVEMENTS_DDL,
    ]);
    await c.query('INSERT INTO customer VALUES (?, ?, ?, ?), (?, ?, ?, ?), (?, ?, ?, ?)', [
      1, 'Ann Ünïcødé 😀', 'line1\nline2\ttab \\ back', Buffer.from([0, 1, 2, 0x27, 0x5c, 0x0d, 0x0a, 255]),
      2, "O'Brien", null, null,
      3, 'Zoë', '`shop`.customer in a value is data, not a reference', Buffer.alloc(3000, 7),
    ]);
    await exec(c, ['CALL place_order(1, 80)', 'CALL place_order(1, 50.5)', 'CALL place_order(2, 10)', 'CALL place_order(3, 99.99)']);
    await c.end();

    const sync = makeSync('shop');
    const record = await sync.syncNow();

    const [p, s] = await Promise.all([checksums(primary, 'shop'), checksums(standby, 'shop')]);
    expect(Object.keys(p).sort()).toEqual(['audit', 'customer', 'navigator_movements', 'orders']);
    expect(s).toEqual(p);
    // The record carries the staging copy's checksums and row counts: equal to the primary's.
    expect(Object.fromEntries(record.tables.map((t) => [t.name, t.checksum]))).toEqual(p);
    expect(Object.fromEntries(record.tables.map((t) => [t.name, t.rows]))).toEqual({ audit: 8, customer: 3, navigator_movements: 0, orders: 4 });
    expect(record).toMatchObject({ database: 'shop', views: 2, routines: 2, triggers: 2, events: 1, writesStopped: false });
    expect(record.dumpBytes).toBeGreaterThan(1000);
    expect(await definitions(standby, 'shop')).toEqual(await definitions(primary, 'shop'));

    // The objects work on the standby: views, function, procedure, triggers (in order), FK.
    expect(await standby.query('SELECT * FROM shop.big_spenders ORDER BY id')).toEqual([{ id: 1, name: 'Ann Ünïcødé 😀' }]);
    expect(await standby.query('SELECT shop.with_tax(10) AS v')).toEqual([{ v: '12.00' }]);
    await standby.query('CALL shop.place_order(2, 1)');
    expect(await standby.query('SELECT msg FROM shop.audit ORDER BY id DESC LIMIT 2')).toEqual([{ msg: 'second' }, { msg: 'order 5 of 2' }]);
    await expect(standby.query('INSERT INTO shop.orders(customer_id, amount) VALUES (42, 1)')).rejects.toThrow(/foreign key constraint fails/);
    const [blob] = await standby.query<{ photo: Buffer }>('SELECT photo FROM shop.customer WHERE id = 1');
    expect(blob!.photo).toEqual(Buffer.from([0, 1, 2, 0x27, 0x5c, 0x0d, 0x0a, 255]));

    // Recorded on the standby's server, where its pilot reads it for the heartbeat.
    const conn = await standby.connect();
    try {
      const state = await readSyncHistory(conn, 'shop');
      expect(state.lastGood).toEqual(record);
      expect(state.lastAttempt).toMatchObject({ ok: true, at: record.snapshotAt });
      expect(syncHeartbeatFields(state, record.finishedAt + 1000, 60_000)).toEqual({ lastSyncAt: record.snapshotAt, syncFailing: false });
      expect(syncHeartbeatFields(state, record.finishedAt + 200_000, 60_000)).toEqual({ lastSyncAt: record.snapshotAt, syncFailing: true });
    } finally {
      await conn.end();
    }
    expect(sync.lastGoodSync()).toEqual(record);
    expect(sync.heartbeatFields()).toEqual({ lastSyncAt: record.snapshotAt, syncFailing: false });
    expect(sync.status()).toMatchObject({ failing: false, consecutiveFailures: 0, running: false });

    // A second sync: the standby's own change is replaced, the first copy is kept as previous.
    const second = await sync.syncNow();
    expect(await checksums(standby, 'shop')).toEqual(p);
    expect(await checksums(standby, 'shop__nav_previous')).not.toEqual(p); // holds the standby's CALL
    expect(Object.keys(await checksums(standby, 'shop__nav_previous')).sort()).toEqual(Object.keys(p).sort());
    expect(second.snapshotAt).toBeGreaterThan(record.snapshotAt);
    expect(await standby.query("SELECT SCHEMA_NAME AS s FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'shop%' ORDER BY 1")).toEqual([
      { s: 'shop' },
      { s: 'shop__nav_previous' },
      { s: 'shop__nav_sync' },
    ]);
  });

  it('the navigator_movements table travels with the data', async () => {
    const c = await primary.connect('shop');
    const timings = { detect: 812, elect: 140, takeover: 95, ship: 0, boot: 0 };
    await c.query(
      'INSERT INTO navigator_movements VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?), (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
      [
        'm-1', 1_763_700_000_000, 'zabbix', 'primary', 'ws-07', '10.0.0.50', 'ws-03', 'failover', 1, 'host ws-03 stopped answering', 4, JSON.stringify(timings),
        'm-2', 1_763_700_005_000, 'zabbix', 'standby', 'ws-11', '', '', 'placed', 0, 'best score: uptime 14 d, 6 GiB free', 4, JSON.stringify({ ship: 35_000, boot: 21_000 }),
      ],
    );
    await c.end();
    await makeSync('shop').syncNow();
    const rows = await standby.query<Record<string, unknown>>('SELECT * FROM shop.navigator_movements ORDER BY time_ms');
    expect(rows).toEqual(await primary.query('SELECT * FROM shop.navigator_movements ORDER BY time_ms'));
    expect(rows.map((r) => r.id)).toEqual(['m-1', 'm-2']);
    const t0 = rows[0]!.timings; // mysql2 parses JSON columns when the server flags them
    expect(typeof t0 === 'string' ? JSON.parse(t0) : t0).toEqual(timings);
  });

  it('follows schema changes on the primary (added column, new and dropped table, changed view and routine)', async () => {
    const c = await primary.connect('shop');
    await exec(c, [
      "ALTER TABLE customer ADD COLUMN email VARCHAR(200) NOT NULL DEFAULT 'none@example.org' AFTER name",
      "UPDATE customer SET email = 'ann@example.org' WHERE id = 1",
      'CREATE TABLE coupon (code VARCHAR(20) PRIMARY KEY, pct INT NOT NULL)',
      "INSERT INTO coupon VALUES ('SPRING', 10), ('VIP', 25)",
      'DROP VIEW big_spenders',
      'CREATE VIEW big_spenders AS SELECT id, name FROM customer_totals WHERE total > 50',
      'CREATE VIEW emails AS SELECT id, email FROM customer',
      'DROP FUNCTION with_tax',
      'CREATE FUNCTION with_tax(x DECIMAL(10,2)) RETURNS DECIMAL(10,2) DETERMINISTIC RETURN x * 1.25',
      'DROP TRIGGER order_audit2',
      'DROP EVENT nightly',
    ]);
    await c.end();
    const sync = makeSync('shop');
    const record = await sync.syncNow();
    expect(await checksums(standby, 'shop')).toEqual(await checksums(primary, 'shop'));
    expect(await definitions(standby, 'shop')).toEqual(await definitions(primary, 'shop'));
    expect(record).toMatchObject({ views: 3, routines: 2, triggers: 1, events: 0 });
    expect(await standby.query('SELECT email FROM shop.emails WHERE id = 1')).toEqual([{ email: 'ann@example.org' }]);
    expect(await standby.query('SELECT id FROM shop.big_spenders ORDER BY id')).toEqual([{ id: 1 }, { id: 3 }]);
    expect(await standby.query('SELECT shop.with_tax(10) AS v')).toEqual([{ v: '12.50' }]);

    // Dropped on the primary: gone from the live copy too.
    const c2 = await primary.connect('shop');
    await exec(c2, ['DROP VIEW emails', 'DROP TABLE coupon']);
    await c2.end();
    await sync.syncNow();
    expect(Object.keys(await checksums(standby, 'shop')).sort()).toEqual(['audit', 'customer', 'navigator_movements', 'orders']);
    expect(await standby.query("SELECT TABLE_NAME AS t FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'shop__nav_previous' AND TABLE_NAME = 'coupon'")).toEqual([{ t: 'coupon' }]);
    expect(await definitions(standby, 'shop')).toEqual(await definitions(primary, 'shop'));
  });

  it('takes a consistent snapshot while a writer commits during the dump', async () => {
    const c = await primary.connect();
    await exec(c, [
      'CREATE DATABASE ledger',
      'USE ledger',
      // Dumped in name order: a_entries, then the big table (takes a while), then z_batches.
      'CREATE TABLE a_entries (id INT AUTO_INCREMENT PRIMARY KEY, batch INT NOT NULL, amount INT NOT NULL, KEY (batch))',
      'CREATE TABLE m_filler (id INT PRIMARY KEY, pad VARCHAR(200) NOT NULL)',
      'CREATE TABLE z_batches (batch INT PRIMARY KEY, entries INT NOT NULL, total INT NOT NULL)',
      "INSERT INTO m_filler SELECT seq, REPEAT('f', 200) FROM seq_1_to_100000",
    ]);
    let batch = 0;
    let stop = false;
    const committed: number[] = [];
    const writer = (async () => {
      while (!stop) {
        batch++;
        const entries = 1 + (batch % 5);
        await c.beginTransaction();
        for (let i = 0; i < entries; i++) await c.query('INSERT INTO a_entries (batch, amount) VALUES (?, ?)', [batch, i + 1]);
        await c.query('INSERT INTO z_batches VALUES (?, ?, ?)', [batch, entries, (entries * (entries + 1)) / 2]);
        await c.commit();
        committed.push(batch);
      }
    })();
    try {
      while (committed.length < 20) await new Promise((r) => setTimeout(r, 5));
      const before = committed.length;
      const record = await makeSync('ledger').syncNow();
      const during = committed.length - before;
      stop = true;
      await writer;
      expect(during).toBeGreaterThan(5); // the writer really ran during the sync

      const batches = await standby.query<{ batch: number; entries: number; total: number }>('SELECT * FROM ledger.z_batches ORDER BY batch');
      const sums = await standby.query<{ batch: number; n: number; s: string }>(
        'SELECT batch, COUNT(*) AS n, SUM(amount) AS s FROM ledger.a_entries GROUP BY batch ORDER BY batch',
      );
      // A prefix of the commits: batches 1..k, each complete, in both tables — nothing torn.
      const k = batches.length;
      expect(k).toBeGreaterThanOrEqual(before);
      expect(k).toBeLessThan(committed.length);
      expect(batches.map((b) => b.batch)).toEqual(Array.from({ length: k }, (_, i) => i + 1));
      expect(sums.map((r) => ({ batch: r.batch, entries: Number(r.n), total: Number(r.s) }))).toEqual(batches);
      expect(record.tables.find((t) => t.name === 'm_filler')?.rows).toBe(100_000);
    } finally {
      stop = true;
      await writer.catch(() => undefined);
      await c.end();
    }
  });

  it('refuses a second sync into the same copy while one runs, without disturbing it', async () => {
    const a = makeSync('ledger');
    const b = makeSync('ledger');
    const first = a.syncNow();
    first.catch(() => undefined);
    for (let i = 0; ; i++) {
      const [held] = await standby.query<{ h: unknown }>("SELECT IS_USED_LOCK('nav-sync.ledger') AS h");
      if (held!.h !== null) break;
      if (i > 2000) throw new Error('the first sync never took the lock');
      await new Promise((r) => setTimeout(r, 5));
    }
    await expect(b.syncNow()).rejects.toThrow(/failed at lock: another sync into ledger/);
    const record = await first;
    expect(record.tables.find((t) => t.name === 'm_filler')?.rows).toBe(100_000);
    expect(await checksums(standby, 'ledger')).toEqual(await checksums(primary, 'ledger'));
  });

  it('never shows the password in ps output or logs; option files are 0600 and removed', async () => {
    const c = await primary.connect();
    await exec(c, ['CREATE DATABASE secretive', 'USE secretive', 'CREATE TABLE t (id INT PRIMARY KEY, pad VARCHAR(200))', "INSERT INTO t SELECT seq, REPEAT('p', 200) FROM seq_1_to_50000"]);
    await c.end();
    const lines: string[] = [];
    const logger = createLogger({
      level: 'trace',
      destination: new Writable({
        write(chunk, _enc, cb) {
          lines.push(String(chunk));
          cb();
        },
      }),
    });
    const sync = makeSync('secretive', { logger });
    let sawDump = false;
    let sawLoad = false;
    const modes = new Set<string>();
    const dirs = new Set<string>();
    let polling = true;
    const poller = (async () => {
      while (polling) {
        const { stdout } = await execa('ps', ['-eo', 'pid=,ppid=,args=']);
        for (const pw of [primary.password, standby.password]) expect(stdout.includes(pw)).toBe(false);
        for (const line of stdout.split('\n')) {
          const m = /--defaults-extra-file=(\S+)/.exec(line);
          // Only our own children: other test files may sync at the same time.
          if (!m || Number(line.trim().split(/\s+/)[1]) !== process.pid) continue;
          if (/(mysqldump|mariadb-dump)/.test(line)) sawDump = true;
          else sawLoad = true;
          dirs.add(m[1]!.replace(/\/[^/]+$/, ''));
          const st = await execa('stat', ['-c', '%a', m[1]!, m[1]!.replace(/\/[^/]+$/, '')], { reject: false });
          if (st.exitCode === 0) modes.add(st.stdout.replace(/\n/g, ' '));
        }
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    try {
      await sync.syncNow();
    } finally {
      polling = false;
      await poller;
    }
    expect(sawDump && sawLoad).toBe(true);
    expect([...modes].every((m) => m === '600 700')).toBe(true);
    expect(modes.size).toBeGreaterThan(0);

    // A failing sync (wrong password) logs its cause, still without any password.
    const bad = makeSync('secretive', { logger, target: { ...ep(standby), password: 'not-the-password-xyz' } });
    await expect(bad.syncNow()).rejects.toThrow(/connect-target.*Access denied/);
    const bad2 = makeSync('nosuchdb', { logger });
    await expect(bad2.syncNow()).rejects.toThrow(/nosuchdb does not exist/);
    const text = lines.join('');
    expect(text).toContain('dbsync.succeeded');
    expect(text).toContain('Access denied');
    for (const pw of [primary.password, standby.password, 'not-the-password-xyz']) expect(text.includes(pw)).toBe(false);
    expect(dirs.size).toBeGreaterThan(0);
    for (const d of dirs) expect(existsSync(d)).toBe(false);
  });
});
