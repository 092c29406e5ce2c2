// The VM-packed Zabbix guest image refreshed through depots (not store to store as bench:vm): two
// depots on loopback (the receiver with its own OpenSSH sshd), the receiver holding the guest
// image (shipped in full, as to a standby's host); the guest then boots from the image folder
// and updates itself the way a package update does (dpkg writes each new file beside the old one
// and renames it over: here zabbix_server, mariadbd and the guest agent's binaries, then `sync`),
// is powered off cleanly, and ImageRefresh (pilot/image-refresh.ts, what POST /api/image-refresh
// runs) imports the folder and ships the new version: a delta against the copy the receiver
// holds. Prints one JSON line with the figures and the load average. TCG: the boot takes about a
// minute here. Not in CI (a guest boot); run by hand:
//   node --import tsx bench/vm-refresh.ts          (VM_REFRESH_UPDATE=0: boot and power off only)
import { appendFile, copyFile, mkdir, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { guestImage, GUEST_APPEND } from '../lab/vm-guest.ts';
import { startSshd } from '../lab/loopback/sshd.ts';
import { waitFor } from '../lab/loopback/depot-procs.ts';
import { QemuSpec } from '../depot/containers/drivers/driver.ts';
import { QemuDriver } from '../depot/containers/drivers/qemu.ts';
import { Depot } from '../depot/depot.ts';
import { makeSwarmKey } from '../depot/swarm-key.ts';
import { ImageStore } from '../depot/images/catalog.ts';
import { ContainerManager } from '../depot/containers/manager.ts';
import { containersPlugin } from '../plugins/containers.ts';
import { imagesPlugin } from '../plugins/images.ts';
import { ImageShipping } from '../ship/image-shipping.ts';
import { ImageRefresh, sentPct } from '../pilot/image-refresh.ts';
import { parseConfig } from '../shared/config.ts';
import { silentLogger } from '../shared/logger.ts';

const MB = 1e6;
const round = (x: number, d = 1) => Math.round(x * 10 ** d) / 10 ** d;
const image = await guestImage();
const root = await mkdtemp(join(process.env.BENCH_VM_DIR ?? '/var/tmp', 'nav-vm-refresh-'));
const sshd = await startSshd();
const swarmKey = makeSwarmKey();
const depots: Depot[] = [];
try {
  const shipKey = join(root, 'ship_ed25519');
  await execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', shipKey]);
  await appendFile(join(sshd.dir, 'authorized_keys'), await readFile(`${shipKey}.pub`));
  const start = async (name: string, sshPort: number, bootstrap: string[]) => {
    const config = parseConfig({
      node: { name, dataDir: join(root, name) },
      network: { listen: ['/ip4/127.0.0.1/tcp/0'], mdns: false, bootstrap },
      membership: { heartbeatMs: 200 },
      http: { host: '127.0.0.1', port: 0 },
      log: { level: 'silent' },
      ship: { sshPort, sshUser: 'root', sshKeyFile: shipKey, knownHostsFile: sshd.knownHostsFile },
    });
    const store = new ImageStore({ dir: config.store.dir, keepVersions: 3, blockSize: config.store.blockBytes, logger: silentLogger() });
    const manager = new ContainerManager({ root: join(config.store.dir, 'containers'), images: store, logger: silentLogger(), statusIntervalMs: 200 });
    const depot = new Depot({ config, log: silentLogger(), swarmKey, plugins: [imagesPlugin({ store }), containersPlugin({ manager })] });
    await depot.start();
    depots.push(depot);
    return { depot, store, config };
  };
  const a = await start('vm-a', 22, []);
  const b = await start('vm-b', sshd.port, [a.depot.node.getMultiaddrs()[0]!.toString()]);
  b.depot.components.control.guard.setAuthority({ holder: async (s) => (s === 'zabbix' ? { peer: a.depot.peerId, term: 1 } : undefined) });
  const shipping = new ImageShipping({ ship: a.config.ship, store: a.store, client: () => ({ call: (peer, method, params, opts) => a.depot.components.control.call(peer.toString(), method, params, opts) }), members: () => a.depot.membership.view(), logger: silentLogger() });
  await waitFor('A hears B', async () => (a.depot.membership.view().some((m) => m.peerId === b.depot.peerId && m.heartbeat) ? true : undefined), 20_000);

  // The image folder as the admin bootstrapped it; B holds it (full ship).
  const src = join(root, 'zabbix-image');
  await mkdir(src);
  for (const f of ['disk.qcow2', 'vmlinuz', 'initrd.img', 'container.yaml']) await copyFile(join(image, f), join(src, f));
  const v1 = await a.store.import(src, 'zabbix');
  const full = await shipping.ensureImage(b.depot.peerId, v1);
  await waitFor('B lists v1', async () => (a.depot.membership.view().find((m) => m.peerId === b.depot.peerId)?.heartbeat?.images.includes(v1) ? true : undefined), 10_000);

  // The admin's update: boot the guest from the folder, update, power off cleanly.
  const diskBefore = (await stat(join(src, 'disk.qcow2'))).size;
  const spec = QemuSpec.parse({ driver: 'qemu', kernel: 'vmlinuz', initrd: 'initrd.img', append: GUEST_APPEND, disk: 'disk.qcow2', kvm: 'off', guestAgent: true, tcgCacheMb: 128 });
  const d = new QemuDriver(spec, { id: 'zbx-update', dir: src, logger: silentLogger() });
  const t0 = Date.now();
  await d.start();
  const bootMs = await d.waitForAgent(900_000).then(() => Date.now() - t0);
  // VM_REFRESH_UPDATE=0: boot and power off only (what a boot alone changes: journal, logs, MariaDB's files).
  const update = process.env.VM_REFRESH_UPDATE === '0' ? 'sync; echo 0' : 'set -e; n=0; for f in /usr/sbin/zabbix_server /usr/sbin/mariadbd /usr/sbin/qemu-ga; do cp -p "$f" "$f.dpkg-new"; mv "$f.dpkg-new" "$f"; n=$((n + $(stat -c %s "$f"))); done; sync; echo $n';
  const r = await d.exec('/bin/sh', ['-c', update], { timeoutMs: 300_000 });
  if (r.exitCode !== 0) throw new Error(`update in the guest failed: ${r.stderr}`);
  const rewrittenBytes = Number(r.stdout.trim());
  // A clean power-off from inside (ACPI's system_powerdown is ignored by a guest still starting
  // its units); a guest that does not go down by itself is not a clean update: the run fails.
  await d.spawnInGuest('/usr/bin/systemctl', ['poweroff']);
  const off = Date.now();
  while ((await d.pid()) !== undefined && Date.now() - off < 180_000) await new Promise((res) => setTimeout(res, 500));
  if ((await d.pid()) !== undefined) {
    await d.stop({ timeoutMs: 0 });
    throw new Error('the guest did not power off within 180 s');
  }
  const powerOffMs = Date.now() - off;
  for (const f of ['qemu.log', 'console.log', 'qmp.sock', 'qga.sock', 'qemu.pid']) await rm(join(src, f), { force: true });
  const diskAfter = (await stat(join(src, 'disk.qcow2'))).size;

  const refresh = new ImageRefresh({
    self: { peerId: a.depot.peerId, name: 'vm-a' },
    candidates: () => a.depot.membership.view().map((m) => ({ peerId: m.peerId, host: m.name, state: m.state, images: m.heartbeat?.images ?? [] })),
    pilotFor: () => ({ role: 'primary', spec: { image: v1 } }),
    runningImages: () => [v1],
    store: a.store,
    ship: (peer, id) => shipping.ensureImage(peer, id),
    logger: silentLogger(),
  });
  const load = loadavg()[0]!;
  const res = await refresh.refresh({ service: 'zabbix', imagePath: src });
  await waitFor('the refresh', async () => (refresh.status()[0]!.state !== 'shipping' ? true : undefined), 600_000, 200);
  const job = refresh.status()[0]!;
  const t = job.targets[0]!;
  const verified = await b.store.verify(res.image, { quarantine: false });
  const out = {
    event: 'vm-refresh',
    update: process.env.VM_REFRESH_UPDATE !== '0',
    state: job.state,
    verified: verified.ok,
    imageBytes: t.imageBytes,
    diskBefore,
    diskAfter,
    guestBootMs: bootMs,
    powerOffMs,
    rewrittenBytes,
    importMs: job.importMs,
    full: { bytesSent: full.bytesSent, durationMs: full.durationMs },
    delta: { kind: t.kind, bytesSent: t.bytesSent, sentPct: sentPct({ bytesSent: t.bytesSent ?? 0, imageBytes: t.imageBytes ?? 0 }), durationMs: t.durationMs },
    deltaTimeRatio: round((t.durationMs ?? 0) / full.durationMs, 3),
    sentMB: round((t.bytesSent ?? 0) / MB, 1),
    blockBytes: a.config.store.blockBytes,
    load1: round(load, 2),
    loadEnd: round(loadavg()[0]!, 2),
  };
  console.log(JSON.stringify(out));
  await shipping.stop();
} finally {
  for (const d of depots.reverse()) await d.stop().catch(() => undefined);
  await sshd.stop();
  await rm(root, { recursive: true, force: true });
}
