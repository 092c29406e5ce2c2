import { accessSync, constants as fsConstants, openSync, closeSync } from 'node:fs';
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

export function kvmAvailable(): boolean {
  try {
    accessSync('/dev/kvm', fsConstants.R_OK | fsConstants.W_OK);
    return true;
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
  private readonly bin: string;
  private readonly log: Logger;

  constructor(
    private readonly spec: QemuSpec,
    private readonly ctx: DriverContext,
  ) {
    this.qmpPath = join(ctx.dir, 'qmp.sock');
    this.qgaPath = join(ctx.dir, 'qga.sock');
    this.pidFile = join(ctx.dir, 'qemu.pid');
    this.logFile = join(ctx.dir, 'qemu.log');
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
    if (this.spec.guestAgent) {
      a.push(
        '-chardev', `socket,path=${this.qgaPath},server=on,wait=off,id=qga0`,
        '-device', 'virtio-serial',
        '-device', 'virtserialport,chardev=qga0,name=org.qemu.guest_agent.0',
      );
    }
    return a;
  }

  async start(): Promise<void> {
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

  async guestAddress(): Promise<string | undefined> {
    return this.spec.guestAddress;
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
