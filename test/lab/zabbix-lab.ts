import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { Lab, LabProcess } from '../../lab/lab.ts';
import { ADMIN_TOKEN, api, aliveSeenBy, copyDirOf, depotArgs, syncPlacement, waitFor, type LabCluster, type SyncPlacement } from '../../lab/cluster.ts';
import { loadOrCreateIdentity } from '../../depot/identity.ts';
import { makeSwarmKey } from '../../depot/swarm-key.ts';
import { ImageStore } from '../../depot/images/catalog.ts';
import { silentLogger } from '../../shared/logger.ts';
import { DEPOT_ENV } from '../../depot/runtime-flags.ts';
import type { MovementRecord } from '../../shared/movement.ts';
import { copySql, prepareZabbixImage, type ZabbixImage } from './zabbix-fixture.ts';

// A Navigator cluster in the lab running the Zabbix example service: like cluster.ts, one real
// depot per workstation namespace with the image pre-staged in every store, but with the
// Zabbix image, a short DB sync interval, and the service bootstrapped with its database.

export const ZBX_SERVICE = 'zabbix';
const HTTP_PORT = 7480;

export interface ZabbixCluster extends LabCluster {
  image: ZabbixImage;
  /** TMPDIR of the depots (and so of the containers): inside the lab folder, removed with it. */
  tmp: string;
  /** Removes the per-namespace resolver files (call after the lab is destroyed). */
  cleanup: () => Promise<void>;
}

/**
 * Name resolution inside the lab namespaces, as a LAN's resolver would give it: the lab's hosts
 * by name (both ways) and a resolver that fails at once for anything else. Without it, a lookup
 * goes to the machine's nameserver, unreachable from the lab, and hangs for its timeouts: the
 * Zabbix trapper looks up an active agent's address before answering it (autoregistration's
 * DNS field) and would make the agent's first request time out. `ip netns exec` mounts these
 * files over /etc/resolv.conf and /etc/hosts for everything started in the namespace.
 */
async function labResolver(lab: Lab): Promise<() => Promise<void>> {
  const hosts = [...lab.workstations, lab.client, lab.watch, lab.gw];
  const table = ['127.0.0.1 localhost', ...hosts.map((h) => `${h.ip} ${h.name === 'client' ? 'lab-client' : h.name}`), ''].join('\n');
  const dirs = hosts.map((h) => join('/etc/netns', h.ns));
  const cleanup = async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  };
  try {
    for (const d of dirs) {
      await mkdir(d, { recursive: true });
      await writeFile(join(d, 'resolv.conf'), 'nameserver 127.0.0.1\noptions timeout:1 attempts:1\n');
      await writeFile(join(d, 'hosts'), table);
    }
  } catch (err) {
    await cleanup();
    throw err;
  }
  return cleanup;
}

export interface ZabbixClusterOptions {
  /** dbsync.syncIntervalMs of every depot. */
  syncIntervalMs: number;
  /** Extra environment of each depot (configuration as NAVIGATOR__section__field): the same for every host, or by host. */
  env?: Record<string, string> | ((host: string) => Record<string, string>);
}

function depotArgv(c: ZabbixCluster, host: string): string[] {
  return depotArgs(c, host);
}

export async function startZabbixCluster(lab: Lab, n: number, opts: ZabbixClusterOptions): Promise<ZabbixCluster> {
  const hosts = lab.workstations.slice(0, n).map((w) => w.name);
  const cleanup = await labResolver(lab);
  try {
    return await startDepots(lab, hosts, opts, cleanup);
  } catch (err) {
    await cleanup();
    throw err;
  }
}

async function startDepots(lab: Lab, hosts: string[], opts: ZabbixClusterOptions, cleanup: () => Promise<void>): Promise<ZabbixCluster> {
  const swarmKeyFile = join(lab.dir, 'swarm.key');
  await writeFile(swarmKeyFile, makeSwarmKey(), { mode: 0o600 });
  const tmp = join(lab.dir, 'tmp');
  await mkdir(tmp, { recursive: true });
  // Each depot has its own namespace, so every copy can use the example's stock ports.
  const image = await prepareZabbixImage(join(lab.dir, 'image'), { cacheUpdateS: 2 });
  const peerIds = new Map<string, string>();
  for (const host of hosts) {
    const dataDir = join(lab.dir, 'data', host);
    const key = await loadOrCreateIdentity(join(dataDir, 'identity.key'));
    peerIds.set(host, peerIdFromPrivateKey(key).toString());
    const store = new ImageStore({ dir: join(dataDir, 'images'), keepVersions: 3, logger: silentLogger() });
    await store.start();
    await store.import(image.dir, ZBX_SERVICE);
    await store.stop();
  }
  const address = lab.serviceAddress(0);
  const c: ZabbixCluster = { lab, hosts, depots: new Map(), peerIds, swarmKeyFile, imageDir: image.dir, address, ip: address.split('/')[0]!, image, tmp, cleanup };
  await Promise.all(hosts.map((host) => startZabbixDepot(c, host, opts)));
  await waitFor(async () => (await aliveSeenBy(c, hosts[0]!)) === hosts.length, 20_000, 'all depots alive');
  return c;
}

/** Start (or, after a power-on, start again) `host`'s depot, as systemd would at boot. */
export async function startZabbixDepot(c: ZabbixCluster, host: string, opts: ZabbixClusterOptions): Promise<LabProcess> {
  const p = c.lab.spawn(host, depotArgv(c, host), {
    name: 'depot',
    env: {
      ...DEPOT_ENV,
      NAVIGATOR__http__adminToken: ADMIN_TOKEN,
      NAVIGATOR__dbsync__syncIntervalMs: String(opts.syncIntervalMs),
      NAVIGATOR_LOG_LEVEL: 'info',
      TMPDIR: c.tmp,
      NAVIGATOR__containers__passEnv: '[TMPDIR]',
      ...(typeof opts.env === 'function' ? opts.env(host) : opts.env),
    },
  });
  c.depots.set(host, p);
  await p.waitForLine(/"event":"depot-started"/, 30_000);
  return p;
}

/** POST /api/bootstrap on `host`'s depot (from inside its namespace: the admin API is local only). */
export async function bootstrapZabbix(c: ZabbixCluster, host: string, standbys: number): Promise<{ container: string }> {
  const body = {
    service: ZBX_SERVICE,
    imagePath: c.image.dir,
    container: { driver: 'process' },
    address: c.address,
    iface: 'eth0',
    port: c.image.zbxPort,
    standbys,
    database: c.image.database,
  };
  const r = await c.lab.exec(
    host,
    [
      'curl', '-sS', '--max-time', '170', '-w', '\n%{http_code}', '-H', 'content-type: application/json',
      '-H', `authorization: Bearer ${ADMIN_TOKEN}`, '--data-binary', '@-', `http://127.0.0.1:${HTTP_PORT}/api/bootstrap`,
    ],
    { input: JSON.stringify(body), reject: false, timeoutMs: 180_000 },
  );
  const lines = r.stdout.trimEnd().split('\n');
  const code = lines.pop();
  if (r.exitCode !== 0 || code !== '200') throw new Error(`bootstrap failed (curl ${r.exitCode}, HTTP ${code}): ${lines.join('\n')} ${r.stderr}`);
  return (JSON.parse(lines.join('\n')) as { result: { container: string } }).result;
}

export type ZabbixPlacement = SyncPlacement;

export function zabbixPlacement(c: ZabbixCluster, host: string): Promise<ZabbixPlacement> {
  return syncPlacement(c, host, ZBX_SERVICE);
}

/** The folder of the (only) Zabbix copy on `host`. */
export function copyDir(c: ZabbixCluster, host: string): Promise<string> {
  return copyDirOf(c, host, ZBX_SERVICE);
}

export async function sqlOn(c: ZabbixCluster, host: string, sql: string): Promise<string[][]> {
  return copySql(await copyDir(c, host), sql);
}

export async function movements(c: ZabbixCluster, host: string): Promise<MovementRecord[]> {
  const res = await api<{ records: MovementRecord[] }>(c, host, `/api/movements?service=${ZBX_SERVICE}&limit=100`);
  return res?.records ?? [];
}

export interface SendResult {
  seq: number;
  start: number;
  end: number;
  ok: boolean;
}

/** The zabbix-sender-loop process in the client namespace, its results collected as they come. */
export class SenderLoop {
  readonly results: SendResult[] = [];
  private constructor(readonly proc: LabProcess) {
    proc.onLine((line, stream) => {
      if (stream !== 'stdout' || !line.startsWith('{')) return;
      const msg = JSON.parse(line) as { type: string } & SendResult;
      if (msg.type === 'send') this.results.push({ seq: msg.seq, start: msg.start, end: msg.end, ok: msg.ok });
    });
  }

  static async start(c: ZabbixCluster, opts: { host: string; key: string; intervalMs: number }): Promise<SenderLoop> {
    const proc = c.lab.spawnNode('client', 'test/lab/zabbix-sender-loop.ts', [
      '--server', c.ip, '--port', String(c.image.zbxPort), '--host', opts.host, '--key', opts.key, '--interval', String(opts.intervalMs),
    ], { name: 'zabbix-sender' });
    const loop = new SenderLoop(proc);
    await proc.waitForLine(/"type":"ready"/, 15_000);
    return loop;
  }

  acked(): SendResult[] {
    return this.results.filter((r) => r.ok);
  }

  stop(): Promise<void> {
    return this.proc.stop(3000);
  }
}

/** Lines of zabbix_agentd's log with their time (the agent logs local time, ms resolution). */
export async function agentLog(path: string): Promise<Array<{ t: number; text: string }>> {
  const text = await readFile(path, 'utf8').catch(() => '');
  const out: Array<{ t: number; text: string }> = [];
  for (const line of text.split('\n')) {
    const m = /^\s*\d+:(\d{4})(\d{2})(\d{2}):(\d{2})(\d{2})(\d{2})\.(\d{3}) (.*)$/.exec(line);
    if (!m) continue;
    const [, y, mo, d, h, mi, s, ms, rest] = m;
    out.push({ t: new Date(+y!, +mo! - 1, +d!, +h!, +mi!, +s!, +ms!).getTime(), text: rest! });
  }
  return out;
}
