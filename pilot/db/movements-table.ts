import { randomUUID } from 'node:crypto';
import mysql, { type Pool, type PoolOptions } from 'mysql2/promise';
import type { Logger } from '../../shared/logger.ts';
import { NavigatorError, errorMessage } from '../../shared/errors.ts';
import { SystemClock, type Clock, type TimerHandle } from '../../shared/clock.ts';
import { MovementRecord, type MovementRecordInput } from '../../shared/movement.ts';

// Records movements of a service: the pilot that caused a movement calls record(). The record is
// gossiped to every depot and appended to the local journal first (that is what survives the
// primary dying a moment later), then written to `navigator_movements` in the service's own
// database. A failed database write is queued and retried; nothing is dropped.

export const MOVEMENTS_TABLE = 'navigator_movements';

const CREATE_TABLE = `CREATE TABLE IF NOT EXISTS \`${MOVEMENTS_TABLE}\` (
  id VARCHAR(128) NOT NULL PRIMARY KEY,
  time_ms BIGINT NOT NULL COMMENT 'when the movement completed, ms since epoch',
  service VARCHAR(128) NOT NULL,
  role VARCHAR(16) NOT NULL,
  host VARCHAR(253) NOT NULL,
  address VARCHAR(64) NOT NULL,
  from_host VARCHAR(253) NOT NULL DEFAULT '',
  event VARCHAR(16) NOT NULL,
  failover TINYINT(1) NOT NULL,
  reason TEXT NOT NULL,
  term BIGINT NOT NULL,
  timings JSON NOT NULL COMMENT 'detect, elect, takeover, ship, boot in ms',
  KEY by_time (time_ms),
  KEY by_service_time (service, time_ms)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4`;

const COLUMNS = '(id, time_ms, service, role, host, address, from_host, event, failover, reason, term, timings)';

/** What the recorder needs from a journal: the depot's Journal fits. */
export interface MovementJournal {
  append(record: MovementRecord): Promise<boolean>;
  all(): readonly MovementRecord[];
}

export interface MovementRecorderOptions {
  /** mysql2 connection options of the service's own database (host/port or socketPath, user, password, database). */
  db: PoolOptions;
  journal: MovementJournal;
  /** Gossip the record to every depot (movementMessage on the depot's gossip bus). */
  publish: (record: MovementRecord) => Promise<void>;
  logger: Logger;
  clock?: Clock;
  /** First retry delay of a failed DB write; doubles up to retryMaxMs. */
  retryMs?: number;
  retryMaxMs?: number;
}

/** A row of navigator_movements read back as a record. */
export type MovementRow = MovementRecord;

export class MovementRecorder {
  private readonly pool: Pool;
  private readonly journal: MovementJournal;
  private readonly publish: (record: MovementRecord) => Promise<void>;
  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly retryMs: number;
  private readonly retryMaxMs: number;
  /** Records not yet in the database, oldest first. */
  private readonly queue = new Map<string, MovementRecord>();
  private tableReady = false;
  private retryTimer: TimerHandle | undefined;
  private retryDelay: number;
  private flushing: Promise<void> | undefined;
  private stopped = false;

  constructor(opts: MovementRecorderOptions) {
    this.pool = mysql.createPool({ connectionLimit: 2, connectTimeout: 3000, ...opts.db });
    // A dead server must not crash the pilot through an unhandled 'error' event.
    (this.pool as unknown as { on(e: string, f: (err: Error) => void): void }).on?.('error', () => undefined);
    this.journal = opts.journal;
    this.publish = opts.publish;
    this.log = opts.logger.child({ component: 'movements' });
    this.clock = opts.clock ?? new SystemClock();
    this.retryMs = opts.retryMs ?? 1000;
    this.retryMaxMs = opts.retryMaxMs ?? 60_000;
    this.retryDelay = this.retryMs;
  }

  /** Records waiting for the database. */
  get pendingCount(): number {
    return this.queue.size;
  }

  /**
   * Record one movement: id and time are filled in when missing. Resolves with the stored record
   * once it is journaled and gossiped (the database write may still be queued: see pendingCount).
   */
  async record(input: Omit<MovementRecordInput, 'id' | 'time'> & { id?: string; time?: number }): Promise<MovementRecord> {
    if (this.stopped) throw new NavigatorError('CONFLICT', 'movement recorder is stopped');
    const parsed = MovementRecord.safeParse({ id: randomUUID(), time: this.clock.now(), ...input });
    if (!parsed.success) {
      const i = parsed.error.issues[0];
      throw new NavigatorError('BAD_REQUEST', `invalid movement record: ${i ? `${i.path.join('.') || '(root)'}: ${i.message}` : 'invalid'}`);
    }
    const record = parsed.data;
    this.queue.set(record.id, record);
    const [journaled, gossiped] = await Promise.allSettled([this.journal.append(record), this.publish(record)]);
    if (journaled.status === 'rejected') {
      this.log.error({ event: 'movement-journal-failed', id: record.id, err: errorMessage(journaled.reason) }, 'could not journal a movement');
    }
    if (gossiped.status === 'rejected') {
      this.log.warn({ event: 'movement-gossip-failed', id: record.id, err: errorMessage(gossiped.reason) }, 'could not gossip a movement');
    }
    if (journaled.status === 'rejected' && gossiped.status === 'rejected') {
      // Neither copy left this process: the database is the last chance, so wait for it.
      await this.flush();
      if (this.queue.has(record.id)) {
        throw new NavigatorError('INTERNAL', `movement ${record.id} could not be journaled, gossiped or written to the database; it stays queued`);
      }
    } else {
      void this.flush();
    }
    this.log.info({ event: 'movement', id: record.id, service: record.service, movement: record.event, host: record.host, failover: record.failover, term: record.term }, `movement: ${record.event} ${record.role} on ${record.host}`);
    return record;
  }

  /**
   * Write every queued record and every journal record of `service` the table may lack: after a
   * failover the new primary's database only has what the last DB sync brought. Idempotent:
   * rows are keyed by id. Resolves how many records were written.
   */
  async reconcile(service: string): Promise<number> {
    for (const r of this.journal.all()) if (r.service === service && !this.queue.has(r.id)) this.queue.set(r.id, r);
    const before = this.queue.size;
    await this.flush();
    return before - this.queue.size;
  }

  /** Try to write the queue now; on failure schedule a retry with backoff. */
  flush(): Promise<void> {
    if (this.flushing) return this.flushing;
    this.flushing = this.writeQueue().finally(() => {
      this.flushing = undefined;
    });
    return this.flushing;
  }

  private async writeQueue(): Promise<void> {
    if (this.queue.size === 0) return;
    const batch = [...this.queue.values()].slice(0, 200);
    try {
      if (!this.tableReady) {
        await this.pool.query(CREATE_TABLE);
        this.tableReady = true;
      }
      const placeholders = batch.map(() => '(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)').join(', ');
      const values = batch.flatMap((r) => [r.id, r.time, r.service, r.role, r.host, r.address, r.fromHost, r.event, r.failover ? 1 : 0, r.reason, r.term, JSON.stringify(r.timings)]);
      // Re-writing a row that is already there is a no-op, so retries and reconciles are safe.
      await this.pool.query(`INSERT INTO \`${MOVEMENTS_TABLE}\` ${COLUMNS} VALUES ${placeholders} ON DUPLICATE KEY UPDATE id = id`, values);
      for (const r of batch) this.queue.delete(r.id);
      this.retryDelay = this.retryMs;
      if (this.queue.size > 0) return this.writeQueue();
    } catch (err) {
      this.tableReady = false;
      this.log.warn({ event: 'movement-db-write-failed', queued: this.queue.size, retryInMs: this.retryDelay, err: errorMessage(err) }, 'could not write movements to the database; will retry');
      this.scheduleRetry();
    }
  }

  private scheduleRetry(): void {
    if (this.stopped || this.retryTimer) return;
    const delay = this.retryDelay;
    this.retryDelay = Math.min(this.retryDelay * 2, this.retryMaxMs);
    this.retryTimer = this.clock.setTimeout(() => {
      this.retryTimer = undefined;
      void this.flush();
    }, delay);
  }

  /** Movements in the table, newest first (what an admin sees in the service's DB). */
  async read(service?: string, limit = 100): Promise<MovementRow[]> {
    const [rows] = await this.pool.query(
      `SELECT id, time_ms, service, role, host, address, from_host, event, failover, reason, term, timings FROM \`${MOVEMENTS_TABLE}\`${service ? ' WHERE service = ?' : ''} ORDER BY time_ms DESC, id DESC LIMIT ?`,
      service ? [service, limit] : [limit],
    );
    return (rows as Array<Record<string, unknown>>).map((row) =>
      MovementRecord.parse({
        id: row.id,
        time: Number(row.time_ms),
        service: row.service,
        role: row.role,
        host: row.host,
        address: row.address,
        fromHost: row.from_host,
        event: row.event,
        failover: Number(row.failover) === 1,
        reason: row.reason,
        term: Number(row.term),
        timings: typeof row.timings === 'string' ? JSON.parse(row.timings) : row.timings,
      }),
    );
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.clock.clear(this.retryTimer);
    this.retryTimer = undefined;
    await this.flushing?.catch(() => undefined);
    if (this.queue.size > 0) {
      this.log.warn({ event: 'movement-db-unwritten', queued: this.queue.size }, 'stopping with movements not in the database (they are in the journal; reconcile() writes them later)');
    }
    await this.pool.end().catch(() => undefined);
  }
}
