import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mysql from 'mysql2/promise';
import { startMariaDb, type MariaDbServer } from '../../lab/loopback/mariadb.ts';
import { DbLink, type OwnSyncFields } from '../../pilot/db/db-link.ts';
import { NAVIGATOR_GLOBAL_GRANTS } from '../../pilot/db/replication.ts';
import { parseConfig } from '../../shared/config.ts';
import { createLogger, silentLogger } from '../../shared/logger.ts';
import type { MovementRecord } from '../../shared/movement.ts';
import { until } from '../helpers/until.ts';

// DbLink in replicate and semisync modes between three real mariadbd servers (one per copy),
// driven as the pilots drive it: the primary keeps its standbys replicas, a standby reports its
// freshness (newest primary heartbeat, GTID), and under a steady write load by an account without
// READ ONLY ADMIN (as a service's own account is):
//   - a planned switchover (stop writes, wait for the GTID, promote) loses no acknowledged write;
//   - kill -9 of the primary's server: the freshest standby is promoted and holds every write
//     acknowledged more than 1 s before the cut (replicate) / every acknowledged write (semisync);
//   - the old primary comes back diverged: its extra transactions are saved to a file and
//     recorded as a movement, and it is reseeded.

// As deploy/examples/zabbix/db/my.cnf: triggers (Zabbix has some) are created by the seed's load.
const BINLOG = ['--log-bin=mysql-bin', '--log-slave-updates', '--binlog-format=ROW', '--log-bin-trust-function-creators=1'];
const PASSWORD = `s3cr"et\\pw ${Date.now()}`;
const DB = 'svc';
const servers: Record<string, MariaDbServer> = {};
const links: Record<string, DbLink> = {};
const dirs: string[] = [];
const dirOf: Record<string, string> = {};
let firstWinner = '';
const movements: MovementRecord[] = [];

function link(name: string, mode: 'replicate' | 'semisync' | 'dump'): DbLink {
  const s = servers[name]!;
  const dir = mkdtempSync(join(tmpdir(), `navigator-dblink-${name}-`));
  dirs.push(dir);
  dirOf[name] = dir;
  writeFileSync(join(dir, 'db-password'), `${PASSWORD}\n`, { mode: 0o600 });
  const dbsync = parseConfig({ dbsync: { mode, syncIntervalMs: 600_000, heartbeatMs: 100, replicaCheckMs: 300, retryBaseMs: 300, retryBackoffMaxMs: 2000, semisyncTimeoutMs: 10_000, catchUpTimeoutMs: 10_000 } }).dbsync;
  return new DbLink({
    db: { database: DB, user: 'nav', passwordFile: 'db-password', port: s.port },
    copyKey: `peer-${name}/copy-${name}`,
    containerDir: dir,
    dbsync,
    journal: { append: async (r) => (movements.push(r), true), all: () => movements },
    publish: async () => undefined,
    logger: process.env.DBLINK_TEST_LOG ? createLogger({ level: 'debug' }).child({ copy: name }) : silentLogger(),
  });
}

const target = (name: string) => ({ key: `peer-${name}/copy-${name}`, host: name, address: '127.0.0.1', port: servers[name]!.port });

beforeAll(async () => {
  const started = await Promise.all(['a', 'b', 'c'].map((n) => startMariaDb({ name: `dblink-${n}`, password: PASSWORD, extraArgs: BINLOG })));
  ['a', 'b', 'c'].forEach((n, i) => (servers[n] = started[i]!));
  for (const s of started) await createNav(s);
}, 120_000);

afterAll(async () => {
  await Promise.all(Object.values(links).map((l) => l.stop().catch(() => undefined)));
  await Promise.all(Object.values(servers).map((s) => s.stop()));
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
}, 60_000);

/** Navigator's account with exactly the documented grants (not root). */
async function createNav(s: MariaDbServer): Promise<void> {
  await s.query("CREATE USER 'nav'@'127.0.0.1' IDENTIFIED BY ?", [PASSWORD]);
  await s.query(`GRANT ALL PRIVILEGES ON \`${DB}\`.* TO 'nav'@'127.0.0.1'`);
  await s.query(`GRANT ALL PRIVILEGES ON \`${DB}\\_\\_nav\\_%\`.* TO 'nav'@'127.0.0.1'`);
  await s.query(`GRANT ${NAVIGATOR_GLOBAL_GRANTS} ON *.* TO 'nav'@'127.0.0.1' WITH GRANT OPTION`);
}

/** A steady writer through an account without READ ONLY ADMIN; records what was acknowledged and when. */
function writeLoad(s: MariaDbServer, startId: number) {
  const acked: Array<{ id: number; at: number }> = [];
  let running = true;
  let next = startId;
  const done = (async () => {
    const c = await mysql.createConnection({ host: '127.0.0.1', port: s.port, user: 'app', password: 'app-pw', database: DB });
    c.on('error', () => undefined);
    try {
      while (running) {
        const id = next++;
        try {
          await c.query('INSERT INTO history (id, at_ms) VALUES (?, ?)', [id, Date.now()]);
          acked.push({ id, at: Date.now() });
        } catch {
          if (!running) break;
          await new Promise((r) => setTimeout(r, 5));
        }
        await new Promise((r) => setTimeout(r, 2));
      }
    } finally {
      c.destroy();
    }
  })();
  return { acked, stop: async () => ((running = false), await done) };
}

async function createApp(s: MariaDbServer): Promise<void> {
  await s.query("CREATE USER IF NOT EXISTS 'app'@'127.0.0.1' IDENTIFIED BY 'app-pw'");
  await s.query(`GRANT SELECT, INSERT ON ${DB}.* TO 'app'@'127.0.0.1'`);
}

async function idsOn(s: MariaDbServer): Promise<Set<number>> {
  return new Set((await s.query<{ id: number }>(`SELECT id FROM ${DB}.history`)).map((r) => Number(r.id)));
}

async function freshness(names: string[]): Promise<Array<{ name: string; f: OwnSyncFields }>> {
  const out: Array<{ name: string; f: OwnSyncFields }> = [];
  for (const n of names) {
    const f = await links[n]!.ownSync(Date.now());
    if (f) out.push({ name: n, f });
  }
  return out;
}

describe('DbLink replication between three real MariaDB servers', { timeout: 180_000 }, () => {
  it('replicate: standbys report freshness; switchover under load loses no acknowledged write; kill -9 loses nothing older than 1 s', async () => {
    for (const n of ['a', 'b', 'c']) links[n] = link(n, 'replicate');
    const a = servers.a!;
    await a.query(`CREATE DATABASE ${DB}`);
    await a.query(`CREATE TABLE ${DB}.history (id INT PRIMARY KEY, at_ms BIGINT NOT NULL)`);
    await a.query(`CREATE TABLE ${DB}.hosts (name VARCHAR(40) NOT NULL, name_upper VARCHAR(40) NOT NULL DEFAULT '')`);
    await a.query(`CREATE TRIGGER ${DB}.hosts_upper BEFORE INSERT ON ${DB}.hosts FOR EACH ROW SET NEW.name_upper = UPPER(NEW.name)`);
    await createApp(a);
    await links.a!.becomePrimary('svc', 1);
    // A hand-over with no standby that can catch up: bounded, says why, writes resume.
    await links.a!.setStandbys([{ key: 'ghost/copy', host: 'ghost', address: '127.0.0.1', port: 1 }], '127.0.0.1');
    await expect(links.a!.syncAllNow(true)).rejects.toThrow(/no standby applied the primary's last transactions/);
    expect(links.a!.lastCatchUpFailure).toMatch(/did not catch up .* within dbsync.catchUpTimeoutMs \(10000 ms\): 127.0.0.1:1 behind/);
    await links.a!.resumeWrites();
    expect(Number((await a.query<{ ro: number }>('SELECT @@GLOBAL.read_only AS ro'))[0]!.ro)).toBe(0);
    await links.a!.setStandbys([target('b'), target('c')], '127.0.0.1');
    for (const n of ['b', 'c']) {
      await until(`${n} replicating`, async () => {
        const f = await links[n]!.ownSync(Date.now(), '127.0.0.1');
        return f?.repl?.replState === 'replicating' && f.lastSyncAt !== undefined && Date.now() - f.lastSyncAt < 1000;
      });
    }
    // A standby replicates only from the current term's primary as its pilot knows it: told
    // that the primary is elsewhere, it stops (here the primary's keeper, which holds the lease,
    // starts it again at its next check).
    const refused = await links.c!.ownSync(Date.now(), '10.255.255.1');
    expect(refused?.repl?.replState).toBe('stopped');
    const cs = await servers.c!.query<{ Slave_IO_Running: string; Slave_SQL_Running: string }>('SHOW SLAVE STATUS');
    expect([cs[0]!.Slave_IO_Running, cs[0]!.Slave_SQL_Running]).toEqual(['No', 'No']);
    await until('c replicating again', async () => (await links.c!.ownSync(Date.now(), '127.0.0.1'))?.repl?.replState === 'replicating');
    // The trigger came with the seed (loaded by Navigator's account, which has no SUPER).
    expect((await servers.b!.query<{ n: number }>("SELECT COUNT(*) AS n FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ? AND TRIGGER_NAME = 'hosts_upper'", [DB]))[0]?.n).toBe(1);

    // Planned switchover a -> b under a write load.
    let load = writeLoad(a, 1);
    await new Promise((r) => setTimeout(r, 800));
    const caught = await links.a!.syncAllNow(true);
    expect(caught.caughtUp.length).toBeGreaterThanOrEqual(1);
    await links.a!.becomeStandby();
    await load.stop();
    expect(load.acked.length).toBeGreaterThan(20);
    await links.b!.becomePrimary('svc', 2);
    const onB = await idsOn(servers.b!);
    expect(load.acked.filter((w) => !onB.has(w.id))).toEqual([]);
    // b now keeps a (old primary, not diverged) and c (re-pointed) as replicas.
    await links.b!.setStandbys([target('a'), target('c')], '127.0.0.1');
    await createApp(servers.b!);
    for (const n of ['a', 'c']) {
      await until(`${n} replicating from b`, async () => (await links[n]!.ownSync(Date.now(), '127.0.0.1'))?.repl?.replState === 'replicating');
    }
    expect(movements.filter((m) => m.event === 'diverged')).toEqual([]);

    // kill -9 of b's server under load: promote the freshest standby.
    load = writeLoad(servers.b!, 100_000);
    await new Promise((r) => setTimeout(r, 2500));
    const cut = Date.now();
    await servers.b!.kill();
    await load.stop();
    await links.b!.becomeStandby();
    const fresh = await freshness(['a', 'c']);
    fresh.sort((x, y) => (y.f.lastSyncAt ?? 0) - (x.f.lastSyncAt ?? 0));
    const winner = fresh[0]!.name;
    firstWinner = winner;
    await links[winner]!.becomePrimary('svc', 3);
    const have = await idsOn(servers[winner]!);
    const lost = load.acked.filter((w) => !have.has(w.id));
    expect(load.acked.length).toBeGreaterThan(50);
    expect(lost.filter((w) => w.at < cut - 1000)).toEqual([]);
    console.log(`replicate kill -9: ${load.acked.length} acknowledged, ${lost.length} lost (newest ${lost.length ? cut - Math.min(...lost.map((w) => w.at)) : 0} ms before the cut)`);
  });

  it('semisync: kill -9 of the primary under load loses no acknowledged write; a diverged old primary is saved, recorded and reseeded', async () => {
    for (const l of Object.values(links)) await l.stop();
    for (const n of ['a', 'b', 'c']) if (!servers[n]!.running) await servers[n]!.restart();
    // The copy promoted last is the primary (fresh links, semisync); the other two are its
    // standbys (the killed old primary may be diverged: it is then saved and reseeded).
    const p = firstWinner;
    const standbys = ['a', 'b', 'c'].filter((n) => n !== p);
    for (const n of ['a', 'b', 'c']) links[n] = link(n, 'semisync');
    await links[p]!.becomePrimary('svc', 4);
    await createApp(servers[p]!);
    await links[p]!.setStandbys(standbys.map(target), '127.0.0.1');
    for (const n of standbys) {
      await until(`${n} replicating from ${p}`, async () => (await links[n]!.ownSync(Date.now(), '127.0.0.1'))?.repl?.replState === 'replicating');
    }
    await until('semisync on', async () => (await servers[p]!.query<{ Value: string }>("SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_status'"))[0]?.Value === 'ON');
    const load = writeLoad(servers[p]!, 500_000);
    await new Promise((r) => setTimeout(r, 2000));
    await load.stop();
    // Cut the primary off from its standbys, then it commits one more transaction nobody
    // receives (semi-sync gives up waiting and acknowledges it: the documented async fallback).
    await links[p]!.setStandbys([], '127.0.0.1');
    for (const n of standbys) await servers[n]!.query('STOP SLAVE');
    await servers[p]!.query('SET GLOBAL rpl_semi_sync_master_timeout = 200');
    await servers[p]!.query(`INSERT INTO ${DB}.history (id, at_ms) VALUES (999999, 1)`);
    await until('semisync fallback reported', async () => links[p]!.primaryReport()?.semisyncFallback === true);
    await servers[p]!.kill();
    await links[p]!.becomeStandby();
    const fresh = await freshness(standbys);
    // Most caught up first: newest heartbeat, then most transactions applied.
    const count = (g?: string) => (g ?? '').split(',').reduce((n, p) => n + Number(p.split('-')[2] ?? 0), 0);
    fresh.sort((x, y) => (y.f.lastSyncAt ?? 0) - (x.f.lastSyncAt ?? 0) || count(y.f.repl?.gtid) - count(x.f.repl?.gtid));
    const winner = fresh[0]!.name;
    const other = fresh[1]!.name;
    await links[winner]!.becomePrimary('svc', 5);
    const have = await idsOn(servers[winner]!);
    expect(load.acked.length).toBeGreaterThan(50);
    expect(load.acked.filter((w) => !have.has(w.id))).toEqual([]);

    // The old primary comes back holding that transaction.
    const before = movements.length;
    await servers[p]!.restart();
    await links[p]!.becomeStandby();
    await links[winner]!.setStandbys([target(other), target(p)], '127.0.0.1');
    await until(`${p} reseeded from the new primary`, async () => {
      const f = await links[p]!.ownSync(Date.now(), '127.0.0.1');
      return f?.repl?.replState === 'replicating' && !(await idsOn(servers[p]!)).has(999999);
    });
    const rec = await until('diverged movement', async () => movements.slice(before).find((m) => m.event === 'diverged' && m.host === p));
    // The extra transaction and the heartbeats the cut-off primary wrote after it.
    expect(rec.reason).toMatch(/held \d+ transaction\(s\) the new primary lacks.*saved to .*diverged-/);
    const saved = readdirSync(dirOf[winner]!).filter((f) => f.startsWith(`diverged-${p}-`));
    expect(saved.length).toBe(1);
    expect(readFileSync(join(dirOf[winner]!, saved[0]!), 'utf8')).toContain('999999');

    // Planned switchover under load (semisync): nothing acknowledged is lost.
    await createApp(servers[winner]!);
    const sw = writeLoad(servers[winner]!, 700_000);
    await new Promise((r) => setTimeout(r, 1000));
    const res = await links[winner]!.syncAllNow(true);
    await links[winner]!.becomeStandby();
    await sw.stop();
    expect(res.caughtUp.length).toBeGreaterThanOrEqual(1);
    const next = ['a', 'b', 'c'].find((n) => `127.0.0.1:${servers[n]!.port}` === res.caughtUp[0])!;
    await links[next]!.becomePrimary('svc', 6);
    const onNext = await idsOn(servers[next]!);
    expect(sw.acked.length).toBeGreaterThan(20);
    expect(sw.acked.filter((w) => !onNext.has(w.id))).toEqual([]);
  });

  it('dump: a planned switchover under load (final sync with writes stopped) loses no acknowledged write', async () => {
    for (const l of Object.values(links)) await l.stop();
    const [d, e] = await Promise.all([startMariaDb({ name: 'dblink-d', password: PASSWORD }), startMariaDb({ name: 'dblink-e', password: PASSWORD })]);
    servers.d = d;
    servers.e = e;
    for (const s of [d, e]) {
      await s.query(`CREATE DATABASE ${DB}`);
      await s.query(`CREATE TABLE ${DB}.history (id INT PRIMARY KEY, at_ms BIGINT NOT NULL)`);
      await createApp(s);
      await createNav(s);
    }
    links.d = link('d', 'dump');
    links.e = link('e', 'dump');
    await links.d.becomePrimary('svc', 1);
    await links.d.setStandbys([target('e')]);
    await until('first sync into e', async () => (await links.e!.ownSync(Date.now()))?.lastSyncAt !== undefined);
    const load = writeLoad(d, 1);
    await new Promise((r) => setTimeout(r, 1000));
    await links.d.syncAllNow(true);
    await links.d.becomeStandby();
    await load.stop();
    await links.e.becomePrimary('svc', 2);
    const onE = await idsOn(e);
    expect(load.acked.length).toBeGreaterThan(20);
    expect(load.acked.filter((w) => !onE.has(w.id))).toEqual([]);
  });
});
