import type { Connection } from 'mysql2/promise';
import { z } from 'zod';
import { NavigatorError } from '../../shared/errors.ts';

// Every sync attempt into a standby's server is recorded on that server, next to the copy it
// describes, in `<db>__nav_sync`.`sync_history`. The standby's pilot reads its last good sync
// from there for its heartbeat (lastSyncAt, syncFailing), whoever ran the sync and even after a
// restart of either pilot. The record is written after the swap, so a crash between the two
// leaves an older time: the RPO shown is then too large, never too small.

const SCHEMA_SUFFIX = { staging: '__nav_staging', previous: '__nav_previous', meta: '__nav_sync' } as const;
const LONGEST_SUFFIX = Math.max(...Object.values(SCHEMA_SUFFIX).map((s) => s.length));

export interface SchemaNames {
  live: string;
  staging: string;
  previous: string;
  meta: string;
}

/** The schemas Navigator uses on a standby's server for database `db`; refuses unsafe names. */
export function schemaNames(db: string): SchemaNames {
  if (!/^[A-Za-z0-9_$]+$/.test(db)) {
    throw new NavigatorError('BAD_REQUEST', `database name ${JSON.stringify(db)} is not supported: use letters, digits, _ and $ only`);
  }
  if (db.length + LONGEST_SUFFIX > 64) {
    throw new NavigatorError('BAD_REQUEST', `database name ${db} is too long: at most ${64 - LONGEST_SUFFIX} characters, so ${db}${SCHEMA_SUFFIX.previous} fits the 64-character limit`);
  }
  if (Object.values(SCHEMA_SUFFIX).some((s) => db.endsWith(s))) {
    throw new NavigatorError('BAD_REQUEST', `database name ${db} ends with a suffix Navigator uses for its own schemas`);
  }
  return { live: db, staging: db + SCHEMA_SUFFIX.staging, previous: db + SCHEMA_SUFFIX.previous, meta: db + SCHEMA_SUFFIX.meta };
}

export const TableSnapshot = z.object({
  name: z.string(),
  rows: z.number().int().nonnegative(),
  checksum: z.number().nullable().describe('CHECKSUM TABLE of the loaded copy (null when not computed)'),
});
export type TableSnapshot = z.infer<typeof TableSnapshot>;

/** One successful sync. */
export const SyncRecord = z.object({
  database: z.string(),
  source: z.string().describe('host:port of the primary\'s server'),
  target: z.string().describe('host:port of the standby\'s server'),
  snapshotAt: z.number().describe('ms since epoch when the dump started: the copy holds every write committed before it (RPO origin)'),
  finishedAt: z.number().describe('ms since epoch when the copy went live'),
  durationMs: z.number().nonnegative(),
  dumpBytes: z.number().int().nonnegative(),
  tables: z.array(TableSnapshot),
  views: z.number().int().nonnegative(),
  routines: z.number().int().nonnegative(),
  triggers: z.number().int().nonnegative(),
  events: z.number().int().nonnegative(),
  writesStopped: z.boolean().describe('Writes on the primary were stopped (read_only) for this sync: nothing can be newer'),
  stagesMs: z
    .object({ transfer: z.number(), verify: z.number(), swap: z.number() })
    .optional()
    .describe('Where the time went: dump+load, counts/checksums of the copy, swap'),
});
export type SyncRecord = z.infer<typeof SyncRecord>;

export interface SyncFailure {
  database: string;
  source: string;
  target: string;
  at: number;
  stage: string;
  message: string;
}

export interface SyncHistoryState {
  lastGood: SyncRecord | undefined;
  /** The most recent attempt, good or not. */
  lastAttempt: { at: number; ok: boolean; stage?: string; message?: string } | undefined;
}

const KEEP_ROWS = 1000;

async function ensureHistoryTable(conn: Connection, names: SchemaNames): Promise<void> {
  await conn.query(`CREATE DATABASE IF NOT EXISTS \`${names.meta}\``);
  await conn.query(`CREATE TABLE IF NOT EXISTS \`${names.meta}\`.sync_history (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    ok TINYINT(1) NOT NULL,
    at_ms BIGINT NOT NULL COMMENT 'snapshot time for a good sync, attempt time for a failure',
    finished_ms BIGINT NOT NULL,
    source VARCHAR(255) NOT NULL,
    stage VARCHAR(32) NULL,
    message TEXT NULL,
    record LONGTEXT NULL COMMENT 'SyncRecord as JSON',
    KEY by_ok (ok, id)
  ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4`);
}

export async function recordGoodSync(conn: Connection, names: SchemaNames, record: SyncRecord): Promise<void> {
  await ensureHistoryTable(conn, names);
  await conn.query(`INSERT INTO \`${names.meta}\`.sync_history (ok, at_ms, finished_ms, source, record) VALUES (1, ?, ?, ?, ?)`, [
    record.snapshotAt,
    record.finishedAt,
    record.source,
    JSON.stringify(record),
  ]);
  await trim(conn, names);
}

export async function recordFailedSync(conn: Connection, names: SchemaNames, failure: SyncFailure): Promise<void> {
  await ensureHistoryTable(conn, names);
  await conn.query(`INSERT INTO \`${names.meta}\`.sync_history (ok, at_ms, finished_ms, source, stage, message) VALUES (0, ?, ?, ?, ?, ?)`, [
    failure.at,
    failure.at,
    failure.source,
    failure.stage.slice(0, 32),
    failure.message.slice(0, 4000),
  ]);
  await trim(conn, names);
}

async function trim(conn: Connection, names: SchemaNames): Promise<void> {
  await conn.query(`DELETE FROM \`${names.meta}\`.sync_history WHERE id <= (SELECT id FROM (SELECT id FROM \`${names.meta}\`.sync_history ORDER BY id DESC LIMIT 1 OFFSET ${KEEP_ROWS}) AS cut)`);
}

/** Last good sync and last attempt recorded on a standby's server (nothing yet: both undefined). */
export async function readSyncHistory(conn: Connection, database: string): Promise<SyncHistoryState> {
  const names = schemaNames(database);
  const [tables] = await conn.query(
    "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = 'sync_history'",
    [names.meta],
  );
  if ((tables as unknown[]).length === 0) return { lastGood: undefined, lastAttempt: undefined };
  const [good] = await conn.query(`SELECT record FROM \`${names.meta}\`.sync_history WHERE ok = 1 ORDER BY id DESC LIMIT 1`);
  const [last] = await conn.query(`SELECT ok, at_ms, stage, message FROM \`${names.meta}\`.sync_history ORDER BY id DESC LIMIT 1`);
  const goodRow = (good as Array<{ record: string }>)[0];
  const lastRow = (last as Array<{ ok: number; at_ms: string | number; stage: string | null; message: string | null }>)[0];
  return {
    lastGood: goodRow ? SyncRecord.parse(JSON.parse(goodRow.record)) : undefined,
    lastAttempt: lastRow
      ? {
          at: Number(lastRow.at_ms),
          ok: lastRow.ok === 1,
          ...(lastRow.stage ? { stage: lastRow.stage } : {}),
          ...(lastRow.message ? { message: lastRow.message } : {}),
        }
      : undefined,
  };
}

/**
 * Heartbeat fields (ContainerReport.lastSyncAt / syncFailing) of a standby from its history:
 * failing when the last attempt failed, or when no good sync happened for two intervals plus
 * slack (the primary's pilot that should sync it may be gone or stuck).
 */
export function syncHeartbeatFields(
  state: SyncHistoryState,
  now: number,
  intervalMs: number,
): { lastSyncAt?: number; syncFailing: boolean } {
  const lastSyncAt = state.lastGood?.snapshotAt;
  const stale = lastSyncAt === undefined || now - lastSyncAt > 2 * intervalMs + 30_000;
  const failed = state.lastAttempt !== undefined && !state.lastAttempt.ok;
  return { ...(lastSyncAt !== undefined ? { lastSyncAt } : {}), syncFailing: failed || (stale && state.lastAttempt !== undefined) };
}
