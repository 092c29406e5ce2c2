import { createHmac } from 'node:crypto';
import type { Connection } from 'mysql2/promise';
import { NavigatorError } from '../../shared/errors.ts';

// MariaDB's own GTID replication, driven over a client connection (mysql2). Navigator never copies
// rows itself outside the seed (seed.ts): it sets up the primary (server_id, binary log checks,
// the replication account, the heartbeat table), points standbys at it, reads their state, and
// promotes one. Every statement here goes over the SQL connection: the replication password is
// never on a command line (CHANGE MASTER keeps it in the standby's master.info, a file of the
// mysql user in its data directory, as MariaDB does).
//
// Fencing: a standby replicates only from the address its pilot was told is the current term's
// primary (ReplicaKeeper runs only on a primary holding the lease, and a standby's pilot stops
// replication from any other source: see checkSource()).

/**
 * Global privileges Navigator's database account needs in replicate/semisync mode (besides ALL on
 * the service's database and on DB\_\_nav\_%): seeding (RELOAD, BINLOG MONITOR for the snapshot's
 * position; BINLOG ADMIN to load without binary-logging it), driving replication (REPLICATION
 * SLAVE ADMIN, REPLICATION MASTER ADMIN, SLAVE MONITOR), creating the replication account and
 * granting it REPLICATION SLAVE (CREATE USER, REPLICATION SLAVE … WITH GRANT OPTION), read_only
 * (READ_ONLY ADMIN), definers of the service's views and routines (SET USER). The replication
 * account itself gets REPLICATION SLAVE only.
 */
export const NAVIGATOR_GLOBAL_GRANTS =
  'RELOAD, PROCESS, BINLOG MONITOR, BINLOG ADMIN, REPLICATION SLAVE, REPLICATION SLAVE ADMIN, REPLICATION MASTER ADMIN, SLAVE MONITOR, CREATE USER, READ_ONLY ADMIN, SET USER';

/** Names of Navigator's own schema beside the service's database (replicated with it). */
export function replSchema(database: string): string {
  return `${database}__nav_repl`;
}

/** replicate_wild_do_table patterns: only the service's database and Navigator's schema replicate. */
export function replicateFilter(database: string): string {
  const esc = (s: string) => s.replace(/_/g, '\\_');
  return `${esc(database)}.%,${esc(replSchema(database))}.%`;
}

/**
 * Password of the replication account: derived (HMAC-SHA256) from the service database's password,
 * so every copy computes the same one without another secret to store or ship.
 */
export function replicationPassword(servicePassword: string, database: string): string {
  return createHmac('sha256', `navigator-replication:${database}`).update(servicePassword).digest('base64url').slice(0, 32);
}

/** A server_id for a copy, stable for its key (peer/container), never 0 and never 1 (the default). */
export function serverIdFor(key: string): number {
  const h = createHmac('sha256', 'navigator-server-id').update(key).digest();
  return 2 + (h.readUInt32BE(0) % 4_000_000_000);
}

/** A GTID position `d-s-n[,d-s-n...]` as domain -> {server, seq}. Empty text: no transactions. */
export function parseGtidPos(pos: string): Map<number, { server: number; seq: number }> {
  const out = new Map<number, { server: number; seq: number }>();
  for (const part of pos.split(',').map((p) => p.trim()).filter(Boolean)) {
    const m = /^(\d+)-(\d+)-(\d+)$/.exec(part);
    if (!m) throw new NavigatorError('BAD_REQUEST', `not a GTID: ${part}`);
    out.set(Number(m[1]), { server: Number(m[2]), seq: Number(m[3]) });
  }
  return out;
}

/** Sum of the sequence numbers over all domains: grows by one per transaction (for lag counts). */
export function gtidCount(pos: string): number {
  let n = 0;
  for (const v of parseGtidPos(pos).values()) n += v.seq;
  return n;
}

/** Does position `have` hold every transaction of `need` (per domain, seq at least as high)? */
export function gtidCovers(have: string, need: string): boolean {
  const h = parseGtidPos(have);
  for (const [domain, n] of parseGtidPos(need)) {
    const x = h.get(domain);
    if (!x || x.seq < n.seq) return false;
  }
  return true;
}

/**
 * Transactions `mine` (a binlog state: the last seq per domain-server) has that `theirs` (the new
 * primary's binlog state) lacks: per domain-server, the seqs above what `theirs` holds of that
 * server. A server `theirs` never heard of counts from seq 1 (all of its transactions, as far as
 * the binlog still has them) — except server_id 1, MariaDB's default: what a copy's server wrote
 * before Navigator gave it its own id (its installation) is no data of the service.
 * Empty: not diverged.
 */
export function extraGtids(mine: string, theirs: string): Array<{ domain: number; server: number; fromSeq: number; toSeq: number }> {
  const parseState = (s: string) => {
    const m = new Map<string, number>();
    for (const part of s.split(',').map((p) => p.trim()).filter(Boolean)) {
      const x = /^(\d+)-(\d+)-(\d+)$/.exec(part);
      if (x) m.set(`${x[1]}-${x[2]}`, Math.max(m.get(`${x[1]}-${x[2]}`) ?? 0, Number(x[3])));
    }
    return m;
  };
  const a = parseState(mine);
  const b = parseState(theirs);
  const out: Array<{ domain: number; server: number; fromSeq: number; toSeq: number }> = [];
  for (const [k, seq] of a) {
    const [domain, server] = k.split('-').map(Number) as [number, number];
    const known = b.get(k);
    if (known !== undefined) {
      if (seq > known) out.push({ domain, server, fromSeq: known + 1, toSeq: seq });
    } else if (server !== 1) {
      out.push({ domain, server, fromSeq: 1, toSeq: seq });
    }
  }
  return out;
}

export interface ReplicaStatus {
  /** A source is configured (CHANGE MASTER was run). */
  configured: boolean;
  masterHost: string;
  masterPort: number;
  ioRunning: 'Yes' | 'No' | 'Connecting' | string;
  sqlRunning: 'Yes' | 'No' | string;
  ioErrno: number;
  ioError: string;
  sqlErrno: number;
  sqlError: string;
  secondsBehind: number | null;
  /** Transactions applied (@@gtid_slave_pos). */
  gtidSlavePos: string;
  /** Transactions received (Gtid_IO_Pos). */
  gtidIoPos: string;
  /** @@gtid_binlog_pos of this server. */
  gtidBinlogPos: string;
  readOnly: boolean;
  serverId: number;
}

async function rows<T>(c: Connection, sql: string, params?: unknown[]): Promise<T[]> {
  const [r] = await c.query(sql, params);
  return r as T[];
}

export async function readReplicaStatus(c: Connection): Promise<ReplicaStatus> {
  const [st] = await rows<Record<string, unknown>>(c, 'SHOW SLAVE STATUS');
  const [v] = await rows<{ sp: string; bp: string; ro: number; sid: number }>(
    c,
    'SELECT @@GLOBAL.gtid_slave_pos AS sp, @@GLOBAL.gtid_binlog_pos AS bp, @@GLOBAL.read_only AS ro, @@GLOBAL.server_id AS sid',
  );
  const s = (k: string) => (st && st[k] !== null && st[k] !== undefined ? String(st[k]) : '');
  return {
    configured: Boolean(st && s('Master_Host')),
    masterHost: s('Master_Host'),
    masterPort: Number(s('Master_Port') || 0),
    ioRunning: s('Slave_IO_Running') || 'No',
    sqlRunning: s('Slave_SQL_Running') || 'No',
    ioErrno: Number(s('Last_IO_Errno') || 0),
    ioError: s('Last_IO_Error'),
    sqlErrno: Number(s('Last_SQL_Errno') || 0),
    sqlError: s('Last_SQL_Error'),
    secondsBehind: st && st.Seconds_Behind_Master !== null && st.Seconds_Behind_Master !== undefined ? Number(st.Seconds_Behind_Master) : null,
    gtidSlavePos: String(v?.sp ?? ''),
    gtidIoPos: s('Gtid_IO_Pos'),
    gtidBinlogPos: String(v?.bp ?? ''),
    readOnly: Number(v?.ro) === 1,
    serverId: Number(v?.sid ?? 0),
  };
}

/** Why a replica is broken (an error that will not go away by waiting), or undefined. */
export function brokenReason(st: ReplicaStatus): string | undefined {
  if (st.sqlErrno !== 0) return `SQL thread error ${st.sqlErrno}: ${st.sqlError}`;
  // 1236: the source no longer has (or never had) the binlog the replica needs (purged, diverged).
  if (st.ioErrno === 1236) return `source cannot send what the replica needs (error 1236): ${st.ioError}`;
  if (st.ioErrno === 1045) return `the replication account was refused (error 1045): ${st.ioError}`;
  return undefined;
}

/** The copy's server must write a binary log and log what it replicates (a standby may become a source). */
export async function checkBinlogSettings(c: Connection, label: string): Promise<void> {
  const [v] = await rows<{ lb: number; lsu: number; fmt: string }>(c, 'SELECT @@GLOBAL.log_bin AS lb, @@GLOBAL.log_slave_updates AS lsu, @@GLOBAL.binlog_format AS fmt');
  const missing: string[] = [];
  if (Number(v?.lb) !== 1) missing.push('log-bin');
  if (Number(v?.lsu) !== 1) missing.push('log-slave-updates');
  if (missing.length) {
    throw new NavigatorError(
      'BAD_REQUEST',
      `the database server ${label} runs without ${missing.join(' and ')}: dbsync.mode replicate/semisync needs both in its my.cnf (and binlog-format=ROW), or set dbsync.mode: dump`,
    );
  }
  if (String(v?.fmt).toUpperCase() !== 'ROW') await c.query("SET GLOBAL binlog_format = 'ROW'");
}

export interface PrimarySetup {
  database: string;
  serverId: number;
  replUser: string;
  replPassword: string;
  semisync: boolean;
  semisyncTimeoutMs: number;
}

/**
 * Make this server a replication source: its own server_id, the replication account with
 * REPLICATION SLAVE only (created with sql_log_bin=0: every copy creates its own), the heartbeat
 * table, semi-sync on or off. Idempotent.
 */
export async function preparePrimary(c: Connection, o: PrimarySetup, label: string): Promise<void> {
  await checkBinlogSettings(c, label);
  await c.query('SET GLOBAL server_id = ?', [o.serverId]);
  await c.query('SET SESSION sql_log_bin = 0');
  try {
    await c.query('CREATE USER IF NOT EXISTS ?@? IDENTIFIED BY ?', [o.replUser, '%', o.replPassword]);
    await c.query('ALTER USER ?@? IDENTIFIED BY ?', [o.replUser, '%', o.replPassword]);
    await c.query('GRANT REPLICATION SLAVE ON *.* TO ?@?', [o.replUser, '%']);
  } finally {
    await c.query('SET SESSION sql_log_bin = 1');
  }
  const hb = replSchema(o.database);
  await c.query(`CREATE DATABASE IF NOT EXISTS \`${hb}\``);
  await c.query(`CREATE TABLE IF NOT EXISTS \`${hb}\`.beat (id TINYINT NOT NULL PRIMARY KEY, at_ms BIGINT NOT NULL, server_id BIGINT NOT NULL) ENGINE=InnoDB`);
  await c.query(`SET GLOBAL rpl_semi_sync_master_enabled = ${o.semisync ? 1 : 0}`);
  if (o.semisync) await c.query('SET GLOBAL rpl_semi_sync_master_timeout = ?', [o.semisyncTimeoutMs]);
}

/** The primary's heartbeat: its clock, replicated to every standby (the standby's freshness). */
export async function writeHeartbeat(c: Connection, database: string, nowMs: number): Promise<void> {
  await c.query(`REPLACE INTO \`${replSchema(database)}\`.beat (id, at_ms, server_id) VALUES (1, ?, @@server_id)`, [nowMs]);
}

/** Standby: the newest primary heartbeat it holds (ms on the primary's clock), if any. */
export async function readHeartbeat(c: Connection, database: string): Promise<number | undefined> {
  try {
    const [r] = await rows<{ at: number }>(c, `SELECT at_ms AS at FROM \`${replSchema(database)}\`.beat WHERE id = 1`);
    return r ? Number(r.at) : undefined;
  } catch {
    return undefined;
  }
}

export interface SemisyncState {
  enabled: boolean;
  /** Semi-sync is enabled but MariaDB fell back to async (no standby acknowledged in time). */
  fellBack: boolean;
  clients: number;
}

export async function readSemisync(c: Connection): Promise<SemisyncState> {
  const [v] = await rows<{ en: number }>(c, 'SELECT @@GLOBAL.rpl_semi_sync_master_enabled AS en');
  const st = await rows<{ Variable_name: string; Value: string }>(c, "SHOW GLOBAL STATUS WHERE Variable_name IN ('Rpl_semi_sync_master_status', 'Rpl_semi_sync_master_clients')");
  const get = (n: string) => st.find((r) => r.Variable_name === n)?.Value ?? '';
  const enabled = Number(v?.en) === 1;
  return { enabled, fellBack: enabled && get('Rpl_semi_sync_master_status') !== 'ON', clients: Number(get('Rpl_semi_sync_master_clients') || 0) };
}

export interface SourceSpec {
  host: string;
  port: number;
  user: string;
  password: string;
}

/** Point a (stopped) replica at a source by GTID and start it. */
export async function startReplicating(c: Connection, database: string, src: SourceSpec, o: { serverId: number; semisync: boolean }): Promise<void> {
  await c.query('STOP SLAVE');
  await c.query('SET GLOBAL server_id = ?', [o.serverId]);
  await c.query('SET GLOBAL replicate_wild_do_table = ?', [replicateFilter(database)]);
  await c.query(`SET GLOBAL rpl_semi_sync_slave_enabled = ${o.semisync ? 1 : 0}`);
  await c.query('SET GLOBAL rpl_semi_sync_master_enabled = 0');
  await c.query(
    'CHANGE MASTER TO MASTER_HOST = ?, MASTER_PORT = ?, MASTER_USER = ?, MASTER_PASSWORD = ?, MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1, MASTER_HEARTBEAT_PERIOD = 1',
    [src.host, src.port, src.user, src.password],
  );
  await c.query('SET GLOBAL read_only = 1');
  await c.query('START SLAVE');
}

/**
 * Promotion of a standby: apply what it already received (bounded), stop replicating and forget
 * the source. It stays read-only: the caller turns read_only off once it holds the lease.
 * Returns the GTID position it ends at and whether everything received was applied.
 */
export async function promoteReplica(c: Connection, applyTimeoutMs: number): Promise<{ gtid: string; appliedAll: boolean; wasReplica: boolean }> {
  const before = await readReplicaStatus(c);
  if (!before.configured) return { gtid: before.gtidBinlogPos, appliedAll: true, wasReplica: false };
  await c.query('STOP SLAVE IO_THREAD');
  const st = await readReplicaStatus(c);
  let appliedAll = true;
  if (st.gtidIoPos && !gtidCovers(st.gtidSlavePos, st.gtidIoPos)) {
    // Received but not applied yet: let the SQL thread apply the relay log (also when it was stopped).
    if (st.sqlRunning !== 'Yes' && st.sqlErrno === 0) await c.query('START SLAVE SQL_THREAD');
    const [r] = await rows<{ w: number | null }>(c, 'SELECT MASTER_GTID_WAIT(?, ?) AS w', [st.gtidIoPos, Math.max(0.1, applyTimeoutMs / 1000)]);
    appliedAll = Number(r?.w) === 0;
  }
  await c.query('STOP SLAVE');
  await c.query('RESET SLAVE ALL');
  const [v] = await rows<{ bp: string }>(c, 'SELECT @@GLOBAL.gtid_binlog_pos AS bp');
  return { gtid: String(v?.bp ?? ''), appliedAll, wasReplica: true };
}

/**
 * Planned hand-over: stop writes on the primary (read_only: waits for commits in progress), take
 * its final position and wait until each replica has applied it. Writes stay stopped.
 */
export async function stopWritesAndFinalPosition(c: Connection, lockWaitS: number): Promise<string> {
  await c.query('SET SESSION lock_wait_timeout = ?', [lockWaitS]);
  await c.query('SET GLOBAL read_only = 1');
  const [v] = await rows<{ bp: string }>(c, 'SELECT @@GLOBAL.gtid_binlog_pos AS bp');
  return String(v?.bp ?? '');
}

/** On a replica: wait until it has applied `pos` (true) or `timeoutMs` passed (false). */
export async function waitApplied(c: Connection, pos: string, timeoutMs: number): Promise<boolean> {
  if (!pos) return true;
  const [r] = await rows<{ w: number | null }>(c, 'SELECT MASTER_GTID_WAIT(?, ?) AS w', [pos, Math.max(0.1, timeoutMs / 1000)]);
  return Number(r?.w) === 0;
}
