import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { stringify } from 'yaml';
import { loadOrCreateIdentity } from '../depot/identity.ts';
import { makeSwarmKey } from '../depot/swarm-key.ts';
import { DEPOT_ENV, depotArgv } from '../depot/runtime-flags.ts';
import { ImageStore } from '../depot/images/catalog.ts';
import { silentLogger } from '../shared/logger.ts';
import { NavigatorError } from '../shared/errors.ts';
import type { ServiceView } from '../shared/api/tracking.ts';
import type { MovementRecord } from '../shared/movement.ts';
import type { DepotRow } from '../shared/api/depots.ts';
import type { DemoHost, DemoNetwork } from './network.ts';
import type { DemoProcess } from './process.ts';
import { DEMO_ENV, HOST_ENV } from './marked-processes.ts';
import { httpJson } from './api.ts';
import { DB_NAME, DB_USER, MONITOR_PORT, PASSWORD_FILE, SERVICE, type DemoImage } from './image.ts';
import { REPO_ROOT } from '../shared/repo-root.ts';

// The demo's depots: one real `navigator depot run` per workstation with its own configuration
// file, all sharing a swarm key and knowing each other through bootstrap addresses, the sample
// image pre-staged in every image store (what pre-staging leaves on likely next hosts); the
// service bootstrapped through the admin API of the first depot.

export const P2P_PORT = 7470;
export const HTTP_PORT = 7480;
/** Sync the standby's database every 10 s (the product default is 60 s), so the demo shows it. */
const SYNC_INTERVAL_MS = 10_000;

/** What demo/service/monitor.ts answers at /json. */
export interface MonitorStatus {
  host: string;
  written: number;
  history?: { rows: number; byHost: Array<{ host: string; n: number }> };
}

export interface Placement {
  primary: string | undefined;
  term: number;
  standbys: string[];
}

export class DemoCluster {
  private readonly token = randomBytes(24).toString('base64url');
  private readonly peerIds = new Map<string, string>();
  private readonly depots = new Map<string, DemoProcess>();
  private readonly swarmKeyFile: string;

  constructor(
    private readonly id: string,
    private readonly net: DemoNetwork,
    private readonly dir: string,
    private readonly image: DemoImage,
  ) {
    this.swarmKeyFile = join(dir, 'swarm.key');
  }

  get hosts(): readonly DemoHost[] {
    return this.net.hosts;
  }

  /** Identities, swarm key, configuration files; the image staged in every store. */
  async prepare(): Promise<void> {
    await writeFile(this.swarmKeyFile, makeSwarmKey(), { mode: 0o600 });
    await mkdir(join(this.dir, 'logs'), { recursive: true });
    for (const h of this.hosts) {
      const dataDir = join(this.dir, 'data', h.name);
      const key = await loadOrCreateIdentity(join(dataDir, 'identity.key'));
      this.peerIds.set(h.name, peerIdFromPrivateKey(key).toString());
      const store = new ImageStore({ dir: join(dataDir, 'images'), keepVersions: 3, logger: silentLogger() });
      await store.start();
      await store.import(this.image.dir, SERVICE);
      await store.stop();
    }
    for (const h of this.hosts) await writeFile(this.configFile(h), stringify(this.config(h)), { mode: 0o600 });
  }

  private configFile(h: DemoHost): string {
    return join(this.dir, 'data', h.name, 'navigator.yaml');
  }

  private config(h: DemoHost): Record<string, unknown> {
    return {
      node: { name: h.name, dataDir: join(this.dir, 'data', h.name) },
      network: {
        listen: [`/ip4/${h.ip}/tcp/${P2P_PORT}`],
        bootstrap: this.hosts.filter((x) => x !== h).map((x) => `/ip4/${x.ip}/tcp/${P2P_PORT}/p2p/${this.peerIds.get(x.name)}`),
        swarmKeyFile: this.swarmKeyFile,
        mdns: false,
      },
      http: { host: this.net.mode === 'netns' ? '0.0.0.0' : h.ip, port: HTTP_PORT, adminHost: this.net.adminIp, adminToken: this.token },
      dbsync: { syncIntervalMs: SYNC_INTERVAL_MS },
      // Containers get a minimal environment: the sample service reads these (and the demo's
      // marker, by which --cleanup finds every process the demo started).
      containers: { passEnv: [DEMO_ENV, HOST_ENV, 'NAVIGATOR_DEMO_DB_BIND', 'NAVIGATOR_DEMO_DB_HOST'] },
      log: { level: 'info' },
    };
  }

  /** Starts (or, after a power cut, restarts) the depot of one workstation. */
  async startDepot(h: DemoHost): Promise<void> {
    const old = this.depots.get(h.name);
    if (old?.running) throw new NavigatorError('CONFLICT', `the depot of ${h.name} still runs`);
    const p = this.net.spawn(h, {
      argv: depotArgv(process.execPath, join(REPO_ROOT, 'bin/navigator.mjs'), ['--config', this.configFile(h)]),
      env: {
        ...DEPOT_ENV,
        [DEMO_ENV]: this.id,
        [HOST_ENV]: h.name,
        // Read by the sample service's programs (demo/service/*.ts) in the containers.
        NAVIGATOR_DEMO_DB_BIND: this.net.mode === 'netns' ? '0.0.0.0' : h.ip,
        NAVIGATOR_DEMO_DB_HOST: this.net.mode === 'netns' ? '127.0.0.1' : h.ip,
        PATH: `${join(REPO_ROOT, 'node_modules', '.bin')}:${process.env.PATH ?? '/usr/bin:/bin'}:/usr/sbin:/sbin`,
      },
      logPath: join(this.dir, 'logs', `${h.name}-depot.log`),
      cwd: REPO_ROOT,
    });
    this.depots.set(h.name, p);
    await p.waitForLine(/"event":"depot-started"/, 60_000);
  }

  /** Forgets a depot killed by a power cut (its process is gone). */
  async depotGone(h: DemoHost): Promise<void> {
    await this.depots.get(h.name)?.exited;
    this.depots.delete(h.name);
  }

  async stopDepots(graceMs: number): Promise<void> {
    await Promise.all([...this.depots.values()].map((p) => p.stop(graceMs)));
    this.depots.clear();
  }

  url(h: DemoHost, path = '/'): string {
    return `http://${h.ip}:${HTTP_PORT}${path}`;
  }

  /** The tracking page's address: the service address follows the primary (namespaces). */
  pageUrl(): string {
    if (this.net.mode === 'netns') return `http://${this.net.serviceAddress.split('/')[0]}:${HTTP_PORT}/`;
    return this.url(this.hosts[0]!);
  }

  async api<T>(h: DemoHost, path: string): Promise<T | undefined> {
    try {
      return await httpJson<T>(this.url(h, path), { localAddress: this.net.adminIp, timeoutMs: 2000 });
    } catch {
      return undefined;
    }
  }

  /** Running depots other than `exclude`, to ask for the cluster's view. */
  observers(exclude: string[] = []): DemoHost[] {
    return this.hosts.filter((h) => !exclude.includes(h.name) && this.depots.get(h.name)?.running);
  }

  async aliveCount(h: DemoHost): Promise<number> {
    const r = await this.api<{ depots: DepotRow[] }>(h, '/api/depots');
    return r?.depots.filter((d) => d.state === 'alive').length ?? 0;
  }

  async placement(exclude: string[] = []): Promise<Placement> {
    for (const h of this.observers(exclude)) {
      const r = await this.api<{ services: ServiceView[] }>(h, '/api/services');
      if (!r) continue;
      const view = r.services.find((s) => s.service === SERVICE);
      const running = (view?.copies ?? []).filter((c) => c.state === 'running');
      const primaries = running.filter((c) => c.role === 'primary').sort((a, b) => b.term - a.term);
      return { primary: primaries[0]?.host, term: primaries[0]?.term ?? 0, standbys: running.filter((c) => c.role === 'standby').map((c) => c.host).sort() };
    }
    return { primary: undefined, term: 0, standbys: [] };
  }

  /** The newest failover record for `term`, as some running depot's journal has it. */
  async failoverRecord(term: number, exclude: string[] = []): Promise<MovementRecord | undefined> {
    for (const h of this.observers(exclude)) {
      const r = await this.api<{ records: MovementRecord[] }>(h, `/api/movements?service=${SERVICE}&event=failover&limit=5`);
      const rec = r?.records.find((m) => m.term === term);
      if (rec) return rec;
    }
    return undefined;
  }

  /** The monitor's own status (at the service address in namespaces, else on the primary's host). */
  async monitorStatus(primary: string): Promise<MonitorStatus | undefined> {
    const ip = this.net.mode === 'netns' ? this.net.serviceAddress.split('/')[0]! : this.hosts.find((h) => h.name === primary)?.ip;
    if (!ip) return undefined;
    try {
      return await httpJson<MonitorStatus>(`http://${ip}:${MONITOR_PORT}/json`, { timeoutMs: 2000 });
    } catch {
      return undefined;
    }
  }

  /** Registers the service on the first depot: primary there, one standby placed by the pilots. */
  async bootstrap(standbys: number): Promise<void> {
    const h = this.hosts[0]!;
    await httpJson(this.url(h, '/api/bootstrap'), {
      method: 'POST',
      token: this.token,
      localAddress: this.net.adminIp,
      timeoutMs: 120_000,
      body: {
        service: SERVICE,
        imagePath: this.image.dir,
        container: { driver: 'process', manifest: 'container.yaml' },
        address: this.net.serviceAddress,
        iface: this.net.serviceIface,
        port: MONITOR_PORT,
        standbys,
        database: { database: DB_NAME, user: DB_USER, passwordFile: PASSWORD_FILE, port: this.image.dbPort },
      },
    });
  }
}

export async function waitFor(check: () => Promise<boolean>, timeoutMs: number, what: string, signal?: AbortSignal): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (signal?.aborted) throw new NavigatorError('INTERNAL', `stopped while waiting for ${what}`);
    if (await check()) return;
    if (Date.now() > deadline) throw new NavigatorError('TIMEOUT', `timed out after ${Math.round(timeoutMs / 1000)} s waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}
