import { readFile } from 'node:fs/promises';
import { createConnection, type Connection } from 'mysql2/promise';
import { DbSyncSection } from '../../shared/config.ts';
import { createLogger } from '../../shared/logger.ts';
import { ReplicaKeeper } from '../../pilot/db/replica-keeper.ts';
import { preparePrimary, promoteReplica, replicationPassword, serverIdFor } from '../../pilot/db/replication.ts';
import { raiseTermFence } from '../../pilot/db/term-fence.ts';

// The database half of the VM-packed service between two guests, run in a lab namespace (the
// lab's workstations reach the guests over the LAN): the pilots' own replication code
// (pilot/db/replication.ts, replica-keeper.ts) pointed at the guests' MariaDB on their LAN
// addresses, as a VM-aware pilot would point it. The pilot itself does not do this for guests yet.
//   replicate: make `primary` a source, seed `standby` from it and start GTID replication, write
//              `rows` history rows on the primary, wait until the standby holds them
//   promote:   on `standby`: apply what it received, stop replicating, become a source; report
//              how many of the history rows it holds
//   node --import tsx test/lab/vm-db.ts '{"action":"replicate","primary":"10.77.3.51","standby":"10.77.3.52","passwordFile":"…/secrets/sync.password","rows":500}'

interface Args {
  action: 'replicate' | 'promote';
  primary?: string;
  standby: string;
  passwordFile: string;
  rows?: number;
  itemid?: number;
}
const a = JSON.parse(process.argv[2] ?? '{}') as Args;
const password = (await readFile(a.passwordFile, 'utf8')).trim();
const DB = 'zabbix';
const PORT = 3307;
const USER = 'navsync';
const settings = DbSyncSection.parse({});
const log = createLogger({ level: 'warn' });
const out = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o)}\n`);
const conn = (host: string): Promise<Connection> => createConnection({ host, port: PORT, user: USER, password, connectTimeout: 10_000, multipleStatements: false });
const itemid = a.itemid ?? 990001;

async function historyRows(c: Connection): Promise<number> {
  const [rows] = await c.query(`SELECT COUNT(*) AS n FROM \`${DB}\`.history_uint WHERE itemid = ?`, [itemid]);
  return Number((rows as Array<{ n: number }>)[0]!.n);
}

if (a.action === 'replicate') {
  const p = await conn(a.primary!);
  await preparePrimary(p, { database: DB, serverId: serverIdFor('guest-primary'), replUser: settings.replicationUser, replPassword: replicationPassword(password, DB), semisync: false, semisyncTimeoutMs: settings.semisyncTimeoutMs }, 'of the primary guest');
  const keeper = new ReplicaKeeper({
    source: { host: a.primary!, port: PORT, user: USER, password },
    sourceAddress: a.primary!,
    target: { host: a.standby, port: PORT, user: USER, password },
    targetServerId: serverIdFor('guest-standby'),
    database: DB,
    semisync: false,
    logger: log,
    settings: { replicaCheckMs: 1000 },
  });
  const t0 = Date.now();
  await keeper.checkNow();
  while (keeper.status().state !== 'replicating') {
    if (Date.now() - t0 > 300_000) throw new Error(`standby not replicating after 300 s: ${JSON.stringify(keeper.status())}`);
    await new Promise((r) => setTimeout(r, 1000));
    await keeper.checkNow();
  }
  const replicatingMs = Date.now() - t0;
  // Monitoring history written on the primary (what zabbix_server stores): `rows` values of one item.
  const rows = a.rows ?? 500;
  const now = Math.floor(Date.now() / 1000);
  for (let i = 0; i < rows; i += 100) {
    const batch = Array.from({ length: Math.min(100, rows - i) }, (_, k) => [itemid, now - rows + i + k, i + k, 0]);
    await p.query(`INSERT INTO \`${DB}\`.history_uint (itemid, clock, value, ns) VALUES ?`, [batch]);
  }
  const s = await conn(a.standby);
  const t1 = Date.now();
  while ((await historyRows(s)) < rows) {
    if (Date.now() - t1 > 120_000) throw new Error('the standby did not receive the history rows within 120 s');
    await new Promise((r) => setTimeout(r, 200));
  }
  out({ event: 'replicated', replicatingMs, rows, onStandby: await historyRows(s), lastSeed: keeper.status().lastSeed ?? null });
  await keeper.stop();
  await p.end();
  await s.end();
} else {
  const s = await conn(a.standby);
  const r = await promoteReplica(s, settings.promoteApplyTimeoutMs);
  await preparePrimary(s, { database: DB, serverId: serverIdFor('guest-standby'), replUser: settings.replicationUser, replPassword: replicationPassword(password, DB), semisync: false, semisyncTimeoutMs: settings.semisyncTimeoutMs }, 'of the promoted guest');
  // As the pilot's promotion: the term fence, then writable.
  await raiseTermFence(s, DB, 2);
  await s.query('SET GLOBAL read_only = 0');
  const [ro] = await s.query('SELECT @@global.read_only AS ro');
  out({ event: 'promoted', ...r, rows: await historyRows(s), readOnly: Number((ro as Array<{ ro: number }>)[0]!.ro) });
  await s.end();
}
