import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mysql from 'mysql2/promise';
import { startMariaDb, type MariaDbServer } from '../../lab/loopback/mariadb.ts';
import { DbLink } from '../../pilot/db/db-link.ts';
import { NAVIGATOR_GLOBAL_GRANTS } from '../../pilot/db/replication.ts';
import { markSeeding } from '../../pilot/db/seed-marker.ts';
import { seededAfterReading } from '../../pilot/data-completeness.ts';
import { parseConfig } from '../../shared/config.ts';
import { silentLogger } from '../../shared/logger.ts';
import { until } from '../helpers/until.ts';

// The keeper's seed mark on a standby's own server (pilot/db/seed-marker.ts), between two real
// mariadbd servers in replicate mode: a first seed leaves the mark "complete"; a reseed that is
// cut off half-way (its load blocked on a table, then the primary's keeper gone, as when the
// primary's host loses power) leaves "seeding", so the standby's pilot reads its copy as not
// seeded (it will not stand for election); the mark never enters the standby's binary log (a
// local transaction there would read as a diverged copy); a later complete seed clears it.

const BINLOG = ['--log-bin=mysql-bin', '--log-slave-updates', '--binlog-format=ROW'];
const PASSWORD = `pw-${Date.now()}`;
const DB = 'svc';
const servers: Record<string, MariaDbServer> = {};
const links: DbLink[] = [];
const dirs: string[] = [];

function link(name: string): DbLink {
  const dir = mkdtempSync(join(tmpdir(), `navigator-seedmark-${name}-`));
  dirs.push(dir);
  writeFileSync(join(dir, 'db-password'), `${PASSWORD}\n`, { mode: 0o600 });
  const dbsync = parseConfig({ dbsync: { mode: 'replicate', heartbeatMs: 100, replicaCheckMs: 200, retryBaseMs: 200, retryBackoffMaxMs: 1000 } }).dbsync;
  const l = new DbLink({
    db: { database: DB, user: 'nav', passwordFile: 'db-password', port: servers[name]!.port },
    copyKey: `peer-${name}/copy-${name}`,
    containerDir: dir,
    dbsync,
    journal: { append: async () => true, all: () => [] },
    publish: async () => undefined,
    logger: silentLogger(),
  });
  links.push(l);
  return l;
}

beforeAll(async () => {
  const [a, b] = await Promise.all(['a', 'b'].map((n) => startMariaDb({ name: `seedmark-${n}`, password: PASSWORD, extraArgs: BINLOG })));
  servers.a = a!;
  servers.b = b!;
  for (const s of [a!, b!]) {
    await s.query("CREATE USER 'nav'@'127.0.0.1' IDENTIFIED BY ?", [PASSWORD]);
    await s.query(`GRANT ALL PRIVILEGES ON \`${DB}\`.* TO 'nav'@'127.0.0.1'`);
    await s.query(`GRANT ALL PRIVILEGES ON \`${DB}\\_\\_nav\\_%\`.* TO 'nav'@'127.0.0.1'`);
    await s.query(`GRANT ${NAVIGATOR_GLOBAL_GRANTS} ON *.* TO 'nav'@'127.0.0.1' WITH GRANT OPTION`);
  }
}, 120_000);

afterAll(async () => {
  await Promise.all(links.map((l) => l.stop().catch(() => undefined)));
  await Promise.all(Object.values(servers).map((s) => s.stop()));
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
}, 60_000);

const target = { key: 'peer-b/copy-b', host: 'b', address: '127.0.0.1', port: 0 };

/**
 * The GTIDs a server logged as its own (its server_id's entries in gtid_binlog_state). Not the
 * whole binlog position: a replica logs the primary's heartbeats too (--log-slave-updates), and
 * those keep arriving while the test reads.
 */
async function ownBinlogGtids(s: MariaDbServer): Promise<string> {
  const [r] = await s.query<{ st: string; sid: number }>('SELECT @@GLOBAL.gtid_binlog_state AS st, @@GLOBAL.server_id AS sid');
  return String(r!.st)
    .split(',')
    .map((g) => g.trim())
    .filter((g) => g !== '' && g.split('-')[1] === String(r!.sid))
    .sort()
    .join(',');
}

describe('the seed mark on a standby', { timeout: 120_000 }, () => {
  it('complete after a seed; "seeding" after a reseed cut off half-way (not seeded, nothing binlogged); complete again after the next seed', async () => {
    const a = servers.a!;
    const b = servers.b!;
    const primary = link('a');
    const standby = link('b');
    await a.query(`CREATE DATABASE ${DB}`);
    await a.query(`CREATE TABLE ${DB}.history (id INT PRIMARY KEY, at_ms BIGINT NOT NULL)`);
    await a.query(`CREATE TABLE ${DB}.trends (id INT PRIMARY KEY)`);
    await a.query(`INSERT INTO ${DB}.history VALUES (1, 1), (2, 2)`);
    // Never seeded: no mark, no sync: a copy placed to be seeded stays unseeded.
    const fresh = await standby.ownSync(Date.now());
    expect(fresh?.seedMark).toBeUndefined();
    expect(seededAfterReading(false, fresh)).toBe(false);

    await primary.becomePrimary('svc', 1);
    const t = { ...target, port: b.port };
    await primary.setStandbys([t], '127.0.0.1');
    const seeded = await until('b seeded and replicating', async () => {
      const f = await standby.ownSync(Date.now(), '127.0.0.1');
      return f?.repl?.replState === 'replicating' && f.seedMark === 'complete' ? f : undefined;
    });
    expect(seededAfterReading(false, seeded)).toBe(true);

    // A reseed that cannot finish: a reader on b holds `history` (the load's DROP TABLE waits for
    // it), then b's replication is broken on purpose (a row b has and the primary then writes).
    const reader = await mysql.createConnection({ host: '127.0.0.1', port: b.port, user: 'root', password: PASSWORD });
    try {
      await reader.query('START TRANSACTION');
      await reader.query(`SELECT COUNT(*) FROM ${DB}.history`);
      const binlogBefore = await ownBinlogGtids(b);
      const local = await mysql.createConnection({ host: '127.0.0.1', port: b.port, user: 'root', password: PASSWORD });
      await local.query('SET SESSION sql_log_bin = 0');
      await local.query(`INSERT INTO ${DB}.trends VALUES (7)`);
      await local.end();
      await a.query(`INSERT INTO ${DB}.trends VALUES (7)`);
      const cut = await until('the reseed to start and block', async () => {
        const f = await standby.ownSync(Date.now());
        return f?.seedMark === 'seeding' ? f : undefined;
      });
      expect(seededAfterReading(true, cut)).toBe(false);
      // The primary goes (its keeper stops, killing the dump and the load) with the seed half-way.
      await primary.setStandbys([], '127.0.0.1');
      await primary.becomeStandby();
      // The mark did not enter b's binary log (RESET MASTER never ran: the seed did not complete).
      expect(await ownBinlogGtids(b)).toBe(binlogBefore);
    } finally {
      await reader.end();
    }
    await new Promise((r) => setTimeout(r, 500));
    const after = await standby.ownSync(Date.now());
    expect(after?.seedMark).toBe('seeding');
    expect(after?.lastSyncAt).toBeUndefined();
    expect(seededAfterReading(true, after)).toBe(false);

    // A primary again (the old one back): the next seed completes and the mark says so.
    await primary.becomePrimary('svc', 3);
    await primary.setStandbys([t], '127.0.0.1');
    const again = await until('b reseeded', async () => {
      const f = await standby.ownSync(Date.now(), '127.0.0.1');
      return f?.repl?.replState === 'replicating' && f.seedMark === 'complete' ? f : undefined;
    });
    expect(seededAfterReading(false, again)).toBe(true);
    expect(Number((await b.query<{ n: number }>(`SELECT COUNT(*) AS n FROM ${DB}.history`))[0]!.n)).toBe(2);
  });

  it('marking writes nothing to the binary log of the server it marks', async () => {
    const b = servers.b!;
    const c = await mysql.createConnection({ host: '127.0.0.1', port: b.port, user: 'nav', password: PASSWORD });
    try {
      const before = await ownBinlogGtids(b);
      await markSeeding(c, DB, Date.now());
      expect(await ownBinlogGtids(b)).toBe(before);
    } finally {
      await c.end();
    }
  });
});
