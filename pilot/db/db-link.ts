import { readFile } from 'node:fs/promises';
import type { Connection } from 'mysql2/promise';
import type { Logger } from '../../shared/logger.ts';
import type { Config } from '../../shared/config.ts';
import { errorMessage } from '../../shared/errors.ts';
import type { MovementRecord } from '../../shared/movement.ts';
import { insideDir } from '../../depot/containers/drivers/paths.ts';
import type { DbSync } from './dbsync.ts';
import { readSyncHistory, syncHeartbeatFields } from './sync-history.ts';
import type { MovementRecorder, MovementJournal } from './movements-table.ts';
import type { DatabaseSpec } from '../service-spec.ts';

// The database side of one copy. On the primary: one DbSync per standby (mysqldump into the
// standby's staging schema, atomic swap), started when a standby appears and stopped when it
// goes, plus the movement recorder writing navigator_movements into the service's own
// database. On a standby: its last good sync, read from its own server, goes into the
// heartbeat (the RPO) and into the election (freshest standby wins).
// mysql2, DbSync and MovementRecorder are loaded at their first use: a depot without a pilot of
// a service with a database never needs them, and mysql2 alone is ~90 modules held in memory.

export interface StandbyTarget {
  /** Key of the copy (peer id / container id). */
  key: string;
  host: string;
  /** Address of the standby's database server. */
  address: string;
}

export interface DbLinkOptions {
  db: DatabaseSpec;
  /** Container folder (the password file is inside it). */
  containerDir: string;
  dbsync: Config['dbsync'];
  journal: MovementJournal | undefined;
  publish: (record: MovementRecord) => Promise<void>;
  logger: Logger;
}

export class DbLink {
  private readonly syncs = new Map<string, DbSync>();
  private recorder: MovementRecorder | undefined;
  private readonly log: Logger;
  private password: string | undefined;
  /** The term this copy is primary in (-1: not primary). */
  private primaryTerm = -1;

  constructor(private readonly opts: DbLinkOptions) {
    this.log = opts.logger.child({ component: 'db-link', database: opts.db.database });
  }

  private async secret(): Promise<string> {
    if (this.password !== undefined) return this.password;
    if (!this.opts.db.passwordFile) return (this.password = '');
    const path = insideDir(this.opts.containerDir, this.opts.db.passwordFile, 'database.passwordFile');
    this.password = (await readFile(path, 'utf8')).trim();
    return this.password;
  }

  private async endpoint(host: string): Promise<{ host: string; port: number; user: string; password: string }> {
    return { host, port: this.opts.db.port, user: this.opts.db.user, password: await this.secret() };
  }

  /** Primary: keep one sync running per standby in `targets`; stop the others. */
  async setStandbys(targets: StandbyTarget[]): Promise<void> {
    const want = new Map(targets.map((t) => [t.key, t]));
    for (const [key, sync] of this.syncs) {
      if (!want.has(key)) {
        this.syncs.delete(key);
        await sync.stop().catch(() => undefined);
        this.log.info({ event: 'sync-stopped', standby: key }, 'standby gone: sync stopped');
      }
    }
    for (const t of targets) {
      if (this.syncs.has(t.key)) continue;
      const { DbSync } = await import('./dbsync.ts');
      if (this.syncs.has(t.key)) continue; // set up by a concurrent call meanwhile
      const sync = new DbSync({
        source: await this.endpoint('127.0.0.1'),
        target: await this.endpoint(t.address),
        database: this.opts.db.database,
        logger: this.log.child({ standby: t.host }),
        settings: this.opts.dbsync,
        // The term this copy became primary in, read at each swap; -1 once it is not primary:
        // a sync still in flight then fails at the standby's term fence.
        term: () => this.primaryTerm,
      });
      this.syncs.set(t.key, sync);
      // start() syncs at once (a new standby) and then every syncIntervalMs, with backoff.
      void sync.start().catch((err: unknown) => this.log.error({ event: 'sync-start-failed', standby: t.host, err: errorMessage(err) }, 'sync could not start'));
      this.log.info({ event: 'sync-started', standby: t.host, address: t.address }, `syncing the database to ${t.host}`);
    }
  }

  /** Before a planned switchover: stop writes and bring every standby up to date. */
  async syncAllNow(stopWrites: boolean): Promise<void> {
    await Promise.all([...this.syncs.values()].map((s) => s.syncNow({ stopWrites })));
  }

  async resumeWrites(): Promise<void> {
    await Promise.all([...this.syncs.values()].map((s) => s.resumeWrites().catch(() => undefined)));
  }

  status(): Array<ReturnType<DbSync['status']>> {
    return [...this.syncs.values()].map((s) => s.status());
  }

  /** Primary: movements go into navigator_movements; journaled ones it lacks are added. */
  async becomePrimary(service: string, term?: number): Promise<void> {
    if (term !== undefined) this.primaryTerm = term;
    // A copy that was a switchover's old primary was left read-only: the primary must write.
    let conn: Connection | undefined;
    try {
      conn = await connect({ ...(await this.endpoint('127.0.0.1')), connectTimeout: 2000 });
      // Fence first: a swap of an older primary in flight here is killed, and none lands later.
      if (term !== undefined) {
        const { raiseTermFence } = await import('./term-fence.ts');
        const { killed } = await raiseTermFence(conn, this.opts.db.database, term);
        this.log.info({ event: 'term-fence-raised', term, killedSessions: killed }, `database fenced to term ${term}`);
      }
      await conn.query('SET GLOBAL read_only = 0');
    } catch (err) {
      this.log.warn({ event: 'read-write-failed', err: errorMessage(err) }, 'could not make the database writable');
    } finally {
      await conn?.end().catch(() => undefined);
    }
    if (this.recorder || !this.opts.journal) return;
    const { MovementRecorder } = await import('./movements-table.ts');
    const db = { ...(await this.endpoint('127.0.0.1')), database: this.opts.db.database };
    if (this.recorder) return; // made by a concurrent call meanwhile
    this.recorder = new MovementRecorder({
      db,
      journal: this.opts.journal,
      publish: this.opts.publish,
      logger: this.log,
    });
    void this.recorder.reconcile(service).catch((err: unknown) => this.log.warn({ event: 'movements-reconcile-failed', err: errorMessage(err) }, 'navigator_movements backfill failed; will retry'));
  }

  /** The recorder while primary (it journals, gossips and writes the table). */
  get movements(): MovementRecorder | undefined {
    return this.recorder;
  }

  async becomeStandby(): Promise<void> {
    this.primaryTerm = -1;
    await this.setStandbys([]);
    const r = this.recorder;
    this.recorder = undefined;
    await r?.stop().catch(() => undefined);
  }

  /** Standby: the last good sync into this copy, from its own server. */
  async ownSync(now: number): Promise<{ lastSyncAt?: number; syncFailing: boolean } | undefined> {
    let conn: Connection | undefined;
    try {
      conn = await connect({ ...(await this.endpoint('127.0.0.1')), connectTimeout: 2000 });
      return syncHeartbeatFields(await readSyncHistory(conn, this.opts.db.database), now, this.opts.dbsync.syncIntervalMs);
    } catch {
      return undefined;
    } finally {
      await conn?.end().catch(() => undefined);
    }
  }

  async stop(): Promise<void> {
    await this.becomeStandby();
  }
}

async function connect(opts: { host: string; port: number; user: string; password: string; connectTimeout: number }): Promise<Connection> {
  const { default: mysql } = await import('mysql2/promise');
  return mysql.createConnection(opts);
}
