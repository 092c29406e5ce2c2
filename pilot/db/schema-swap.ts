import { holdTermFence, releaseTermFence } from './term-fence.ts';
import type { Connection } from 'mysql2/promise';
import type { Logger } from '../../shared/logger.ts';
import { NavigatorError, errorMessage } from '../../shared/errors.ts';
import { requalify } from './dump-guard.ts';
import type { SchemaNames, TableSnapshot } from './sync-history.ts';

// Puts a completely loaded staging schema in place of the live one on a standby's server.
//
// Guarantee (what a reader of the live schema can observe):
//  - Tables (structure and rows) change in ONE `RENAME TABLE` statement covering every table:
//    live.t -> previous.t and staging.t -> live.t for all t. MariaDB takes the metadata locks on
//    every name first, so a query or transaction sees either all old tables or all new ones,
//    never a mix and never a partly loaded table; since 10.6 the statement is also crash-atomic.
//    A transaction still reading old tables delays the swap (lock_wait_timeout) rather than
//    seeing it half-way.
//  - Views that did not change are not touched (they refer to tables by name, so they read the
//    new tables from the same instant). Changed or new views are replaced right after the swap
//    with CREATE OR REPLACE, each atomically; for those milliseconds a changed view still has its
//    old definition over the new tables.
//  - Triggers: MariaDB refuses to move a table with triggers to another schema (error 1435,
//    "Trigger in wrong schema"), so triggers are dropped from both copies just before the swap
//    and created on the new live tables just after it. For those milliseconds the live tables
//    have no triggers; a standby's service is idle (no writers), so no write can miss one.
//  - Routines are replaced with CREATE OR REPLACE after the swap (only those that changed);
//    events are moved with ALTER EVENT ... RENAME TO (live -> previous, staging -> live).
//  - If anything fails before the RENAME, the live schema is left as it was (its triggers are
//    put back). The previous copy is dropped only once the new one is fully loaded and verified.

export interface ObjectDef {
  name: string;
  /** CREATE statement as SHOW CREATE prints it, with references unqualified for its schema. */
  sql: string;
  sqlMode: string;
  collation: string;
}

export interface Inventory {
  /** Base tables (and sequences, system-versioned tables): what RENAME TABLE moves. */
  tables: string[];
  views: ObjectDef[];
  triggers: ObjectDef[];
  routines: Array<ObjectDef & { type: 'PROCEDURE' | 'FUNCTION' }>;
  events: string[];
  charset: string | undefined;
  collation: string | undefined;
}

export interface SwapOptions {
  lockWaitS: number;
  logger: Logger;
  /** The sync's primary's term: the swap goes ahead only if the target's term fence allows it (pilot/db/term-fence.ts). */
  term?: number | undefined;
}

export interface SwapResult {
  tables: number;
  views: number;
  routines: number;
  triggers: number;
  events: number;
}

const q = (name: string) => `\`${name.replace(/`/g, '``')}\``;

type Row = Record<string, unknown>;
async function rows(conn: Connection, sql: string, params: unknown[] = []): Promise<Row[]> {
  const [r] = await conn.query(sql, params);
  return r as Row[];
}

/** Everything in a schema that a sync moves, with definitions unqualified for that schema. */
export async function inventory(conn: Connection, schema: string): Promise<Inventory> {
  const sch = await rows(conn, 'SELECT DEFAULT_CHARACTER_SET_NAME AS cs, DEFAULT_COLLATION_NAME AS co FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?', [schema]);
  if (sch.length === 0) {
    return { tables: [], views: [], triggers: [], routines: [], events: [], charset: undefined, collation: undefined };
  }
  // SHOW CREATE VIEW leaves out the qualifier of the current schema.
  await conn.query(`USE ${q(schema)}`);
  const tableRows = await rows(conn, 'SELECT TABLE_NAME AS name, TABLE_TYPE AS type FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? ORDER BY TABLE_NAME', [schema]);
  const tables = tableRows.filter((r) => r.type !== 'VIEW').map((r) => String(r.name));
  const views: ObjectDef[] = [];
  for (const r of tableRows.filter((t) => t.type === 'VIEW')) {
    const [def] = await rows(conn, `SHOW CREATE VIEW ${q(String(r.name))}`);
    views.push({ name: String(r.name), sql: String(def!['Create View']), sqlMode: '', collation: String(def!['collation_connection']) });
  }
  const triggers: ObjectDef[] = [];
  const trgRows = await rows(
    conn,
    'SELECT TRIGGER_NAME AS name FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ? ORDER BY EVENT_OBJECT_TABLE, ACTION_TIMING, EVENT_MANIPULATION, ACTION_ORDER',
    [schema],
  );
  for (const r of trgRows) {
    const [def] = await rows(conn, `SHOW CREATE TRIGGER ${q(String(r.name))}`);
    triggers.push({ name: String(r.name), sql: String(def!['SQL Original Statement']), sqlMode: String(def!['sql_mode']), collation: String(def!['collation_connection']) });
  }
  const routines: Inventory['routines'] = [];
  const rtRows = await rows(conn, "SELECT ROUTINE_NAME AS name, ROUTINE_TYPE AS type FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = ? AND ROUTINE_TYPE IN ('PROCEDURE','FUNCTION') ORDER BY ROUTINE_NAME", [schema]);
  for (const r of rtRows) {
    const type = String(r.type) as 'PROCEDURE' | 'FUNCTION';
    const [def] = await rows(conn, `SHOW CREATE ${type} ${q(String(r.name))}`);
    const sql = def![type === 'PROCEDURE' ? 'Create Procedure' : 'Create Function'];
    if (sql === null || sql === undefined) {
      throw new NavigatorError('SYNC_FAILED', `cannot read the definition of ${type.toLowerCase()} ${schema}.${String(r.name)} (missing privilege?)`);
    }
    routines.push({ name: String(r.name), type, sql: String(sql), sqlMode: String(def!['sql_mode']), collation: String(def!['collation_connection']) });
  }
  const evRows = await rows(conn, 'SELECT EVENT_NAME AS name FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ? ORDER BY EVENT_NAME', [schema]);
  return {
    tables,
    views,
    triggers,
    routines,
    events: evRows.map((r) => String(r.name)),
    charset: String(sch[0]!.cs),
    collation: String(sch[0]!.co),
  };
}

/** Row counts and (optionally) CHECKSUM TABLE of every table in a schema. */
export async function tableSnapshots(conn: Connection, schema: string, tables: string[], checksums: boolean): Promise<TableSnapshot[]> {
  const out: TableSnapshot[] = [];
  const sums = new Map<string, number | null>();
  if (checksums && tables.length > 0) {
    const list = tables.map((t) => `${q(schema)}.${q(t)}`).join(', ');
    for (const r of await rows(conn, `CHECKSUM TABLE ${list}`)) {
      const name = String(r.Table).slice(schema.length + 1);
      sums.set(name, r.Checksum === null ? null : Number(r.Checksum));
    }
  }
  for (const t of tables) {
    const [c] = await rows(conn, `SELECT COUNT(*) AS n FROM ${q(schema)}.${q(t)}`);
    out.push({ name: t, rows: Number(c!.n), checksum: sums.get(t) ?? null });
  }
  return out;
}

/** Run a CREATE statement in `schema` with the sql_mode and collation it was defined with. */
async function createIn(conn: Connection, schema: string, def: ObjectDef, orReplace: boolean): Promise<void> {
  let sql = def.sql;
  if (orReplace) {
    if (!/^CREATE\s/i.test(sql)) throw new NavigatorError('SYNC_FAILED', `unexpected definition of ${def.name}: ${sql.slice(0, 60)}`);
    sql = sql.replace(/^CREATE\s/i, 'CREATE OR REPLACE ');
  }
  await conn.query(`USE ${q(schema)}`);
  await conn.query('SET SESSION sql_mode = ?', [def.sqlMode]);
  if (def.collation && /^utf8/.test(def.collation)) await conn.query('SET SESSION collation_connection = ?', [def.collation]);
  try {
    await conn.query(sql);
  } finally {
    await conn.query('SET SESSION sql_mode = DEFAULT');
    await conn.query('SET NAMES utf8mb4');
  }
}

/** Definitions from one schema made ready to run in another (backquoted self-references moved). */
function moved(defs: ObjectDef[], from: string, to: string): ObjectDef[] {
  return defs.map((d) => ({ ...d, sql: requalify(d.sql, from, to) }));
}

/**
 * Swap the staging schema in (see the guarantee at the top). The staging schema must hold a
 * complete, verified load. Leaves the old live tables in `previous` and drops `staging`.
 */
export async function swapStagingIntoLive(conn: Connection, names: SchemaNames, opts: SwapOptions): Promise<SwapResult> {
  if (opts.term === undefined) return swapUnfenced(conn, names, opts);
  // Checked here, in the session that renames, under the fence lock a promotion takes (and kills).
  await holdTermFence(conn, names.live, opts.term, opts.lockWaitS);
  try {
    return await swapUnfenced(conn, names, opts);
  } finally {
    await releaseTermFence(conn, names.live);
  }
}

async function swapUnfenced(conn: Connection, names: SchemaNames, opts: SwapOptions): Promise<SwapResult> {
  const log = opts.logger;
  const staging = await inventory(conn, names.staging);
  if (staging.charset === undefined) throw new NavigatorError('SYNC_FAILED', `staging schema ${names.staging} is missing`);
  const live = await inventory(conn, names.live);
  await conn.query('SET SESSION lock_wait_timeout = ?', [opts.lockWaitS]);

  if (live.charset === undefined) {
    await conn.query(`CREATE DATABASE ${q(names.live)} CHARACTER SET ${staging.charset} COLLATE ${staging.collation}`);
  }
  await conn.query(`DROP DATABASE IF EXISTS ${q(names.previous)}`);
  await conn.query(`CREATE DATABASE ${q(names.previous)} CHARACTER SET ${staging.charset} COLLATE ${staging.collation}`);

  // Triggers cannot move between schemas with their tables.
  for (const t of staging.triggers) await conn.query(`DROP TRIGGER ${q(names.staging)}.${q(t.name)}`);
  const stagingTableSet = new Set(staging.tables);
  // A live view named like a new table would block the rename (rare: an object changed kind).
  for (const v of live.views.filter((x) => stagingTableSet.has(x.name))) {
    await conn.query(`DROP VIEW ${q(names.live)}.${q(v.name)}`);
  }
  const droppedLiveTriggers: ObjectDef[] = [];
  try {
    for (const t of live.triggers) {
      await conn.query(`DROP TRIGGER ${q(names.live)}.${q(t.name)}`);
      droppedLiveTriggers.push(t);
    }
    const pairs = [
      ...live.tables.map((t) => `${q(names.live)}.${q(t)} TO ${q(names.previous)}.${q(t)}`),
      ...staging.tables.map((t) => `${q(names.staging)}.${q(t)} TO ${q(names.live)}.${q(t)}`),
    ];
    if (pairs.length > 0) await conn.query(`RENAME TABLE ${pairs.join(', ')}`);
  } catch (err) {
    // Nothing moved: put the live triggers back as they were.
    for (const t of droppedLiveTriggers) {
      await createIn(conn, names.live, t, false).catch((e: unknown) =>
        log.error({ event: 'dbsync.trigger_restore_failed', trigger: t.name, err: errorMessage(e) }, 'could not restore a live trigger after a failed swap'),
      );
    }
    throw new NavigatorError('SYNC_FAILED', `swap failed: ${errorMessage(err)}`, { stage: 'swap' }, { cause: err });
  }

  // From here the new tables are live; bring definitions in line.
  for (const t of moved(staging.triggers, names.staging, names.live)) await createIn(conn, names.live, t, false);
  // Old triggers follow the old tables into `previous` (best effort: it is a fallback copy).
  for (const t of moved(live.triggers, names.live, names.previous)) {
    await createIn(conn, names.previous, t, false).catch((e: unknown) =>
      log.warn({ event: 'dbsync.previous_trigger_failed', trigger: t.name, err: errorMessage(e) }, 'trigger not kept in the previous copy'),
    );
  }

  const liveViews = new Map(live.views.map((v) => [v.name, v]));
  const pending = moved(staging.views, names.staging, names.live).filter((v) => liveViews.get(v.name)?.sql !== v.sql);
  // Views may use other views: create in passes until nothing is left or no progress is made.
  while (pending.length > 0) {
    let progress = false;
    let lastErr: unknown;
    for (const v of [...pending]) {
      try {
        await createIn(conn, names.live, v, true);
        pending.splice(pending.indexOf(v), 1);
        progress = true;
      } catch (err) {
        lastErr = err;
      }
    }
    if (!progress) throw new NavigatorError('SYNC_FAILED', `cannot create view(s) ${pending.map((v) => v.name).join(', ')}: ${errorMessage(lastErr)}`, { stage: 'objects' });
  }
  const stagingViewNames = new Set(staging.views.map((v) => v.name));
  for (const v of live.views) {
    if (!stagingViewNames.has(v.name) && !stagingTableSet.has(v.name)) await conn.query(`DROP VIEW IF EXISTS ${q(names.live)}.${q(v.name)}`);
  }

  const liveRoutines = new Map(live.routines.map((r) => [`${r.type} ${r.name}`, r]));
  for (const r of staging.routines) {
    const def = { ...r, sql: requalify(r.sql, names.staging, names.live) };
    const old = liveRoutines.get(`${r.type} ${r.name}`);
    if (old && old.sql === def.sql && old.sqlMode === def.sqlMode) continue;
    await createIn(conn, names.live, def, true);
  }
  const stagingRoutines = new Set(staging.routines.map((r) => `${r.type} ${r.name}`));
  for (const r of live.routines) {
    if (!stagingRoutines.has(`${r.type} ${r.name}`)) await conn.query(`DROP ${r.type} IF EXISTS ${q(names.live)}.${q(r.name)}`);
  }

  for (const e of live.events) await conn.query(`ALTER EVENT ${q(names.live)}.${q(e)} RENAME TO ${q(names.previous)}.${q(e)}`);
  for (const e of staging.events) await conn.query(`ALTER EVENT ${q(names.staging)}.${q(e)} RENAME TO ${q(names.live)}.${q(e)}`);

  if (live.charset !== undefined && (live.charset !== staging.charset || live.collation !== staging.collation)) {
    await conn.query(`ALTER DATABASE ${q(names.live)} CHARACTER SET ${staging.charset} COLLATE ${staging.collation}`);
  }
  await conn.query(`DROP DATABASE IF EXISTS ${q(names.staging)}`);
  return {
    tables: staging.tables.length,
    views: staging.views.length,
    routines: staging.routines.length,
    triggers: staging.triggers.length,
    events: staging.events.length,
  };
}
