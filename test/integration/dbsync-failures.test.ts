import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Writable } from 'node:stream';
import { execa } from 'execa';
import { startMariaDb, type MariaDbServer } from '../../lab/loopback/mariadb.ts';
import { DbSync, type DbSyncOptions } from '../../pilot/db/dbsync.ts';
import { readSyncHistory } from '../../pilot/db/sync-history.ts';
import { createLogger, silentLogger } from '../../shared/logger.ts';

// Failures: whatever breaks (the dump killed, the standby's server stopped or killed mid-load,
// its disk full), the standby keeps its last good copy — queryable throughout — the failure is
// logged with its cause, retried with backoff, shown as failing, and the next sync recovers.
// Also the planned-switchover sync that stops writes first.

let primary: MariaDbServer;
let standby: MariaDbServer;

beforeAll(async () => {
  [primary, standby] = await Promise.all([startMariaDb({ name: 'dbsyncf-p' }), startMariaDb({ name: 'dbsyncf-s' })]);
  const c = await primary.connect();
  for (const sql of [
    'CREATE DATABASE bulk',
    'USE bulk',
    // Dumped in name order: items (big, takes a while to load) before small.
    'CREATE TABLE items (id INT PRIMARY KEY, pad VARCHAR(200) NOT NULL)',
    'CREATE TABLE small (id INT PRIMARY KEY, v INT NOT NULL)',
    "INSERT INTO items SELECT seq, REPEAT('i', 200) FROM seq_1_to_80000",
    'INSERT INTO small VALUES (1, 10), (2, 20), (3, 30)',
  ]) {
    await c.query(sql);
  }
  await c.end();
}, 120_000);

afterAll(async () => {
  await Promise.all([primary?.stop(), standby?.stop()]);
}, 60_000);

function ep(s: MariaDbServer) {
  return { host: s.host, port: s.port, user: s.user, password: s.password };
}

function makeSync(database: string, extra: Partial<DbSyncOptions> = {}, target: MariaDbServer = standby): DbSync {
  return new DbSync({ source: ep(primary), target: ep(target), database, logger: silentLogger(), ...extra });
}

function captureLogger() {
  const events: Array<Record<string, unknown>> = [];
  const logger = createLogger({
    level: 'debug',
    destination: new Writable({
      write(chunk, _enc, cb) {
        for (const line of String(chunk).split('\n').filter(Boolean)) events.push(JSON.parse(line) as Record<string, unknown>);
        cb();
      },
    }),
  });
  return { logger, events };
}

async function content(s: MariaDbServer, db = 'bulk'): Promise<string> {
  const rows = await s.query(`CHECKSUM TABLE \`${db}\`.items, \`${db}\`.small`);
  return JSON.stringify(rows.map((r) => Number(r.Checksum)));
}

async function waitFor(what: string, cond: () => Promise<boolean> | boolean, timeoutMs = 20_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Child processes of this test process whose command line matches. */
async function children(pattern: RegExp): Promise<number[]> {
  const { stdout } = await execa('ps', ['-eo', 'pid=,ppid=,args=']);
  return stdout
    .split('\n')
    .map((l) => /^\s*(\d+)\s+(\d+)\s+(.*)$/.exec(l))
    .filter((m): m is RegExpExecArray => m !== null && Number(m[2]) === process.pid && pattern.test(m[3]!))
    .map((m) => Number(m[1]));
}

/** The load is inserting rows of `items` into the staging schema (read from the process list:
 * the table itself is write-locked by the load until it is complete). */
async function loadingItems(s: MariaDbServer): Promise<boolean> {
  const rows = await s.query(
    "SELECT 1 FROM information_schema.PROCESSLIST WHERE DB = 'bulk__nav_staging' AND INFO LIKE 'INSERT INTO `items`%'",
  );
  return rows.length > 0;
}

/** Query the standby's live copy from its own connection until stopped. */
function reader(s: MariaDbServer) {
  const seen = new Set<string>();
  const errors: string[] = [];
  let reads = 0;
  let on = true;
  const done = (async () => {
    const c = await s.connect();
    try {
      while (on) {
        try {
          const [rows] = await c.query('SELECT (SELECT COUNT(*) FROM bulk.items) AS items, (SELECT SUM(v) FROM bulk.small) AS small');
          seen.add(JSON.stringify(rows));
          reads++;
        } catch (err) {
          errors.push((err as Error).message);
        }
      }
    } finally {
      await c.end();
    }
  })();
  return {
    seen,
    errors,
    get reads() {
      return reads;
    },
    stop: async () => {
      on = false;
      await done;
    },
  };
}

describe('dbsync failures', { timeout: 90_000 }, () => {
  it('the dump killed mid-way leaves the standby unchanged and queryable; the next sync recovers', async () => {
    const { logger, events } = captureLogger();
    const sync = makeSync('bulk', { logger });
    await sync.syncNow();
    const good = await content(standby);
    await primary.query('UPDATE bulk.small SET v = v + 1');
    await primary.query('DELETE FROM bulk.items WHERE id > 79000');

    const r = reader(standby);
    const running = sync.syncNow();
    let killed: number[] = [];
    try {
      await waitFor('the load to start', () => loadingItems(standby));
      killed = await children(/(mysqldump|mariadb-dump) .*--single-transaction/);
      expect(killed).toHaveLength(1);
      process.kill(killed[0]!, 'SIGKILL');
      await expect(running).rejects.toThrow(/failed at dump: .*(killed by SIGKILL|trailer)/);
      await new Promise((res) => setTimeout(res, 100)); // keep reading a moment after the failure
    } finally {
      await r.stop();
      await running.catch(() => undefined);
    }
    expect(r.errors).toEqual([]);
    expect(r.reads).toBeGreaterThan(5);
    expect([...r.seen]).toEqual([JSON.stringify([{ items: 80000, small: '60' }])]);
    expect(await content(standby)).toBe(good);
    expect(await standby.query("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'bulk__nav_staging'")).toEqual([]);
    expect(sync.status()).toMatchObject({ failing: true, consecutiveFailures: 1, lastError: { stage: 'dump' } });
    expect(sync.heartbeatFields().syncFailing).toBe(true);
    const failed = events.find((e) => e.event === 'dbsync.failed');
    expect(failed).toMatchObject({ stage: 'dump', level: 50 });
    expect(String(failed!.err)).toMatch(/killed by SIGKILL|trailer/);
    const conn = await standby.connect();
    try {
      expect((await readSyncHistory(conn, 'bulk')).lastAttempt).toMatchObject({ ok: false, stage: 'dump' });
    } finally {
      await conn.end();
    }

    await sync.syncNow();
    expect(await content(standby)).toBe(await content(primary));
    expect(sync.status()).toMatchObject({ failing: false, consecutiveFailures: 0, lastError: undefined });
  });

  it('stop() during a sync aborts it: commands killed, live copy untouched, staging removed', async () => {
    const sync = makeSync('bulk');
    await sync.syncNow();
    const good = await content(standby);
    await primary.query('UPDATE bulk.small SET v = v + 100');
    await sync.start();
    await waitFor('the load to start', () => loadingItems(standby));
    await sync.stop();
    expect(await children(/--defaults-extra-file=/)).toEqual([]);
    expect(sync.status()).toMatchObject({ running: false, lastError: { stage: 'aborted' }, nextAttemptAt: undefined });
    expect(await content(standby)).toBe(good);
    expect(await standby.query("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'bulk__nav_staging'")).toEqual([]);
  });

  it('the standby server stopped: retries with backoff, shows failing, recovers when it is back', async () => {
    const { logger, events } = captureLogger();
    await primary.query('CREATE DATABASE tiny');
    await primary.query('CREATE TABLE tiny.items (id INT PRIMARY KEY, pad VARCHAR(20) NOT NULL)');
    await primary.query('CREATE TABLE tiny.small (id INT PRIMARY KEY, v INT NOT NULL)');
    await primary.query("INSERT INTO tiny.items SELECT seq, 'x' FROM tiny.seq_1_to_100");
    await primary.query('INSERT INTO tiny.small VALUES (1, 1)');
    const sync = makeSync('tiny', { logger, settings: { syncIntervalMs: 60_000, retryBaseMs: 100, retryBackoffMaxMs: 400 } });
    await sync.syncNow();
    await primary.query('UPDATE tiny.small SET v = v * 2');
    await standby.halt();
    try {
      await sync.start();
      await waitFor('four failed attempts', () => sync.status().consecutiveFailures >= 4);
      expect(sync.status()).toMatchObject({ failing: true, lastError: { stage: 'connect-target' } });
      expect(sync.status().lastError!.message).toMatch(/ECONNREFUSED/);
      expect(sync.heartbeatFields().syncFailing).toBe(true);
      const failures = events.filter((e) => e.event === 'dbsync.failed');
      expect(failures.map((e) => e.consecutiveFailures).slice(0, 4)).toEqual([1, 2, 3, 4]);
      // Waits between attempts grow: ≥ 100, 200, 400 (capped) ms.
      const times = failures.map((e) => Date.parse(String(e.time)));
      for (const [i, min] of [100, 200, 400].entries()) expect(times[i + 1]! - times[i]!).toBeGreaterThanOrEqual(min - 5);
    } finally {
      await standby.restart();
    }
    const back = Date.now();
    await waitFor('the sync to recover', () => !sync.status().failing, 30_000);
    await sync.stop();
    expect(sync.lastGoodSync()!.snapshotAt).toBeGreaterThanOrEqual(back - 1000);
    expect(await content(standby, 'tiny')).toBe(await content(primary, 'tiny'));
  });

  it('the standby server killed mid-load (connection cut): live copy intact after restart, next sync recovers', async () => {
    const sync = makeSync('bulk');
    await sync.syncNow();
    const good = await content(standby);
    await primary.query('UPDATE bulk.small SET v = v + 5');
    const running = sync.syncNow();
    running.catch(() => undefined); // awaited below; no unhandled rejection if the wait fails
    await waitFor('the load to start', () => loadingItems(standby));
    await standby.kill();
    await expect(running).rejects.toThrow(/failed at load: [^]*(Lost connection|gone away|ERROR 20\d\d)/i);
    expect(sync.status().failing).toBe(true);
    await standby.restart();
    expect(await content(standby)).toBe(good);
    await sync.syncNow();
    expect(await content(standby)).toBe(await content(primary));
    expect(await standby.query("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'bulk__nav_staging'")).toEqual([]);
  });

  it('disk full on the standby: the load fails, the last good copy stays, the space is given back', async () => {
    const small = await startMariaDb({ name: 'dbsyncf-full', tmpfsMb: 120 });
    try {
      await primary.query('CREATE DATABASE fat');
      await primary.query('CREATE TABLE fat.blobs (id INT PRIMARY KEY, pad VARCHAR(1000) NOT NULL)');
      await primary.query("INSERT INTO fat.blobs SELECT seq, REPEAT('b', 1000) FROM fat.seq_1_to_1000");
      const sync = makeSync('fat', {}, small);
      await sync.syncNow();
      const good = JSON.stringify(await small.query('CHECKSUM TABLE fat.blobs'));
      const free = async () => Number((await execa('df', ['--output=avail', '-B1', small.datadir])).stdout.split('\n')[1]);
      const freeBefore = await free();
      const rowsNeeded = Math.ceil((freeBefore * 1.3) / 1000);
      await primary.query(`INSERT INTO fat.blobs SELECT seq, REPEAT('B', 1000) FROM fat.seq_1001_to_${1000 + rowsNeeded}`);

      await expect(sync.syncNow()).rejects.toThrow(/failed at load: [^]*is full/);
      expect(JSON.stringify(await small.query('CHECKSUM TABLE fat.blobs'))).toBe(good);
      expect(await small.query("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'fat__nav_staging'")).toEqual([]);
      expect(await free()).toBeGreaterThan(freeBefore * 0.8);
      expect(sync.status()).toMatchObject({ failing: true, lastError: { stage: 'load' } });

      await primary.query('DELETE FROM fat.blobs WHERE id > 2000');
      await sync.syncNow();
      expect(JSON.stringify(await small.query('CHECKSUM TABLE fat.blobs'))).toBe(JSON.stringify(await primary.query('CHECKSUM TABLE fat.blobs')));
    } finally {
      await small.stop();
    }
  });

  it('syncNow({stopWrites}) before a switchover: writes stop, every acknowledged write reaches the standby', async () => {
    await primary.query('CREATE DATABASE app');
    await primary.query('CREATE TABLE app.events (id INT AUTO_INCREMENT PRIMARY KEY, v INT NOT NULL)');
    const appPassword = 'app-pw-123';
    await primary.query("CREATE USER 'app'@'127.0.0.1' IDENTIFIED BY ?", [appPassword]);
    await primary.query("GRANT SELECT, INSERT ON app.* TO 'app'@'127.0.0.1'");
    const mysql = (await import('mysql2/promise')).default;
    const c = await mysql.createConnection({ host: primary.host, port: primary.port, user: 'app', password: appPassword, database: 'app' });
    const acked: number[] = [];
    const refused: string[] = [];
    let on = true;
    const writer = (async () => {
      for (let v = 1; on; v++) {
        try {
          await c.query('INSERT INTO events (v) VALUES (?)', [v]);
          acked.push(v);
        } catch (err) {
          refused.push((err as { code?: string }).code ?? String(err));
          await new Promise((r) => setTimeout(r, 5));
        }
      }
    })();
    const sync = makeSync('app');
    try {
      await waitFor('some writes', () => acked.length >= 20);
      const record = await sync.syncNow({ stopWrites: true });
      expect(record.writesStopped).toBe(true);
      expect(sync.status().writesStopped).toBe(true);
      expect(await primary.query('SELECT @@global.read_only AS ro')).toEqual([{ ro: 1 }]);
      await waitFor('a refused write', () => refused.length > 0);
      on = false;
      await writer;
      expect(new Set(refused)).toEqual(new Set(['ER_OPTION_PREVENTS_STATEMENT']));
      const onStandby = (await standby.query<{ v: number }>('SELECT v FROM app.events ORDER BY id')).map((r) => r.v);
      expect(onStandby).toEqual(acked); // nothing acknowledged is missing, nothing extra
      await sync.resumeWrites();
      expect(await primary.query('SELECT @@global.read_only AS ro')).toEqual([{ ro: 0 }]);
      await c.query('INSERT INTO events (v) VALUES (-1)');

      // A final sync that fails resumes writes at once (the switchover cannot go ahead).
      const broken = makeSync('app', { target: { ...ep(standby), password: 'wrong' } });
      await expect(broken.syncNow({ stopWrites: true })).rejects.toThrow(/connect-target/);
      expect(await primary.query('SELECT @@global.read_only AS ro')).toEqual([{ ro: 0 }]);
      expect(broken.status().writesStopped).toBe(false);
    } finally {
      on = false;
      await writer.catch(() => undefined);
      await c.end();
      await primary.query('SET GLOBAL read_only = 0');
    }
  });
});
