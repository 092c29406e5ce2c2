import { execa } from 'execa';
import type { Logger } from '../../shared/logger.ts';
import { silentLogger } from '../../shared/logger.ts';
import { NavigatorError, errorMessage } from '../../shared/errors.ts';
import { killNamespace, namespacePids, removeNamespace, run } from './namespaces.ts';
import { clearLink, shapeLink, type LinkEnd, type NetemOptions } from './netem.ts';

/**
 * A LAN made of network namespaces, the one the demo and the lab both stand on: a bridge in a
 * namespace of its own (the switch: it holds no address), one namespace per host joined to it by
 * a veth pair, on a private /24 that exists only inside these namespaces. Optionally a gateway
 * address every other host routes through, and a veth from this machine's root namespace into
 * the bridge (so a browser here reaches the hosts without a proxy). Faults a real LAN has: a
 * cable pulled at the switch, a power cut and a fresh boot, a partition, a lossy link.
 *
 * Names: `<prefix><id>-br` for the bridge, `<prefix><id>-<host>` for a host, `p-<host>` for its
 * bridge port, `eth0` inside. Record them (namespaceNames) before build() so a crash at any point
 * leaves something to sweep.
 */

export interface LanHost {
  /** Short name: w1..wN, client, watch, gw (lab); ws1..wsN (demo). */
  name: string;
  /** Network namespace name. */
  ns: string;
  /** Interface inside the namespace. */
  iface: string;
  /** The host's own address (no prefix). */
  ip: string;
  mac: string;
  /** The bridge-side end of its veth pair (in the bridge namespace). */
  port: string;
}

export interface LanOptions {
  /** Namespace name prefix, e.g. `navlab-`. */
  prefix: string;
  /** Tells this LAN's names from other LANs' with the same prefix. */
  id: string;
  /** First three octets of the subnet, e.g. `10.77.42`. */
  net: string;
  /** A host at this address is the gateway; every other host gets a default route through it. */
  gateway?: string;
  /** A veth from the root namespace into the bridge: its name here and this machine's address on the LAN. */
  rootLink?: { name: string; ip: string };
  logger?: Logger;
}

const IFACE = 'eth0';

export class NamespaceLan {
  readonly id: string;
  /** First three octets of the subnet, e.g. `10.77.42`. */
  readonly net: string;
  readonly bridgeNs: string;
  readonly gateway: string | undefined;
  protected readonly hosts = new Map<string, LanHost>();
  protected readonly log: Logger;
  private readonly prefix: string;
  private readonly rootLink: LanOptions['rootLink'];
  private readonly extraBridges = new Set<string>();
  /** Hosts whose link carries loss or delay now: a power-on clears it. */
  private readonly shaped = new Set<string>();

  constructor(opts: LanOptions) {
    this.prefix = opts.prefix;
    this.id = opts.id;
    this.net = opts.net;
    this.bridgeNs = `${opts.prefix}${opts.id}-br`;
    this.gateway = opts.gateway;
    this.rootLink = opts.rootLink;
    this.log = opts.logger ?? silentLogger();
  }

  /** Every namespace a LAN with these host names has: the bridge's first. */
  static namespaceNames(prefix: string, id: string, hosts: readonly string[]): string[] {
    return [`${prefix}${id}-br`, ...hosts.map((h) => `${prefix}${id}-${h}`)];
  }

  /** The namespaces this LAN made: its hosts', then the bridge's. */
  namespaces(): string[] {
    return [...[...this.hosts.values()].map((h) => h.ns), this.bridgeNs];
  }

  /** Makes the bridge, the root link (if asked for) and the hosts, in the order given. */
  async build(hosts: ReadonlyArray<{ name: string; ip: string }>): Promise<LanHost[]> {
    const br = this.bridgeNs;
    await run('ip', ['netns', 'add', br]);
    await run('ip', ['-n', br, 'link', 'set', 'lo', 'up']);
    await run('ip', ['-n', br, 'link', 'add', 'br0', 'type', 'bridge', 'mcast_snooping', '0']);
    await run('ip', ['-n', br, 'link', 'set', 'br0', 'up']);
    if (this.rootLink) {
      const { name, ip } = this.rootLink;
      await run('ip', ['link', 'add', name, 'type', 'veth', 'peer', 'name', 'p-root', 'netns', br]);
      await run('ip', ['-n', br, 'link', 'set', 'p-root', 'master', 'br0', 'up']);
      await run('ip', ['link', 'set', name, 'addrgenmode', 'none']);
      await run('ip', ['addr', 'add', `${ip}/24`, 'dev', name]);
      await run('ip', ['link', 'set', name, 'up']);
    }
    const made = await Promise.all(hosts.map((h) => this.addHost(h.name, h.ip)));
    for (const h of made) this.hosts.set(h.name, h);
    return made;
  }

  /** The host with this short name or namespace name. */
  host(name: string): LanHost {
    const h = this.hosts.get(name) ?? [...this.hosts.values()].find((x) => x.ns === name);
    if (!h) throw new NavigatorError('NOT_FOUND', `LAN ${this.prefix}${this.id}: no host "${name}" (have ${[...this.hosts.keys()].join(', ')})`);
    return h;
  }

  /** Short names of the hosts whose interface carries `ip` right now (any prefix). */
  async holders(ip: string): Promise<string[]> {
    const all = await Promise.all(
      [...this.hosts.values()].map(async (h) => {
        const r = await execa('ip', ['-n', h.ns, '-j', 'addr', 'show', 'dev', h.iface], { reject: false });
        if (r.exitCode !== 0) return undefined;
        const links = JSON.parse(r.stdout || '[]') as Array<{ addr_info?: Array<{ family?: string; local?: string }> }>;
        return links.some((l) => (l.addr_info ?? []).some((a) => a.family === 'inet' && a.local === ip)) ? h.name : undefined;
      }),
    );
    return all.filter((x): x is string => x !== undefined);
  }

  /** The MAC the host's neighbour cache holds for `ip`, or undefined. */
  async neighbourMac(host: string, ip: string): Promise<string | undefined> {
    const h = this.host(host);
    const r = await run('ip', ['-n', h.ns, '-j', 'neigh', 'show', 'to', ip, 'dev', h.iface]);
    const entries = JSON.parse(r.stdout || '[]') as Array<{ lladdr?: string }>;
    return entries[0]?.lladdr?.toLowerCase();
  }

  /** The pids of every process inside a host's namespace. */
  async pids(host: string): Promise<number[]> {
    return namespacePids(this.host(host).ns);
  }

  /** Kills every process in a host's namespace (default SIGKILL, as a power cut). */
  async killAll(host: string, signal: NodeJS.Signals = 'SIGKILL'): Promise<number> {
    return killNamespace(this.host(host).ns, signal);
  }

  /** Cuts the host's cable at the switch (its bridge port down); with kill, also every process in it dies. */
  async linkDown(host: string, opts: { kill?: boolean } = {}): Promise<void> {
    const h = this.host(host);
    await run('ip', ['-n', this.bridgeNs, 'link', 'set', h.port, 'down']);
    if (opts.kill) await killNamespace(h.ns, 'SIGKILL');
  }

  /** Reconnects the cable. */
  async linkUp(host: string): Promise<void> {
    await run('ip', ['-n', this.bridgeNs, 'link', 'set', this.host(host).port, 'up']);
  }

  /** Power loss: the network goes first, then every process in the namespace is killed. */
  async powerOff(host: string): Promise<void> {
    await this.linkDown(host, { kill: true });
  }

  /**
   * Power back on: a rebooted host has only its own address (a service address held before the
   * crash is gone), no neighbour cache, no traffic shaping; then the link comes up.
   */
  async powerOn(host: string): Promise<void> {
    const h = this.host(host);
    await killNamespace(h.ns, 'SIGKILL');
    await run('ip', ['-n', h.ns, 'addr', 'flush', 'dev', h.iface]);
    await run('ip', ['-n', h.ns, 'addr', 'add', `${h.ip}/24`, 'dev', h.iface]);
    await run('ip', ['-n', h.ns, 'neigh', 'flush', 'dev', h.iface]);
    if (this.shaped.has(h.name)) await this.clearNetem(h.name);
    await this.linkUp(h.name);
    if (this.gateway !== undefined && h.ip !== this.gateway) await run('ip', ['-n', h.ns, 'route', 'replace', 'default', 'via', this.gateway, 'dev', h.iface]);
  }

  /**
   * Splits the LAN: each group gets its own bridge; hosts in no group (the gateway too, unless
   * listed) stay on the main bridge. Calling again re-partitions from scratch.
   */
  async partition(groups: readonly (readonly string[])[]): Promise<void> {
    const seen = new Set<string>();
    const target = new Map<string, string>();
    for (const h of this.hosts.values()) target.set(h.name, 'br0');
    groups.forEach((g, i) => {
      for (const name of g) {
        const h = this.host(name);
        if (seen.has(h.name)) throw new NavigatorError('BAD_REQUEST', `partition: host ${h.name} is in two groups`);
        seen.add(h.name);
        target.set(h.name, `brp${i}`);
      }
    });
    for (let i = 0; i < groups.length; i++) {
      const br = `brp${i}`;
      if (!this.extraBridges.has(br)) {
        await run('ip', ['-n', this.bridgeNs, 'link', 'add', br, 'type', 'bridge', 'mcast_snooping', '0']);
        await run('ip', ['-n', this.bridgeNs, 'link', 'set', br, 'up']);
        this.extraBridges.add(br);
      }
    }
    await Promise.all([...target].map(([name, br]) => run('ip', ['-n', this.bridgeNs, 'link', 'set', this.host(name).port, 'master', br])));
    this.log.info({ event: 'lab-partition', groups }, 'lab partitioned');
  }

  /** Every host back on the main bridge. */
  async heal(): Promise<void> {
    await Promise.all([...this.hosts.values()].map((h) => run('ip', ['-n', this.bridgeNs, 'link', 'set', h.port, 'master', 'br0'])));
    for (const br of this.extraBridges) await run('ip', ['-n', this.bridgeNs, 'link', 'del', br]);
    this.extraBridges.clear();
    this.log.info({ event: 'lab-heal' }, 'lab partition healed');
  }

  /** Loss and delay on a host's link, both directions (lab/lan/netem.ts: what works on which kernel). */
  async netem(host: string, opts: NetemOptions): Promise<void> {
    const h = this.host(host);
    this.shaped.add(h.name);
    await shapeLink(this.linkEnds(h), opts);
  }

  async clearNetem(host: string): Promise<void> {
    const h = this.host(host);
    await clearLink(this.linkEnds(h));
    this.shaped.delete(h.name);
  }

  /** Removes every namespace of this LAN (and what runs in them); returns what could not be removed. */
  async removeNamespaces(): Promise<string[]> {
    const errors: string[] = [];
    for (const ns of this.namespaces()) {
      try {
        await removeNamespace(ns);
      } catch (e) {
        errors.push(errorMessage(e));
      }
    }
    return errors;
  }

  private linkEnds(h: LanHost): LinkEnd[] {
    return [[h.ns, h.iface], [this.bridgeNs, h.port]];
  }

  private async addHost(name: string, ip: string): Promise<LanHost> {
    const ns = `${this.prefix}${this.id}-${name}`;
    const port = `p-${name}`;
    await run('ip', ['netns', 'add', ns]);
    await run('ip', ['-n', this.bridgeNs, 'link', 'add', port, 'type', 'veth', 'peer', 'name', IFACE, 'netns', ns]);
    await run('ip', ['-n', this.bridgeNs, 'link', 'set', port, 'master', 'br0', 'up']);
    await run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    // No IPv6 link-local address: keeps DAD/router-solicit noise off the LAN.
    await run('ip', ['-n', ns, 'link', 'set', IFACE, 'addrgenmode', 'none']);
    await run('ip', ['-n', ns, 'addr', 'add', `${ip}/24`, 'dev', IFACE]);
    await run('ip', ['-n', ns, 'link', 'set', IFACE, 'up']);
    if (this.gateway !== undefined && ip !== this.gateway) await run('ip', ['-n', ns, 'route', 'add', 'default', 'via', this.gateway, 'dev', IFACE]);
    const link = JSON.parse((await run('ip', ['-n', ns, '-j', 'link', 'show', IFACE])).stdout) as Array<{ address: string }>;
    return { name, ns, iface: IFACE, ip, mac: link[0]!.address.toLowerCase(), port };
  }
}

/** The first `<prefix>.N.0/24` (N from 0) that no route or address of this machine touches, as `<prefix>.N`. */
export async function freeSubnet(prefix: string): Promise<string> {
  const r = await run('ip', ['-j', 'route', 'show', 'table', 'all']);
  const a = await run('ip', ['-j', 'addr', 'show']);
  const used = `${r.stdout}\n${a.stdout}`;
  for (let n = 0; n < 255; n++) {
    if (!used.includes(`"${prefix}.${n}.`)) return `${prefix}.${n}`;
  }
  throw new NavigatorError('CONFLICT', `no free ${prefix}.N.0/24 subnet for a LAN on this machine`);
}
