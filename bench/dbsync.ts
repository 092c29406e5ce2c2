// Navigator's database sync against a plain `mysqldump | mysql` pipe, on the same two private
// MariaDB servers, with a Zabbix-like history table.
//   node --import tsx bench/dbsync.ts [--rows 1000000] [--rounds 3]
// Navigator's figure is a whole sync: dump streamed through the guard into the staging schema,
// row counts and CHECKSUM TABLE of the copy, the atomic swap, the history record. The raw pipe
// loads the same dump into an empty database and does nothing else, once with the client's
// defaults and once with the client options Navigator uses. Best of --rounds each, alternated. Prints a table, then the summary as the last line (one JSON object).
import { parseArgs } from 'node:util';
import { execa } from 'execa';
import { startMariaDb, type MariaDbServer } from '../lab/loopback/mariadb.ts';
import { DbSync, findClientBinaries } from '../pilot/db/dbsync.ts';
import { CredentialFiles } from '../pilot/db/mysql-credentials.ts';
import { DbSyncSection } from '../shared/config.ts';
import { silentLogger } from '../shared/logger.ts';

const { values } = parseArgs({ options: { rows: { type: 'string', default: '1000000' }, rounds: { type: 'string', default: '3' } } });
const rows = Number(values.rows);
const rounds = Number(values.rounds);
if (!Number.isInteger(rows) || rows < 1000) {
  process.stderr.write(`--rows must be an integer ≥ 1000, got ${values.rows}\n`);
  process.exit(2);
}
if (!Number.isInteger(rounds) || rounds < 1) {
  process.stderr.write(`--rounds must be a positive integer, got ${values.rounds}\n`);
  process.exit(2);
}

// Ordinary durability (the test helper's defaults trade it for speed) and a production-like redo log.
const serverArgs = ['--innodb-flush-log-at-trx-commit=1', '--innodb-flush-method=O_DIRECT', '--innodb-log-file-size=256M'];
const DB = 'zabbix';

const ep = (s: MariaDbServer) => ({ host: s.host, port: s.port, user: s.user, password: s.password });
const secs = (ms: number) => (ms / 1000).toFixed(2);

async function checksum(s: MariaDbServer, db: string): Promise<string> {
  const r = await s.query<{ Checksum: number }>(`CHECKSUM TABLE \`${db}\`.history, \`${db}\`.items`);
  return r.map((x) => String(x.Checksum)).join(',');
}

const primary = await startMariaDb({ name: 'bench-p', bufferPoolMb: 512, extraArgs: serverArgs });
const standby = await startMariaDb({ name: 'bench-s', bufferPoolMb: 512, extraArgs: serverArgs });
try {
  const t0 = Date.now();
  const c = await primary.connect();
  for (const sql of [
    `CREATE DATABASE ${DB} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin`,
    `USE ${DB}`,
    // As Zabbix 6.0's schema.sql: history holds float values, one row per item per poll.
    `CREATE TABLE history (itemid BIGINT UNSIGNED NOT NULL, clock INTEGER NOT NULL DEFAULT '0', value DOUBLE PRECISION NOT NULL DEFAULT '0.0000', ns INTEGER NOT NULL DEFAULT '0', PRIMARY KEY (itemid, clock, ns)) ENGINE=InnoDB`,
    `CREATE TABLE items (itemid BIGINT UNSIGNED NOT NULL, hostid BIGINT UNSIGNED NOT NULL, name VARCHAR(255) NOT NULL DEFAULT '', key_ VARCHAR(2048) NOT NULL DEFAULT '', delay VARCHAR(1024) NOT NULL DEFAULT '0', PRIMARY KEY (itemid)) ENGINE=InnoDB`,
    `INSERT INTO items SELECT 10000 + seq, 10084 + seq DIV 100, CONCAT('CPU utilization ', seq), CONCAT('system.cpu.util[,', seq, ']'), '1m' FROM seq_1_to_1000`,
    // 1000 items polled every 60 s: rows/1000 polls each, in (itemid, clock, ns) order.
    `INSERT INTO history SELECT 10001 + (seq - 1) MOD 1000, 1700000000 + ((seq - 1) DIV 1000) * 60, ROUND(RAND(seq) * 100, 4), (seq * 7919) MOD 1000000000 FROM seq_1_to_${rows}`,
  ]) {
    await c.query(sql);
  }
  await c.end();
  console.log(`generated ${rows} history rows in ${secs(Date.now() - t0)} s`);

  const sync = new DbSync({ source: ep(primary), target: ep(standby), database: DB, logger: silentLogger() });
  const bins = await findClientBinaries(DbSyncSection.parse({}));

  // The plain pipe, as a shell would run it: the dump's stdout becomes the client's stdin.
  // `plain`: the client's defaults (what the reference ran); `same flags`: the client options
  // Navigator's loader uses (--batch --binary-mode ...), to show what the rest of a sync costs.
  const rawPipe = async (sameFlags: boolean): Promise<number> => {
    await standby.query('DROP DATABASE IF EXISTS raw_copy');
    await standby.query('CREATE DATABASE raw_copy CHARACTER SET utf8mb4 COLLATE utf8mb4_bin');
    const creds = await CredentialFiles.create();
    try {
      const src = await creds.write('source', ep(primary));
      const dst = await creds.write('target', ep(standby));
      const flags = sameFlags ? ['--batch', '--binary-mode', '--max-allowed-packet=1G', ...bins.clientArgs] : [];
      const start = performance.now();
      await execa(bins.dump, [`--defaults-extra-file=${src}`, '--single-transaction', '--routines', '--triggers', '--events', DB], { buffer: false }).pipe(
        bins.client,
        [`--defaults-extra-file=${dst}`, ...flags, 'raw_copy'],
        { buffer: false },
      );
      return performance.now() - start;
    } finally {
      await creds.dispose();
    }
  };
  const navigator = async (): Promise<{ ms: number; bytes: number }> => {
    const start = performance.now();
    const record = await sync.syncNow();
    console.log(`  navigator stages (ms): ${JSON.stringify(record.stagesMs)}`);
    return { ms: performance.now() - start, bytes: record.dumpBytes };
  };

  console.log('round  raw_pipe_s  raw_same_flags_s  navigator_s');
  const raw: number[] = [];
  const same: number[] = [];
  const nav: number[] = [];
  let dumpBytes = 0;
  for (let i = 0; i < rounds; i++) {
    raw.push(await rawPipe(false));
    same.push(await rawPipe(true));
    const n = await navigator();
    nav.push(n.ms);
    dumpBytes = n.bytes;
    console.log(`${String(i + 1).padStart(5)}  ${secs(raw[i]!).padStart(10)}  ${secs(same[i]!).padStart(16)}  ${secs(nav[i]!).padStart(11)}`);
  }
  const p = await checksum(primary, DB);
  if ((await checksum(standby, DB)) !== p || (await checksum(standby, 'raw_copy')) !== p) {
    throw new Error('copies differ from the primary: the benchmark is void');
  }
  const bestRaw = Math.min(...raw);
  const bestSame = Math.min(...same);
  const bestNav = Math.min(...nav);
  const summary = {
    rows,
    dump_bytes: dumpBytes,
    navigator_s: Number((bestNav / 1000).toFixed(3)),
    raw_pipe_s: Number((bestRaw / 1000).toFixed(3)),
    ratio_vs_raw: Number((bestNav / bestRaw).toFixed(3)),
    raw_pipe_same_flags_s: Number((bestSame / 1000).toFixed(3)),
    ratio_vs_raw_same_flags: Number((bestNav / bestSame).toFixed(3)),
    navigator_mb_s: Number((dumpBytes / 1e6 / (bestNav / 1000)).toFixed(1)),
    rounds,
    checksums: true,
  };
  console.log(
    `best of ${rounds}: navigator ${summary.navigator_s} s, raw pipe ${summary.raw_pipe_s} s (same client flags ${summary.raw_pipe_same_flags_s} s), ratio ${summary.ratio_vs_raw} (target ≤ 1.3; ${summary.ratio_vs_raw_same_flags} vs same flags), dump ${(dumpBytes / 1e6).toFixed(1)} MB, copies verified by checksum`,
  );
  console.log(JSON.stringify(summary));
} finally {
  await primary.stop();
  await standby.stop();
}
