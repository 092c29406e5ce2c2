// bench:vm — the VM-packed Zabbix service (deploy/examples/zabbix-vm) under QEMU on this machine:
// guest boot time, the memory a warm standby guest holds, the address failover between two
// booted guests (5 trials, the lab's prober on the service address), the size of the guest image
// and its full and delta ship. TCG unless BENCH_VM_KVM=1 (NAVLAB_VM_KVM).
//
//   npm run bench:vm                 BENCH_VM_TRIALS=5 (default)
//
// What outage_ms_p50 covers: from the kill -9 of the primary's "pilot" (test/lab/vm-address-holder.ts:
// its fence guard pauses the guest) to the first answer of the standby guest on the service
// address, the standby's takeover (fence guard arm, `ip addr add` through the guest agent,
// gratuitous ARP from the guest) starting at the kill. It does NOT include failure detection and
// the election (the pilots' part): the trials drive the guests from a stand-in pilot, not depots
// (test/lab/vm-failover.test.ts runs the VM service through depots and pilots).
// Prints a table, then one JSON line; the load average is recorded (TCG competes for the cores).
import { copyFile, mkdir, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { Lab, type LabProcess } from '../lab/lab.ts';
import { Prober } from '../lab/prober.ts';
import { ArpWatch } from '../lab/arp-watch.ts';
import { waitFor } from '../lab/cluster.ts';
import { GUEST_WHOAMI_PORT, guestImage, guestSql, startGuest, type LabGuest } from '../lab/vm-guest.ts';
import { QmpClient } from '../depot/containers/drivers/qmp.ts';
import { QemuSpec } from '../depot/containers/drivers/driver.ts';
import { QemuDriver } from '../depot/containers/drivers/qemu.ts';
import { ImageStore } from '../depot/images/catalog.ts';
import { Shipper } from '../ship/shipper.ts';
import { localShipTarget } from '../depot/images/ship-target.ts';
import { startSshd } from '../lab/loopback/sshd.ts';
import { silentLogger } from '../shared/logger.ts';

const trials = Number(process.env.BENCH_VM_TRIALS ?? 5);
/** TCG's translated-code cache per guest (BENCH_VM_TCG_CACHE_MB; 0 = QEMU's default, 1 GiB). */
const tcgCacheMb = Number(process.env.BENCH_VM_TCG_CACHE_MB ?? 128);
const MB = 1024 * 1024;
const round = (x: number, d = 1) => Math.round(x * 10 ** d) / 10 ** d;
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

async function rssMb(pid: number): Promise<number> {
  const st = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(st)?.[1] ?? 'NaN') / 1024;
}

/** A fenced guest (paused, NIC unplugged, address still inside) back to a clean standby: cont, drop the address, plug in. */
async function unfence(g: LabGuest, svc: string): Promise<void> {
  const q = await QmpClient.connect(g.driver.qmpPath, { timeoutMs: 5000 });
  try {
    await q.execute('cont', undefined, 5000);
  } finally {
    q.close();
  }
  await g.driver.exec('/usr/sbin/ip', ['addr', 'del', svc, 'dev', 'eth0'], { timeoutMs: 60_000 });
  await g.driver.setLink(true);
}

function holderSpec(g: LabGuest): unknown {
  return { driver: 'qemu', kernel: 'vmlinuz', initrd: 'initrd.img', disk: 'disk.qcow2', guestAgent: true, kvm: 'off', network: { bridge: 'navbr0', guestAddress: `${g.ip}/24` } };
}

async function main(): Promise<void> {
  const load0 = loadavg()[0]!;
  const image = await guestImage((m) => console.error(m));
  const diskBytes = (await stat(join(image, 'disk.qcow2'))).size;
  const bootBytes = (await stat(join(image, 'vmlinuz'))).size + (await stat(join(image, 'initrd.img'))).size;
  const lab = await Lab.create({ workstations: 2 });
  let holder: LabProcess | undefined;
  try {
    const svc = lab.serviceAddress(0);
    const svcIp = svc.split('/')[0]!;
    const net = svcIp.split('.').slice(0, 3).join('.');
    // Boot: QEMU start to the guest agent answering; then to MariaDB answering over the LAN.
    const t0 = Date.now();
    const [g1, g2] = await Promise.all([startGuest(lab, 'w1', { image, id: 'zbx-w1', guestIp: `${net}.51`, tcgCacheMb }), startGuest(lab, 'w2', { image, id: 'zbx-w2', guestIp: `${net}.52`, tcgCacheMb })]);
    const agentMs = await Promise.all([g1, g2].map((g) => g.driver.waitForAgent(900_000).then(() => Date.now() - t0)));
    const dbMs = await Promise.all(
      [g1, g2].map(async (g) => {
        await waitFor(async () => (await guestSql(lab, 'client', g, image, 'SELECT 1').catch(() => '')) === '1', 600_000, `MariaDB of ${g.host}'s guest`);
        return Date.now() - t0;
      }),
    );
    await new Promise((r) => setTimeout(r, 10_000));
    const standbyRss = await rssMb((await g2.driver.pid())!);
    const load1 = loadavg()[0]!;

    // Failover trials: the holder of the address is killed -9; the other guest takes over.
    const arp = await ArpWatch.start(lab, { address: svcIp, intervalMs: 200 });
    const prober = await Prober.start(lab, { target: svcIp, port: GUEST_WHOAMI_PORT, intervalMs: 100, timeoutMs: 1500 });
    const outages: number[] = [];
    const fenceMs: number[] = [];
    let primary = g1;
    let standby = g2;
    const take = async (g: LabGuest) => {
      const p = lab.spawnNode(g.host, 'test/lab/vm-address-holder.ts', [JSON.stringify({ dir: g.dir, id: g.driver === g1.driver ? 'zbx-w1' : 'zbx-w2', spec: holderSpec(g), address: svc, leaseMs: 30_000 })], { name: 'vm-holder' });
      await p.waitForLine(/"event":"holder-took"/, 180_000);
      return p;
    };
    holder = await take(primary);
    await prober.waitForServer(`navigator-guest ${primary.mac}`, 60_000);
    for (let i = 0; i < trials; i++) {
      const killedAt = Date.now();
      holder.kill('SIGKILL');
      const next = take(standby);
      await waitFor(async () => (await primary.driver.runState()) === 'paused', 30_000, 'the old primary guest paused');
      fenceMs.push(Date.now() - killedAt);
      holder = await next;
      const first = await prober.waitForServer(`navigator-guest ${standby.mac}`, 120_000);
      outages.push(prober.outage(killedAt, first.t).outageMs);
      console.error(`trial ${i + 1}: outage ${outages.at(-1)} ms, old primary paused after ${fenceMs.at(-1)} ms`);
      await unfence(primary, svc);
      [primary, standby] = [standby, primary];
      await new Promise((r) => setTimeout(r, 2000));
    }
    holder.kill('SIGKILL');
    await waitFor(async () => (await primary.driver.runState()) === 'paused', 30_000, 'the last primary paused');
    const splitBrain = arp.splitBrainMoments().length;
    const macs = arp.macs();
    await prober.stop();
    await arp.stop();
    for (const g of [g1, g2]) await g.driver.stop({ timeoutMs: 0 });

    // Shipping: the image folder v1; v2 = the same guest after it ran and changed its disk in
    // place (20 000 rows into its Zabbix database, then a clean power-off), as a guest changes.
    const root = await mkdtemp(join(process.env.BENCH_VM_DIR ?? '/var/tmp', 'nav-bench-vm-'));
    const sshd = await startSshd({});
    try {
      const src = join(root, 'v1');
      await mkdir(src);
      for (const f of ['disk.qcow2', 'vmlinuz', 'initrd.img', 'container.yaml']) await copyFile(join(image, f), join(src, f));
      const sender = new ImageStore({ dir: join(root, 'sender'), keepVersions: 3 });
      await sender.start();
      const v1 = await sender.import(src, 'zabbix-vm', { version: '1' });
      const shipper = new Shipper({ store: sender, ssh: { user: sshd.user, keyFile: sshd.userKeyFile, knownHostsFile: sshd.knownHostsFile }, requestsInFlight: 64 });
      const target = new ImageStore({ dir: join(root, 'target'), keepVersions: 3 });
      await target.start();
      const full = await shipper.ship(v1, localShipTarget(target, sshd.host, sshd.port));

      const src2 = join(root, 'v2');
      await mkdir(src2);
      for (const f of ['disk.qcow2', 'vmlinuz', 'initrd.img', 'container.yaml']) await copyFile(join(src, f), join(src2, f));
      const spec = QemuSpec.parse({ driver: 'qemu', kernel: 'vmlinuz', initrd: 'initrd.img', append: 'root=/dev/vda rw console=ttyS0 net.ifnames=0 quiet', disk: 'disk.qcow2', kvm: process.env.NAVLAB_VM_KVM === '1' ? 'on' : 'off', guestAgent: true });
      const d = new QemuDriver(tcgCacheMb ? { ...spec, tcgCacheMb } : spec, { id: 'zbx-change', dir: src2, logger: silentLogger() });
      await d.start();
      await d.waitForAgent(900_000);
      const sql = "CREATE TABLE IF NOT EXISTS zabbix.bench_change (id INT PRIMARY KEY, v VARCHAR(64)); INSERT INTO zabbix.bench_change SELECT seq, MD5(seq) FROM seq_1_to_20000;";
      await waitFor(async () => (await d.exec('/bin/sh', ['-c', `echo "${sql}" | /bin/bash /opt/navigator/zabbix/scripts/sql.sh /opt/navigator/zabbix /var/lib/navigator-zabbix`], { timeoutMs: 120_000 })).exitCode === 0, 300_000, 'the change in the guest');
      const off = await d.stop({ timeoutMs: 180_000 });
      for (const f of ['qemu.log', 'console.log']) await rm(join(src2, f), { force: true });
      const v2 = await sender.import(src2, 'zabbix-vm', { version: '2' });
      const delta = await shipper.ship(v2, localShipTarget(target, sshd.host, sshd.port));
      const verified = await target.verify(v2);
      if (!verified.ok) throw new Error('delta-shipped guest image failed verification');
      const load2 = loadavg()[0]!;
      const kvm = process.env.NAVLAB_VM_KVM === '1';
      const rows: [string, string][] = [
        ['accelerator', kvm ? 'KVM' : 'TCG (emulation, no KVM)'],
        ['load average (1 min): start / after boot / end', `${round(load0, 2)} / ${round(load1, 2)} / ${round(load2, 2)}`],
        ['guest image: disk.qcow2 / kernel+initrd', `${round(diskBytes / MB)} MiB / ${round(bootBytes / MB)} MiB`],
        ['boot to guest agent (2 guests at once)', `${agentMs.map((x) => round(x / 1000)).join(' s, ')} s`],
        ['boot to MariaDB answering on the LAN', `${dbMs.map((x) => round(x / 1000)).join(' s, ')} s`],
        ['warm standby guest: QEMU RSS (512 MiB guest)', `${round(standbyRss)} MiB (TCG code cache ${kvm ? 'n/a' : tcgCacheMb ? `${tcgCacheMb} MiB` : 'QEMU default 1 GiB'})`],
        [`address failover outage, ${trials} trials (p50)`, `${round(median(outages), 0)} ms  [${outages.map((x) => round(x, 0)).join(', ')}]`],
        ['old primary paused after kill -9 (p50)', `${round(median(fenceMs), 0)} ms`],
        ['moments with two MACs / MACs seen', `${splitBrain} / ${macs.join(', ')}`],
        ['full ship (connect+prepare+send+commit)', `${full.durationMs} ms, ${full.bytesSent} bytes`],
        ['guest change: clean power-off forced?', `${off.forced}`],
        ['delta ship', `${delta.durationMs} ms, ${delta.bytesSent} bytes (${delta.kind})`],
        ['delta / full time', `${round(delta.durationMs / full.durationMs, 3)}`],
      ];
      const w = Math.max(...rows.map((r) => r[0].length));
      for (const [k, v] of rows) console.log(`${k.padEnd(w)}  ${v}`);
      console.log(
        JSON.stringify({
          bench: 'vm',
          accel: kvm ? 'kvm' : 'tcg',
          load_avg_1m: [round(load0, 2), round(load1, 2), round(load2, 2)],
          guest_boot_s: round(median(agentMs) / 1000),
          guest_db_ready_s: round(median(dbMs) / 1000),
          outage_ms_p50: round(median(outages), 0),
          outage_scope: 'kill -9 of the primary pilot stand-in to the standby guest answering; fence + guest-agent takeover only, no failure detection or election',
          outage_trials_ms: outages.map((x) => round(x, 0)),
          fence_ms_p50: round(median(fenceMs), 0),
          split_brain_moments: splitBrain,
          standby_rss_mb: round(standbyRss),
          guest_memory_mb: 512,
          tcg_cache_mb: kvm ? null : tcgCacheMb || 1024,
          image_bytes: diskBytes,
          boot_files_bytes: bootBytes,
          full_ship_ms: full.durationMs,
          delta_ship_ms: delta.durationMs,
          delta_bytes_sent: delta.bytesSent,
          delta_time_ratio: round(delta.durationMs / full.durationMs, 3),
        }),
      );
    } finally {
      await sshd.stop();
      await rm(root, { recursive: true, force: true });
    }
  } finally {
    holder?.kill('SIGKILL');
    await lab.destroy();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
