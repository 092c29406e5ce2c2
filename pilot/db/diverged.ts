import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import mysql from 'mysql2/promise';
import { NavigatorError } from '../../shared/errors.ts';
import { CredentialFiles, type MySqlEndpoint } from './mysql-credentials.ts';
import { errorLines } from './dbsync.ts';
import type { extraGtids } from './replication.ts';

// A diverged old primary: it committed transactions the new primary never received (it was cut
// off after acknowledging them). Before it is reseeded as a standby those transactions are read
// from its binary log (mariadb-binlog --read-from-remote-server, by GTID range and server id) and
// saved to a file an admin can inspect and replay; never silently dropped.

export interface SavedExtra {
  file: string;
  transactions: number;
  bytes: number;
}

export async function saveExtraTransactions(o: {
  source: MySqlEndpoint;
  extra: ReturnType<typeof extraGtids>;
  dir: string;
  host: string;
  settings?: { binlogCommand?: string };
  now?: () => number;
}): Promise<SavedExtra> {
  const conn = await mysql.createConnection({ host: o.source.host, port: o.source.port, user: o.source.user, password: o.source.password, connectTimeout: 5000 });
  let first: string;
  try {
    const [logs] = await conn.query('SHOW BINARY LOGS');
    first = String((logs as Array<{ Log_name: string }>)[0]?.Log_name ?? '');
  } finally {
    await conn.end().catch(() => undefined);
  }
  if (!first) throw new NavigatorError('SYNC_FAILED', `${o.host} has no binary log to read its extra transactions from`);
  const creds = await CredentialFiles.create('navigator-diverged-');
  const parts: string[] = [];
  try {
    const cnf = await creds.write('source', o.source);
    for (const e of o.extra) {
      const args = [
        `--defaults-extra-file=${cnf}`,
        '--read-from-remote-server',
        '--to-last-log',
        '--verbose',
        `--server-id=${e.server}`,
        ...(e.fromSeq > 1 ? [`--start-position=${e.domain}-${e.server}-${e.fromSeq - 1}`] : []),
        `--stop-position=${e.domain}-${e.server}-${e.toSeq}`,
        first,
      ];
      const r = await execa(o.settings?.binlogCommand || 'mariadb-binlog', args, { reject: false, timeout: 120_000, maxBuffer: 512_000_000 });
      if (r.exitCode !== 0) throw new NavigatorError('SYNC_FAILED', `mariadb-binlog of ${o.host}'s extra transactions failed (exit ${r.exitCode}): ${errorLines(String(r.stderr))}`);
      parts.push(`-- transactions ${e.domain}-${e.server}-${e.fromSeq} .. ${e.domain}-${e.server}-${e.toSeq} of ${o.host}, never received by the new primary\n${String(r.stdout)}\n`);
    }
  } finally {
    await creds.dispose().catch(() => undefined);
  }
  const stamp = new Date((o.now ?? Date.now)()).toISOString().replace(/[:.]/g, '-');
  const file = join(o.dir, `diverged-${o.host.replace(/[^A-Za-z0-9_.-]/g, '_')}-${stamp}.sql`);
  const text = parts.join('\n');
  await writeFile(file, text, { mode: 0o600 });
  // One GTID event per transaction in mariadb-binlog's output ("#… GTID 0-5-12 …").
  const transactions = (text.match(/^#\d{6}\s.*\bGTID \d+-\d+-\d+/gm) ?? []).length;
  return { file, transactions, bytes: Buffer.byteLength(text) };
}
