import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Writable } from 'node:stream';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { startMariaDb, type MariaDbServer } from '../../lab/loopback/mariadb.ts';
import { ReplicaKeeper } from '../../pilot/db/replica-keeper.ts';
import {
  preparePrimary,
  promoteReplica,
  readHeartbeat,
  readReplicaStatus,
  replicationPassword,
  serverIdFor,
  stopWritesAndFinalPosition,
  waitApplied,
  writeHeartbeat,
} from '../../pilot/db/replication.ts';
import { createLogger } from '../../shared/logger.ts';
import { until as waitUntil } from '../helpers/until.ts';

// MariaDB GTID replication driven by Navigator between real mariadbd servers this test starts:
// a standby is seeded from a consistent snapshot taken under a write load, then follows writes
// and DDL; the replication password shows in no `ps` output and no log; a planned hand-over
// (stop writes, wait for the GTID) loses no acknowledged write; the promoted standby takes over
// and the other standby is re-pointed to it.

const BINLOG = ['--log-bin=mysql-bin', '--log-slave-updates', '--binlog-format=ROW'];
let a: MariaDbServer;
let b: MariaDbServer;
let c: MariaDbServer;
const lines: string[] = [];
const logger = createLogger({
  level: 'debug',
  destination: new Writable({
    write(chunk, _enc, cb) {
      lines.push(String(chunk));
      cb();
    },
  }),
});

beforeAll(async () => {
  [a, b, c] = await Promise.all([
    startMariaDb({ name: 'repl-a', password: `Pr"im\\a#ry ${Date.now()}`, extraArgs: BINLOG }),
    startMariaDb({ name: 'repl-b', password: `Pr"im\\a#ry ${Date.now()}`, extraArgs: BINLOG }),
    startMariaDb({ name: 'repl-c', password: `Pr"im\\a#ry ${Date.now()}`, extraArgs: BINLOG }),
  ]);
}, 120_000);

afterAll(async () => {
  await Promise.all([a?.stop(), b?.stop(), c?.stop()]);
}, 60_000);

const ep = (s: MariaDbServer) => ({ host: s.host, port: s.port, user: s.user, password: s.password });
const DB = 'monitor';

function keeper(src: MariaDbServer, dst: MariaDbServer, semisync = false): ReplicaKeeper {
  // Every server listens on 127.0.0.1 with its own port: the "address" standbys reach is 127.0.0.1.
  return new ReplicaKeeper({
    source: ep(src),
    sourceAddress: '127.0.0.1',
    target: ep(dst),
    targetServerId: serverIdFor(`copy-${dst.port}`),
    database: DB,
    semisync,
    logger,
    settings: { replicaCheckMs: 200, retryBaseMs: 200, retryBackoffMaxMs: 1000 },
  });
}

async function setupPrimary(s: MariaDbServer): Promise<void> {
  const conn = await s.connect();
  try {
    await preparePrimary(conn, { database: DB, serverId: serverIdFor(`copy-${s.port}`), replUser: 'navigator_repl', replPassword: replicationPassword(s.password, DB), semisync: false, semisyncTimeoutMs: 1000 }, 'test');
  } finally {
    await conn.end();
  }
}

const until = <T>(what: string, fn: () => Promise<T | undefined | false>, ms = 20_000) => waitUntil(what, fn, ms);

describe('GTID replication between real MariaDB servers', { timeout: 120_000 }, () => {
  let written = 0;

  it('seeds a standby from a snapshot taken under load, then follows writes and DDL; no password in ps or logs', async () => {
    await a.query(`CREATE DATABASE ${DB}`);
    await a.query(`CREATE TABLE ${DB}.history (id INT PRIMARY KEY, v VARCHAR(64))`);
    await a.query(`INSERT INTO ${DB}.history SELECT seq, CONCAT('v', seq) FROM ${DB}.seq_1_to_300000`);
    written = 300000;
    await setupPrimary(a);
    // Enough rows that the dump runs long enough for the ps poller to see it (the check that no
    // password is in ps means something only then). A writer keeps inserting meanwhile.
    let writing = true;
    const writer = (async () => {
      const conn = await a.connect(DB);
      while (writing) {
        written++;
        await conn.query('INSERT INTO history VALUES (?, ?)', [written, `w${written}`]);
      }
      await conn.end();
    })();
    const k = keeper(a, b);
    const seen = new Set<string>();
    let polling = true;
    const replPw = replicationPassword(a.password, DB);
    const poller = (async () => {
      while (polling) {
        const { stdout } = await execa('ps', ['-eo', 'args=']);
        for (const pw of [a.password, b.password, replPw]) if (stdout.includes(pw)) seen.add('password in ps');
        if (/mariadb-dump|mysqldump/.test(stdout)) seen.add('dump');
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    try {
      await k.checkNow();
    } finally {
      polling = false;
      await poller;
    }
    writing = false;
    await writer;
    expect(seen.has('password in ps')).toBe(false);
    expect(seen.has('dump')).toBe(true);
    expect(k.status().lastSeed?.method).toBe('mysqldump');
    // Every row written before, during and after the snapshot arrives once.
    const final = written;
    await until('rows on the standby', async () => Number((await b.query<{ n: number }>(`SELECT COUNT(*) AS n FROM ${DB}.history`))[0]?.n) === final);
    const [mx] = await b.query<{ m: number }>(`SELECT MAX(id) AS m FROM ${DB}.history`);
    expect(Number(mx?.m)).toBe(final);
    // DDL follows, and rows written after it.
    await a.query(`ALTER TABLE ${DB}.history ADD COLUMN note VARCHAR(20) NOT NULL DEFAULT ''`);
    await a.query(`CREATE TABLE ${DB}.hosts (id INT PRIMARY KEY, name VARCHAR(40))`);
    await a.query(`INSERT INTO ${DB}.hosts VALUES (1, 'web-1')`);
    await until('DDL on the standby', async () => (await b.query<{ name: string }>(`SELECT name FROM ${DB}.hosts`).catch(() => []))[0]?.name === 'web-1');
    const cols = await b.query<{ c: string }>("SELECT COLUMN_NAME AS c FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = 'history' ORDER BY ORDINAL_POSITION", [DB]);
    expect(cols.map((r) => r.c)).toEqual(['id', 'v', 'note']);
    // Writes to other databases on the primary's server do not replicate (and do not break it).
    await a.query('CREATE DATABASE unrelated');
    await a.query('CREATE TABLE unrelated.t (id INT PRIMARY KEY)');
    // The standby is read-only and healthy; the heartbeat carries the primary's clock.
    const conn = await a.connect();
    const now = Date.now();
    await writeHeartbeat(conn, DB, now);
    await conn.end();
    await until('heartbeat on the standby', async () => {
      const bc = await b.connect();
      try {
        return (await readHeartbeat(bc, DB)) === now;
      } finally {
        await bc.end();
      }
    });
    await k.checkNow();
    expect(k.status().state).toBe('replicating');
    expect(k.status().lagTx).toBe(0);
    const bc = await b.connect();
    const st = await readReplicaStatus(bc);
    await bc.end();
    expect(st.readOnly).toBe(true);
    expect(st.masterHost).toBe('127.0.0.1');
    expect((await b.query<{ n: number }>("SELECT COUNT(*) AS n FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'unrelated'"))[0]?.n).toBe(0);
    await k.stop();
    // No password in our log nor in the servers' error logs.
    const text = lines.join('');
    expect(text).toContain('replication.seeded');
    for (const s of [a, b]) {
      const errLog = readFileSync(join(s.dir, 'error.log'), 'utf8');
      for (const pw of [a.password, b.password, replPw]) {
        expect(text.includes(pw)).toBe(false);
        expect(errLog.includes(pw)).toBe(false);
      }
    }
  });

  it('planned hand-over under a write load loses no acknowledged write; the promoted standby re-points the other', async () => {
    const kc = keeper(a, c);
    await kc.checkNow();
    // A writer account without READ ONLY ADMIN, as a service's own account is.
    await a.query("CREATE USER IF NOT EXISTS 'app'@'127.0.0.1' IDENTIFIED BY 'app-pw-1'");
    await a.query(`GRANT SELECT, INSERT ON ${DB}.* TO 'app'@'127.0.0.1'`);
    const mysql = (await import('mysql2/promise')).default;
    const app = await mysql.createConnection({ host: '127.0.0.1', port: a.port, user: 'app', password: 'app-pw-1', database: DB });
    const acked: number[] = [];
    let next = 1_000_000;
    let writing = true;
    const writer = (async () => {
      while (writing) {
        const id = next++;
        try {
          await app.query('INSERT INTO history (id, v) VALUES (?, ?)', [id, 'load']);
          acked.push(id);
        } catch {
          await new Promise((r) => setTimeout(r, 5));
        }
      }
    })();
    await new Promise((r) => setTimeout(r, 500));
    // Hand-over: stop writes, take the final position, wait for the standby to apply it.
    const ac = await a.connect();
    const pos = await stopWritesAndFinalPosition(ac, 5);
    const bc = await b.connect();
    expect(await waitApplied(bc, pos, 10_000)).toBe(true);
    writing = false;
    await writer;
    await app.end();
    expect(acked.length).toBeGreaterThan(10);
    // Promote b: applies what it has, forgets its source; writable once the caller says so.
    const promoted = await promoteReplica(bc, 5000);
    expect(promoted.wasReplica).toBe(true);
    expect(promoted.appliedAll).toBe(true);
    await bc.query('SET GLOBAL read_only = 0');
    await bc.end();
    await ac.end();
    const ids = new Set((await b.query<{ id: number }>(`SELECT id FROM ${DB}.history WHERE id >= 1000000`)).map((r) => Number(r.id)));
    expect(acked.filter((id) => !ids.has(id))).toEqual([]);
    // b is the new source: c (still pointed at a) is re-pointed by GTID, without a reseed.
    await setupPrimary(b);
    const kb = keeper(b, c);
    // Same address (127.0.0.1) but another port: the keeper sees c pointed elsewhere.
    await kb.checkNow();
    expect(kb.status().lastSeed).toBeUndefined();
    await b.query(`INSERT INTO ${DB}.hosts VALUES (2, 'after-promotion')`);
    await until('c follows the new primary', async () => (await c.query<{ n: number }>(`SELECT COUNT(*) AS n FROM ${DB}.hosts WHERE id = 2`))[0]?.n === 1);
    await kc.stop();
    await kb.stop();
  });

  it('a standby whose binlog was purged before it caught up is detected as broken and reseeded', async () => {
    // b is the primary now, c its replica.
    await c.query('STOP SLAVE');
    await b.query(`INSERT INTO ${DB}.hosts VALUES (3, 'while-c-was-away')`);
    // The primary's dump thread for c may still hold the old binlog open (then it is not purged).
    for (const t of await b.query<{ Id: number; Command: string }>('SHOW PROCESSLIST')) if (t.Command === 'Binlog Dump') await b.query(`KILL ${Number(t.Id)}`);
    await b.query('FLUSH BINARY LOGS');
    const [cur] = await b.query<{ File: string }>('SHOW MASTER STATUS');
    // Retried: a binlog still needed by InnoDB's recovery (binlog checkpoint) is kept a moment.
    await until('old binlogs purged', async () => {
      await b.query(`PURGE BINARY LOGS TO '${cur!.File}'`);
      return (await b.query('SHOW BINARY LOGS')).length === 1;
    });
    await c.query('START SLAVE');
    const cc = await c.connect();
    const st = await until('c to fail with 1236', async () => {
      const s = await readReplicaStatus(cc);
      return s.ioErrno === 1236 ? s : undefined;
    });
    await cc.end();
    expect(st.ioError).toMatch(/purged|binlog|GTID/i);
    const k = keeper(b, c);
    await k.checkNow();
    expect(k.status().lastSeed).toBeDefined();
    expect(lines.join('')).toContain('"event":"replication.broken"');
    await until('c holds the row again', async () => (await c.query<{ n: number }>(`SELECT COUNT(*) AS n FROM ${DB}.hosts WHERE id = 3`))[0]?.n === 1);
    // The row comes with the seed; the replica's IO thread may still be connecting a moment later.
    await until('c replicating again', async () => {
      await k.checkNow();
      return k.status().state === 'replicating';
    });
    // Broken again at once: not reseeded again before the backoff (retryBaseMs 200 ms doubles
    // per reseed in a row; here the base is a minute).
    const slow = new ReplicaKeeper({
      source: ep(b),
      sourceAddress: '127.0.0.1',
      target: ep(c),
      targetServerId: serverIdFor(`copy-${c.port}`),
      database: DB,
      semisync: false,
      logger,
      settings: { retryBaseMs: 60_000, retryBackoffMaxMs: 600_000 },
    });
    // A row written on the standby behind replication's back, then the same key on the primary:
    // the replica's SQL thread stops on the duplicate (slave_exec_mode STRICT).
    const clash = async (id: number) => {
      await c.query('STOP SLAVE');
      await c.query(`INSERT INTO ${DB}.hosts VALUES (${id}, 'on the standby')`);
      await c.query('START SLAVE');
      await b.query(`INSERT INTO ${DB}.hosts VALUES (${id}, 'on the primary')`);
      const conn = await c.connect();
      await until('c to stop on an SQL error', async () => (await readReplicaStatus(conn)).sqlErrno !== 0);
      await conn.end();
    };
    await clash(100);
    await slow.checkNow();
    const firstSeed = slow.status().lastSeed;
    expect(firstSeed).toBeDefined();
    await clash(101);
    await expect(slow.checkNow()).rejects.toThrow(/broken again \d+ s after its reseed .*next reseed in \d+ s/);
    expect(slow.status().lastSeed).toBe(firstSeed);
    expect(slow.status().state).toBe('broken');
    expect(slow.status().reason).toMatch(/SQL thread error/);
    await slow.stop();
    await k.checkNow();
    await k.stop();
  });

  it('a keeper whose copy no longer holds the lease leaves standbys alone', async () => {
    // a (the old primary, not a replica) would be seeded by b's keeper, unless b may not act.
    let mayAct = false;
    const k = new ReplicaKeeper({
      source: ep(b),
      sourceAddress: '127.0.0.1',
      target: ep(a),
      targetServerId: serverIdFor(`copy-${a.port}`),
      database: DB,
      semisync: false,
      logger,
      mayAct: () => mayAct,
    });
    await k.checkNow();
    expect(k.status().lastSeed).toBeUndefined();
    const ac = await a.connect();
    expect((await readReplicaStatus(ac)).configured).toBe(false);
    mayAct = true;
    await k.checkNow();
    expect(k.status().lastSeed).toBeDefined();
    expect((await readReplicaStatus(ac)).configured).toBe(true);
    await ac.end();
    // The standby's server restarts: it comes back writable and with server_id 1 (run-time
    // settings); the next check sets both again and it goes on replicating.
    await a.restart();
    const before = await a.query<{ ro: number; sid: number }>('SELECT @@GLOBAL.read_only AS ro, @@GLOBAL.server_id AS sid');
    expect([Number(before[0]!.ro), Number(before[0]!.sid)]).toEqual([0, 1]);
    await k.checkNow();
    const after = await a.query<{ ro: number; sid: number }>('SELECT @@GLOBAL.read_only AS ro, @@GLOBAL.server_id AS sid');
    expect([Number(after[0]!.ro), Number(after[0]!.sid)]).toEqual([1, serverIdFor(`copy-${a.port}`)]);
    await b.query(`INSERT INTO ${DB}.hosts VALUES (4, 'after-restart')`);
    await until('a follows after its restart', async () => (await a.query<{ n: number }>(`SELECT COUNT(*) AS n FROM ${DB}.hosts WHERE id = 4`))[0]?.n === 1);
    await k.stop();
  });
});
