import { access, constants } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { execa, type Result } from 'execa';
import mysql, { type Connection } from 'mysql2/promise';
import type { Logger } from '../../shared/logger.ts';
import { SystemClock, type Clock } from '../../shared/clock.ts';
import { DbSyncSection } from '../../shared/config.ts';
import { NavigatorError, errorMessage } from '../../shared/errors.ts';
import { CredentialFiles, MySqlEndpoint, endpointLabel, type MySqlEndpointInput } from './mysql-credentials.ts';
import { DumpGuard } from './dump-guard.ts';
import { inventory, swapStagingIntoLive, tableSnapshots } from './schema-swap.ts';
import { SYNC_LOCK_PREFIX } from './term-fence.ts';
import { SyncLoop } from './sync-loop.ts';
import {
  SyncRecord,
  readSyncHistory,
  recordFailedSync,
  recordGoodSync,
  schemaNames,
  type SchemaNames,
} from './sync-history.ts';

// Database sync from the primary's server to one standby's server (the primary's pilot runs one
// DbSync per standby). Each sync:
//   1. mysqldump --single-transaction --routines --triggers --events DB  (one consistent InnoDB
//      snapshot; no --databases, so the dump names no database)
//   2. streamed, through DumpGuard, into `mysql DB__nav_staging` on the standby's server
//   3. accepted only if both commands exit 0 with no error on stderr and the dump ends with its
//      "-- Dump completed" trailer; row counts (and CHECKSUM TABLE) are taken of the staging copy
//   4. swapped in with one RENAME TABLE over all tables (schema-swap.ts states the guarantee);
//      the old live tables stay in DB__nav_previous until the next good sync
//   5. recorded in DB__nav_sync.sync_history on the standby's server (time, bytes, duration,
//      per-table rows and checksums): the standby reports its last good sync from there.
// Any failure leaves the live copy as it was, drops the partial staging copy (it may be what
// filled the disk), is logged with its stage and cause, and is retried with exponential backoff.
// Passwords only ever go to 0600 option files in a private directory, removed after each sync.
//
// Accounts: the source account needs SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES and
// SHOW CREATE ROUTINE (or SELECT on mysql.proc) on DB, plus READ_ONLY ADMIN (or SUPER) for
// syncNow({stopWrites}). The target account needs ALL on DB and DB__nav_* and SET USER (or
// SUPER) to create views/routines/triggers with the primary's definers.
// Events arrive as they are on the primary (ENABLED ones included): run standby servers with
// event_scheduler=OFF (MariaDB's default) so the copy only changes by sync.

export type DbSyncSettings = ReturnType<typeof DbSyncSection.parse>;

export interface DbSyncOptions {
  /** The primary's server (where mysqldump reads). */
  source: MySqlEndpointInput;
  /** The standby's server (where the copy is loaded). */
  target: MySqlEndpointInput;
  /** Database of the service, same name on both servers. */
  database: string;
  logger: Logger;
  clock?: Clock;
  /** config.dbsync (defaults filled in for missing fields). */
  settings?: Partial<DbSyncSettings>;
  /** The term of the primary this sync runs for, read at each swap: the target's term fence must allow it. */
  term?: () => number;
}

export type SyncStage = 'connect-source' | 'stop-writes' | 'connect-target' | 'lock' | 'prepare' | 'dump' | 'load' | 'stream' | 'verify' | 'swap' | 'record' | 'aborted';

export interface DbSyncStatus {
  database: string;
  source: string;
  target: string;
  /** A sync is running now. */
  running: boolean;
  lastGood: SyncRecord | undefined;
  /** Age of the last good sync's snapshot (the RPO if the primary died now). */
  rpoMs: number | undefined;
  failing: boolean;
  consecutiveFailures: number;
  lastError: { at: number; stage: SyncStage; message: string } | undefined;
  nextAttemptAt: number | undefined;
  /** syncNow({stopWrites}) left the primary read-only (resumeWrites() undoes it). */
  writesStopped: boolean;
}

interface Binaries {
  dump: string;
  client: string;
  /** Extra options the client understands. */
  clientArgs: string[];
}

async function onPath(name: string): Promise<boolean> {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (!dir) continue;
    try {
      await access(join(dir, name), constants.X_OK);
      return true;
    } catch {
      /* next */
    }
  }
  return false;
}

/** mariadb-dump/mariadb when installed (newer servers warn about the old names), else mysqldump/mysql. */
export async function findClientBinaries(settings: Pick<DbSyncSettings, 'dumpCommand' | 'clientCommand'>): Promise<Binaries> {
  const dump = settings.dumpCommand || ((await onPath('mariadb-dump')) ? 'mariadb-dump' : 'mysqldump');
  const client = settings.clientCommand || ((await onPath('mariadb')) ? 'mariadb' : 'mysql');
  // MariaDB's client echoes a failing statement (a long INSERT of row data) unless told not to;
  // MySQL's client does not know the option.
  const help = await execa(client, ['--no-defaults', '--help'], { reject: false, timeout: 10_000 });
  const clientArgs = String(help.stdout).includes('print-query-on-error') ? ['--skip-print-query-on-error'] : [];
  return { dump, client, clientArgs };
}

interface RunRequest {
  stopWrites: boolean;
}

/**
 * The useful part of a client's stderr: its ERROR/warning lines. The mysql client also echoes the
 * failing statement, which may be a long INSERT full of row data that has no place in a log.
 */
export function errorLines(stderr: string): string {
  const lines = stderr.split('\n').map((l) => l.trim()).filter(Boolean);
  const picked = lines.filter((l) => /^(ERROR|\S+: (Got error|Error|Couldn't|Can't|Lost)|mysqldump:|mariadb-dump:|Warning)/i.test(l));
  const text = (picked.length > 0 ? picked : lines.filter((l) => !/^-+$/.test(l)).slice(-3)).join(' | ');
  return text.length > 1000 ? `${text.slice(0, 1000)}…` : text;
}

class StageError extends NavigatorError {
  constructor(
    readonly stage: SyncStage,
    message: string,
    cause?: unknown,
  ) {
    super('SYNC_FAILED', message, { stage }, cause === undefined ? undefined : { cause });
  }
}

export class DbSync {
  private readonly source: MySqlEndpoint;
  private readonly target: MySqlEndpoint;
  private readonly names: SchemaNames;
  private readonly settings: DbSyncSettings;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly loop: SyncLoop<SyncRecord, RunRequest>;
  private readonly sourceLabel: string;
  private readonly targetLabel: string;
  private binaries: Binaries | undefined;
  private lastGood: SyncRecord | undefined;
  private lastError: DbSyncStatus['lastError'];
  private writesStopped = false;
  private readonly term: (() => number) | undefined;

  constructor(opts: DbSyncOptions) {
    this.term = opts.term;
    this.source = MySqlEndpoint.parse(opts.source);
    this.target = MySqlEndpoint.parse(opts.target);
    this.names = schemaNames(opts.database);
    this.settings = DbSyncSection.parse(opts.settings ?? {});
    this.clock = opts.clock ?? new SystemClock();
    this.sourceLabel = endpointLabel(this.source);
    this.targetLabel = endpointLabel(this.target);
    this.log = opts.logger.child({ component: 'dbsync', database: opts.database, target: this.targetLabel });
    if (this.sourceLabel === this.targetLabel) {
      throw new NavigatorError('BAD_REQUEST', `dbsync source and target are the same server (${this.sourceLabel})`);
    }
    this.loop = new SyncLoop<SyncRecord, RunRequest>({
      clock: this.clock,
      intervalMs: this.settings.syncIntervalMs,
      retryBaseMs: this.settings.retryBaseMs,
      retryMaxMs: this.settings.retryBackoffMaxMs,
      run: (signal, req) => this.runOnce(signal, req?.stopWrites === true),
    });
  }

  /** Load the last good sync recorded on the target, then sync at once and every interval. */
  async start(): Promise<void> {
    try {
      const c = await this.connect(this.target);
      try {
        const state = await readSyncHistory(c, this.names.live);
        this.lastGood ??= state.lastGood;
      } finally {
        await c.end().catch(() => undefined);
      }
    } catch (err) {
      this.log.warn({ event: 'dbsync.history_unreadable', err: this.scrub(errorMessage(err)) }, 'could not read the sync history on the standby');
    }
    this.loop.start();
  }

  /** Stop syncing; a sync in progress is aborted (the live copy is unaffected). */
  async stop(): Promise<void> {
    await this.loop.stop();
  }

  /**
   * Sync now (after a standby is created, before a planned switchover). Waits for a sync in
   * progress, then runs a fresh one. With stopWrites the primary is made read-only
   * (SET GLOBAL read_only=1) before the dump, so the copy holds every write there will be; the
   * primary is LEFT read-only for the switchover to proceed (call resumeWrites() to cancel).
   * If that sync fails, writes are resumed at once: the switchover cannot go ahead anyway.
   * read_only does not bind accounts with the READ_ONLY ADMIN/SUPER privilege: the service's own
   * account must not have it.
   */
  async syncNow(opts: { stopWrites?: boolean } = {}): Promise<SyncRecord> {
    return this.loop.runNow({ stopWrites: opts.stopWrites === true });
  }

  /** Undo syncNow({stopWrites: true}): SET GLOBAL read_only=0 on the primary. */
  async resumeWrites(): Promise<void> {
    const c = await this.connect(this.source);
    try {
      await c.query('SET GLOBAL read_only = 0');
      this.writesStopped = false;
      this.log.info({ event: 'dbsync.writes_resumed' }, 'primary accepts writes again');
    } finally {
      await c.end().catch(() => undefined);
    }
  }

  lastGoodSync(): SyncRecord | undefined {
    return this.lastGood;
  }

  status(): DbSyncStatus {
    const st = this.loop.state;
    const now = this.clock.now();
    return {
      database: this.names.live,
      source: this.sourceLabel,
      target: this.targetLabel,
      running: st.inFlight,
      lastGood: this.lastGood,
      rpoMs: this.lastGood ? Math.max(0, now - this.lastGood.snapshotAt) : undefined,
      failing: st.consecutiveFailures > 0,
      consecutiveFailures: st.consecutiveFailures,
      lastError: this.lastError,
      nextAttemptAt: st.nextAt,
      writesStopped: this.writesStopped,
    };
  }

  /** ContainerReport fields for the standby this DbSync feeds. */
  heartbeatFields(): { lastSyncAt?: number; syncFailing: boolean } {
    return { ...(this.lastGood ? { lastSyncAt: this.lastGood.snapshotAt } : {}), syncFailing: this.loop.state.consecutiveFailures > 0 };
  }

  // ---------------------------------------------------------------------------------------

  private connect(ep: MySqlEndpoint, database?: string): Promise<Connection> {
    return mysql.createConnection({
      ...(ep.socket ? { socketPath: ep.socket } : { host: ep.host, port: ep.port }),
      user: ep.user,
      password: ep.password,
      connectTimeout: 10_000,
      multipleStatements: false,
      supportBigNumbers: true,
      ...(database ? { database } : {}),
    });
  }

  /** Remove any password from a text before it reaches a log or an error. */
  private scrub(text: string): string {
    let out = text;
    for (const pw of [this.source.password, this.target.password]) {
      // Very short passwords would mangle every message; they cannot be told from ordinary text.
      if (pw.length >= 3) out = out.split(pw).join('[redacted]');
    }
    return out;
  }

  private async runOnce(signal: AbortSignal, stopWrites: boolean): Promise<SyncRecord> {
    const started = this.clock.now();
    let stage: SyncStage = 'connect-source';
    let src: Connection | undefined;
    let dst: Connection | undefined;
    let creds: CredentialFiles | undefined;
    let stagingCreated = false;
    const check = () => {
      if (signal.aborted) throw new StageError('aborted', 'sync aborted (stopping)');
    };
    this.log.debug({ event: 'dbsync.started', stopWrites }, 'sync started');
    try {
      src = await this.connect(this.source);
      const [schemata] = await src.query(
        'SELECT DEFAULT_CHARACTER_SET_NAME AS cs, DEFAULT_COLLATION_NAME AS co FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?',
        [this.names.live],
      );
      const sch = (schemata as Array<{ cs: string; co: string }>)[0];
      if (!sch) throw new StageError('connect-source', `database ${this.names.live} does not exist on the primary's server ${this.sourceLabel}`);
      if (stopWrites) {
        stage = 'stop-writes';
        await src.query('SET SESSION lock_wait_timeout = ?', [this.settings.swapLockWaitS]);
        await src.query('SET GLOBAL read_only = 1');
        this.writesStopped = true;
        this.log.info({ event: 'dbsync.writes_stopped' }, 'primary set read-only for the final sync');
      }
      check();
      stage = 'connect-target';
      dst = await this.connect(this.target);
      stage = 'lock';
      // One sync into a given copy at a time, whoever runs it (held until this connection ends).
      const [lock] = await dst.query('SELECT GET_LOCK(?, 0) AS got', [`${SYNC_LOCK_PREFIX}${this.names.live}`]);
      if (Number((lock as Array<{ got: number }>)[0]?.got) !== 1) {
        throw new StageError('lock', `another sync into ${this.names.live} on ${this.targetLabel} is running`);
      }
      stage = 'prepare';
      await dst.query(`DROP DATABASE IF EXISTS \`${this.names.staging}\``);
      await dst.query(`CREATE DATABASE \`${this.names.staging}\` CHARACTER SET ${sch.cs} COLLATE ${sch.co}`);
      stagingCreated = true;
      check();
      stage = 'dump';
      this.binaries ??= await findClientBinaries(this.settings);
      creds = await CredentialFiles.create();
      const snapshotAt = this.clock.now();
      const t0 = performance.now();
      const { bytes } = await this.transfer(creds, signal);
      const t1 = performance.now();
      await creds.dispose();
      creds = undefined;
      check();
      stage = 'verify';
      const inv = await inventory(dst, this.names.staging);
      const tables = await tableSnapshots(dst, this.names.staging, inv.tables, this.settings.checksums);
      check();
      const t2 = performance.now();
      stage = 'swap';
      const swapped = await swapStagingIntoLive(dst, this.names, { lockWaitS: this.settings.swapLockWaitS, logger: this.log, term: this.term?.() });
      stagingCreated = false;
      const finishedAt = this.clock.now();
      const stagesMs = { transfer: Math.round(t1 - t0), verify: Math.round(t2 - t1), swap: Math.round(performance.now() - t2) };
      const record: SyncRecord = {
        database: this.names.live,
        source: this.sourceLabel,
        target: this.targetLabel,
        snapshotAt,
        finishedAt,
        durationMs: finishedAt - started,
        dumpBytes: bytes,
        tables,
        views: swapped.views,
        routines: swapped.routines,
        triggers: swapped.triggers,
        events: swapped.events,
        writesStopped: stopWrites,
        stagesMs,
      };
      stage = 'record';
      await recordGoodSync(dst, this.names, record);
      this.lastGood = record;
      this.lastError = undefined;
      this.log.info(
        {
          event: 'dbsync.succeeded',
          durationMs: record.durationMs,
          dumpBytes: bytes,
          tables: tables.length,
          rows: tables.reduce((n, t) => n + t.rows, 0),
          views: swapped.views,
          routines: swapped.routines,
          triggers: swapped.triggers,
          events: swapped.events,
          writesStopped: stopWrites,
          stagesMs,
        },
        'database synced to standby',
      );
      return record;
    } catch (err) {
      const failedStage = err instanceof StageError ? err.stage : signal.aborted ? 'aborted' : stage;
      const message = this.scrub(errorMessage(err));
      const at = this.clock.now();
      this.lastError = { at, stage: failedStage, message };
      const failures = this.loop.state.consecutiveFailures + 1;
      this.log.error(
        { event: 'dbsync.failed', stage: failedStage, err: message, consecutiveFailures: failures, durationMs: at - started },
        `database sync failed at ${failedStage}; the standby keeps its last good copy`,
      );
      // Record the failure on the standby's server too (its pilot reports syncFailing from it).
      if (!dst && failedStage !== 'connect-target' && failedStage !== 'aborted') {
        dst = await this.connect(this.target).catch(() => undefined);
      }
      // Not for 'lock' (another sync owns the staging copy) nor for 'aborted' (we were stopped:
      // nothing is wrong with the standby, so its history should not say so).
      if (dst && failedStage !== 'lock') {
        await this.cleanupAfterFailure(dst, stagingCreated, failedStage === 'aborted' ? undefined : { at, stage: failedStage, message });
      }
      if (stopWrites && this.writesStopped && src) {
        await src
          .query('SET GLOBAL read_only = 0')
          .then(() => {
            this.writesStopped = false;
            this.log.warn({ event: 'dbsync.writes_resumed' }, 'final sync failed: primary accepts writes again');
          })
          .catch((e: unknown) => this.log.error({ event: 'dbsync.resume_failed', err: this.scrub(errorMessage(e)) }, 'could not resume writes on the primary'));
      }
      throw new NavigatorError('SYNC_FAILED', `sync of ${this.names.live} to ${this.targetLabel} failed at ${failedStage}: ${message}`, { stage: failedStage }, { cause: err });
    } finally {
      await creds?.dispose().catch(() => undefined);
      await src?.end().catch(() => undefined);
      await dst?.end().catch(() => undefined);
    }
  }

  private async cleanupAfterFailure(dst: Connection, stagingCreated: boolean, failure: { at: number; stage: string; message: string } | undefined): Promise<void> {
    try {
      // Frees the space a partial load took (it may be what filled the disk).
      if (stagingCreated) await dst.query(`DROP DATABASE IF EXISTS \`${this.names.staging}\``);
      if (failure) await recordFailedSync(dst, this.names, { database: this.names.live, source: this.sourceLabel, target: this.targetLabel, ...failure });
    } catch (err) {
      this.log.warn({ event: 'dbsync.cleanup_failed', err: this.scrub(errorMessage(err)) }, 'could not clean up or record the failed sync on the standby');
    }
  }

  /** mysqldump → DumpGuard → mysql; resolves with the byte count only for a complete, clean load. */
  private async transfer(creds: CredentialFiles, signal: AbortSignal): Promise<{ bytes: number }> {
    const bins = this.binaries!;
    const srcCnf = await creds.write('source', this.source);
    const dstCnf = await creds.write('target', this.target);
    const common = {
      reject: false,
      cancelSignal: signal,
      timeout: this.settings.syncTimeoutMs,
      forceKillAfterDelay: 2000,
      maxBuffer: 16_000_000,
    } as const;
    const dump = execa(
      bins.dump,
      [`--defaults-extra-file=${srcCnf}`, '--single-transaction', '--routines', '--triggers', '--events', '--quick', '--max-allowed-packet=1G', this.names.live],
      { ...common, stdin: 'ignore', buffer: { stdout: false, stderr: true } },
    );
    const load = execa(
      bins.client,
      [`--defaults-extra-file=${dstCnf}`, '--batch', '--binary-mode', '--max-allowed-packet=1G', '--connect-timeout=10', ...bins.clientArgs, this.names.staging],
      { ...common, stdout: 'ignore' },
    );
    const guard = new DumpGuard(this.names.live, this.names.staging);
    let streamError: unknown;
    try {
      await pipeline(dump.stdout, guard, load.stdin);
    } catch (err) {
      // The load died (EPIPE) or the guard refused a line: stop the dump. The load ends by itself
      // (its input is closed), so its own exit status and stderr still tell what went wrong.
      streamError = err;
      dump.kill();
    }
    const [d, l] = (await Promise.all([dump, load])) as [Result, Result];
    if (signal.aborted) throw new StageError('aborted', 'sync aborted (stopping)');
    const dumpErr = this.scrub(errorLines(String(d.stderr ?? '')));
    const loadErr = this.scrub(errorLines(String(l.stderr ?? '')));
    const why = (r: Result, name: string, stderr: string) => {
      const how = r.timedOut
        ? `${name} timed out after ${this.settings.syncTimeoutMs} ms`
        : r.signal
          ? `${name} was killed by ${r.signal}`
          : `${name} exited with code ${r.exitCode}`;
      return stderr ? `${how}: ${stderr}` : how;
    };
    const dumpFailed = d.failed || /\berror\b/i.test(dumpErr);
    const loadFailed = l.failed || /\berror\b/i.test(loadErr);
    // Report the cause, not the consequence: a dump that died on its own truncates the load's
    // input; a load that died (standby down, disk full) made us stop the dump.
    if (streamError instanceof NavigatorError) throw new StageError('stream', streamError.message, streamError);
    if (dumpFailed && !streamError) throw new StageError('dump', why(d, bins.dump, dumpErr));
    if (loadFailed) throw new StageError('load', why(l, bins.client, loadErr));
    if (streamError) throw new StageError('stream', `streaming the dump failed: ${errorMessage(streamError)}`, streamError);
    if (dumpFailed) throw new StageError('dump', why(d, bins.dump, dumpErr));
    if (!guard.complete) throw new StageError('dump', 'the dump ended without its "-- Dump completed" trailer (cut short)');
    if (dumpErr) this.log.warn({ event: 'dbsync.dump_stderr', stderr: dumpErr.slice(0, 2000) }, 'mysqldump wrote to stderr');
    if (loadErr) this.log.warn({ event: 'dbsync.load_stderr', stderr: loadErr.slice(0, 2000) }, 'mysql wrote to stderr');
    return { bytes: guard.stats.bytes };
  }
}
