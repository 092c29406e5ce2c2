import type { Connection } from 'mysql2/promise';
import { NavigatorError } from '../../shared/errors.ts';
import { schemaNames } from './sync-history.ts';

// The term fence of a copy's database, kept in the copy's own server: the highest election term
// whose primary may write into it (table term_fence in the database's `DB__nav_sync` schema, which
// the sync account may already write — see deploy/examples/zabbix/scripts/schema.sh), guarded by
// a named lock. Checked where the swap happens, on the target server, in the session that runs the
// RENAME:
//
//  - A sync's swap first takes the lock, reads the fence and goes on only if its primary's term
//    is at least the fence (it raises the fence to its term), then renames, then lets go. So an
//    old primary's swap — in flight or resumed after a SIGSTOP — can never land in a copy that a
//    newer primary has written to, or that was promoted.
//  - A promotion (the copy becomes primary in term T) first kills the sessions of syncs in flight
//    into it (holders of the sync lock, and of the fence lock), then raises the fence to T under
//    the lock. Its server then
//    refuses every swap from a primary of a term below T.

/** dbsync.ts holds `nav-sync.<db>` on the target for a whole sync run. */
export const SYNC_LOCK_PREFIX = 'nav-sync.';

const q = (name: string) => `\`${name.replace(/`/g, '``')}\``;

/** The named lock of one schema's fence (GET_LOCK names are at most 64 characters). */
export function fenceLockName(database: string): string {
  return `navigator_fence:${database}`.slice(0, 64);
}

/** `DB__nav_sync`.term_fence: where the fence of `database` is kept. */
function fenceTable(database: string): string {
  return `${q(schemaNames(database).meta)}.term_fence`;
}

async function ensureTable(conn: Connection, database: string): Promise<void> {
  await conn.query(`CREATE DATABASE IF NOT EXISTS ${q(schemaNames(database).meta)}`);
  await conn.query(`CREATE TABLE IF NOT EXISTS ${fenceTable(database)} (id TINYINT UNSIGNED NOT NULL PRIMARY KEY, term BIGINT UNSIGNED NOT NULL) ENGINE=InnoDB`);
}

async function raise(conn: Connection, database: string, term: number): Promise<void> {
  await conn.query(`INSERT INTO ${fenceTable(database)} (id, term) VALUES (1, ?) ON DUPLICATE KEY UPDATE term = GREATEST(term, VALUES(term))`, [term]);
}

/** The fence of `database` on this server (0: none yet). */
export async function readFence(conn: Connection, database: string): Promise<number> {
  try {
    const [rows] = await conn.query(`SELECT term FROM ${fenceTable(database)} WHERE id = 1`);
    const r = (rows as Array<{ term: number | string }>)[0];
    return r ? Number(r.term) : 0;
  } catch (err) {
    if ((err as { code?: string }).code === 'ER_NO_SUCH_TABLE' || (err as { code?: string }).code === 'ER_BAD_DB_ERROR') return 0;
    throw err;
  }
}

/**
 * Sync side, on the target's session that will run the swap: hold the fence lock and check the
 * primary's `term` against the fence (raising it to `term`). Throws SYNC_FAILED when a newer term
 * fenced this copy. The lock stays held until `releaseTermFence` or the session ends.
 */
export async function holdTermFence(conn: Connection, database: string, term: number, lockWaitS: number): Promise<void> {
  if (!Number.isInteger(term) || term < 0) throw new NavigatorError('SYNC_FAILED', `fenced: the sync's copy is no longer primary; no swap into ${database}`, { stage: 'swap' });
  await ensureTable(conn, database);
  const [got] = await conn.query('SELECT GET_LOCK(?, ?) AS got', [fenceLockName(database), lockWaitS]);
  if (Number((got as Array<{ got: number | null }>)[0]?.got) !== 1) {
    throw new NavigatorError('SYNC_FAILED', `term fence of ${database}: lock not obtained within ${lockWaitS} s (a promotion or another swap holds it)`, { stage: 'swap' });
  }
  const fence = await readFence(conn, database);
  if (fence > term) {
    await releaseTermFence(conn, database);
    throw new NavigatorError('SYNC_FAILED', `fenced: this copy's database belongs to term ${fence}; a primary of term ${term} may not swap into it`, { stage: 'swap', fence, term });
  }
  await raise(conn, database, term);
}

export async function releaseTermFence(conn: Connection, database: string): Promise<void> {
  await conn.query('SELECT RELEASE_LOCK(?)', [fenceLockName(database)]).catch(() => undefined);
}

/**
 * Promotion side, on the copy's own server: kill the session holding the fence lock (an
 * in-flight swap of an older primary), then raise the fence to `term`. Returns the sessions killed.
 */
export async function raiseTermFence(conn: Connection, database: string, term: number, lockWaitS = 10): Promise<{ killed: number }> {
  await ensureTable(conn, database);
  const lock = fenceLockName(database);
  let killed = 0;
  const killHolder = async (name: string) => {
    const [held] = await conn.query('SELECT IS_USED_LOCK(?) AS id', [name]);
    const id = (held as Array<{ id: number | null }>)[0]?.id;
    if (id !== null && id !== undefined) {
      await conn.query(`KILL ${Number(id)}`).catch(() => undefined);
      killed++;
    }
  };
  for (let i = 0; i < 5; i++) {
    // The session of a sync in flight into this copy holds `nav-sync.<db>` from start to swap
    // (dbsync.ts): killed, it can never swap. Then whoever holds the fence lock.
    await killHolder(`${SYNC_LOCK_PREFIX}${database}`);
    await killHolder(lock);
    const [got] = await conn.query('SELECT GET_LOCK(?, ?) AS got', [lock, i === 4 ? lockWaitS : 1]);
    if (Number((got as Array<{ got: number | null }>)[0]?.got) === 1) {
      try {
        await raise(conn, database, term);
      } finally {
        await conn.query('SELECT RELEASE_LOCK(?)', [lock]).catch(() => undefined);
      }
      return { killed };
    }
  }
  throw new NavigatorError('SYNC_FAILED', `term fence of ${database}: could not take its lock to raise it to term ${term}`);
}
