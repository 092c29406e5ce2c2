// The VM-packed Zabbix guest image refreshed through depots (not store to store as bench:vm): two
// depots on loopback (bench/ship-depots.ts: the receiver with its own OpenSSH sshd), the receiver holding the guest
// image (shipped in full, as to a standby's host); the guest then boots from the image folder
// and updates itself the way a package update does (dpkg writes each new file beside the old one
// and renames it over: here zabbix_server, mariadbd and the guest agent's binaries, then `sync`),
// is powered off cleanly, and ImageRefresh (pilot/image-refresh.ts, what POST /api/image-refresh
// runs) imports the folder and ships the new version: a delta against the copy the receiver
// holds. Prints one JSON line with the figures and the load average. TCG: the boot takes about a
// minute here. Not in CI (a guest boot); run by hand:
//   node --import tsx bench/vm-refresh.ts          (VM_REFRESH_UPDATE=0: boot and power off only)
import { copyFile, mkdir, rm, stat } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { guestImage, GUEST_APPEND } from '../lab/vm-guest.ts';
import { waitFor } from '../lab/loopback/depot-procs.ts';
import { QemuSpec } from '../depot/containers/drivers/driver.ts';
import { QemuDriver } from '../depot/containers/drivers/qemu.ts';
import { ImageRefresh, refreshCandidates, sentPct } from '../pilot/image-refresh.ts';
import { silentLogger } from '../shared/logger.ts';
import { startShipDepots } from './ship-depots.ts';

const MB = 1e6;
const round = (x: number, d = 1) => Math.round(x * 10 ** d) / 10 ** d;
const image = await guestImage();
// A guest image wants a disk, not a tmpfs: the depots' folder is under /var/tmp by default.
const pair = await startShipDepots({ prefix: 'vm-refresh', receivers: 1, service: 'zabbix', tmpRoot: process.env.BENCH_VM_DIR ?? '/var/tmp' });
const { root, a, shipping } = pair;
const b = pair.receivers[0]!;
try {
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
    self: { peerId: a.depot.peerId, name: a.config.node.name },
    candidates: () => refreshCandidates(a.depot.membership.view()),
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
} finally {
  await pair.stop();
}
