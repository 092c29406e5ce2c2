import type { Connection } from 'mysql2/promise';
import { schemaNames } from './sync-history.ts';

// replicate/semisync: a seed loads the primary's snapshot straight into the standby's live
// database (pilot/db/seed.ts), table after table. Stopped half-way (the primary's host lost
// power, the keeper was aborted), it leaves a database that is neither the old copy nor the new
// one, and the standby is no replica (RESET SLAVE ALL ran first), just like an old primary that
// has not been re-pointed yet. So the keeper marks the standby's server before and after each
// seed, in `<db>__nav_sync`.`seed_state`, and the standby's pilot reads the mark: a copy whose
// last seed did not complete must not stand for election (pilot/data-completeness.ts).
// That schema is the standby's own: it is not replicated (replicate filter: the database and
// `<db>__nav_repl` only), not in the seed's dump, and the mark is not binary-logged: a local
// transaction in the standby's binlog would read as a diverged copy once it is compared by GTID.

export type SeedMark = 'seeding' | 'complete';

function table(database: string): string {
  return `\`${schemaNames(database).meta}\`.seed_state`;
}

async function write(c: Connection, database: string, mark: SeedMark, nowMs: number): Promise<void> {
  await c.query('SET SESSION sql_log_bin = 0');
  try {
    await c.query(`CREATE DATABASE IF NOT EXISTS \`${schemaNames(database).meta}\``);
    await c.query(`CREATE TABLE IF NOT EXISTS ${table(database)} (id TINYINT PRIMARY KEY, state VARCHAR(16) NOT NULL, at_ms BIGINT NOT NULL) ENGINE=InnoDB`);
    await c.query(`REPLACE INTO ${table(database)} (id, state, at_ms) VALUES (1, ?, ?)`, [mark, nowMs]);
  } finally {
    await c.query('SET SESSION sql_log_bin = 1');
  }
}

/** Before a seed touches the standby's live database. */
export function markSeeding(c: Connection, database: string, nowMs: number): Promise<void> {
  return write(c, database, 'seeding', nowMs);
}

/** After the seed loaded completely and replication was started from its position. */
export function markSeeded(c: Connection, database: string, nowMs: number): Promise<void> {
  return write(c, database, 'complete', nowMs);
}

/** The standby's own mark; undefined: never marked (a copy seeded before the mark existed, or never seeded). */
export async function readSeedMark(c: Connection, database: string): Promise<SeedMark | undefined> {
  try {
    const [r] = (await c.query(`SELECT state FROM ${table(database)} WHERE id = 1`)) as unknown as [Array<{ state: string }>];
    const state = r[0]?.state;
    return state === 'seeding' || state === 'complete' ? state : undefined;
  } catch {
    // No such schema or table: never marked.
    return undefined;
  }
}
