import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { execa, type Result } from 'execa';
import { NavigatorError, errorMessage } from '../../shared/errors.ts';
import { CredentialFiles, type MySqlEndpoint } from './mysql-credentials.ts';
import { errorLines, findClientBinaries } from './dbsync.ts';
import { replSchema } from './replication.ts';

// Seeding a standby for replication: one consistent snapshot of the primary's database (and
// Navigator's heartbeat schema) with the GTID position it was taken at, loaded straight into the
// standby's server, so replication can start from exactly that position.
//   mariadb-dump --single-transaction --gtid --master-data=2 --databases DB DB__nav_repl
//     | mariadb --init-command="SET SESSION sql_log_bin=0"
// --master-data=2 writes the position as a comment (`-- SET GLOBAL gtid_slave_pos='…'`) that
// PositionScanner picks out of the stream; the load is not binary-logged on the standby (its own
// binlog must hold only what it replicates). mariadb-backup would stream a physical copy, but it
// needs the data directory of the primary on the primary's host (not over a client connection)
// and is not installed here; the choice is recorded in the seed result as `method`.
// Passwords only in 0600 option files (CredentialFiles), removed when the commands have ended.

export interface SeedResult {
  method: 'mysqldump';
  /** GTID position the snapshot was taken at (gtid_slave_pos to start from). */
  gtid: string;
  bytes: number;
  durationMs: number;
}

const POSITION = /^-- SET GLOBAL gtid_slave_pos='([0-9,-]*)';/m;

/** Passes the dump through and remembers the GTID position comment. */
class PositionScanner extends Transform {
  gtid: string | undefined;
  bytes = 0;
  private carry = '';

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.gtid === undefined) {
      // Only comment lines matter; keep at most one partial line between chunks.
      const text = this.carry + chunk.toString('latin1', 0, Math.min(chunk.length, 1 << 20));
      const m = POSITION.exec(text);
      if (m) this.gtid = m[1];
      const nl = text.lastIndexOf('\n');
      this.carry = nl >= 0 ? text.slice(nl + 1, nl + 1 + 4096) : text.slice(0, 4096);
    }
    cb(null, chunk);
  }
}

export interface SeedOptions {
  source: MySqlEndpoint;
  target: MySqlEndpoint;
  database: string;
  timeoutMs: number;
  signal?: AbortSignal;
  settings?: { dumpCommand: string; clientCommand: string };
  /** Remove passwords from a message. */
  scrub?: (text: string) => string;
}

/** Replace the standby's copy with a consistent snapshot of the primary's; returns its GTID position. */
export async function seedFromSnapshot(o: SeedOptions): Promise<SeedResult> {
  const t0 = performance.now();
  const scrub = o.scrub ?? ((s: string) => s);
  const bins = await findClientBinaries(o.settings ?? { dumpCommand: '', clientCommand: '' });
  const creds = await CredentialFiles.create('navigator-seed-');
  try {
    const srcCnf = await creds.write('source', o.source);
    const dstCnf = await creds.write('target', o.target);
    const common = { reject: false, timeout: o.timeoutMs, forceKillAfterDelay: 2000, maxBuffer: 16_000_000, ...(o.signal ? { cancelSignal: o.signal } : {}) } as const;
    const dump = execa(
      bins.dump,
      [
        `--defaults-extra-file=${srcCnf}`,
        '--single-transaction',
        '--gtid',
        '--master-data=2',
        '--routines',
        '--triggers',
        '--events',
        '--quick',
        '--add-drop-database',
        '--max-allowed-packet=1G',
        '--databases',
        o.database,
        replSchema(o.database),
      ],
      { ...common, stdin: 'ignore', buffer: { stdout: false, stderr: true } },
    );
    const load = execa(
      bins.client,
      [`--defaults-extra-file=${dstCnf}`, '--batch', '--binary-mode', '--max-allowed-packet=1G', '--connect-timeout=10', '--init-command=SET SESSION sql_log_bin=0', ...bins.clientArgs],
      { ...common, stdout: 'ignore' },
    );
    const scanner = new PositionScanner();
    let streamError: unknown;
    try {
      await pipeline(dump.stdout, scanner, load.stdin);
    } catch (err) {
      streamError = err;
      dump.kill();
    }
    const [d, l] = (await Promise.all([dump, load])) as [Result, Result];
    const dumpErr = scrub(errorLines(String(d.stderr ?? '')));
    const loadErr = scrub(errorLines(String(l.stderr ?? '')));
    const how = (r: Result, name: string, err: string) => `${name} ${r.timedOut ? `timed out after ${o.timeoutMs} ms` : r.signal ? `was killed by ${r.signal}` : `exited with code ${r.exitCode}`}${err ? `: ${err}` : ''}`;
    if (o.signal?.aborted) throw new NavigatorError('SYNC_FAILED', 'seed aborted (stopping)');
    // The cause, not the consequence: a load that died (standby down, refused statement) made us
    // stop the dump, so its error comes first when the stream broke.
    const loadFailed = l.failed || /\berror\b/i.test(loadErr);
    if (loadFailed && streamError) throw new NavigatorError('SYNC_FAILED', `seed load failed: ${how(l, bins.client, loadErr)}`);
    if (d.failed || /\berror\b/i.test(dumpErr)) throw new NavigatorError('SYNC_FAILED', `seed dump failed: ${how(d, bins.dump, dumpErr)}`);
    if (loadFailed) throw new NavigatorError('SYNC_FAILED', `seed load failed: ${how(l, bins.client, loadErr)}`);
    if (streamError) throw new NavigatorError('SYNC_FAILED', `seed stream failed: ${scrub(errorMessage(streamError))}`);
    if (scanner.gtid === undefined) throw new NavigatorError('SYNC_FAILED', 'the seed dump carried no GTID position (is log-bin on at the primary?)');
    return { method: 'mysqldump', gtid: scanner.gtid, bytes: scanner.bytes, durationMs: Math.round(performance.now() - t0) };
  } finally {
    await creds.dispose().catch(() => undefined);
  }
}
