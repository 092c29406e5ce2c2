import { readFile } from 'node:fs/promises';
import type { Connection } from 'mysql2/promise';
import type { Logger } from '../../shared/logger.ts';
import type { Config } from '../../shared/config.ts';
import { errorMessage } from '../../shared/errors.ts';
import type { MovementRecord } from '../../shared/movement.ts';
import { insideDir } from '../../depot/containers/drivers/paths.ts';
import type { DbSync } from './dbsync.ts';
import type { ReplicaKeeper, ReplicaKeeperStatus, DivergedInfo } from './replica-keeper.ts';
import type { ReplicationReport } from '../../depot/containers/manager.ts';
import { readSyncHistory, syncHeartbeatFields } from './sync-history.ts';
import { readSeedMark, type SeedMark } from './seed-marker.ts';
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
  /** Port of the standby's database server when it is not the spec's port (copies sharing one host). */
  port?: number;
}

export interface DbLinkOptions {
  db: DatabaseSpec;
  /** Key of this copy (peer id / container id): its server_id is derived from it. */
  copyKey?: string;
  /** Container folder (the password file is inside it). */
  containerDir: string;
  dbsync: Config['dbsync'];
  journal: MovementJournal | undefined;
  publish: (record: MovementRecord) => Promise<void>;
  logger: Logger;
  /**
   * Where this copy's own database server answers (default 127.0.0.1, on the host). A copy packed
   * as a VM guest on the LAN: the guest's address (its MariaDB runs inside the guest).
   */
  ownAddress?: () => Promise<string>;
  /**
   * How long a promotion waits for this copy's own server to answer (default 0: not at all). A
   * guest counts as running once its agent answers, its MariaDB some seconds later.
   */
  ownReadyWaitMs?: number;
}

/** What a standby's pilot reads from its own server for its heartbeat. */
export interface OwnSyncFields {
  lastSyncAt?: number;
  syncFailing: boolean;
  repl?: ReplicationReport;
  /** replicate/semisync: the keeper's mark of this copy's last seed (seed-marker.ts); absent: never marked. */
  seedMark?: SeedMark;
}

export class DbLink {
  private readonly syncs = new Map<string, DbSync>();
  private readonly keepers = new Map<string, ReplicaKeeper>();
  private keeperSource: string | undefined;
  private beatTimer: NodeJS.Timeout | undefined;
  private beatConn: Connection | undefined;
  private beating = false;
  private semisyncFellBack: boolean | undefined;
  private primaryGtid: string | undefined;
  private service: string | undefined;
  private catchUpFailure: string | undefined;
  /** Only the current term's primary (holding its lease) touches standbys (set by the pilot). */
  private mayAct: (() => boolean) | undefined;
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

  /** This copy's own server: on the host, or in its VM guest. */
  private async own(): Promise<{ host: string; port: number; user: string; password: string }> {
    return this.endpoint(this.opts.ownAddress ? await this.opts.ownAddress() : '127.0.0.1');
  }

  private async endpoint(host: string): Promise<{ host: string; port: number; user: string; password: string }> {
    return { host, port: this.opts.db.port, user: this.opts.db.user, password: await this.secret() };
  }

  /** replicate or semisync: standbys are MariaDB replicas; dump: periodic mysqldump. */
  get replicating(): boolean {
    return this.opts.dbsync.mode !== 'dump';
  }

  private get serverId(): Promise<number> {
    return import('./replication.ts').then((r) => r.serverIdFor(this.opts.copyKey ?? `local/${this.opts.db.database}`));
  }

  /**
   * Primary: keep every standby in `targets` in step (one DbSync, or one ReplicaKeeper, each);
   * stop the others. `selfAddress`: where standbys reach this primary's server (replicate modes).
   */
  async setStandbys(targets: StandbyTarget[], selfAddress?: string, mayAct?: () => boolean): Promise<void> {
    if (mayAct) this.mayAct = mayAct;
    if (this.replicating) return this.setReplicas(targets, selfAddress);
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
        source: await this.own(),
        target: { ...(await this.endpoint(t.address)), ...(t.port ? { port: t.port } : {}) },
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

  private async setReplicas(targets: StandbyTarget[], selfAddress: string | undefined): Promise<void> {
    // The keepers point standbys at selfAddress: a new address means new keepers.
    if (selfAddress !== this.keeperSource) {
      for (const [key, k] of this.keepers) {
        this.keepers.delete(key);
        await k.stop().catch(() => undefined);
      }
      this.keeperSource = selfAddress;
    }
    const want = new Map(targets.map((t) => [t.key, t]));
    for (const [key, k] of this.keepers) {
      if (!want.has(key)) {
        this.keepers.delete(key);
        await k.stop().catch(() => undefined);
        this.log.info({ event: 'replica-released', standby: key }, 'standby gone: no longer kept');
      }
    }
    if (!selfAddress) return;
    for (const t of targets) {
      if (this.keepers.has(t.key)) continue;
      const { ReplicaKeeper } = await import('./replica-keeper.ts');
      const { serverIdFor } = await import('./replication.ts');
      if (this.keepers.has(t.key)) continue;
      const keeper = new ReplicaKeeper({
        source: await this.own(),
        sourceAddress: selfAddress,
        target: { ...(await this.endpoint(t.address)), ...(t.port ? { port: t.port } : {}) },
        targetServerId: serverIdFor(t.key),
        database: this.opts.db.database,
        semisync: this.opts.dbsync.mode === 'semisync',
        logger: this.log.child({ standby: t.host }),
        settings: this.opts.dbsync,
        onDiverged: (info) => this.saveDiverged(t.host, info),
        mayAct: () => this.mayAct?.() ?? true,
      });
      this.keepers.set(t.key, keeper);
      keeper.start();
      this.log.info({ event: 'replica-kept', standby: t.host, address: t.address, source: selfAddress }, `keeping ${t.host} a replica of this primary`);
    }
  }

  /** A diverged old primary's extra transactions: mysqlbinlog of them into a file, and a movement event. */
  private async saveDiverged(host: string, info: DivergedInfo): Promise<void> {
    const { saveExtraTransactions } = await import('./diverged.ts');
    const saved = await saveExtraTransactions({ source: info.targetEndpoint, extra: info.extra, dir: this.opts.containerDir, host });
    this.log.warn({ event: 'diverged-saved', host, file: saved.file, transactions: saved.transactions, extra: info.extra }, `saved ${saved.transactions} transaction(s) of ${host} the new primary never received to ${saved.file}`);
    await this.recorder
      ?.record({
        service: this.service ?? this.opts.db.database,
        event: 'diverged',
        role: 'standby',
        host,
        address: '',
        term: Math.max(0, this.primaryTerm),
        failover: false,
        reason: `${host} held ${saved.transactions} transaction(s) the new primary lacks (GTIDs ${info.extra.map((e) => `${e.domain}-${e.server}-${e.fromSeq}..${e.toSeq}`).join(', ')}); saved to ${saved.file}, host reseeded`,
      })
      .catch((err: unknown) => this.log.warn({ event: 'diverged-record-failed', err: errorMessage(err) }, 'could not record the diverged transactions as a movement'));
  }

  /**
   * Before a planned switchover: stop writes and bring every standby up to date. dump: a final
   * sync into each. replicate/semisync: read_only on the primary (waits for commits in flight),
   * then wait (dbsync.catchUpTimeoutMs) until every healthy replica has applied the final GTID
   * position; fails (the caller resumes writes) when none has.
   */
  async syncAllNow(stopWrites: boolean): Promise<{ caughtUp: string[]; behind: string[]; gtid?: string }> {
    if (!this.replicating) {
      await Promise.all([...this.syncs.values()].map((s) => s.syncNow({ stopWrites })));
      return { caughtUp: [...this.syncs.values()].map((s) => s.status().target), behind: [] };
    }
    const { stopWritesAndFinalPosition, waitApplied } = await import('./replication.ts');
    const keepers = [...this.keepers.values()];
    await Promise.all(keepers.map((k) => k.checkNow().catch(() => undefined)));
    let conn: Connection | undefined;
    try {
      conn = await connect({ ...(await this.own()), connectTimeout: 5000 });
      const gtid = stopWrites ? await stopWritesAndFinalPosition(conn, this.opts.dbsync.swapLockWaitS) : String(((await conn.query('SELECT @@GLOBAL.gtid_binlog_pos AS p'))[0] as Array<{ p: string }>)[0]?.p ?? '');
      this.stopBeat();
      const results = await Promise.all(
        keepers.map(async (k) => {
          const st = k.status();
          if (st.state !== 'replicating' && st.state !== 'connecting') return { target: st.target, ok: false };
          let c: Connection | undefined;
          try {
            const [host, port] = splitLabel(st.target);
            c = await connect({ ...(await this.endpoint(host)), port, connectTimeout: 5000 });
            return { target: st.target, ok: await waitApplied(c, gtid, this.opts.dbsync.catchUpTimeoutMs) };
          } catch {
            return { target: st.target, ok: false };
          } finally {
            await c?.end().catch(() => undefined);
          }
        }),
      );
      const caughtUp = results.filter((r) => r.ok).map((r) => r.target);
      const behind = results.filter((r) => !r.ok).map((r) => r.target);
      this.log.info({ event: 'final-catch-up', gtid, caughtUp, behind }, `standbys holding every transaction (${gtid}): ${caughtUp.join(', ') || 'none'}`);
      if (caughtUp.length === 0) {
        this.catchUpFailure = `the standbys did not catch up with ${gtid || 'the primary'} within dbsync.catchUpTimeoutMs (${this.opts.dbsync.catchUpTimeoutMs} ms)${behind.length ? `: ${behind.join(', ')} behind` : ''}`;
        throw new Error(`no standby applied the primary's last transactions (${gtid}) within dbsync.catchUpTimeoutMs (${this.opts.dbsync.catchUpTimeoutMs} ms)${behind.length ? `; behind: ${behind.join(', ')}` : ''}`);
      }
      this.catchUpFailure = undefined;
      return { caughtUp, behind, gtid };
    } finally {
      await conn?.end().catch(() => undefined);
    }
  }

  /** Why the last planned hand-over could not bring a standby up to date (until one succeeds). */
  get lastCatchUpFailure(): string | undefined {
    return this.catchUpFailure;
  }

  async resumeWrites(): Promise<void> {
    if (!this.replicating) {
      await Promise.all([...this.syncs.values()].map((s) => s.resumeWrites().catch(() => undefined)));
      return;
    }
    let conn: Connection | undefined;
    try {
      conn = await connect({ ...(await this.own()), connectTimeout: 5000 });
      await conn.query('SET GLOBAL read_only = 0');
      this.log.info({ event: 'writes-resumed' }, 'primary accepts writes again');
      this.startBeat();
    } catch (err) {
      this.log.error({ event: 'resume-writes-failed', err: errorMessage(err) }, 'could not resume writes on the primary');
    } finally {
      await conn?.end().catch(() => undefined);
    }
  }

  status(): Array<ReturnType<DbSync['status']>> {
    return [...this.syncs.values()].map((s) => s.status());
  }

  /** replicate/semisync on the primary: each standby's replication as the primary sees it. */
  replicaStatus(): ReplicaKeeperStatus[] {
    return [...this.keepers.values()].map((k) => k.status());
  }

  /** The primary's own replication fields for its heartbeat report. */
  primaryReport(): ReplicationReport | undefined {
    if (!this.replicating || this.beatTimer === undefined) return undefined;
    return { ...(this.primaryGtid !== undefined ? { gtid: this.primaryGtid } : {}), ...(this.semisyncFellBack !== undefined ? { semisyncFallback: this.semisyncFellBack } : {}) };
  }

  private startBeat(): void {
    if (this.beatTimer) return;
    let ticks = 0;
    this.beatTimer = setInterval(() => {
      if (this.beating) return;
      this.beating = true;
      ticks++;
      void this.beatOnce(ticks % Math.max(1, Math.round(1000 / this.opts.dbsync.heartbeatMs)) === 0).finally(() => (this.beating = false));
    }, this.opts.dbsync.heartbeatMs);
    this.beatTimer.unref?.();
  }

  private stopBeat(): void {
    clearInterval(this.beatTimer);
    this.beatTimer = undefined;
    const c = this.beatConn;
    this.beatConn = undefined;
    void c?.end().catch(() => undefined);
  }

  /** Write the heartbeat; about once a second also read the GTID position and semi-sync state. */
  private async beatOnce(full: boolean): Promise<void> {
    try {
      const r = await import('./replication.ts');
      this.beatConn ??= await connect({ ...(await this.own()), connectTimeout: 2000 });
      await r.writeHeartbeat(this.beatConn, this.opts.db.database, Date.now());
      if (!full) return;
      const [v] = (await this.beatConn.query('SELECT @@GLOBAL.gtid_binlog_pos AS p'))[0] as Array<{ p: string }>;
      this.primaryGtid = String(v?.p ?? '');
      if (this.opts.dbsync.mode === 'semisync') {
        const ss = await r.readSemisync(this.beatConn);
        if (ss.fellBack !== this.semisyncFellBack) {
          if (ss.fellBack) this.log.warn({ event: 'semisync-fallback', clients: ss.clients }, 'semi-synchronous replication fell back to async: no standby acknowledged in time (commits no longer wait for a standby)');
          else if (this.semisyncFellBack) this.log.info({ event: 'semisync-restored', clients: ss.clients }, 'semi-synchronous replication is back on');
          this.semisyncFellBack = ss.fellBack;
        }
      }
    } catch (err) {
      const c = this.beatConn;
      this.beatConn = undefined;
      await c?.end().catch(() => undefined);
      this.log.debug({ event: 'heartbeat-write-failed', err: errorMessage(err) }, 'replication heartbeat not written');
    }
  }

  /** Primary: movements go into navigator_movements; journaled ones it lacks are added. */
  async becomePrimary(service: string, term = 0): Promise<void> {
    this.primaryTerm = term;
    this.service = service;
    // A copy that was a switchover's old primary was left read-only: the primary must write.
    let conn: Connection | undefined;
    try {
      conn = await this.connectOwnWaiting();
      if (this.replicating) {
        // Called once this copy holds the lease: apply what was received, stop replicating,
        // become a source, and only then writable.
        const r = await import('./replication.ts');
        const t0 = performance.now();
        const promoted = await r.promoteReplica(conn, this.opts.dbsync.promoteApplyTimeoutMs);
        await r.preparePrimary(
          conn,
          {
            database: this.opts.db.database,
            serverId: await this.serverId,
            replUser: this.opts.dbsync.replicationUser,
            replPassword: r.replicationPassword(await this.secret(), this.opts.db.database),
            semisync: this.opts.dbsync.mode === 'semisync',
            semisyncTimeoutMs: this.opts.dbsync.semisyncTimeoutMs,
          },
          'of this copy',
        );
        this.primaryGtid = promoted.gtid;
        this.log[promoted.appliedAll ? 'info' : 'warn'](
          { event: 'promoted', gtid: promoted.gtid, appliedAll: promoted.appliedAll, wasReplica: promoted.wasReplica, durationMs: Math.round(performance.now() - t0) },
          promoted.appliedAll ? `database promoted at ${promoted.gtid || 'an empty position'}` : `database promoted before it applied everything it received (dbsync.promoteApplyTimeoutMs)`,
        );
      }
      // Fenced before it is writable: a dump-mode swap of an older primary in flight here is
      // killed, and none lands later (replicate mode: after the promotion, so the fence row is
      // this primary's own first transaction, not one mixed into what the replica still applies).
      if (term !== undefined) {
        const { raiseTermFence } = await import('./term-fence.ts');
        const { killed } = await raiseTermFence(conn, this.opts.db.database, term);
        this.log.info({ event: 'term-fence-raised', term, killedSessions: killed }, `database fenced to term ${term}`);
      }
      await conn.query('SET GLOBAL read_only = 0');
      if (this.replicating) this.startBeat();
    } catch (err) {
      this.log.warn({ event: 'read-write-failed', err: errorMessage(err) }, 'could not make the database writable');
    } finally {
      await conn?.end().catch(() => undefined);
    }
    if (this.recorder || !this.opts.journal) return;
    const { MovementRecorder } = await import('./movements-table.ts');
    const db = { ...(await this.own()), database: this.opts.db.database };
    if (this.recorder) return; // made by a concurrent call meanwhile
    this.recorder = new MovementRecorder({
      db,
      journal: this.opts.journal,
      publish: this.opts.publish,
      logger: this.log,
    });
    void this.recorder.reconcile(service).catch((err: unknown) => this.log.warn({ event: 'movements-reconcile-failed', err: errorMessage(err) }, 'navigator_movements backfill failed; will retry'));
  }

  /** Connect to this copy's own server, retrying for up to ownReadyWaitMs. */
  private async connectOwnWaiting(): Promise<Connection> {
    const until = Date.now() + (this.opts.ownReadyWaitMs ?? 0);
    for (;;) {
      try {
        return await connect({ ...(await this.own()), connectTimeout: 2000 });
      } catch (err) {
        if (Date.now() >= until) throw err;
        this.log.info({ event: 'own-db-waiting', err: errorMessage(err) }, "this copy's database does not answer yet; waiting");
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
  }

  /** The recorder while primary (it journals, gossips and writes the table). */
  get movements(): MovementRecorder | undefined {
    return this.recorder;
  }

  async becomeStandby(): Promise<void> {
    this.primaryTerm = -1;
    await this.setStandbys([]);
    if (this.replicating) {
      this.stopBeat();
      this.primaryGtid = undefined;
      this.semisyncFellBack = undefined;
      // A copy that is not the primary never takes writes (an ex-primary included): its data
      // only changes by replication from the current primary, which re-points or reseeds it.
      let conn: Connection | undefined;
      try {
        conn = await connect({ ...(await this.own()), connectTimeout: 2000 });
        await conn.query('SET GLOBAL read_only = 1');
        await conn.query('SET GLOBAL rpl_semi_sync_master_enabled = 0');
      } catch (err) {
        this.log.debug({ event: 'read-only-failed', err: errorMessage(err) }, 'could not make the database read-only');
      } finally {
        await conn?.end().catch(() => undefined);
      }
    }
    const r = this.recorder;
    this.recorder = undefined;
    await r?.stop().catch(() => undefined);
  }

  /**
   * Standby: how fresh this copy is, from its own server. dump: its last good sync.
   * replicate/semisync: the newest primary heartbeat it holds (the primary's clock, so freshness
   * compares across standbys), its GTID position and replication state. `expectedSource`: the
   * address of the current term's primary as this pilot knows it; replication from any other
   * source is stopped (a paused or isolated old primary never feeds this copy).
   */
  async ownSync(now: number, expectedSource?: string): Promise<OwnSyncFields | undefined> {
    let conn: Connection | undefined;
    try {
      conn = await connect({ ...(await this.own()), connectTimeout: 2000 });
      if (this.replicating) return await this.ownReplication(conn, expectedSource);
      return syncHeartbeatFields(await readSyncHistory(conn, this.opts.db.database), now, this.opts.dbsync.syncIntervalMs);
    } catch {
      return undefined;
    } finally {
      await conn?.end().catch(() => undefined);
    }
  }

  private async ownReplication(conn: Connection, expectedSource: string | undefined): Promise<OwnSyncFields> {
    const r = await import('./replication.ts');
    const st = await r.readReplicaStatus(conn);
    if (st.configured && expectedSource && st.masterHost !== expectedSource && (st.ioRunning !== 'No' || st.sqlRunning !== 'No')) {
      await conn.query('STOP SLAVE');
      this.log.warn({ event: 'replication-source-refused', source: st.masterHost, primary: expectedSource }, `stopped replicating from ${st.masterHost}: it is not the current primary (${expectedSource})`);
      st.ioRunning = 'No';
      st.sqlRunning = 'No';
    }
    const at = await r.readHeartbeat(conn, this.opts.db.database);
    const seedMark = await readSeedMark(conn, this.opts.db.database);
    const broken = r.brokenReason(st);
    const replState: ReplicationReport['replState'] = !st.configured
      ? 'stopped'
      : broken
        ? 'broken'
        : st.ioRunning === 'Yes' && st.sqlRunning === 'Yes'
          ? 'replicating'
          : st.ioRunning === 'Connecting'
            ? 'connecting'
            : 'stopped';
    const reason = broken ?? (st.ioErrno ? `${st.ioErrno}: ${st.ioError}` : !st.configured ? 'not a replica (not seeded yet)' : undefined);
    return {
      ...(seedMark ? { seedMark } : {}),
      ...(at !== undefined && st.configured ? { lastSyncAt: at } : {}),
      syncFailing: replState === 'broken' || (replState !== 'replicating' && st.ioErrno !== 0),
      repl: { gtid: st.gtidSlavePos, replState, ...(reason ? { replReason: reason.slice(0, 250) } : {}) },
    };
  }

  async stop(): Promise<void> {
    await this.becomeStandby();
  }
}

function splitLabel(label: string): [string, number] {
  const i = label.lastIndexOf(':');
  return [label.slice(0, i), Number(label.slice(i + 1))];
}

async function connect(opts: { host: string; port: number; user: string; password: string; connectTimeout: number }): Promise<Connection> {
  const { default: mysql } = await import('mysql2/promise');
  return mysql.createConnection(opts);
}
