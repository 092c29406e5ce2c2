// MariaDB GTID replication as Navigator drives it, on private servers this bench starts.
//   node --import tsx bench/replication.ts [--rows 10000000] [--failovers 10] [--planned 5]
// 1. Seeding: a Zabbix-like `history` table of --rows rows; a standby seeded by Navigator
//    (seed.ts: mariadb-dump --single-transaction --gtid piped into the standby) beside a raw
//    `mariadb-dump | mariadb` of the same database into another empty server.
// 2. Steady-state lag: a writer inserts 1,000 and then 5,000 history rows per second (batches every
//    10 ms); the primary's heartbeat (dbsync.heartbeatMs 100) is read on the standby every 50 ms;
//    lag = now − newest heartbeat held; p95 over 10 s each.
// 3. Data lost on kill -9 of the primary under a steady write load (acknowledged single-row
//    inserts), promoting the standby as the pilot does (apply the relay log, RESET SLAVE ALL):
//    --failovers rounds in `replicate` (RPO: age of the oldest acknowledged write the promoted
//    standby lacks, 0 if none) and as many in `semisync` (acknowledged writes lost). These run on
//    a second, small pair of servers (a reseed of the big database per round would take minutes).
// 4. Planned moves: 2 × --planned under the same load, alternating replicate and semisync (the
//    database side of a switchover and of a clean stop is the same: stop writes, wait for the
//    GTID on the standby, promote): acknowledged writes lost.
// Lag includes up to one heartbeat period (100 ms): it is the age of the newest heartbeat held.
// Prints a table, then the summary as the last line (one JSON object).
import { parseArgs } from 'node:util';
import { execa } from 'execa';
import mysql from 'mysql2/promise';
import { startMariaDb, type MariaDbServer } from '../lab/loopback/mariadb.ts';
import { ReplicaKeeper } from '../pilot/db/replica-keeper.ts';
import { findClientBinaries } from '../pilot/db/dbsync.ts';
import { CredentialFiles } from '../pilot/db/mysql-credentials.ts';
import { preparePrimary, promoteReplica, readHeartbeat, replicationPassword, serverIdFor, stopWritesAndFinalPosition, waitApplied, writeHeartbeat } from '../pilot/db/replication.ts';
import { silentLogger } from '../shared/logger.ts';

const { values } = parseArgs({ options: { rows: { type: 'string', default: '10000000' }, failovers: { type: 'string', default: '10' }, planned: { type: 'string', default: '5' } } });
const rows = Number(values.rows);
const failovers = Number(values.failovers);
const planned = Number(values.planned);
for (const [name, v, min] of [['rows', rows, 1000], ['failovers', failovers, 1], ['planned', planned, 1]] as const) {
  if (!Number.isInteger(v) || v < min) {
    process.stderr.write(`--${name} must be an integer ≥ ${min}, got ${String(values[name])}\n`);
    process.exit(2);
  }
}

const BINLOG = ['--log-bin=mysql-bin', '--log-slave-updates', '--binlog-format=ROW'];
// Ordinary durability for the seed comparison (the test helper's defaults trade it for speed).
const DURABLE = ['--innodb-flush-log-at-trx-commit=1', '--innodb-flush-method=O_DIRECT', '--innodb-log-file-size=256M'];
const DB = 'zabbix';
const PASSWORD = `bench-${Date.now()}`;
const ep = (s: MariaDbServer) => ({ host: s.host, port: s.port, user: s.user, password: s.password });
const secs = (ms: number) => (ms / 1000).toFixed(2);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const p95 = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor(s.length * 0.95))]! : 0;
};

function keeper(src: MariaDbServer, dst: MariaDbServer, semisync: boolean): ReplicaKeeper {
  return new ReplicaKeeper({
    source: ep(src),
    sourceAddress: '127.0.0.1',
    target: ep(dst),
    targetServerId: serverIdFor(`bench/${dst.port}`),
    database: DB,
    semisync,
    logger: silentLogger(),
    settings: { replicaCheckMs: 500, retryBaseMs: 500, retryBackoffMaxMs: 2000, semisyncTimeoutMs: 10_000, syncTimeoutMs: 7_200_000 },
  });
}

async function makePrimary(s: MariaDbServer, semisync: boolean): Promise<void> {
  const c = await s.connect();
  try {
    await c.query('STOP SLAVE');
    await c.query('RESET SLAVE ALL');
    await preparePrimary(c, { database: DB, serverId: serverIdFor(`bench/${s.port}`), replUser: 'navigator_repl', replPassword: replicationPassword(s.password, DB), semisync, semisyncTimeoutMs: 10_000 }, 'bench');
    await c.query('SET GLOBAL read_only = 0');
  } finally {
    await c.end();
  }
}

async function schema(s: MariaDbServer): Promise<void> {
  const c = await s.connect();
  for (const sql of [
    `CREATE DATABASE IF NOT EXISTS ${DB} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin`,
    `USE ${DB}`,
    `CREATE TABLE IF NOT EXISTS history (itemid BIGINT UNSIGNED NOT NULL, clock INTEGER NOT NULL DEFAULT '0', value DOUBLE PRECISION NOT NULL DEFAULT '0.0000', ns INTEGER NOT NULL DEFAULT '0', PRIMARY KEY (itemid, clock, ns)) ENGINE=InnoDB`,
    `CREATE TABLE IF NOT EXISTS acked (id BIGINT NOT NULL PRIMARY KEY, at_ms BIGINT NOT NULL) ENGINE=InnoDB`,
  ])
    await c.query(sql);
  await c.end();
}

/** Single-row acknowledged inserts as fast as one connection goes (paced 2 ms). */
function ackLoad(s: MariaDbServer, from: number) {
  const acked: Array<{ id: number; at: number }> = [];
  let running = true;
  const done = (async () => {
    const c = await mysql.createConnection({ host: '127.0.0.1', port: s.port, user: 'app', password: 'app-pw', database: DB });
    c.on('error', () => undefined);
    let id = from;
    while (running) {
      try {
        await c.query('INSERT INTO acked VALUES (?, ?)', [id, Date.now()]);
        acked.push({ id, at: Date.now() });
        id++;
      } catch {
        break;
      }
      await sleep(2);
    }
    c.destroy();
  })();
  return { acked, stop: async () => ((running = false), await done) };
}

async function ids(s: MariaDbServer): Promise<Set<number>> {
  return new Set((await s.query<{ id: number }>(`SELECT id FROM ${DB}.acked`)).map((r) => Number(r.id)));
}

const table: Array<[string, string]> = [];
const log = (what: string) => process.stderr.write(`[bench +${secs(performance.now())} s] ${what}\n`);

// ---------------------------------------------------------------- 1. seeding
const [big, seeded, raw] = await Promise.all([
  startMariaDb({ name: 'brepl-p', bufferPoolMb: 512, extraArgs: [...DURABLE, ...BINLOG] }),
  startMariaDb({ name: 'brepl-s', bufferPoolMb: 512, extraArgs: [...DURABLE, ...BINLOG] }),
  startMariaDb({ name: 'brepl-r', bufferPoolMb: 512, extraArgs: [...DURABLE, ...BINLOG] }),
]);
const small: MariaDbServer[] = [];
const summary: Record<string, unknown> = { rows };
try {
  await schema(big);
  const t0 = performance.now();
  const c = await big.connect(DB);
  // 1000 items polled every 60 s, in (itemid, clock, ns) order; chunks of 1 M keep each transaction bounded.
  for (let done = 0; done < rows; done += 1_000_000) {
    const n = Math.min(1_000_000, rows - done);
    await c.query(`INSERT INTO history SELECT 10001 + (seq - 1) MOD 1000, 1700000000 + ((seq - 1) DIV 1000) * 60, ROUND(RAND(seq) * 100, 4), (seq * 7919) MOD 1000000000 FROM seq_${done + 1}_to_${done + n}`);
  }
  await c.end();
  log(`generated ${rows} history rows in ${secs(performance.now() - t0)} s`);
  await makePrimary(big, false);

  const k = keeper(big, seeded, false);
  const s0 = performance.now();
  await k.checkNow();
  const seedMs = performance.now() - s0;
  const seed = k.status().lastSeed!;
  await k.stop();
  log(`seeded by ${seed.method} in ${secs(seedMs)} s (${seed.bytes} bytes)`);

  const bins = await findClientBinaries({ dumpCommand: '', clientCommand: '' });
  const creds = await CredentialFiles.create('navigator-bench-');
  const r0 = performance.now();
  try {
    const src = await creds.write('source', ep(big));
    const dst = await creds.write('target', ep(raw));
    await raw.query(`CREATE DATABASE ${DB}`);
    const dump = execa(bins.dump, [`--defaults-extra-file=${src}`, '--single-transaction', DB], { buffer: false });
    const load = execa(bins.client, [`--defaults-extra-file=${dst}`, DB], { stdin: 'pipe' });
    dump.stdout!.pipe(load.stdin!);
    await Promise.all([dump, load]);
  } finally {
    await creds.dispose();
  }
  const rawMs = performance.now() - r0;
  log(`raw mariadb-dump | mariadb in ${secs(rawMs)} s`);
  table.push(['rows', String(rows)], ['seed (Navigator, mysqldump --gtid, replication started)', `${secs(seedMs)} s`], ['raw mariadb-dump | mariadb', `${secs(rawMs)} s`]);
  Object.assign(summary, { seed_s: Number(secs(seedMs)), seed_method: seed.method, raw_pipe_s: Number(secs(rawMs)), seed_ratio_vs_raw: Number((seedMs / rawMs).toFixed(2)) });
  await raw.stop();

  // ---------------------------------------------------------------- 2. steady-state lag
  let clock = 1_800_000_000;
  const lagAt = async (rate: number): Promise<number> => {
    const kk = keeper(big, seeded, false);
    kk.start();
    const w = await big.connect(DB);
    const hb = await big.connect();
    const rd = await seeded.connect();
    const samples: number[] = [];
    let running = true;
    const perBatch = Math.max(1, Math.round(rate / 100));
    let writeError: unknown;
    const writer = (async () => {
      let next = performance.now();
      while (running) {
        const vals = Array.from({ length: perBatch }, (_, i) => `(${20001 + i}, ${clock}, ${Math.random() * 100}, ${i})`).join(',');
        clock++;
        await w.query(`INSERT INTO history VALUES ${vals}`);
        next += 10;
        await sleep(Math.max(0, next - performance.now()));
      }
    })().catch((err: unknown) => {
      writeError = err;
    });
    const beater = (async () => {
      while (running) {
        await writeHeartbeat(hb, DB, Date.now());
        await sleep(100);
      }
    })();
    await sleep(1500);
    const end = Date.now() + 10_000;
    while (Date.now() < end) {
      const at = await readHeartbeat(rd, DB);
      if (at !== undefined) samples.push(Math.max(0, Date.now() - at));
      await sleep(50);
    }
    running = false;
    await Promise.all([writer, beater]);
    if (writeError) throw writeError;
    await Promise.all([w.end(), hb.end(), rd.end()]);
    await kk.stop();
    return p95(samples);
  };
  const lag1000 = await lagAt(1000);
  log(`lag p95 at 1000 rows/s: ${lag1000} ms`);
  const lag5000 = await lagAt(5000);
  log(`lag p95 at 5000 rows/s: ${lag5000} ms`);
  table.push(['lag p95, 1000 rows/s', `${lag1000} ms`], ['lag p95, 5000 rows/s', `${lag5000} ms`]);
  Object.assign(summary, { lag_ms_p95_1000: lag1000, lag_ms_p95_5000: lag5000 });
  await Promise.all([big.stop(), seeded.stop()]);

  // ---------------------------------------------------------------- 3./4. failovers and planned moves
  small.push(...(await Promise.all([startMariaDb({ name: 'brepl-a', password: PASSWORD, extraArgs: BINLOG }), startMariaDb({ name: 'brepl-b', password: PASSWORD, extraArgs: BINLOG })])));
  let [prim, stby] = small as [MariaDbServer, MariaDbServer];
  await schema(prim);
  for (const s of small) {
    await s.query("CREATE USER IF NOT EXISTS 'app'@'127.0.0.1' IDENTIFIED BY 'app-pw'");
    await s.query(`GRANT SELECT, INSERT ON ${DB}.* TO 'app'@'127.0.0.1'`);
  }
  let nextId = 1;
  const round = async (semisync: boolean, kind: 'kill' | 'planned') => {
    await makePrimary(prim, semisync);
    const kk = keeper(prim, stby, semisync);
    await kk.checkNow();
    kk.start();
    const load = ackLoad(prim, nextId);
    await sleep(1500);
    let cut = Date.now();
    if (kind === 'kill') {
      await kk.stop();
      cut = Date.now();
      await prim.kill();
      await load.stop();
    } else {
      const pc = await prim.connect();
      const pos = await stopWritesAndFinalPosition(pc, 10);
      const sc = await stby.connect();
      await waitApplied(sc, pos, 30_000);
      await sc.end();
      await pc.end();
      await load.stop();
      await kk.stop();
    }
    const sc = await stby.connect();
    await promoteReplica(sc, 10_000);
    await sc.end();
    const have = await ids(stby);
    const lost = load.acked.filter((w) => !have.has(w.id));
    nextId += load.acked.length + 10_000;
    const rpo = lost.length ? Math.max(...load.acked.filter((w) => w.at <= cut).map((w) => w.at)) - Math.min(...lost.map((w) => w.at)) : 0;
    if (!prim.running) await prim.restart();
    [prim, stby] = [stby, prim];
    return { acked: load.acked.length, lost: lost.length, rpo };
  };
  const rpos: number[] = [];
  let replicateLost = 0;
  for (let i = 0; i < failovers; i++) {
    const r = await round(false, 'kill');
    rpos.push(r.rpo);
    replicateLost += r.lost;
    log(`replicate kill -9 ${i + 1}/${failovers}: ${r.acked} acknowledged, ${r.lost} lost, RPO ${r.rpo} ms`);
  }
  let semisyncLost = 0;
  for (let i = 0; i < failovers; i++) {
    const r = await round(true, 'kill');
    semisyncLost += r.lost;
    log(`semisync kill -9 ${i + 1}/${failovers}: ${r.acked} acknowledged, ${r.lost} lost`);
  }
  let plannedLost = 0;
  for (let i = 0; i < 2 * planned; i++) {
    const r = await round(i % 2 === 1, 'planned');
    plannedLost += r.lost;
    log(`planned move ${i + 1}/${2 * planned} (${i % 2 === 1 ? 'semisync' : 'replicate'}): ${r.acked} acknowledged, ${r.lost} lost`);
  }
  table.push(
    [`RPO p95 over ${failovers} kill -9 (replicate)`, `${p95(rpos)} ms (${replicateLost} writes lost in all)`],
    [`acknowledged writes lost over ${failovers} kill -9 (semisync)`, String(semisyncLost)],
    [`acknowledged writes lost over ${2 * planned} planned moves (stop writes, GTID wait, promote)`, String(plannedLost)],
  );
  Object.assign(summary, { rpo_ms_p95: p95(rpos), replicate_lost: replicateLost, semisync_lost: semisyncLost, planned_lost: plannedLost, failovers, planned_moves: 2 * planned });
} finally {
  await Promise.all([big, seeded, raw, ...small].map((s) => s.stop().catch(() => undefined)));
}

const w = Math.max(...table.map(([k]) => k.length));
for (const [k, v] of table) console.log(`${k.padEnd(w)}  ${v}`);
console.log(JSON.stringify(summary));
