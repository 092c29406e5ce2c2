import { execa } from 'execa';
import { chmod, mkdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../shared/logger.ts';
import { silentLogger } from '../shared/logger.ts';
import { NavigatorError } from '../shared/errors.ts';
import { REPO_ROOT } from '../shared/repo-root.ts';
import { QemuSpec } from '../depot/containers/drivers/driver.ts';
import { QemuDriver } from '../depot/containers/drivers/qemu.ts';
import type { Lab } from './lab.ts';

// QEMU guests of the VM-packed Zabbix example (deploy/examples/zabbix-vm) on the lab's LAN, for
// the VM lab test and bench:vm. A workstation's LAN interface joins a bridge (navbr0, the name
// /etc/qemu/bridge.conf allows) that carries the workstation's address, as on a hypervisor host;
// each guest's tap joins that bridge through QEMU's bridge helper, so the guest is one more
// station on the LAN with a MAC of its own.

export const GUEST_BRIDGE = 'navbr0';
/** The guest image's NIC (net.ifnames=0). */
export const GUEST_IFACE = 'eth0';
/** The guest's whoami port (navigator-whoami.socket): answers "<hostname> <eth0 MAC>". */
export const GUEST_WHOAMI_PORT = 7000;
/** The guest's MariaDB port (settings.env DB_PORT of the example). */
export const GUEST_DB_PORT = 3307;
export const GUEST_APPEND = 'root=/dev/vda rw console=ttyS0 net.ifnames=0 quiet';

/** Builds (or finds in its cache) the guest image; its folder. About 1.5-6 min the first time on a machine. */
export async function guestImage(log: (m: string) => void = () => undefined): Promise<string> {
  const script = join(REPO_ROOT, 'deploy/examples/zabbix-vm/build-image.sh');
  const key = await execa('bash', [script, '--key']);
  log(`guest image: ${key.stdout.trim()}`);
  const r = await execa('bash', [script], { reject: false, timeout: 20 * 60_000 });
  if (r.exitCode !== 0) throw new NavigatorError('COMMAND_FAILED', `build-image.sh failed (${r.exitCode}): ${String(r.stderr).split('\n').slice(-15).join('\n')}`);
  return r.stdout.trim().split('\n').pop()!;
}

/** Moves a workstation's LAN address from eth0 onto a bridge navbr0 holding eth0 (idempotent). */
export async function bridgeWorkstation(lab: Lab, host: string): Promise<void> {
  const h = lab.host(host);
  const has = await lab.exec(host, ['ip', 'link', 'show', GUEST_BRIDGE], { reject: false });
  if (has.exitCode === 0) return;
  const routes = await lab.exec(host, ['ip', '-j', 'route', 'show', 'default']);
  const gw = (JSON.parse(routes.stdout || '[]') as Array<{ gateway?: string }>)[0]?.gateway;
  const steps: string[][] = [
    ['ip', 'link', 'add', GUEST_BRIDGE, 'address', h.mac, 'type', 'bridge', 'forward_delay', '0'],
    ['ip', 'addr', 'flush', 'dev', h.iface],
    ['ip', 'link', 'set', h.iface, 'master', GUEST_BRIDGE],
    ['ip', 'link', 'set', GUEST_BRIDGE, 'up'],
    ['ip', 'addr', 'add', `${h.ip}/24`, 'dev', GUEST_BRIDGE],
    ...(gw ? [['ip', 'route', 'replace', 'default', 'via', gw, 'dev', GUEST_BRIDGE]] : []),
  ];
  for (const s of steps) await lab.exec(host, s);
}

export interface LabGuest {
  host: string;
  dir: string;
  driver: QemuDriver;
  /** The guest's own LAN address (no prefix). */
  ip: string;
  mac: string;
}

/**
 * A guest on workstation `host`: its folder holds a qcow2 overlay on the image's disk (its own
 * writes only), the kernel and initrd; QEMU runs in the workstation's namespace (a wrapper as the
 * driver's QEMU binary, as a depot running in that namespace would start it). Started, not waited for.
 */
/** QEMU's bridge helper refuses bridges /etc/qemu/bridge.conf does not allow: say so before QEMU fails. */
async function checkBridgeAllowed(): Promise<void> {
  const { readFile } = await import('node:fs/promises');
  const conf = await readFile('/etc/qemu/bridge.conf', 'utf8').catch(() => '');
  if (!conf.split('\n').some((l) => /^\s*allow\s+(navbr0|all)\s*$/.test(l))) {
    throw new NavigatorError('BAD_REQUEST', `/etc/qemu/bridge.conf does not allow the bridge ${GUEST_BRIDGE}: add "allow ${GUEST_BRIDGE}" (scripts/setup.sh does)`);
  }
}

export async function startGuest(lab: Lab, host: string, opts: { image: string; id: string; guestIp: string; memoryMb?: number; tcgCacheMb?: number; logger?: Logger }): Promise<LabGuest> {
  await checkBridgeAllowed();
  await bridgeWorkstation(lab, host);
  const dir = join(lab.dir, 'vm', opts.id);
  await mkdir(dir, { recursive: true });
  await execa('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', join(opts.image, 'disk.qcow2'), join(dir, 'disk.qcow2')]);
  await symlink(join(opts.image, 'vmlinuz'), join(dir, 'vmlinuz'));
  await symlink(join(opts.image, 'initrd.img'), join(dir, 'initrd.img'));
  const wrapper = join(dir, 'qemu-in-ns.sh');
  await writeFile(wrapper, `#!/bin/sh\nexec ip netns exec ${lab.host(host).ns} qemu-system-x86_64 "$@"\n`);
  await chmod(wrapper, 0o755);
  const spec = QemuSpec.parse({
    driver: 'qemu',
    kernel: 'vmlinuz',
    initrd: 'initrd.img',
    append: GUEST_APPEND,
    disk: 'disk.qcow2',
    memoryMb: opts.memoryMb ?? 512,
    // The lab's and CI's machines: TCG (the condition); NAVLAB_VM_KVM=1 lets a KVM host use it.
    kvm: process.env.NAVLAB_VM_KVM === '1' ? 'on' : 'off',
    guestAgent: true,
    primaryUnit: 'navigator-zabbix.service',
    // start() returns once the guest has booted: TCG on 2 shared cores boots it in ~50 s at load 10-30.
    bootTimeoutMs: 600_000,
    // TCG's code cache: QEMU's default 1 GiB becomes resident over a guest's life (bench:vm).
    ...(opts.tcgCacheMb ? { tcgCacheMb: opts.tcgCacheMb } : {}),
    network: { bridge: GUEST_BRIDGE, guestAddress: `${opts.guestIp}/24` },
  });
  const driver = new QemuDriver(spec, { id: opts.id, dir, logger: opts.logger ?? silentLogger(), qemuPath: wrapper, timing: { processPrimaryStopMs: 5000, processTermRepeatMs: 1000, qemuStartTimeoutMs: 60_000, vmrunCommandTimeoutMs: 30_000 } });
  await driver.start();
  return { host, dir, driver, ip: opts.guestIp, mac: driver.mac() };
}

/** Runs SQL in a guest's MariaDB over the LAN from `fromHost` as the image's sync account; tab-separated rows. */
export async function guestSql(lab: Lab, fromHost: string, g: { ip: string }, image: string, sql: string): Promise<string> {
  // The password goes in an option file (0600), never on a command line.
  const cnf = join(lab.dir, 'vm', 'navsync.cnf');
  const { readFile } = await import('node:fs/promises');
  const pw = (await readFile(join(image, 'secrets', 'sync.password'), 'utf8')).trim();
  await writeFile(cnf, `[client]\nuser=navsync\npassword=${pw}\n`, { mode: 0o600 });
  const r = await lab.exec(fromHost, ['mariadb', `--defaults-extra-file=${cnf}`, '-h', g.ip, '-P', String(GUEST_DB_PORT), '--batch', '--skip-column-names', '--connect-timeout=10', '-e', sql], { timeoutMs: 60_000 });
  return r.stdout.trim();
}
