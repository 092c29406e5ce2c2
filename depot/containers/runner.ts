import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { chmod, lchown, lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { ContainerLimits } from '../../shared/config.ts';
import { NavigatorError } from '../../shared/errors.ts';
import type { Logger } from '../../shared/logger.ts';
import { wrapCommand } from './cgroup-limits.ts';
import { alive, fileDescriptor } from './drivers/proc.ts';

// The one place that decides how a service container's command is launched (issue 15, Isolate).
//
// - `systemd` (PID 1 is systemd and the service user exists): every command runs in a transient
//   unit of its own, navigator-ctr-<container>-<step>.service, as the service user
//   (navigator-svc), with no capabilities, a minimal environment and the container's limits as
//   unit properties (CPUWeight, CPUQuota, MemoryMax, IOWeight). Services, not scopes: a scope runs
//   as its caller (the depot) and only a service takes User=, which the depot, without
//   CAP_SETUID, cannot do itself. The units are not in the depot's cgroup, so stopping or
//   restarting the depot (KillMode=control-group) leaves them running; a restarted depot finds
//   them by the process groups it wrote down (each unit's main process leads one: services run
//   setsid). The depot, an unprivileged user, signals them through `systemctl kill` (polkit rule
//   of the package: manage-units on navigator-ctr-*.service).
// - `direct` (no systemd: the lab's network namespaces, tests, the demo): the commands are the
//   depot's children, each long-running one the leader of its own process group, in the
//   container's cgroup written by CgroupHost (wrapCommand). When the depot is root and the
//   service user exists, they drop to it (setuid/setgid, no supplementary groups, so no
//   capabilities either).
//
// Either way a command gets only PATH, HOME (the service user's, or the depot's when it runs as
// the depot), LANG and the manifest's own env: never the depot's environment.

export type RunnerKind = 'systemd' | 'direct';

export interface ServiceUser {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

/** One command of a container, after ${dir}/${dataDir} substitution and the netns prefix. */
export interface Launch {
  /** Step name, part of the unit name: start0, primary1, stop, exec, health. */
  step: string;
  file: string;
  args: string[];
  cwd: string;
  /** The manifest's env for this command (never the depot's). */
  env: Record<string, string>;
}

export interface Spawned {
  /** The process group leader (main process of the unit). */
  pid: number;
  /** null while it runs; its exit code (-1: by a signal or unknown) once it ended. */
  exitCode(): number | null;
}

export interface RunResult {
  exitCode: number | undefined;
  signal?: string | undefined;
  timedOut: boolean;
  stdout: string;
  stderr: string;
  /** Why the command could not be started at all. */
  spawnError?: string;
}

export interface ContainerRunner {
  readonly kind: RunnerKind;
  /** Before the container's commands run: its cgroup (direct) and a folder the service user can use. */
  prepare(): Promise<void>;
  /** A long-running command, its own process group; stdout/stderr appended to `logPath`. */
  spawn(l: Launch, logPath: string): Promise<Spawned>;
  /** A command run to completion (wait steps, stop command, exec, health). With `logPath`, its output goes there. */
  run(l: Launch, opts: { timeoutMs: number; logPath?: string }): Promise<RunResult>;
  /** Signal whole process groups (those in units through systemd). */
  signal(groups: readonly number[], signal: NodeJS.Signals): Promise<void>;
  /** After the last process is gone. */
  release(): Promise<void>;
}

export const UNIT_PREFIX = 'navigator-ctr-';

/** Pure: the unit name of a container's step (systemd unit names allow [A-Za-z0-9:_.@-]; anything else becomes _). */
export function unitName(containerId: string, step: string): string {
  return `${UNIT_PREFIX}${`${containerId}-${step}`.replace(/[^A-Za-z0-9_.@-]/g, '_')}.service`;
}

/** Pure: the environment of a container's command. */
export function minimalEnv(env: Record<string, string>, home: string, depotEnv: NodeJS.ProcessEnv = process.env): Record<string, string> {
  return {
    PATH: depotEnv.PATH || '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    HOME: home,
    LANG: depotEnv.LANG || 'C.UTF-8',
    ...env,
  };
}

/** Pure: the unit properties of the container's limits (systemd.resource-control). */
export function limitProperties(limits: ContainerLimits | undefined): string[] {
  if (!limits) return [];
  const out = [`CPUWeight=${limits.cpuWeight}`, `IOWeight=${limits.ioWeight}`];
  if (limits.cpuMax !== undefined) out.push(`CPUQuota=${Math.max(1, Math.round(limits.cpuMax * 100))}%`);
  if (limits.memoryMax !== undefined) out.push(`MemoryMax=${limits.memoryMax}`);
  return out;
}

/**
 * Pure: the systemd-run arguments of a command. `wait`: a one-shot run to completion with its
 * stdio passed through (--wait --pipe), bounded by RuntimeMaxSec; else a long-running service.
 */
export function systemdRunArgs(o: { unit: string; user: ServiceUser; limits?: ContainerLimits; launch: Launch; wait?: { timeoutMs: number }; logPath?: string }): string[] {
  const env = minimalEnv(o.launch.env, o.user.home);
  const props = [
    `User=${o.user.name}`,
    `Group=${o.user.name}`,
    // Files it makes stay readable and writable for the depot (a member of its group).
    'UMask=0007',
    'NoNewPrivileges=yes',
    'CapabilityBoundingSet=',
    'AmbientCapabilities=',
    'KillMode=control-group',
    ...limitProperties(o.limits),
  ];
  if (o.wait) props.push(`RuntimeMaxSec=${Math.max(1, Math.ceil(o.wait.timeoutMs / 1000))}s`);
  else if (o.logPath) props.push(`StandardOutput=append:${o.logPath}`, `StandardError=append:${o.logPath}`);
  return [
    `--unit=${o.unit}`,
    '--quiet',
    '--collect',
    '--no-ask-password',
    '--service-type=exec',
    ...(o.wait ? ['--wait', '--pipe'] : []),
    `--working-directory=${o.launch.cwd}`,
    ...props.map((p) => `--property=${p}`),
    ...Object.entries(env).map(([k, v]) => `--setenv=${k}=${v}`),
    '--',
    o.launch.file,
    ...o.launch.args,
  ];
}

/** The systemd service unit a process is in, from /proc/<pid>/cgroup; undefined when none of ours. */
export function unitOfPid(pid: number, read: (p: string) => string = (p) => readFileSync(p, 'utf8')): string | undefined {
  let text: string;
  try {
    text = read(`/proc/${pid}/cgroup`);
  } catch {
    return undefined;
  }
  for (const line of text.split('\n')) {
    const m = /\/(navigator-ctr-[A-Za-z0-9_.@-]+\.service)(?:\/|$)/.exec(line);
    if (m) return m[1];
  }
  return undefined;
}

/** Pure: the runner kind for config `containers.runner` on a host (systemd as PID 1, the service user there or not). */
export function chooseRunner(setting: 'auto' | RunnerKind, host: { systemd: boolean; user: boolean }): RunnerKind {
  if (setting !== 'auto') return setting;
  return host.systemd && host.user ? 'systemd' : 'direct';
}

/** The runner of this host's process containers (config containers.runner / serviceUser), logged once. */
export function containerIsolation(c: { runner: 'auto' | RunnerKind; serviceUser: string }, log: Logger): { kind: RunnerKind; user?: ServiceUser } {
  const user = lookupUser(c.serviceUser);
  const systemd = existsSync('/run/systemd/system');
  const kind = chooseRunner(c.runner, { systemd, user: user !== undefined });
  if (kind === 'systemd' && !user) throw new NavigatorError('BAD_REQUEST', `containers.runner is systemd but the service user ${c.serviceUser} does not exist (make it with \`navigator depot install\`)`);
  const drops = kind === 'systemd' || (user !== undefined && process.getuid?.() === 0);
  log.info({ event: 'container-runner', runner: kind, user: drops ? c.serviceUser : undefined, systemd }, `service containers run ${kind === 'systemd' ? 'in systemd units' : 'as children of the depot'}${drops ? ` as ${c.serviceUser}` : ' as the depot\'s user'}`);
  return { kind, ...(user ? { user } : {}) };
}

/** The system user `name` from /etc/passwd, or undefined. */
export function lookupUser(name: string, passwd = '/etc/passwd'): ServiceUser | undefined {
  let text: string;
  try {
    text = readFileSync(passwd, 'utf8');
  } catch {
    return undefined;
  }
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f[0] === name && f.length >= 7) return { name, uid: Number(f[2]), gid: Number(f[3]), home: f[5] || '/' };
  }
  return undefined;
}

/**
 * Make the container folder usable by the service user: everything the depot owns there gets the
 * service user's group with group read/write (and search on folders). Only what the depot owns is
 * touched (the service user's own files already have its group); symlinks are left alone.
 */
export async function grantFolder(dir: string, gid: number, ownerUid = process.getuid?.() ?? 0): Promise<void> {
  const walk = async (p: string): Promise<void> => {
    const st = await lstat(p);
    if (st.isSymbolicLink()) return;
    if (ownerUid === 0 || st.uid === ownerUid) {
      if (st.gid !== gid) await lchown(p, st.uid, gid);
      const want = st.isDirectory() ? 0o070 : 0o060 | (st.mode & 0o100 ? 0o010 : 0);
      if ((st.mode & want) !== want) await chmod(p, (st.mode & 0o7777) | want);
    }
    if (st.isDirectory()) for (const name of await readdir(p)) await walk(join(p, name));
  };
  await walk(dir);
}

export interface RunnerOptions {
  kind: RunnerKind;
  id: string;
  dir: string;
  logger: Logger;
  /** The service user; direct: drop to it only when the depot is root. */
  user?: ServiceUser;
  /** systemd: the unit properties; direct: enforced by `cgroup`. */
  limits?: ContainerLimits;
  /** direct: the container's cgroup (CgroupHost). */
  cgroup?: { enter(): Promise<string[]>; leave(): Promise<void> };
  /** systemd-run / systemctl binaries (tests). */
  systemdRun?: string;
  systemctl?: string;
}

export function createRunner(o: RunnerOptions): ContainerRunner {
  if (o.kind === 'systemd') {
    if (!o.user) throw new NavigatorError('BAD_REQUEST', `container ${o.id}: the systemd runner needs the service user`);
    return new SystemdRunner({ ...o, user: o.user });
  }
  return new DirectRunner(o);
}

class DirectRunner implements ContainerRunner {
  readonly kind = 'direct' as const;
  private procs: string[] = [];
  private readonly drop: ServiceUser | undefined;

  constructor(private readonly o: RunnerOptions) {
    this.drop = o.user && process.getuid?.() === 0 ? o.user : undefined;
  }

  async prepare(): Promise<void> {
    this.procs = (await this.o.cgroup?.enter()) ?? [];
    if (this.drop) await grantFolder(this.o.dir, this.drop.gid, 0);
  }

  private options(l: Launch) {
    const cmd = wrapCommand(this.procs, l.file, l.args);
    const home = this.drop?.home ?? process.env.HOME ?? '/';
    return { cmd, opts: { cwd: l.cwd, env: minimalEnv(l.env, home), extendEnv: false, ...(this.drop ? { uid: this.drop.uid, gid: this.drop.gid } : {}) } };
  }

  async spawn(l: Launch, logPath: string): Promise<Spawned> {
    const { cmd, opts } = this.options(l);
    const { execa } = await import('execa');
    const fd = openSync(logPath, 'a');
    let child;
    try {
      child = execa(cmd.file, cmd.args, { ...opts, detached: true, cleanup: false, reject: false, stdin: 'ignore', stdout: fileDescriptor(fd), stderr: fileDescriptor(fd) });
    } finally {
      closeSync(fd);
    }
    const pid = child.pid;
    if (pid === undefined) {
      const r = await child;
      throw new NavigatorError('COMMAND_FAILED', `cannot start ${l.file}: ${(r as { code?: string }).code ?? 'spawn failed'}`);
    }
    let code: number | null = null;
    void child.then((r) => (code = r.exitCode ?? -1));
    child.unref();
    return { pid, exitCode: () => code };
  }

  async run(l: Launch, o: { timeoutMs: number; logPath?: string }): Promise<RunResult> {
    const { cmd, opts } = this.options(l);
    const { execa } = await import('execa');
    const fd = o.logPath ? openSync(o.logPath, 'a') : undefined;
    try {
      const out = fd === undefined ? {} : { stdout: fileDescriptor(fd), stderr: fileDescriptor(fd) };
      const r = await execa(cmd.file, cmd.args, { ...opts, reject: false, timeout: o.timeoutMs, stdin: 'ignore', ...out });
      return { exitCode: r.exitCode, signal: r.signal, timedOut: r.timedOut, stdout: String(r.stdout ?? ''), stderr: String(r.stderr ?? ''), ...(r.exitCode === undefined && !r.timedOut ? { spawnError: (r as { code?: string }).code ?? 'spawn failed' } : {}) };
    } finally {
      if (fd !== undefined) closeSync(fd);
    }
  }

  async signal(groups: readonly number[], signal: NodeJS.Signals): Promise<void> {
    signalDirect(groups, signal);
  }

  async release(): Promise<void> {
    await this.o.cgroup?.leave();
  }
}

function signalDirect(groups: readonly number[], signal: NodeJS.Signals): void {
  for (const g of groups) {
    try {
      process.kill(-g, signal);
    } catch {
      // group already gone
    }
  }
}

class SystemdRunner implements ContainerRunner {
  readonly kind = 'systemd' as const;
  private seq = 0;

  constructor(private readonly o: RunnerOptions & { user: ServiceUser }) {}

  async prepare(): Promise<void> {
    await grantFolder(this.o.dir, this.o.user.gid);
  }

  async spawn(l: Launch, logPath: string): Promise<Spawned> {
    const unit = unitName(this.o.id, l.step);
    const { execa } = await import('execa');
    // A unit of that name left over (failed, not yet collected) would refuse the new one.
    await execa(this.o.systemctl ?? 'systemctl', ['reset-failed', unit], { reject: false, stdin: 'ignore' });
    const r = await execa(this.o.systemdRun ?? 'systemd-run', systemdRunArgs({ unit, user: this.o.user, limits: this.o.limits, launch: l, logPath }), { reject: false, stdin: 'ignore', timeout: 30_000 });
    if (r.exitCode !== 0) throw new NavigatorError('COMMAND_FAILED', `systemd-run ${unit} (${l.file}) failed (${r.exitCode ?? r.signal}): ${String(r.stderr).trim().slice(0, 500)}`);
    const show = await execa(this.o.systemctl ?? 'systemctl', ['show', '--property=MainPID', '--value', unit], { reject: false, stdin: 'ignore' });
    const pid = Number(String(show.stdout).trim());
    if (!(pid > 1)) throw new NavigatorError('COMMAND_FAILED', `${unit} (${l.file}) exited right after it started`);
    this.o.logger.info({ event: 'container-unit-started', container: this.o.id, unit, pid }, 'container command started in its own unit');
    return { pid, exitCode: () => (alive(pid) ? null : -1) };
  }

  async run(l: Launch, o: { timeoutMs: number; logPath?: string }): Promise<RunResult> {
    const unit = unitName(this.o.id, `${l.step}-${process.pid}-${++this.seq}`);
    const { execa } = await import('execa');
    const fd = o.logPath ? openSync(o.logPath, 'a') : undefined;
    try {
      const out = fd === undefined ? {} : { stdout: fileDescriptor(fd), stderr: fileDescriptor(fd) };
      const r = await execa(this.o.systemdRun ?? 'systemd-run', systemdRunArgs({ unit, user: this.o.user, limits: this.o.limits, launch: l, wait: { timeoutMs: o.timeoutMs } }), {
        reject: false,
        // RuntimeMaxSec ends the unit; this bounds systemd-run itself (then the unit is stopped).
        timeout: o.timeoutMs + 5000,
        stdin: 'ignore',
        ...out,
      });
      if (r.timedOut) await execa(this.o.systemctl ?? 'systemctl', ['stop', unit], { reject: false, stdin: 'ignore' });
      return { exitCode: r.exitCode, signal: r.signal, timedOut: r.timedOut, stdout: String(r.stdout ?? ''), stderr: String(r.stderr ?? ''), ...(r.exitCode === undefined && !r.timedOut ? { spawnError: (r as { code?: string }).code ?? 'spawn failed' } : {}) };
    } finally {
      if (fd !== undefined) closeSync(fd);
    }
  }

  async signal(groups: readonly number[], signal: NodeJS.Signals): Promise<void> {
    const units = new Set<string>();
    const loose: number[] = [];
    for (const g of groups) {
      const u = unitOfPid(g);
      if (u) units.add(u);
      else loose.push(g);
    }
    // Groups started before the runner existed (or by a root depot) are signalled directly.
    signalDirect(loose, signal);
    if (units.size === 0) return;
    const { execa } = await import('execa');
    const r = await execa(this.o.systemctl ?? 'systemctl', ['kill', '--no-ask-password', `--signal=${signal}`, '--kill-who=all', ...units], { reject: false, stdin: 'ignore' });
    if (r.exitCode !== 0) this.o.logger.warn({ event: 'container-unit-kill-failed', container: this.o.id, units: [...units], signal, stderr: String(r.stderr).slice(0, 300) }, 'systemctl kill failed');
  }

  async release(): Promise<void> {}
}
