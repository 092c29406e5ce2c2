import mysql, { type Connection } from 'mysql2/promise';
import type { Logger } from '../../shared/logger.ts';
import { SystemClock, type Clock } from '../../shared/clock.ts';
import { DbSyncSection } from '../../shared/config.ts';
import { NavigatorError, errorMessage } from '../../shared/errors.ts';
import { MySqlEndpoint, endpointLabel, type MySqlEndpointInput } from './mysql-credentials.ts';
import { SyncLoop, retryDelayMs } from './sync-loop.ts';
import { seedFromSnapshot, type SeedResult } from './seed.ts';
import { markSeeded, markSeeding } from './seed-marker.ts';
import {
  brokenReason,
  extraGtids,
  gtidCount,
  readReplicaStatus,
  replicationPassword,
  startReplicating,
  type ReplicaStatus,
} from './replication.ts';

// The primary's side of one standby in replicate/semisync mode (one keeper per standby, run only
// by a primary that holds the lease — that is the "only the current term's primary is a source"
// check when re-pointing). Every replicaCheckMs it reads the standby's replication state and:
//   - replicating from us, healthy: reports lag (seconds and transactions) and nothing else;
//   - stopped without an error: starts it again;
//   - broken (binlog purged before it caught up, an SQL error): reseeds it;
//   - pointed at another source (the previous primary): re-points it to us by GTID, unless it
//     holds transactions we lack (a diverged old primary) — then `onDiverged` saves them first
//     and it is reseeded;
//   - never seeded: seeds it (seed.ts) and starts replication from the snapshot's position.
// Failures retry with exponential backoff (retryBaseMs … retryBackoffMaxMs).

export type ReplicaState = 'seeding' | 'replicating' | 'connecting' | 'broken' | 'stopped' | 'unknown';

export interface ReplicaKeeperStatus {
  target: string;
  state: ReplicaState;
  /** Why it is broken / the last failure. */
  reason: string | undefined;
  lagS: number | null;
  lagTx: number | null;
  gtid: string;
  lastSeed: (SeedResult & { at: number }) | undefined;
  consecutiveFailures: number;
}

export interface DivergedInfo {
  target: string;
  targetEndpoint: MySqlEndpoint;
  extra: ReturnType<typeof extraGtids>;
  targetBinlogPos: string;
}

export interface ReplicaKeeperOptions {
  /** The primary's server as Navigator reaches it (usually 127.0.0.1). */
  source: MySqlEndpointInput;
  /** Where standbys reach the primary's server (this host's address). */
  sourceAddress: string;
  target: MySqlEndpointInput;
  /** server_id the standby gets. */
  targetServerId: number;
  database: string;
  semisync: boolean;
  logger: Logger;
  clock?: Clock;
  settings?: Partial<ReturnType<typeof DbSyncSection.parse>>;
  /**
   * Checked before each round: false when this copy no longer holds the primary's lease (a paused
   * or isolated old primary waking up before its pilot noticed): it then touches no standby.
   */
  mayAct?: () => boolean;
  /** A diverged old primary: save its extra transactions (before it is reseeded). */
  onDiverged?: (info: DivergedInfo) => Promise<void>;
}

export class ReplicaKeeper {
  private readonly source: MySqlEndpoint;
  private readonly target: MySqlEndpoint;
  private readonly settings: ReturnType<typeof DbSyncSection.parse>;
  private readonly loop: SyncLoop<void, { force?: 'seed' }>;
  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly label: string;
  private st: ReplicaKeeperStatus;
  /** Reseeds of a broken replica in a row (reset once it has replicated for retryBackoffMaxMs). */
  private reseeds = 0;
  /** The diverged transactions last saved (not saved twice). */
  private savedExtra: string | undefined;

  constructor(private readonly opts: ReplicaKeeperOptions) {
    this.source = MySqlEndpoint.parse(opts.source);
    this.target = MySqlEndpoint.parse(opts.target);
    this.settings = DbSyncSection.parse(opts.settings ?? {});
    this.clock = opts.clock ?? new SystemClock();
    this.label = endpointLabel(this.target);
    this.log = opts.logger.child({ component: 'replication', database: opts.database, target: this.label });
    this.st = { target: this.label, state: 'unknown', reason: undefined, lagS: null, lagTx: null, gtid: '', lastSeed: undefined, consecutiveFailures: 0 };
    this.loop = new SyncLoop({
      clock: this.clock,
      intervalMs: this.settings.replicaCheckMs,
      retryBaseMs: this.settings.retryBaseMs,
      retryMaxMs: this.settings.retryBackoffMaxMs,
      run: (signal, arg) => this.check(signal, arg?.force === 'seed'),
    });
  }

  start(): void {
    this.loop.start();
  }

  async stop(): Promise<void> {
    await this.loop.stop();
  }

  /** One check now (waits for one in progress). */
  async checkNow(): Promise<void> {
    await this.loop.runNow({});
  }

  status(): ReplicaKeeperStatus {
    return { ...this.st, consecutiveFailures: this.loop.state.consecutiveFailures };
  }

  private replPassword(): string {
    return replicationPassword(this.source.password, this.opts.database);
  }

  private scrub(text: string): string {
    let out = text;
    for (const pw of [this.source.password, this.target.password, this.replPassword()]) if (pw.length >= 3) out = out.split(pw).join('[redacted]');
    return out;
  }

  private connect(ep: MySqlEndpoint): Promise<Connection> {
    return mysql.createConnection({
      ...(ep.socket ? { socketPath: ep.socket } : { host: ep.host, port: ep.port }),
      user: ep.user,
      password: ep.password,
      connectTimeout: 5000,
      supportBigNumbers: true,
    });
  }

  private async check(signal: AbortSignal, forceSeed: boolean): Promise<void> {
    if (this.opts.mayAct && !this.opts.mayAct()) {
      this.log.debug({ event: 'replication.not_primary' }, 'not holding the lease: leaving the standby alone');
      return;
    }
    let src: Connection | undefined;
    let dst: Connection | undefined;
    try {
      src = await this.connect(this.source);
      dst = await this.connect(this.target);
      const st = await readReplicaStatus(dst);
      const ours = st.configured && st.masterHost === this.opts.sourceAddress && st.masterPort === this.source.port;
      const [srcPos] = (await src.query('SELECT @@GLOBAL.gtid_binlog_pos AS bp, @@GLOBAL.gtid_binlog_state AS bs'))[0] as Array<{ bp: string; bs: string }>;
      const primaryPos = String(srcPos?.bp ?? '');
      this.st.gtid = st.gtidSlavePos;
      if (ours && !forceSeed) {
        const broken = brokenReason(st);
        if (broken) {
          this.st.state = 'broken';
          this.st.reason = this.scrub(broken);
          // A replica that breaks again soon after its reseed is reseeded with backoff (a full
          // dump each replicaCheckMs would hammer both servers).
          const wait = retryDelayMs(this.reseeds + 1, this.settings.retryBaseMs, this.settings.retryBackoffMaxMs);
          const sinceSeed = this.st.lastSeed ? this.clock.now() - this.st.lastSeed.at : Number.POSITIVE_INFINITY;
          if (this.reseeds > 0 && sinceSeed < wait) {
            throw new NavigatorError('SYNC_FAILED', `replication broken again ${Math.round(sinceSeed / 1000)} s after its reseed (${broken}); next reseed in ${Math.round((wait - sinceSeed) / 1000)} s`);
          }
          this.reseeds++;
          this.log.warn({ event: 'replication.broken', reason: this.scrub(broken), reseeds: this.reseeds }, 'standby replication broken: reseeding it');
          await this.seed(dst, signal, broken);
          return;
        }
        if (this.reseeds > 0 && this.st.lastSeed && this.clock.now() - this.st.lastSeed.at > this.settings.retryBackoffMaxMs) this.reseeds = 0;
        // A standby's server that restarted lost what Navigator set at run time: its own
        // server_id (two replicas with one id push each other off the source) and read_only.
        if (st.serverId !== this.opts.targetServerId || !st.readOnly) {
          this.log.info({ event: 'replication.settings_restored', serverId: st.serverId, readOnly: st.readOnly }, 'standby server restarted: server_id and read_only set again');
          await dst.query('SET GLOBAL read_only = 1');
          if (st.serverId !== this.opts.targetServerId) {
            await dst.query('STOP SLAVE');
            await dst.query('SET GLOBAL server_id = ?', [this.opts.targetServerId]);
            await dst.query('START SLAVE');
          }
        }
        if (st.ioRunning === 'No' || st.sqlRunning === 'No') {
          this.log.info({ event: 'replication.restarted', io: st.ioRunning, sql: st.sqlRunning }, 'standby replication was stopped: starting it');
          await dst.query('START SLAVE');
        }
        this.st.state = st.ioRunning === 'Yes' && st.sqlRunning === 'Yes' ? 'replicating' : 'connecting';
        this.st.reason = st.ioErrno ? this.scrub(`${st.ioErrno}: ${st.ioError}`) : undefined;
        this.st.lagS = st.secondsBehind;
        this.st.lagTx = st.gtidSlavePos || primaryPos ? Math.max(0, safeCount(primaryPos) - safeCount(st.gtidSlavePos)) : 0;
        return;
      }
      // Not (healthily) ours: a diverged old primary keeps what we lack — saved before anything.
      const [tb] = (await dst.query('SELECT @@GLOBAL.gtid_binlog_state AS s'))[0] as Array<{ s: string }>;
      const targetState = String(tb?.s ?? '');
      const extra = extraGtids(targetState, String(srcPos?.bs ?? ''));
      this.log.debug({ event: 'replication.compare', targetState, sourceState: String(srcPos?.bs ?? ''), extra }, 'GTID comparison before re-pointing or seeding');
      if (extra.length > 0) {
        this.log.warn({ event: 'replication.diverged', extra, targetBinlogPos: st.gtidBinlogPos }, 'the standby holds transactions the primary lacks (a diverged old primary): saving them, then reseeding');
        // Saved once: a reseed that failed and is retried finds the same transactions again.
        const key = JSON.stringify(extra);
        if (this.opts.onDiverged && this.savedExtra !== key) {
          await this.opts.onDiverged({ target: this.label, targetEndpoint: this.target, extra, targetBinlogPos: st.gtidBinlogPos });
          this.savedExtra = key;
        }
        await this.seed(dst, signal, 'diverged');
        return;
      }
      if (st.configured && st.gtidSlavePos && !forceSeed) {
        this.log.info({ event: 'replication.repointed', from: st.masterHost, to: this.opts.sourceAddress, gtid: st.gtidSlavePos }, 'standby re-pointed to this primary');
        await startReplicating(dst, this.opts.database, this.sourceSpec(), { serverId: this.opts.targetServerId, semisync: this.opts.semisync });
        this.st.state = 'connecting';
        this.st.reason = undefined;
        return;
      }
      await this.seed(dst, signal, forceSeed ? 'requested' : 'not a replica yet');
    } catch (err) {
      const message = this.scrub(errorMessage(err));
      this.st.reason = message;
      if (this.st.state === 'seeding') this.st.state = 'broken';
      this.log.error({ event: 'replication.check_failed', err: message, consecutiveFailures: this.loop.state.consecutiveFailures + 1 }, 'standby replication check failed; retrying with backoff');
      throw new NavigatorError('SYNC_FAILED', message);
    } finally {
      await src?.end().catch(() => undefined);
      await dst?.end().catch(() => undefined);
    }
  }

  private sourceSpec() {
    return { host: this.opts.sourceAddress, port: this.source.port, user: this.settings.replicationUser, password: this.replPassword() };
  }

  private async seed(dst: Connection, signal: AbortSignal, why: string): Promise<void> {
    this.st.state = 'seeding';
    this.log.info({ event: 'replication.seed_started', why: this.scrub(why) }, 'seeding the standby from a consistent snapshot');
    // Marked first: a seed stopped half-way leaves a copy that must not stand for election.
    await markSeeding(dst, this.opts.database, Date.now());
    await dst.query('STOP SLAVE');
    await dst.query('RESET SLAVE ALL');
    // The load writes as the service account (which need not hold READ ONLY ADMIN); nothing else
    // writes to a standby (its service runs only on the primary). startReplicating sets it back.
    await dst.query('SET GLOBAL read_only = 0');
    const result = await seedFromSnapshot({
      source: this.source,
      target: this.target,
      database: this.opts.database,
      timeoutMs: this.settings.syncTimeoutMs,
      signal,
      settings: this.settings,
      scrub: (s) => this.scrub(s),
    });
    // The standby's own binlog restarts at the snapshot's position: if it is promoted later,
    // standbys re-pointed to it find their position in it.
    await dst.query('RESET MASTER');
    if (result.gtid) {
      await dst.query('SET GLOBAL gtid_binlog_state = ?', [result.gtid]);
    }
    await dst.query('SET GLOBAL gtid_slave_pos = ?', [result.gtid]);
    await startReplicating(dst, this.opts.database, this.sourceSpec(), { serverId: this.opts.targetServerId, semisync: this.opts.semisync });
    await markSeeded(dst, this.opts.database, Date.now());
    this.st.lastSeed = { ...result, at: this.clock.now() };
    this.st.state = 'connecting';
    this.st.reason = undefined;
    this.log.info({ event: 'replication.seeded', method: result.method, gtid: result.gtid, bytes: result.bytes, durationMs: result.durationMs }, 'standby seeded; replicating from the snapshot position');
  }
}

function safeCount(pos: string): number {
  try {
    return gtidCount(pos);
  } catch {
    return 0;
  }
}

export type { ReplicaStatus };
