import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { Lab, LabProcess } from './lab.ts';
import { REPO_ROOT } from '../shared/repo-root.ts';
import { loadOrCreateIdentity } from '../depot/identity.ts';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { makeSwarmKey } from '../depot/swarm-key.ts';
import { DEPOT_ENV, depotArgv } from '../depot/runtime-flags.ts';
import { ImageStore } from '../depot/images/catalog.ts';
import { silentLogger } from '../shared/logger.ts';
import type { ServiceView } from '../shared/api/tracking.ts';

// A Navigator cluster in the lab: one real depot process (`navigator depot run`) per workstation
// namespace, all sharing a swarm key and knowing each other through bootstrap addresses, the
// echo service image pre-staged in every store (unless `preStage: false`: then only bootstrap
// imports it and the depots ship it), and the service bootstrapped from one host.

export const ADMIN_TOKEN = 'lab-admin-token';
export const SERVICE = 'echo';
export const SERVICE_PORT = 7000;
export const P2P_PORT = 7470;
const HTTP_PORT = 7480;

export interface LabCluster {
  lab: Lab;
  hosts: string[];
  depots: Map<string, LabProcess>;
  peerIds: Map<string, string>;
  swarmKeyFile: string;
  imageDir: string;
  address: string;
  ip: string;
  /** Extra environment of every depot (configuration as NAVIGATOR__section__field). */
  env?: Record<string, string>;
  /** How long a depot may take to start (default 30 s; benchmarks with many depots wait longer). */
  startTimeoutMs?: number;
}

/** The `navigator depot run` command line of one lab host (also used by the Zabbix lab). */
export function depotArgs(c: Pick<LabCluster, 'lab' | 'hosts' | 'peerIds' | 'swarmKeyFile'>, host: string, swarmKeyFile = c.swarmKeyFile): string[] {
  const h = c.lab.host(host);
  const bootstrap = c.hosts.filter((x) => x !== host).map((x) => `/ip4/${c.lab.host(x).ip}/tcp/${P2P_PORT}/p2p/${c.peerIds.get(x)}`);
  return depotArgv(process.execPath, join(REPO_ROOT, 'bin/navigator.mjs'), [
    '--name',
    host,
    '--data-dir',
    join(c.lab.dir, 'data', host),
    '--listen',
    `/ip4/${h.ip}/tcp/${P2P_PORT}`,
    ...(bootstrap.length ? ['--bootstrap', bootstrap.join(',')] : []),
    '--swarm-key',
    swarmKeyFile,
    '--no-mdns',
    '--http-host',
    '0.0.0.0',
    '--http-port',
    String(HTTP_PORT),
  ]);
}

/** Start (or restart) the depot of one host. */
export async function startDepot(c: LabCluster, host: string, opts: { swarmKeyFile?: string; startTimeoutMs?: number } = {}): Promise<LabProcess> {
  const p = c.lab.spawn(host, depotArgs(c, host, opts.swarmKeyFile), {
    name: 'depot',
    // The echo service answers with ECHO_NAME: containers get only the variables passEnv names.
    env: { ...DEPOT_ENV, NAVIGATOR__http__adminToken: ADMIN_TOKEN, ECHO_NAME: host, NAVIGATOR__containers__passEnv: '[ECHO_NAME]', NAVIGATOR_LOG_LEVEL: 'info', ...c.env },
  });
  c.depots.set(host, p);
  await p.waitForLine(/"event":"depot-started"/, opts.startTimeoutMs ?? c.startTimeoutMs ?? 30_000);
  return p;
}

export interface ClusterOptions {
  /** Import the image into every store before the depots start (default true). */
  preStage?: boolean;
  /** Extra environment of every depot. */
  env?: Record<string, string>;
  /** Give the echo image a primary-only process (its command line carries PRIMARY_ONLY_MARKER). */
  primaryOnly?: boolean;
  /** Start the depots this many at a time, as a lab boots (default: all at once). */
  batch?: number;
  /** How long each depot may take to start (default 30 s). */
  startTimeoutMs?: number;
}

/** In the command line of the echo image's primary-only process (ClusterOptions.primaryOnly). */
export const PRIMARY_ONLY_MARKER = 'navlab-primary-only';

export async function startCluster(lab: Lab, n: number, opts: ClusterOptions = {}): Promise<LabCluster> {
  const hosts = lab.workstations.slice(0, n).map((w) => w.name);
  const swarmKeyFile = join(lab.dir, 'swarm.key');
  await writeFile(swarmKeyFile, makeSwarmKey(), { mode: 0o600 });
  const imageDir = join(lab.dir, 'image');
  await mkdir(imageDir, { recursive: true });
  await writeFile(
    join(imageDir, 'container.yaml'),
    stringify({
      name: 'echo',
      start: [{ argv: [process.execPath, '--no-warnings', join(REPO_ROOT, 'lab/echo-service.ts'), '--port', String(SERVICE_PORT)] }],
      health: { tcp: { host: '127.0.0.1', port: SERVICE_PORT } },
      startTimeoutMs: 20_000,
      ...(opts.primaryOnly ? { primary: [{ argv: [process.execPath, '-e', `setInterval(() => {}, 1 << 30); // ${PRIMARY_ONLY_MARKER}`] }] } : {}),
    }),
  );
  const peerIds = new Map<string, string>();
  for (const host of hosts) {
    const dataDir = join(lab.dir, 'data', host);
    const key = await loadOrCreateIdentity(join(dataDir, 'identity.key'));
    peerIds.set(host, peerIdFromPrivateKey(key).toString());
    // Pre-staged image: what pre-staging leaves on the likely next hosts.
    if (opts.preStage === false) continue;
    const store = new ImageStore({ dir: join(dataDir, 'images'), keepVersions: 3, logger: silentLogger() });
    await store.start();
    await store.import(imageDir, SERVICE);
    await store.stop();
  }
  const address = lab.serviceAddress(0);
  const c: LabCluster = { lab, hosts, depots: new Map(), peerIds, swarmKeyFile, imageDir, address, ip: address.split('/')[0]!, env: opts.env ?? {}, ...(opts.startTimeoutMs ? { startTimeoutMs: opts.startTimeoutMs } : {}) };
  const batch = opts.batch ?? hosts.length;
  for (let i = 0; i < hosts.length; i += batch) await Promise.all(hosts.slice(i, i + batch).map((h) => startDepot(c, h)));
  await waitFor(async () => (await aliveSeenBy(c, hosts[0]!)) === hosts.length, Math.max(20_000, c.startTimeoutMs ?? 0), 'all depots alive');
  return c;
}

/** GET a depot's API from inside the lab (the client namespace). */
export async function api<T>(c: LabCluster, host: string, path: string, from = 'client'): Promise<T | undefined> {
  const r = await c.lab.exec(from, ['curl', '-sf', '--max-time', '2', `http://${c.lab.host(host).ip}:${HTTP_PORT}${path}`], { reject: false });
  if (r.exitCode !== 0 || !r.stdout) return undefined;
  return JSON.parse(r.stdout) as T;
}

export async function aliveSeenBy(c: LabCluster, host: string): Promise<number> {
  const res = await api<{ depots: Array<{ state: string }> }>(c, host, '/api/depots');
  return res?.depots.filter((d) => d.state === 'alive').length ?? 0;
}

/** A service as `host` sees it (default: the echo service). */
export async function serviceView(c: LabCluster, host: string, service = SERVICE): Promise<ServiceView | undefined> {
  const res = await api<{ services: ServiceView[] }>(c, host, '/api/services');
  return res?.services.find((s) => s.service === service);
}

export interface Placement {
  primary: string | undefined;
  term: number;
  standbys: string[];
}

/** Where the copies are, as `host` sees it (running copies on alive depots only). */
export async function placement(c: LabCluster, host: string): Promise<Placement> {
  const view = await serviceView(c, host);
  const running = (view?.copies ?? []).filter((x) => x.state === 'running');
  const primaries = running.filter((x) => x.role === 'primary').sort((a, b) => b.term - a.term);
  return { primary: primaries[0]?.host, term: primaries[0]?.term ?? 0, standbys: running.filter((x) => x.role === 'standby').map((x) => x.host).sort() };
}

/** A DB-backed service's copies as `host` sees them: the primary, and each standby with its last sync. */
export interface SyncPlacement {
  primary: string | undefined;
  term: number;
  standbys: Array<{ host: string; lastSyncAt: number | null }>;
}

export async function syncPlacement(c: LabCluster, host: string, service: string): Promise<SyncPlacement> {
  const view = await serviceView(c, host, service);
  const running = (view?.copies ?? []).filter((x) => x.state === 'running');
  const primaries = running.filter((x) => x.role === 'primary').sort((a, b) => b.term - a.term);
  return {
    primary: primaries[0]?.host,
    term: primaries[0]?.term ?? 0,
    standbys: running.filter((x) => x.role === 'standby').map((x) => ({ host: x.host, lastSyncAt: x.lastSyncAt })),
  };
}

/** The folder of the (only) copy of `service` on `host`. */
export async function copyDirOf(c: Pick<LabCluster, 'lab'>, host: string, service: string): Promise<string> {
  const root = join(c.lab.dir, 'data', host, 'images', 'containers');
  const dirs = (await readdir(root).catch(() => [] as string[])).filter((d) => d.startsWith(`${service}-`));
  if (dirs.length !== 1) throw new Error(`expected one ${service} copy on ${host}, found ${dirs.length} in ${root}`);
  return join(root, dirs[0]!);
}

export async function bootstrap(c: LabCluster, host: string, standbys: number): Promise<void> {
  // The admin token from a file, as an admin would pass it (never on the command line).
  const tokenFile = join(c.lab.dir, 'admin.token');
  await writeFile(tokenFile, `${ADMIN_TOKEN}\n`, { mode: 0o600 });
  const r = await c.lab.exec(
    host,
    [
      process.execPath,
      join(REPO_ROOT, 'bin/navigator.mjs'),
      'pilot',
      'bootstrap',
      '--service',
      SERVICE,
      '--image',
      c.imageDir,
      '--address',
      c.address,
      '--iface',
      'eth0',
      '--port',
      String(SERVICE_PORT),
      '--standbys',
      String(standbys),
      '--token-file',
      tokenFile,
      '--timeout',
      '60',
    ],
    { reject: false, timeoutMs: 90_000 },
  );
  if (r.exitCode !== 0) throw new Error(`bootstrap failed (${r.exitCode}): ${r.stderr}\n${r.stdout}`);
}

export async function waitFor(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** A host other than `exclude` whose depot still runs, to ask for the cluster's view. */
export function observer(c: LabCluster, exclude: string[]): string {
  const h = c.hosts.find((x) => !exclude.includes(x) && c.depots.get(x)?.running);
  if (!h) throw new Error('no depot left to observe from');
  return h;
}
