import { readFile, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { NavigatorError } from '../../shared/errors.ts';
import { LoggedProcess } from '../logged-process.ts';

// A Debian machine under systemd-nspawn: the cached root (debian-root.ts) read-only under a
// throwaway overlay, optionally booting a real systemd as its PID 1, optionally inside a lab
// namespace's network (so it is a workstation on the lab LAN). Commands run in it through
// nsenter; its files are reachable from here under /proc/<leader>/root.

export interface MachineOptions {
  /** The Debian root (ensureDebianRoot()). */
  root: string;
  /** Machine and host name. */
  name: string;
  /** Boot systemd (default), or only hold the machine open (a chroot-like install without systemd). */
  boot?: boolean;
  /** A network namespace (/run/netns/NAME) to live in: a lab workstation's. */
  netns?: string;
  /** Host folders to show inside, read-only. */
  bindRo?: Array<{ host: string; guest: string }>;
  /** Log file of systemd-nspawn (the machine's console). */
  logPath: string;
}

export interface MachineExec {
  exitCode: number;
  stdout: string;
  stderr: string;
}

const PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export class Machine {
  private constructor(
    readonly name: string,
    private readonly nspawn: LoggedProcess,
    /** The machine's PID 1, as this host numbers it. */
    readonly leader: number,
  ) {}

  static async start(o: MachineOptions): Promise<Machine> {
    const args = ['-D', o.root, '--volatile=overlay', '--register=no', '--keep-unit', '-M', o.name, `--hostname=${o.name}`, '--console=pipe', '--quiet'];
    // The network is the machine's own (a lab workstation's), so it may manage it, as a host
    // does; nspawn keeps CAP_NET_ADMIN only for --private-network, which this is but does not say.
    if (o.netns) args.push(`--network-namespace-path=${o.netns}`, '--capability=CAP_NET_ADMIN');
    for (const b of o.bindRo ?? []) args.push(`--bind-ro=${b.host}:${b.guest}`);
    if (o.boot === false) args.push('--as-pid2', '/bin/sleep', 'infinity');
    else args.push('-b');
    const child = execa('systemd-nspawn', args, { reject: false, buffer: false, stdin: 'ignore', cleanup: true });
    const proc = new LoggedProcess(child, { label: `machine ${o.name}`, logPath: o.logPath, tailLines: 40, markStderr: true });
    const deadline = Date.now() + 30_000;
    let leader: number | undefined;
    while (!leader) {
      if (!proc.running) throw new NavigatorError('COMMAND_FAILED', `systemd-nspawn for ${o.name} exited: ${proc.lastLines()}`);
      if (Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new NavigatorError('TIMEOUT', `machine ${o.name} did not start within 30 s: ${proc.lastLines()}`);
      }
      leader = await childInOtherPidNs(child.pid!);
      if (!leader) await new Promise((r) => setTimeout(r, 100));
    }
    const m = new Machine(o.name, proc, leader);
    if (o.boot !== false) await m.waitBooted();
    return m;
  }

  /** This host's path of a file inside the machine. */
  path(p: string): string {
    return join(`/proc/${this.leader}/root`, p);
  }

  /** Run a command inside (all its namespaces) and wait; throws naming it unless reject:false. */
  async exec(argv: readonly string[], opts: { reject?: boolean; timeoutMs?: number; input?: string; env?: Record<string, string> } = {}): Promise<MachineExec> {
    const r = await execa('nsenter', ['-t', String(this.leader), '-a', '--wdns=/', '--', '/usr/bin/env', '-i', `PATH=${PATH}`, ...Object.entries(opts.env ?? {}).map(([k, v]) => `${k}=${v}`), ...argv], {
      reject: false,
      timeout: opts.timeoutMs ?? 60_000,
      ...(opts.input !== undefined ? { input: opts.input } : { stdin: 'ignore' as const }),
    });
    const res = { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
    if (opts.reject !== false && res.exitCode !== 0) {
      throw new NavigatorError('COMMAND_FAILED', `on ${this.name}: ${argv.join(' ')} failed (${r.timedOut ? 'timed out' : `exit ${r.exitCode}`}): ${(res.stderr.trim() || res.stdout.trim()).slice(-2000) || '(no output)'}`);
    }
    return res;
  }

  /** A long-running command inside, with its output in a log file. */
  spawn(argv: readonly string[], logPath: string, label = argv[0]!): LoggedProcess {
    const child = execa('nsenter', ['-t', String(this.leader), '-a', '--wdns=/', '--', ...argv], { reject: false, buffer: false, stdin: 'ignore', cleanup: true });
    return new LoggedProcess(child, { label: `${label} on ${this.name}`, logPath, tailLines: 60, markStderr: true });
  }

  /**
   * This host's pid of the process `spawn()` started inside (nsenter forks into the machine's PID
   * namespace, and signals sent to nsenter do not reach its child): the newest descendant of `p`
   * whose command is `comm`.
   */
  async innerPid(p: LoggedProcess, comm: string): Promise<number | undefined> {
    const found: number[] = [];
    const walk = async (pid: number): Promise<void> => {
      for (const t of await readdir(`/proc/${pid}/task`).catch(() => [] as string[])) {
        for (const c of (await readFile(`/proc/${pid}/task/${t}/children`, 'utf8').catch(() => '')).trim().split(/\s+/).filter(Boolean).map(Number)) {
          if ((await readFile(`/proc/${c}/comm`, 'utf8').catch(() => '')).trim() === comm) found.push(c);
          await walk(c);
        }
      }
    };
    if (p.pid) await walk(p.pid);
    return found.at(-1);
  }

  /**
   * Stop what spawn() started: SIGTERM to the process inside named `comm` (SIGKILL after
   * `graceMs`), then wait for nsenter to end.
   */
  async stopSpawned(p: LoggedProcess, comm: string, graceMs = 10_000): Promise<void> {
    if (!p.running) return;
    const pid = await this.innerPid(p, comm);
    if (pid) process.kill(pid, 'SIGTERM');
    const timer = setTimeout(() => {
      if (pid) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone already
        }
      }
      p.kill('SIGKILL');
    }, graceMs);
    await p.exited;
    clearTimeout(timer);
  }

  /** The machine's journal of one unit (for failure messages and log checks). */
  async journal(unit: string): Promise<string> {
    return (await this.exec(['journalctl', '--no-pager', '-o', 'cat', '-u', unit], { reject: false })).stdout;
  }

  /** Until systemd reports `running` (its bus comes up a moment after it starts: polled). */
  async waitBooted(timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let state = '';
    let retried = false;
    while (Date.now() < deadline) {
      state = (await this.exec(['systemctl', 'is-system-running'], { reject: false, timeoutMs: 10_000 })).stdout.trim();
      if (state === 'running') return;
      if (state === 'degraded' && !retried) {
        // A boot-time unit of the machine's own (journal flush, sysusers) now and then fails with
        // 219/CGROUP when several machines boot at once under this host's cgroup v1: start each
        // failed unit once more; a unit that fails again is a real failure.
        retried = true;
        for (const unit of await this.failedUnits()) await this.exec(['systemctl', 'restart', unit], { reject: false, timeoutMs: 30_000 });
        continue;
      }
      if (state === 'degraded' || state === 'maintenance' || state === 'stopping') break;
      await new Promise((r) => setTimeout(r, 200));
    }
    const failed = await this.failedUnits();
    const logs: string[] = [];
    for (const unit of failed) logs.push((await this.exec(['systemctl', 'status', '--no-pager', '-l', '-n', '10', unit], { reject: false })).stdout.trim());
    throw new NavigatorError('COMMAND_FAILED', `machine ${this.name} is ${state || 'not up'} after boot; failed units: ${failed.join(', ') || 'none'}${logs.length ? `\n${logs.join('\n')}` : ''}`);
  }

  private async failedUnits(): Promise<string[]> {
    const failed = (await this.exec(['systemctl', '--failed', '--no-legend', '--plain'], { reject: false })).stdout.trim();
    return failed.split('\n').map((l) => l.split(/\s+/)[0]!).filter(Boolean);
  }

  /** Halt (SIGTERM to systemd-nspawn: the machine shuts down cleanly), SIGKILL after `graceMs`. */
  async stop(graceMs = 20_000): Promise<void> {
    await this.nspawn.stop(graceMs);
  }
}

/** The child of `pid` that lives in another PID namespace (the machine's PID 1), if any yet. */
async function childInOtherPidNs(pid: number): Promise<number | undefined> {
  const own = await readlinkNs(pid);
  const tasks = await readdir(`/proc/${pid}/task`).catch(() => [] as string[]);
  for (const t of tasks) {
    const children = (await readFile(`/proc/${pid}/task/${t}/children`, 'utf8').catch(() => '')).trim().split(/\s+/).filter(Boolean).map(Number);
    for (const c of children) {
      const ns = await readlinkNs(c);
      if (ns && own && ns !== own) return c;
      const deeper = await childInOtherPidNs(c);
      if (deeper) return deeper;
    }
  }
  return undefined;
}

async function readlinkNs(pid: number): Promise<string | undefined> {
  return readlink(`/proc/${pid}/ns/pid`).catch(() => undefined);
}
