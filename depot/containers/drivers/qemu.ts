import { createHash } from 'node:crypto';
import { accessSync, constants as fsConstants, openSync, closeSync, readFileSync } from 'node:fs';
import { readFile, readlink, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from '../../../shared/logger.ts';
import { NavigatorError, errorMessage } from '../../../shared/errors.ts';
import { driverTiming, type ContainerDriver, type ContainerStateName, type DriverContext, type ExecResult, type QemuSpec, type StopOptions, type StopResult } from './driver.ts';
import { insideDir } from './paths.ts';
import { QmpClient } from './qmp.ts';
import { alive, fileDescriptor } from './proc.ts';

// QEMU/KVM as a plain child process (no -daemonize): its pid goes to a pidfile and it is
// controlled through a QMP unix socket in the container folder, so a restarted depot finds a
// running VM again from the files alone. The VM outlives the depot process on purpose.

const SOCKET_PATH_MAX = 107; // sun_path is 108 bytes with the terminating NUL
/** The QMP and guest-agent sockets, in the container folder (the fence guard opens them too). */
export const QMP_SOCKET = 'qmp.sock';
export const QGA_SOCKET = 'qga.sock';
/** The guest NIC's QEMU id (QMP set_link). */
export const GUEST_NIC_ID = 'lan0';

/**
 * KVM is usable: /dev/kvm opens read-write AND the CPU shows hardware virtualisation (vmx/svm).
 * The second check is not redundant: on this project's sandboxed machines /dev/kvm exists and
 * opens, the CPU has no vmx/svm, and a guest started with -enable-kvm never prints a line (it
 * hung for 4 min in bench:vm), where TCG boots it in about 50 s.
 */
export function kvmAvailable(): boolean {
  try {
    accessSync('/dev/kvm', fsConstants.R_OK | fsConstants.W_OK);
  } catch {
    return false;
  }
  try {
    return /^flags\s*:.*\b(vmx|svm)\b/m.test(readFileSync('/proc/cpuinfo', 'utf8'));
  } catch {
    return false;
  }
}

export class QemuDriver implements ContainerDriver {
  readonly kind = 'qemu' as const;
  readonly qmpPath: string;
  readonly qgaPath: string;
  readonly pidFile: string;
  readonly logFile: string;
  /** The guest's serial console (kernel and systemd messages when the kernel has console=ttyS0). */
  readonly consoleFile: string;
  private readonly bin: string;
  /** The guest's LAN address with prefix (network.guestAddress, or worked out at start from guestAddressOffset). */
  private guestCidr: string | undefined;
  private readonly log: Logger;

  constructor(
    private readonly spec: QemuSpec,
    private readonly ctx: DriverContext,
  ) {
    this.qmpPath = join(ctx.dir, QMP_SOCKET);
    this.qgaPath = join(ctx.dir, QGA_SOCKET);
    this.pidFile = join(ctx.dir, 'qemu.pid');
    this.logFile = join(ctx.dir, 'qemu.log');
    this.consoleFile = join(ctx.dir, 'console.log');
    if (spec.append !== undefined && spec.kernel === undefined) throw new NavigatorError('BAD_REQUEST', 'qemu spec: append needs kernel');
    if (spec.initrd !== undefined && spec.kernel === undefined) throw new NavigatorError('BAD_REQUEST', 'qemu spec: initrd needs kernel');
    this.guestCidr = spec.network?.guestAddress;
    this.bin = ctx.qemuPath ?? 'qemu-system-x86_64';
    this.log = ctx.logger.child({ component: 'qemu', container: ctx.id });
    if (this.qgaPath.length > SOCKET_PATH_MAX) {
      throw new NavigatorError('DRIVER_FAILED', `container folder ${ctx.dir} is too long for a QMP socket path (max ${SOCKET_PATH_MAX} bytes)`);
    }
  }

  /** The QEMU command line (without the binary). */
  args(): string[] {
    const useKvm = this.spec.kvm === 'on' || (this.spec.kvm === 'auto' && kvmAvailable());
    const a = ['-name', `navigator-${this.ctx.id}`, '-machine', this.spec.machine];
    if (useKvm) a.push('-enable-kvm');
    else if (this.spec.tcgCacheMb) a.push('-accel', `tcg,tb-size=${this.spec.tcgCacheMb}`);
    a.push(
      '-m', String(this.spec.memoryMb),
      '-smp', String(this.spec.cpus),
      '-nodefaults',
      '-no-user-config',
      '-display', 'none',
      '-qmp', `unix:${this.qmpPath},server=on,wait=off`,
      '-pidfile', this.pidFile,
    );
    if (this.spec.disk) {
      const disk = insideDir(this.ctx.dir, this.spec.disk, 'disk');
      // QEMU's option syntax uses commas as separators; a comma in the path would change its meaning.
      if (disk.includes(',')) throw new NavigatorError('BAD_REQUEST', `disk path ${this.spec.disk} must not contain a comma`);
      a.push('-drive', `file=${disk},format=${this.spec.diskFormat},if=virtio`);
    }
    if (this.spec.kernel) {
      a.push('-kernel', this.specFile(this.spec.kernel, 'kernel'));
      if (this.spec.initrd) a.push('-initrd', this.specFile(this.spec.initrd, 'initrd'));
      const words = [this.spec.append ?? ''];
      if (this.guestCidr) words.push(`navigator.ip=${this.guestCidr}`);
      if (this.spec.network?.gateway) words.push(`navigator.gw=${this.spec.network.gateway}`);
      const line = words.join(' ').trim();
      if (line) a.push('-append', line);
    }
    // The guest's serial console goes to a file (boot messages; nothing reads it back).
    a.push('-serial', `file:${this.consoleFile}`);
    if (this.spec.network) {
      const n = this.spec.network;
      a.push('-netdev', `bridge,id=${GUEST_NIC_ID},br=${n.bridge}`, '-device', `virtio-net-pci,netdev=${GUEST_NIC_ID},mac=${this.mac()}`);
    }
    if (this.spec.guestAgent) {
      a.push(
        '-chardev', `socket,path=${this.qgaPath},server=on,wait=off,id=qga0`,
        '-device', 'virtio-serial',
        '-device', 'virtserialport,chardev=qga0,name=org.qemu.guest_agent.0',
      );
    }
    return a;
  }

  /** The guest NIC's MAC: the spec's, or 52:54:00 (QEMU's prefix) and three bytes of the container id's hash. */
  mac(): string {
    if (this.spec.network?.mac) return this.spec.network.mac;
    const h = createHash('sha256').update(this.ctx.id).digest();
    return ['52', '54', '00', ...[h[0]!, h[1]!, h[2]!].map((b) => b.toString(16).padStart(2, '0'))].join(':');
  }

  private specFile(rel: string, what: string): string {
    const p = insideDir(this.ctx.dir, rel, what);
    if (p.includes(',')) throw new NavigatorError('BAD_REQUEST', `${what} path ${rel} must not contain a comma`);
    return p;
  }

  /** network.guestAddressOffset: the host's IPv4 address on the bridge plus the offset, same prefix. */
  private async resolveGuestAddress(): Promise<void> {
    const n = this.spec.network;
    if (!n?.guestAddressOffset || this.guestCidr) return;
    const { execa } = await import('execa');
    const r = await execa('ip', ['-j', '-4', 'addr', 'show', 'dev', n.bridge], { reject: false, timeout: 5000 });
    if (r.exitCode !== 0) throw new NavigatorError('DRIVER_FAILED', `qemu network: bridge ${n.bridge} not found on this host (${String(r.stderr).trim()})`);
    this.guestCidr = guestAddressFromHost(String(r.stdout), n.guestAddressOffset, n.bridge);
  }

  async start(): Promise<void> {
    await this.resolveGuestAddress();
    if ((await this.pid()) !== undefined) {
      const st = await this.status();
      if (st === 'running') return;
      throw new NavigatorError('CONFLICT', `container ${this.ctx.id}: a QEMU process is already there in state ${st}`);
    }
    await rm(this.qmpPath, { force: true });
    await rm(this.qgaPath, { force: true });
    await rm(this.pidFile, { force: true });
    const args = this.args();
    const fd = openSync(this.logFile, 'a');
    const started = Date.now();
    let exited: { code: number | undefined } | undefined;
    try {
      const { execa } = await import('execa');
      const child = execa(this.bin, args, { detached: true, cleanup: false, reject: false, stdin: 'ignore', stdout: fileDescriptor(fd), stderr: fileDescriptor(fd) });
      child.then((r) => {
        exited = { code: r.exitCode };
      });
      child.unref();
    } finally {
      closeSync(fd);
    }
    // Ready when QMP answers: the socket exists from the moment QEMU has parsed its options.
    const startTimeoutMs = driverTiming(this.ctx).qemuStartTimeoutMs;
    while (Date.now() - started < startTimeoutMs) {
      if (exited) {
        const tail = (await readFile(this.logFile, 'utf8').catch(() => '')).split('\n').filter(Boolean).slice(-3).join(' | ');
        throw new NavigatorError('DRIVER_FAILED', `qemu exited at start (code ${exited.code ?? 'none'}): ${tail.slice(0, 800)}`);
      }
      try {
        const q = await QmpClient.connect(this.qmpPath, { timeoutMs: 1000 });
        q.close();
        this.log.info({ event: 'qemu-started', durationMs: Date.now() - started, pid: await this.pid() }, 'qemu started');
        // The container is running once its guest has booted (the agent answers), when asked:
        // a pilot must not try to move the address into a guest that is still booting.
        if (this.spec.guestAgent && this.spec.bootTimeoutMs) {
          const bootMs = await this.waitForAgent(this.spec.bootTimeoutMs);
          this.log.info({ event: 'guest-booted', durationMs: Date.now() - started, bootMs }, 'guest agent answers');
        }
        return;
      } catch {
        await sleep(50);
      }
    }
    await this.kill();
    throw new NavigatorError('TIMEOUT', `qemu did not answer on QMP within ${startTimeoutMs} ms`);
  }

  /** ACPI power button (system_powerdown), then `quit`, then SIGKILL. */
  async stop(opts: StopOptions = {}): Promise<StopResult> {
    const timeoutMs = opts.timeoutMs ?? 60_000;
    const pid = await this.pid();
    if (pid === undefined) return { forced: false };
    const started = Date.now();
    if (timeoutMs > 0) {
      try {
        await this.qmp('system_powerdown');
        if (await this.waitGone(pid, timeoutMs)) {
          this.log.info({ event: 'qemu-stopped', forced: false, durationMs: Date.now() - started }, 'guest powered off');
          await this.cleanup();
          return { forced: false };
        }
      } catch (err) {
        this.log.warn({ event: 'qemu-powerdown-failed', err: errorMessage(err) }, 'system_powerdown failed');
      }
    }
    await this.kill();
    this.log.info({ event: 'qemu-stopped', forced: true, durationMs: Date.now() - started }, 'qemu stopped by force');
    return { forced: true };
  }

  async status(): Promise<ContainerStateName> {
    const pid = await this.pid();
    if (pid === undefined) return 'stopped';
    try {
      const r = (await this.qmp('query-status')) as { status?: string; running?: boolean };
      if (r.running) return 'running';
      if (r.status === 'shutdown') return 'stopping';
      if (r.status === 'prelaunch' || r.status === 'inmigrate') return 'starting';
      return 'unknown';
    } catch {
      return 'unknown';
    }
  }

  /** Run a program in the guest through qemu-guest-agent (guest-exec, then poll guest-exec-status). */
  async exec(cmd: string, args: string[], opts: { timeoutMs?: number } = {}): Promise<ExecResult> {
    if (!this.spec.guestAgent) {
      throw new NavigatorError('DRIVER_FAILED', `container ${this.ctx.id}: exec needs qemu-guest-agent; set guestAgent: true in the qemu spec`);
    }
    const timeoutMs = opts.timeoutMs ?? 30_000;
    const deadline = Date.now() + timeoutMs;
    const qga = await QmpClient.connect(this.qgaPath, { agent: true, timeoutMs });
    try {
      const { pid } = (await qga.execute('guest-exec', { path: cmd, arg: args, 'capture-output': true }, timeoutMs)) as { pid: number };
      for (;;) {
        const left = deadline - Date.now();
        if (left <= 0) throw new NavigatorError('TIMEOUT', `guest program ${cmd} did not finish within ${timeoutMs} ms`);
        const st = (await qga.execute('guest-exec-status', { pid }, left)) as {
          exited: boolean;
          exitcode?: number;
          'out-data'?: string;
          'err-data'?: string;
        };
        if (st.exited) {
          return {
            exitCode: st.exitcode ?? -1,
            stdout: Buffer.from(st['out-data'] ?? '', 'base64').toString('utf8'),
            stderr: Buffer.from(st['err-data'] ?? '', 'base64').toString('utf8'),
          };
        }
        await sleep(100);
      }
    } finally {
      qga.close();
    }
  }

  /**
   * The copy's role changed: the spec's primaryUnit is started in the guest on promotion
   * (`systemctl start`, which returns once the unit's start finished: for the Zabbix guest, once
   * the trapper listens) and stopped otherwise. Nothing to do without a primaryUnit.
   */
  async setRole(role: 'primary' | 'standby' | 'none'): Promise<void> {
    const unit = this.spec.primaryUnit;
    if (!unit) return;
    const verb = role === 'primary' ? 'start' : 'stop';
    const started = Date.now();
    // Under TCG a unit's start takes tens of seconds (zabbix_server: its configuration cache load).
    const r = await this.exec('/usr/bin/systemctl', [verb, unit], { timeoutMs: 300_000 });
    if (r.exitCode !== 0) throw new NavigatorError('DRIVER_FAILED', `container ${this.ctx.id}: systemctl ${verb} ${unit} in the guest failed (exit ${r.exitCode}): ${r.stderr.trim().slice(0, 500) || '(no stderr)'}`);
    this.log.info({ event: 'guest-role', role, unit, verb, durationMs: Date.now() - started }, `${unit}: ${verb} in the guest`);
  }

  /** Start a program in the guest through the guest agent and return without waiting for it (guest-exec). */
  async spawnInGuest(cmd: string, args: string[], opts: { timeoutMs?: number } = {}): Promise<void> {
    if (!this.spec.guestAgent) throw new NavigatorError('DRIVER_FAILED', `container ${this.ctx.id}: spawnInGuest needs qemu-guest-agent; set guestAgent: true in the qemu spec`);
    const timeoutMs = opts.timeoutMs ?? 15_000;
    const qga = await QmpClient.connect(this.qgaPath, { agent: true, timeoutMs });
    try {
      await qga.execute('guest-exec', { path: cmd, arg: args }, timeoutMs);
    } finally {
      qga.close();
    }
  }

  /** The guest's LAN address (no prefix): network's, else the static guestAddress. */
  async guestAddress(): Promise<string | undefined> {
    if (this.spec.network) {
      await this.resolveGuestAddress();
      if (this.guestCidr) return this.guestCidr.split('/')[0];
    }
    return this.spec.guestAddress;
  }

  /**
   * Wait until the guest agent answers guest-ping (the guest has booted to the point where
   * systemd started qemu-guest-agent); returns how long it took. Under TCG this is the boot time.
   */
  async waitForAgent(timeoutMs: number): Promise<number> {
    if (!this.spec.guestAgent) throw new NavigatorError('DRIVER_FAILED', `container ${this.ctx.id}: no guest agent in the qemu spec`);
    const started = Date.now();
    let last = '';
    while (Date.now() - started < timeoutMs) {
      if ((await this.pid()) === undefined) throw new NavigatorError('DRIVER_FAILED', `container ${this.ctx.id}: qemu exited while waiting for the guest agent`);
      try {
        const qga = await QmpClient.connect(this.qgaPath, { agent: true, timeoutMs: 3000 });
        try {
          await qga.execute('guest-ping', undefined, 3000);
          return Date.now() - started;
        } finally {
          qga.close();
        }
      } catch (err) {
        last = errorMessage(err);
        await sleep(1000);
      }
    }
    throw new NavigatorError('TIMEOUT', `container ${this.ctx.id}: the guest agent did not answer within ${timeoutMs} ms (${last})`);
  }

  /** Pause the guest's CPUs (QMP stop): it answers nothing, on any address, until `cont`. */
  async pause(): Promise<void> {
    await this.qmp('stop');
    this.log.warn({ event: 'qemu-paused' }, 'guest paused');
  }

  /** Plug the guest's NIC in or out from the host side (QMP set_link on the virtio-net device). */
  async setLink(up: boolean): Promise<void> {
    if (!this.spec.network) throw new NavigatorError('DRIVER_FAILED', `container ${this.ctx.id}: no network in the qemu spec`);
    await this.qmp('set_link', { name: GUEST_NIC_ID, up });
    this.log.info({ event: 'qemu-link', up }, up ? 'guest NIC plugged in' : 'guest NIC unplugged');
  }

  /** The raw QMP run state (running, paused, shutdown, prelaunch …). */
  async runState(): Promise<string | undefined> {
    if ((await this.pid()) === undefined) return undefined;
    const r = (await this.qmp('query-status')) as { status?: string };
    return r.status;
  }

  /** The QEMU pid from the pidfile, if that process is alive and is a QEMU. */
  async pid(): Promise<number | undefined> {
    const text = await readFile(this.pidFile, 'utf8').catch(() => '');
    const pid = Number.parseInt(text.trim(), 10);
    if (!Number.isInteger(pid) || pid <= 0) return undefined;
    if (!alive(pid)) return undefined;
    // A stale pidfile may name a pid reused by another program.
    const exe = await readlink(`/proc/${pid}/exe`).catch(() => '');
    return exe.includes('qemu') ? pid : undefined;
  }

  private async qmp(command: string, args?: Record<string, unknown>): Promise<unknown> {
    const q = await QmpClient.connect(this.qmpPath, { timeoutMs: 2000 });
    try {
      return await q.execute(command, args, 2000);
    } finally {
      q.close();
    }
  }

  private async kill(): Promise<void> {
    const pid = await this.pid();
    if (pid === undefined) return this.cleanup();
    try {
      await this.qmp('quit');
    } catch {
      // QMP not answering: fall through to the signal.
    }
    if (!(await this.waitGone(pid, 3000))) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
      if (!(await this.waitGone(pid, 5000))) throw new NavigatorError('DRIVER_FAILED', `qemu pid ${pid} survived SIGKILL`);
    }
    await this.cleanup();
  }

  private async waitGone(pid: number, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (alive(pid)) {
      if (Date.now() >= deadline) return false;
      await sleep(50);
    }
    return true;
  }

  private async cleanup(): Promise<void> {
    await rm(this.qmpPath, { force: true });
    await rm(this.qgaPath, { force: true });
    await rm(this.pidFile, { force: true });
  }
}

/**
 * The guest address for network.guestAddressOffset: from `ip -j -4 addr show dev BRIDGE`'s output,
 * the bridge's first IPv4 address plus `offset`, same prefix. Refuses an address that leaves the
 * host's subnet or lands on its network or broadcast address.
 */
export function guestAddressFromHost(ipJson: string, offset: number, bridge: string): string {
  let links: Array<{ addr_info?: Array<{ family?: string; local?: string; prefixlen?: number }> }>;
  try {
    links = JSON.parse(ipJson || '[]');
  } catch {
    throw new NavigatorError('DRIVER_FAILED', `qemu network: unreadable output of ip -j addr show dev ${bridge}`);
  }
  const a = links.flatMap((l) => l.addr_info ?? []).find((x) => x.family === 'inet' && x.local && x.prefixlen);
  if (!a) throw new NavigatorError('DRIVER_FAILED', `qemu network: bridge ${bridge} has no IPv4 address to derive the guest's from (guestAddressOffset)`);
  const toInt = (ip: string) => ip.split('.').reduce((n, o) => n * 256 + Number(o), 0);
  const prefix = a.prefixlen!;
  const host = toInt(a.local!);
  const size = 2 ** (32 - prefix);
  const net = host - (host % size);
  const guest = host + offset;
  if (prefix > 30 || guest <= net || guest >= net + size - 1) {
    throw new NavigatorError('BAD_REQUEST', `qemu network: ${a.local}/${prefix} + guestAddressOffset ${offset} leaves the subnet`);
  }
  const ip = [24, 16, 8, 0].map((s) => Math.floor(guest / 2 ** s) % 256).join('.');
  return `${ip}/${prefix}`;
}
