import { appendFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { Depot } from '../depot/depot.ts';
import { makeSwarmKey } from '../depot/swarm-key.ts';
import { ImageStore } from '../depot/images/catalog.ts';
import { containersPlugin } from '../plugins/containers.ts';
import { ContainerManager } from '../depot/containers/manager.ts';
import { imagesPlugin } from '../plugins/images.ts';
import { ImageShipping } from '../ship/image-shipping.ts';
import { parseConfig, type Config } from '../shared/config.ts';
import { silentLogger, type Logger } from '../shared/logger.ts';
import { startSshd, type TestSshd } from '../lab/loopback/sshd.ts';
import { waitFor } from '../lab/loopback/depot-procs.ts';

// Real depots on loopback for the shipping tests and bench:vm-refresh: A ships (the pilots'
// ImageShipping), the receivers B (and C) each sit behind their own OpenSSH sshd that accepts A's
// key, with A's known_hosts naming them all. No pilots run: the receivers are told that A holds the
// lease of the service (term 1), as their voters would.

export interface ShipNode {
  depot: Depot;
  store: ImageStore;
  config: Config;
}

export interface ShipDepots {
  root: string;
  knownHosts: string;
  a: ShipNode;
  /** B, C, … in order, each with its sshd in `sshds`. */
  receivers: ShipNode[];
  sshds: TestSshd[];
  shipping: ImageShipping;
  /** Heartbeat of `of` as `from` last heard it. */
  heartbeatOf(from: ShipNode, of: ShipNode): ReturnType<Depot['membership']['view']>[number]['heartbeat'];
  stop(): Promise<void>;
}

export interface ShipDepotsOptions {
  /** Names the folder and the depots (PREFIX-a, PREFIX-b, …). */
  prefix: string;
  receivers: number;
  /** Store block size (default: the store's). */
  blockSize?: number;
  /** Extra `ship` config of A (bandwidth limits, requests in flight). */
  aShip?: Record<string, unknown>;
  /** The service whose lease A holds on the receivers (default `svc`). */
  service?: string;
  /** Folder the depots' temporary folder is made in (default: the OS's; a guest image wants a disk, not a tmpfs). */
  tmpRoot?: string;
  shippingLogger?: Logger;
}

export async function startShipDepots(o: ShipDepotsOptions): Promise<ShipDepots> {
  const swarmKey = makeSwarmKey();
  const root = await mkdtemp(join(o.tmpRoot ?? tmpdir(), `nav-${o.prefix}-`));
  const sshds = await Promise.all(Array.from({ length: o.receivers }, () => startSshd()));
  // One shipping key, authorized on every receiver's sshd.
  const shipKey = join(root, 'ship_ed25519');
  await execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', shipKey]);
  for (const s of sshds) await appendFile(join(s.dir, 'authorized_keys'), await readFile(`${shipKey}.pub`));
  const knownHosts = join(root, 'known_hosts');
  await writeFile(knownHosts, (await Promise.all(sshds.map((s) => readFile(s.knownHostsFile, 'utf8')))).join(''));
  const nodes: ShipNode[] = [];

  const startNode = async (name: string, sshPort: number, bootstrap: string[], ship: Record<string, unknown> = {}): Promise<ShipNode> => {
    const config = parseConfig({
      node: { name, dataDir: join(root, name) },
      network: { listen: ['/ip4/127.0.0.1/tcp/0'], mdns: false, bootstrap },
      membership: { heartbeatMs: 200 },
      http: { host: '127.0.0.1', port: 0 },
      log: { level: 'silent' },
      ship: { sshPort, sshUser: 'root', sshKeyFile: shipKey, knownHostsFile: knownHosts, ...ship },
    });
    // The images plugin starts and stops the store.
    const store = new ImageStore({ dir: config.store.dir, keepVersions: 3, blockSize: o.blockSize ?? config.store.blockBytes, logger: silentLogger() });
    const manager = new ContainerManager({ root: join(config.store.dir, 'containers'), images: store, logger: silentLogger(), statusIntervalMs: config.membership.heartbeatMs });
    const depot = new Depot({ config, log: silentLogger(), swarmKey, plugins: [imagesPlugin({ store }), containersPlugin({ manager })] });
    await depot.start();
    const n = { depot, store, config };
    nodes.push(n);
    return n;
  };

  const a = await startNode(`${o.prefix}-a`, 22, [], o.aShip);
  const boot = [a.depot.node.getMultiaddrs()[0]!.toString()];
  const receivers: ShipNode[] = [];
  for (const [i, s] of sshds.entries()) receivers.push(await startNode(`${o.prefix}-${String.fromCharCode(98 + i)}`, s.port, boot));
  for (const n of receivers) n.depot.components.control.guard.setAuthority({ holder: async (s) => (s === (o.service ?? 'svc') ? { peer: a.depot.peerId, term: 1 } : undefined) });
  const shipping = new ImageShipping({
    ship: a.config.ship,
    store: a.store,
    client: () => ({ call: (peer, method, params, opts) => a.depot.components.control.call(peer.toString(), method, params, opts) }),
    members: () => a.depot.membership.view(),
    logger: o.shippingLogger ?? silentLogger(),
  });
  const heartbeatOf = (from: ShipNode, of: ShipNode) => from.depot.membership.view().find((m) => m.peerId === of.depot.peerId)?.heartbeat;
  await waitFor('A hears every receiver', async () => (receivers.every((r) => heartbeatOf(a, r)) ? true : undefined), 20_000);
  return {
    root, knownHosts, a, receivers, sshds, shipping, heartbeatOf,
    async stop() {
      await shipping.stop();
      for (const n of nodes.reverse()) await n.depot.stop().catch(() => undefined);
      await Promise.all(sshds.map((s) => s.stop()));
      await rm(root, { recursive: true, force: true });
    },
  };
}
