import { createReadStream } from 'node:fs';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip, createGzip } from 'node:zlib';
import { execa, type Result } from 'execa';
import { NavigatorError, errorMessage } from '../../shared/errors.ts';
import { CredentialFiles, type MySqlEndpoint } from './mysql-credentials.ts';
import { errorLines, findClientBinaries } from './dbsync.ts';
import { TokenBucket } from '../../ship/bandwidth.ts';
import { SystemClock } from '../../shared/clock.ts';

// The database copy a recovery kit holds (pilot/recovery-kits.ts) and its load at a last-resort
// recovery (pilot/last-resort-runner.ts): one consistent snapshot of the primary's database,
//   mariadb-dump --single-transaction --no-autocommit --databases DB   (over the LAN, the sync
//   account; --no-autocommit: one commit per table at the load, not one per INSERT)
// run at nice 19, gzip'd (level 1) in memory (bounded) so the caller writes it durably in one
// piece, and loaded into the
// recovered copy's own server with
//   gunzip | mariadb --init-command="SET SESSION sql_log_bin=0"
// Passwords only in 0600 option files (CredentialFiles), removed when the commands have ended.

export interface DumpResult {
  gz: Buffer;
  /** Bytes of SQL before compression. */
  sqlBytes: number;
  durationMs: number;
}

const settingsOf = (s?: { dumpCommand: string; clientCommand: string }) => s ?? { dumpCommand: '', clientCommand: '' };

function failure(r: Result, name: string, err: string, timeoutMs: number): string {
  return `${name} ${r.timedOut ? `timed out after ${timeoutMs} ms` : r.signal ? `was killed by ${r.signal}` : `exited with code ${r.exitCode}`}${err ? `: ${err}` : ''}`;
}

/** Dump `database` from `source` into a gzip'd buffer of at most maxBytes. */
export async function dumpDatabaseGz(o: {
  source: MySqlEndpoint;
  database: string;
  timeoutMs: number;
  maxBytes: number;
  /** Read the dump at most this fast (bytes of SQL per second): the primary's server does the work in a trickle, not a burst. */
  bytesPerSec?: number;
  signal?: AbortSignal;
  settings?: { dumpCommand: string; clientCommand: string };
}): Promise<DumpResult> {
  const t0 = performance.now();
  const bins = await findClientBinaries(settingsOf(o.settings));
  const creds = await CredentialFiles.create('navigator-dbcopy-');
  try {
    const cnf = await creds.write('source', o.source);
    // At the lowest CPU priority: a kit holder is a user's PC, and the copy is never urgent.
    const dump = execa(
      'nice',
      ['-n', '19', bins.dump, `--defaults-extra-file=${cnf}`, '--single-transaction', '--routines', '--triggers', '--events', '--quick', '--no-autocommit', '--add-drop-database', '--max-allowed-packet=1G', '--databases', o.database],
      { reject: false, timeout: o.timeoutMs, forceKillAfterDelay: 2000, stdin: 'ignore', buffer: { stdout: false, stderr: true }, ...(o.signal ? { cancelSignal: o.signal } : {}) },
    );
    const chunks: Buffer[] = [];
    let gzBytes = 0;
    let sqlBytes = 0;
    let tail = '';
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        gzBytes += chunk.length;
        if (gzBytes > o.maxBytes) return cb(new NavigatorError('SYNC_FAILED', `database copy larger than recovery.dbCopyMaxBytes (${o.maxBytes} bytes compressed)`));
        chunks.push(chunk);
        cb();
      },
    });
    let streamError: unknown;
    const bucket = o.bytesPerSec ? new TokenBucket({ bytesPerSec: o.bytesPerSec }) : undefined;
    const clock = new SystemClock();
    try {
      await pipeline(
        dump.stdout,
        async function* (source: AsyncIterable<Buffer>) {
          for await (const chunk of source) {
            // Not reading makes mariadb-dump block on its pipe and the primary's server on its socket.
            if (bucket) await bucket.take(chunk.length, clock);
            sqlBytes += chunk.length;
            tail = (tail + chunk.toString('latin1', Math.max(0, chunk.length - 200))).slice(-200);
            yield chunk;
          }
        },
        // Level 1: a third of level 6's CPU for a file about a third larger.
        createGzip({ level: 1 }),
        sink,
      );
    } catch (err) {
      streamError = err;
      dump.kill();
    }
    const d = (await dump) as Result;
    const dumpErr = errorLines(String(d.stderr ?? ''));
    if (o.signal?.aborted) throw new NavigatorError('SYNC_FAILED', 'database copy aborted (stopping)');
    if (streamError) throw new NavigatorError('SYNC_FAILED', `database copy failed: ${errorMessage(streamError)}`);
    if (d.failed || /\berror\b/i.test(dumpErr)) throw new NavigatorError('SYNC_FAILED', `database copy failed: ${failure(d, bins.dump, dumpErr, o.timeoutMs)}`);
    // A dump cut short (a killed server, a dropped connection) lacks mysqldump's trailer.
    if (!/-- Dump completed/.test(tail)) throw new NavigatorError('SYNC_FAILED', 'database copy incomplete: the dump lacks its "-- Dump completed" trailer');
    return { gz: Buffer.concat(chunks), sqlBytes, durationMs: Math.round(performance.now() - t0) };
  } finally {
    await creds.dispose().catch(() => undefined);
  }
}

/** Load a gzip'd dump file into `target` (replacing the database it names). */
export async function loadDatabaseGz(o: {
  file: string;
  target: MySqlEndpoint;
  timeoutMs: number;
  settings?: { dumpCommand: string; clientCommand: string };
}): Promise<{ durationMs: number }> {
  const t0 = performance.now();
  const bins = await findClientBinaries(settingsOf(o.settings));
  const creds = await CredentialFiles.create('navigator-dbload-');
  try {
    const cnf = await creds.write('target', o.target);
    const load = execa(
      bins.client,
      [`--defaults-extra-file=${cnf}`, '--batch', '--binary-mode', '--max-allowed-packet=1G', '--connect-timeout=10', '--init-command=SET SESSION sql_log_bin=0', ...bins.clientArgs],
      { reject: false, timeout: o.timeoutMs, forceKillAfterDelay: 2000, stdout: 'ignore' },
    );
    let streamError: unknown;
    try {
      await pipeline(createReadStream(o.file), createGunzip(), load.stdin);
    } catch (err) {
      streamError = err;
      load.kill();
    }
    const l = (await load) as Result;
    const loadErr = errorLines(String(l.stderr ?? ''));
    if (l.failed || /\berror\b/i.test(loadErr)) throw new NavigatorError('SYNC_FAILED', `database copy load failed: ${failure(l, bins.client, loadErr, o.timeoutMs)}`);
    if (streamError) throw new NavigatorError('SYNC_FAILED', `database copy load failed: ${errorMessage(streamError)}`);
    return { durationMs: Math.round(performance.now() - t0) };
  } finally {
    await creds.dispose().catch(() => undefined);
  }
}
