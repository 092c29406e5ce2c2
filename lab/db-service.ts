import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { stringify } from 'yaml';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { Lab } from './lab.ts';
import { ADMIN_TOKEN, aliveSeenBy, api, copyDirOf, startDepot, syncPlacement, waitFor, type LabCluster, type SyncPlacement } from './cluster.ts';
import { REPO_ROOT } from '../shared/repo-root.ts';
import { loadOrCreateIdentity } from '../depot/identity.ts';
import { makeSwarmKey } from '../depot/swarm-key.ts';
import { ImageStore } from '../depot/images/catalog.ts';
import { silentLogger } from '../shared/logger.ts';
import type { MovementRecord } from '../shared/movement.ts';

// The lab's DB-backed service: a small real service whose state is a MariaDB database, for tests
// that write through the service address (the nemesis test). Every copy runs its own MariaDB
// (the Zabbix example's scripts: common.sh, db-init.sh, db-run.sh and my.cnf with a binary log),
// so with dbsync.mode replicate (the default) the standbys are GTID replicas of the primary. The
// primary alone also runs the write front (lab/db-service/front.ts) on 0.0.0.0:SERVICE_PORT: one
// committed row per request, acknowledged after COMMIT with the committing host, server_id and
// term. (The Zabbix example's MariaDB binds the host's own address, so a client cannot reach the
// database through the service address; here the front is what answers there.)

export const DB_SERVICE = 'dbsvc';
export const DB_SERVICE_PORT = 7000;
export const DB_PORT = 3307;
export const DB_NAME = 'nemesis';
const HTTP_PORT = 7480;
const EXAMPLE = join(REPO_ROOT, 'deploy/examples/zabbix');

/** Makes the image folder at `dir` (must not exist): manifest, settings, scripts, fresh passwords. */
export async function prepareDbServiceImage(dir: string): Promise<void> {
  await mkdir(join(dir, 'scripts'), { recursive: true });
  await mkdir(join(dir, 'db'), { recursive: true });
  await mkdir(join(dir, 'secrets'), { mode: 0o700 });
  for (const f of ['common.sh', 'db-init.sh', 'db-run.sh']) await copyFile(join(EXAMPLE, 'scripts', f), join(dir, 'scripts', f));
  await copyFile(join(EXAMPLE, 'db/my.cnf'), join(dir, 'db/my.cnf'));
  await copyFile(join(REPO_ROOT, 'lab/db-service/schema.sh'), join(dir, 'scripts/schema.sh'));
  await writeFile(
    join(dir, 'settings.env'),
    [
      '# The lab DB service (lab/db-service.ts). The scripts are the Zabbix example\'s: its common.sh',
      '# checks every key below, the ZBX_* ones included, although no zabbix_server runs here.',
      `DB_PORT=${DB_PORT}`,
      `DB_NAME=${DB_NAME}`,
      '# The write front\'s account (local, the database only; no READ ONLY ADMIN).',
      'DB_ZABBIX_USER=writer',
      'DB_SYNC_USER=navsync',
      'DB_BUFFER_POOL=16M',
      'ZBX_LISTEN_PORT=10051',
      'ZBX_CACHE_UPDATE_S=5',
      '',
    ].join('\n'),
  );
  for (const name of ['zabbix', 'sync']) {
    const { stdout } = await execa('bash', ['-c', "head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 24"]);
    await writeFile(join(dir, 'secrets', `${name}.password`), stdout, { mode: 0o600 });
  }
  await writeFile(
    join(dir, 'container.yaml'),
    stringify({
      name: DB_SERVICE,
      dataDir: 'data',
      start: [
        { argv: ['bash', '${dir}/scripts/db-init.sh', '${dir}', '${dataDir}'], wait: true },
        { argv: ['bash', '${dir}/scripts/db-run.sh', '${dir}', '${dataDir}'] },
        { argv: ['bash', '${dir}/scripts/schema.sh', '${dir}', '${dataDir}'], wait: true },
      ],
      primary: [
        {
          argv: [
            process.execPath, '--no-warnings', join(REPO_ROOT, 'lab/db-service/front.ts'), '--port', String(DB_SERVICE_PORT), '--db-port', String(DB_PORT),
            '--database', DB_NAME, '--user', 'writer', '--password-file', '${dir}/secrets/zabbix.password',
          ],
        },
        // Promotion completes once the front listens.
        { argv: ['bash', '-c', `for i in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/${DB_SERVICE_PORT}) 2>/dev/null && exit 0; sleep 0.1; done; exit 1`], wait: true },
      ],
      health: { tcp: { host: '127.0.0.1', port: DB_PORT, banner: true } },
      startTimeoutMs: 120_000,
      healthTimeoutMs: 2000,
    }),
  );
}

export interface DbCluster extends LabCluster {
  /** TMPDIR of the depots and their containers (MariaDB's socket folder): inside the lab folder. */
  tmp: string;
}

/** `n` depots (w1..wn) with the DB service image pre-staged in every store. */
export async function startDbCluster(lab: Lab, n: number, env: Record<string, string> = {}): Promise<DbCluster> {
  const hosts = lab.workstations.slice(0, n).map((w) => w.name);
  const swarmKeyFile = join(lab.dir, 'swarm.key');
  await writeFile(swarmKeyFile, makeSwarmKey(), { mode: 0o600 });
  const tmp = join(lab.dir, 'tmp');
  await mkdir(tmp, { recursive: true });
  const imageDir = join(lab.dir, 'image');
  await prepareDbServiceImage(imageDir);
  const peerIds = new Map<string, string>();
  for (const host of hosts) {
    const dataDir = join(lab.dir, 'data', host);
    const key = await loadOrCreateIdentity(join(dataDir, 'identity.key'));
    peerIds.set(host, peerIdFromPrivateKey(key).toString());
    const store = new ImageStore({ dir: join(dataDir, 'images'), keepVersions: 3, logger: silentLogger() });
    await store.start();
    await store.import(imageDir, DB_SERVICE);
    await store.stop();
  }
  const address = lab.serviceAddress(0);
  const c: DbCluster = {
    lab, hosts, depots: new Map(), peerIds, swarmKeyFile, imageDir, address, ip: address.split('/')[0]!, tmp,
    // The front names its host by ECHO_NAME (startDepot sets it per host); MariaDB's socket
    // folder goes under TMPDIR when the container folder is deep.
    env: { TMPDIR: tmp, NAVIGATOR__containers__passEnv: '[ECHO_NAME, TMPDIR]', ...env },
  };
  await Promise.all(hosts.map((h) => startDepot(c, h)));
  await waitFor(async () => (await aliveSeenBy(c, hosts[0]!)) === hosts.length, 30_000, 'all depots alive');
  return c;
}

/** POST /api/bootstrap on `host`'s depot (from inside its namespace: the admin API is local only). */
export async function bootstrapDbService(c: DbCluster, host: string, standbys: number): Promise<void> {
  const body = {
    service: DB_SERVICE,
    imagePath: c.imageDir,
    container: { driver: 'process' },
    address: c.address,
    iface: 'eth0',
    port: DB_SERVICE_PORT,
    standbys,
    database: { database: DB_NAME, user: 'navsync', passwordFile: 'secrets/sync.password', port: DB_PORT },
  };
  const r = await adminPost(c, host, '/api/bootstrap', body, 170);
  if (!r.ok) throw new Error(`bootstrap failed: ${r.text}`);
}

/** POST /api/switchover on `host` (the primary's host) to `to`. */
export async function switchover(c: DbCluster, host: string, to: string): Promise<{ ok: boolean; text: string }> {
  return adminPost(c, host, '/api/switchover', { service: DB_SERVICE, to }, 60);
}

async function adminPost(c: DbCluster, host: string, path: string, body: unknown, maxTimeS: number): Promise<{ ok: boolean; text: string }> {
  const r = await c.lab.exec(
    host,
    [
      'curl', '-sS', '--max-time', String(maxTimeS), '-w', '\n%{http_code}', '-H', 'content-type: application/json',
      '-H', `authorization: Bearer ${ADMIN_TOKEN}`, '--data-binary', '@-', `http://127.0.0.1:${HTTP_PORT}${path}`,
    ],
    { input: JSON.stringify(body), reject: false, timeoutMs: (maxTimeS + 10) * 1000 },
  );
  const lines = r.stdout.trimEnd().split('\n');
  const code = lines.pop();
  return { ok: r.exitCode === 0 && code === '200', text: `curl ${r.exitCode}, HTTP ${code}: ${lines.join('\n')} ${r.stderr}`.trim() };
}

export type DbPlacement = SyncPlacement;

/** Where the copies run, as `host` sees it (running copies only). */
export function dbPlacement(c: DbCluster, host: string): Promise<DbPlacement> {
  return syncPlacement(c, host, DB_SERVICE);
}

/** The folder of the (only) copy of the service on `host`. */
export function dbCopyDir(c: DbCluster, host: string): Promise<string> {
  return copyDirOf(c, host, DB_SERVICE);
}

/** SQL in the copy's database on `host` as its admin (the private socket); rows as string arrays. */
export async function dbSql(c: DbCluster, host: string, sql: string): Promise<string[][]> {
  const dir = await dbCopyDir(c, host);
  const argv = ['bash', '-c', 'source "$0/scripts/common.sh" "$0" "$0/data" && exec mariadb --no-defaults --protocol=socket --socket="$MYSQL_SOCK" -u "$(id -un)" --batch --skip-column-names "$DB_NAME"', dir];
  const r = await execa(argv[0]!, argv.slice(1), { input: sql, reject: false, timeout: 30_000, env: { TMPDIR: (c as DbCluster).tmp } });
  if (r.exitCode !== 0) throw new Error(`SQL in ${dir} failed (${r.exitCode}): ${String(r.stderr).trim()}`);
  return String(r.stdout).split('\n').filter((l) => l !== '').map((l) => l.split('\t'));
}

/** Movement records of the service as `host`'s depot holds them (newest first). */
export async function dbMovements(c: DbCluster, host: string): Promise<MovementRecord[]> {
  const res = await api<{ records: MovementRecord[] }>(c, host, `/api/movements?service=${DB_SERVICE}&limit=500`);
  return res?.records ?? [];
}
