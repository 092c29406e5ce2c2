import { execa } from 'execa';
import { NavigatorError } from '../shared/errors.ts';
import type { DemoHost, DemoNetwork, SpawnRequest } from './network.ts';
import { DemoProcess } from './process.ts';
import { killMarked } from './marked-processes.ts';
import { procStartTime, removeAll, removeRecord, writeRecord, type DemoRecord } from './registry.ts';

// The demo's LAN when run as root: a bridge in a namespace of its own, one namespace per
// workstation joined to it by a veth pair, on a private 10.78.N.0/24. One more veth joins this
// machine's root namespace to the bridge with .254, so a browser here can open the tracking page
// (at the service address, or at any workstation's address) without a proxy, and so this process
// is the depots' admin host. (The lab harness in test/lab builds the same kind of LAN for tests;
// this is the product's own, smaller copy of it.)

const NS_PREFIX = 'navdemo-';

interface NetnsHost extends DemoHost {
  ns: string;
  /** Its bridge port (in the bridge namespace). */
  port: string;
}

export class NetnsNetwork implements DemoNetwork {
  readonly mode = 'netns' as const;
  readonly serviceIface = 'eth0';
  readonly addressMoves = true;
  readonly hosts: NetnsHost[] = [];
  readonly serviceAddress: string;
  readonly adminIp: string;
  private readonly bridgeNs: string;
  private readonly rootLink: string;
  private destroyed = false;

  private constructor(
    private readonly rec: DemoRecord,
    readonly net: string,
  ) {
    this.bridgeNs = `${NS_PREFIX}${rec.id}-br`;
    this.rootLink = `nvd${rec.id}`;
    this.serviceAddress = `${net}.100/24`;
    this.adminIp = `${net}.254`;
  }

  /** Builds the LAN; on failure everything made so far is removed before the error propagates. */
  static async create(id: string, dir: string, workstations: number): Promise<NetnsNetwork> {
    const net = await freeSubnet();
    const names = Array.from({ length: workstations }, (_, i) => `ws${i + 1}`);
    const rec: DemoRecord = {
      id,
      pid: process.pid,
      startTime: await procStartTime(process.pid),
      dir,
      namespaces: [`${NS_PREFIX}${id}-br`, ...names.map((n) => `${NS_PREFIX}${id}-${n}`)],
      rootLink: `nvd${id}`,
    };
    // Written down before anything exists, so a crash at any point leaves something to sweep.
    await writeRecord(rec);
    const n = new NetnsNetwork(rec, net);
    try {
      await n.build(names);
    } catch (err) {
      await n.destroy().catch(() => undefined);
      throw err;
    }
    return n;
  }

  spawn(host: DemoHost, req: SpawnRequest): DemoProcess {
    const h = this.get(host);
    return new DemoProcess(`${h.name} ${req.argv[1] ?? req.argv[0]}`, ['ip', 'netns', 'exec', h.ns, ...req.argv], req);
  }

  async powerOff(host: DemoHost): Promise<void> {
    const h = this.get(host);
    await ip(['-n', this.bridgeNs, 'link', 'set', h.port, 'down']);
    await killMarked(this.rec.id, h.name);
    await killNamespace(h.ns);
  }

  async powerOn(host: DemoHost): Promise<void> {
    const h = this.get(host);
    await killMarked(this.rec.id, h.name);
    await killNamespace(h.ns);
    // A rebooted host has only its own address: a service address it held is gone.
    await ip(['-n', h.ns, 'addr', 'flush', 'dev', 'eth0']);
    await ip(['-n', h.ns, 'addr', 'add', `${h.ip}/24`, 'dev', 'eth0']);
    await ip(['-n', h.ns, 'neigh', 'flush', 'dev', 'eth0']);
    await ip(['-n', this.bridgeNs, 'link', 'set', h.port, 'up']);
  }

  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    const errors = await removeAll(this.rec);
    await removeRecord(this.rec.id);
    if (errors.length > 0) throw new NavigatorError('INTERNAL', `demo cleanup: ${errors.join('; ')}`);
  }

  private get(host: DemoHost): NetnsHost {
    const h = this.hosts.find((x) => x.name === host.name);
    if (!h) throw new NavigatorError('NOT_FOUND', `no workstation ${host.name}`);
    return h;
  }

  private async build(names: string[]): Promise<void> {
    const br = this.bridgeNs;
    await ip(['netns', 'add', br]);
    await ip(['-n', br, 'link', 'set', 'lo', 'up']);
    await ip(['-n', br, 'link', 'add', 'br0', 'type', 'bridge', 'mcast_snooping', '0']);
    await ip(['-n', br, 'link', 'set', 'br0', 'up']);
    // This machine's way in: a veth from the root namespace to the bridge.
    await ip(['link', 'add', this.rootLink, 'type', 'veth', 'peer', 'name', 'p-root', 'netns', br]);
    await ip(['-n', br, 'link', 'set', 'p-root', 'master', 'br0', 'up']);
    await ip(['link', 'set', this.rootLink, 'addrgenmode', 'none']);
    await ip(['addr', 'add', `${this.adminIp}/24`, 'dev', this.rootLink]);
    await ip(['link', 'set', this.rootLink, 'up']);
    for (const [i, name] of names.entries()) {
      const ns = `${NS_PREFIX}${this.rec.id}-${name}`;
      const port = `p-${name}`;
      const hostIp = `${this.net}.${11 + i}`;
      await ip(['netns', 'add', ns]);
      await ip(['-n', br, 'link', 'add', port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
      await ip(['-n', br, 'link', 'set', port, 'master', 'br0', 'up']);
      await ip(['-n', ns, 'link', 'set', 'lo', 'up']);
      await ip(['-n', ns, 'link', 'set', 'eth0', 'addrgenmode', 'none']);
      await ip(['-n', ns, 'addr', 'add', `${hostIp}/24`, 'dev', 'eth0']);
      await ip(['-n', ns, 'link', 'set', 'eth0', 'up']);
      this.hosts.push({ name, ip: hostIp, ns, port });
    }
  }
}

/** The first 10.78.N.0/24 that no route or address of this machine touches. */
async function freeSubnet(): Promise<string> {
  const r = await ip(['-j', 'route', 'show', 'table', 'all']);
  const a = await ip(['-j', 'addr', 'show']);
  const used = `${r.stdout}\n${a.stdout}`;
  for (let n = 0; n < 255; n++) {
    if (!used.includes(`"10.78.${n}.`)) return `10.78.${n}`;
  }
  throw new NavigatorError('CONFLICT', 'no free 10.78.N.0/24 subnet for the demo LAN on this machine');
}

async function killNamespace(ns: string): Promise<void> {
  for (let round = 0; round < 20; round++) {
    const r = await execa('ip', ['netns', 'pids', ns], { reject: false });
    const pids = r.stdout.split(/\s+/).filter(Boolean).map(Number);
    if (pids.length === 0) return;
    for (const p of pids) {
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        // gone
      }
    }
    await new Promise((res) => setTimeout(res, 20));
  }
}

async function ip(args: string[]): Promise<{ stdout: string }> {
  const r = await execa('ip', args, { reject: false, timeout: 15_000 });
  if (r.exitCode !== 0) throw new NavigatorError('COMMAND_FAILED', `ip ${args.join(' ')} failed: ${r.stderr.trim() || `exit ${r.exitCode}`}`);
  return { stdout: r.stdout };
}
