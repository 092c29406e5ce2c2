import type { DemoHost, DemoNetwork, SpawnRequest } from './network.ts';
import { DemoProcess } from './process.ts';
import { killMarked } from './marked-processes.ts';
import { removeDemo, writeRecord, type DemoRecord } from './registry.ts';
import { NamespaceLan, freeSubnet, type LanHost } from '../lab/lan/namespace-lan.ts';
import { thisOwner } from '../lab/lan/owner-registry.ts';

// The demo's LAN when run as root: the namespace LAN of lab/lan (the one the lab tests stand on)
// with one namespace per workstation on a private 10.78.N.0/24, the first N no route or address
// of this machine uses. Its root link joins this machine's root namespace to the bridge with .254,
// so a browser here can open the tracking page (at the service address, or at any workstation's
// address) without a proxy, and so this process is the depots' admin host.

const NS_PREFIX = 'navdemo-';

export class NetnsNetwork implements DemoNetwork {
  readonly mode = 'netns' as const;
  readonly serviceIface = 'eth0';
  readonly addressMoves = true;
  readonly hosts: LanHost[] = [];
  readonly serviceAddress: string;
  readonly adminIp: string;
  private readonly lan: NamespaceLan;
  private destroyed = false;

  private constructor(
    private readonly rec: DemoRecord & { rootLink: string },
    readonly net: string,
  ) {
    this.serviceAddress = `${net}.100/24`;
    this.adminIp = `${net}.254`;
    this.lan = new NamespaceLan({ prefix: NS_PREFIX, id: rec.id, net, rootLink: { name: rec.rootLink, ip: this.adminIp } });
  }

  /** Builds the LAN; on failure everything made so far is removed before the error propagates. */
  static async create(id: string, dir: string, workstations: number): Promise<NetnsNetwork> {
    const net = await freeSubnet('10.78');
    const names = Array.from({ length: workstations }, (_, i) => `ws${i + 1}`);
    const rec = { id, ...(await thisOwner()), dir, namespaces: NamespaceLan.namespaceNames(NS_PREFIX, id, names), rootLink: `nvd${id}` };
    // Written down before anything exists, so a crash at any point leaves something to sweep.
    await writeRecord(rec);
    const n = new NetnsNetwork(rec, net);
    try {
      n.hosts.push(...(await n.lan.build(names.map((name, i) => ({ name, ip: `${net}.${11 + i}` })))));
    } catch (err) {
      await n.destroy().catch(() => undefined);
      throw err;
    }
    return n;
  }

  spawn(host: DemoHost, req: SpawnRequest): DemoProcess {
    const h = this.lan.host(host.name);
    return new DemoProcess(`${h.name} ${req.argv[1] ?? req.argv[0]}`, ['ip', 'netns', 'exec', h.ns, ...req.argv], req);
  }

  async powerOff(host: DemoHost): Promise<void> {
    await this.lan.linkDown(host.name);
    await killMarked(this.rec.id, host.name);
    await this.lan.killAll(host.name);
  }

  async powerOn(host: DemoHost): Promise<void> {
    await killMarked(this.rec.id, host.name);
    await this.lan.powerOn(host.name);
  }

  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    await removeDemo(this.rec);
  }
}
