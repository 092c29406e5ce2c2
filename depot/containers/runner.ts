import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { chmod, lchown, lstat, mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ContainerLimits } from '../../shared/config.ts';
import { NavigatorError } from '../../shared/errors.ts';
import type { Logger } from '../../shared/logger.ts';
import { wrapCommand } from './cgroup-limits.ts';
import { alive, fileDescriptor } from './drivers/proc.ts';

// The one place that decides how a service container's command is launched (issue 15, Isolate).
//
// - `systemd` (PID 1 is systemd and the service user exists): every command runs in a unit of its
//   own, an instance of the package's templates navigator-ctr@.service (long-running commands)
//   and navigator-ctr-once@.service (one-shot steps: wait steps, stop, exec, health checks), named
//   <container>:<step>. The templates fix User=navigator-svc, no capabilities and
//   NoNewPrivileges; the depot writes the command line (an `env -i` with the minimal environment
//   and the working folder, then the program) into the container folder, where the template's
//   launcher reads it, and sets the container's limits on the instance (systemctl set-property
//   --runtime: CPUWeight, CPUQuota, MemoryMax, IOWeight) before starting it. Named units, not
//   transient ones (systemd-run): systemd 252 asks polkit about StartTransientUnit without a unit
//   name, so a rule allowing it would let the depot's user start anything as root; for a named
//   unit polkit sees the name and the rule allows navigator-ctr@*/navigator-ctr-once@* only, and
//   what those run as is fixed by their files. Services, not scopes: a scope runs as its caller.
//   The units are not in the depot's cgroup, so stopping or restarting the depot
//   (KillMode=control-group) leaves them running; a restarted depot finds them by the process
//   groups it wrote down (the main process of a service leads its own session and group). The
//   depot, an unprivileged user, signals them through `systemctl kill`.
// - `direct` (no systemd: the lab's network namespaces, tests, the demo): the commands are the
//   depot's children, each long-running one the leader of its own process group, in the
//   container's cgroup written by CgroupHost (wrapCommand). When the depot is root and the
//   service user exists, they drop to it (setpriv: its uid, gid and groups, every capability set
//   cleared, the bounding set included, and no_new_privs).
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
  /**
   * Before the container's commands run: its cgroup (direct) and, unless `folder` is false, its
   * folder handed to the service user's group (a walk of the whole tree: done at start, not on
   * the promotion path).
   */
  prepare(opts?: { folder?: boolean }): Promise<void>;
  /** A long-running command, its own process group; stdout/stderr appended to `logPath`. */
  spawn(l: Launch, logPath: string): Promise<Spawned>;
  /** A command run to completion (wait steps, stop command, exec, health). With `logPath`, its output goes there. */
  run(l: Launch, opts: { timeoutMs: number; logPath?: string }): Promise<RunResult>;
  /** Signal whole process groups (those in units through systemd). */
  signal(groups: readonly number[], signal: NodeJS.Signals): Promise<void>;
  /** After the last process is gone. */
  release(): Promise<void>;
}

/** The templates of the container units (depot/install/systemd-unit.ts renders them). */
export const CTR_TEMPLATE = 'navigator-ctr';
export const CTR_ONCE_TEMPLATE = 'navigator-ctr-once';

/** Pure: the instance name of a container's step (unit-name characters only; anything else becomes _). */
export function unitInstance(containerId: string, step: string): string {
  const clean = (x: string) => x.replace(/[^A-Za-z0-9_.-]/g, '_');
  return `${clean(containerId)}:${clean(step)}`;
}

/** Pure: the unit of a container's step: navigator-ctr@<container>:<step>.service (or navigator-ctr-once@… for one-shot steps). */
export function unitName(containerId: string, step: string, once = false): string {
  return `${once ? CTR_ONCE_TEMPLATE : CTR_TEMPLATE}@${unitInstance(containerId, step)}.service`;
}

/** Pure: the environment of a container's command: PATH, HOME, LANG, the depot's variables named in `pass` (config containers.passEnv), the manifest's env. */
export function minimalEnv(env: Record<string, string>, home: string, depotEnv: NodeJS.ProcessEnv = process.env, pass: readonly string[] = []): Record<string, string> {
  const passed = Object.fromEntries(pass.filter((k) => depotEnv[k] !== undefined).map((k) => [k, depotEnv[k]!]));
  return {
    PATH: depotEnv.PATH || '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    HOME: home,
    LANG: depotEnv.LANG || 'C.UTF-8',
    ...passed,
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

/** Pure: `systemctl set-property` values of the limits (unset ones reset to none). */
export function limitSettings(limits: ContainerLimits): string[] {
  return [`CPUWeight=${limits.cpuWeight}`, `IOWeight=${limits.ioWeight}`, `CPUQuota=${limits.cpuMax === undefined ? '' : `${Math.max(1, Math.round(limits.cpuMax * 100))}%`}`, `MemoryMax=${limits.memoryMax ?? 'infinity'}`];
}

/**
 * Pure: what the template's launcher reads (NUL-separated): where stdout and stderr go, then the
 * command, through `env -i -C cwd` so that it gets exactly the minimal environment and its folder.
 */
export function launchEntries(l: Launch, home: string, out: string, err: string, pass: readonly string[] = []): string[] {
  if (l.file.includes('=')) throw new NavigatorError('BAD_REQUEST', `program ${JSON.stringify(l.file)}: a program name with "=" cannot be launched`);
  for (const v of [l.file, ...l.args, l.cwd, out, err, ...Object.entries(l.env).flat()]) {
    if (v.includes('\0')) throw new NavigatorError('BAD_REQUEST', `a command line of step ${l.step} contains a NUL byte`);
  }
  for (const k of Object.keys(l.env)) if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) throw new NavigatorError('BAD_REQUEST', `environment variable name ${JSON.stringify(k)} is not valid`);
  const env = Object.entries(minimalEnv(l.env, home, process.env, pass)).map(([k, v]) => `${k}=${v}`);
  return [out, err, '/usr/bin/env', '-i', '-C', l.cwd, ...env, l.file, ...l.args];
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
    const m = /\/(navigator-ctr(?:-once)?@[A-Za-z0-9_.:-]+\.service)(?:\/|$)/.exec(line);
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
export function containerIsolation(c: { runner: 'auto' | RunnerKind; serviceUser: string; passEnv: readonly string[] }, log: Logger): { kind: RunnerKind; user?: ServiceUser; passEnv: readonly string[] } {
  const user = lookupUser(c.serviceUser);
  const systemd = existsSync('/run/systemd/system');
  const kind = chooseRunner(c.runner, { systemd, user: user !== undefined });
  if (kind === 'systemd' && !user) throw new NavigatorError('BAD_REQUEST', `containers.runner is systemd but the service user ${c.serviceUser} does not exist (make it with \`navigator depot install\`)`);
  const drops = kind === 'systemd' || (user !== undefined && process.getuid?.() === 0);
  log.info({ event: 'container-runner', runner: kind, user: drops ? c.serviceUser : undefined, systemd }, `service containers run ${kind === 'systemd' ? 'in systemd units' : 'as children of the depot'}${drops ? ` as ${c.serviceUser}` : ' as the depot\'s user'}`);
  return { kind, passEnv: c.passEnv, ...(user ? { user } : {}) };
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
  /** Names of the depot's environment variables passed on (config containers.passEnv). */
  passEnv?: readonly string[];
  /** direct: the container's cgroup (CgroupHost). */
  cgroup?: { enter(): Promise<string[]>; leave(): Promise<void> };
  /** systemctl binary (tests). */
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

  async prepare(opts: { folder?: boolean } = {}): Promise<void> {
    this.procs = (await this.o.cgroup?.enter()) ?? [];
    if (this.drop && opts.folder !== false) await grantFolder(this.o.dir, this.drop.gid, 0);
  }

  private options(l: Launch) {
    // Joins the cgroup first (as root: the cgroup files are root's), then drops: setpriv clears
    // every capability set including the bounding set (a setuid change alone keeps that) and sets
    // no_new_privs, as the systemd units do.
    const [file, args] = this.drop ? ['setpriv', [...dropArgs(this.drop), '--', l.file, ...l.args]] : [l.file, l.args];
    const cmd = wrapCommand(this.procs, file, args);
    const home = this.drop?.home ?? process.env.HOME ?? '/';
    return { cmd, opts: { cwd: l.cwd, env: minimalEnv(l.env, home, process.env, this.o.passEnv), extendEnv: false } };
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

/** Pure: setpriv's arguments to become `user` with no capability and no way to gain one. */
export function dropArgs(user: ServiceUser): string[] {
  return [`--reuid=${user.uid}`, `--regid=${user.gid}`, `--init-groups`, '--inh-caps=-all', '--ambient-caps=-all', '--bounding-set=-all', '--no-new-privs'];
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

/** Where the launcher of a container's units finds their command lines: inside its folder. */
export const RUN_DIR = '.navigator-run';

class SystemdRunner implements ContainerRunner {
  readonly kind = 'systemd' as const;
  private seq = 0;
  private readonly runDir: string;

  constructor(private readonly o: RunnerOptions & { user: ServiceUser }) {
    this.runDir = join(o.dir, RUN_DIR);
  }

  async prepare(opts: { folder?: boolean } = {}): Promise<void> {
    await mkdir(this.runDir, { recursive: true });
    if (opts.folder !== false) await grantFolder(this.o.dir, this.o.user.gid);
  }

  private systemctl(args: string[], timeoutMs = 30_000) {
    return import('execa').then(({ execa }) => execa(this.o.systemctl ?? 'systemctl', ['--no-ask-password', ...args], { reject: false, stdin: 'ignore', timeout: timeoutMs }));
  }

  /** A file the unit (the service user) writes: made by the depot, in the service user's group. */
  private async groupFile(path: string, truncate: boolean): Promise<void> {
    closeSync(openSync(path, truncate ? 'w' : 'a', 0o660));
    await lchown(path, process.getuid?.() ?? 0, this.o.user.gid).catch(() => undefined);
    await chmod(path, 0o660);
  }

  /** Write the command line, the limits, then `systemctl start` the unit. */
  private async launch(unit: string, step: string, l: Launch, out: string, err: string, limits: boolean): Promise<{ exitCode?: number; stderr: string; timedOut: boolean }> {
    await mkdir(this.runDir, { recursive: true });
    const argvPath = join(this.runDir, step);
    await writeFile(argvPath, launchEntries(l, this.o.user.home, out, err, this.o.passEnv).map((e) => `${e}\0`).join(''), { mode: 0o640 });
    await lchown(argvPath, process.getuid?.() ?? 0, this.o.user.gid).catch(() => undefined);
    // A unit of that name left failed by an earlier run would refuse to start.
    await this.systemctl(['reset-failed', unit]);
    if (limits && this.o.limits) {
      const r = await this.systemctl(['set-property', '--runtime', unit, ...limitSettings(this.o.limits)]);
      if (r.exitCode !== 0) throw new NavigatorError('COMMAND_FAILED', `systemctl set-property ${unit} failed (${r.exitCode}): ${String(r.stderr).trim().slice(0, 500)}`);
    }
    return this.systemctl(['start', unit], 0).then((r) => ({ exitCode: r.exitCode, stderr: String(r.stderr ?? ''), timedOut: false }));
  }

  async spawn(l: Launch, logPath: string): Promise<Spawned> {
    const unit = unitName(this.o.id, l.step);
    await this.groupFile(logPath, false);
    const r = await this.launch(unit, unitInstance(this.o.id, l.step).split(':')[1]!, l, logPath, logPath, true);
    if (r.exitCode !== 0) throw new NavigatorError('COMMAND_FAILED', `systemctl start ${unit} (${l.file}) failed (${r.exitCode}): ${r.stderr.trim().slice(0, 500)}`);
    const show = await this.systemctl(['show', '--property=MainPID', '--value', unit]);
    const pid = Number(String(show.stdout).trim());
    if (!(pid > 1)) throw new NavigatorError('COMMAND_FAILED', `${unit} (${l.file}) exited right after it started`);
    this.o.logger.info({ event: 'container-unit-started', container: this.o.id, unit, pid }, 'container command started in its own unit');
    return { pid, exitCode: () => (alive(pid) ? null : -1) };
  }

  async run(l: Launch, o: { timeoutMs: number; logPath?: string }): Promise<RunResult> {
    const step = `${l.step}-${process.pid}-${++this.seq}`;
    const unit = unitName(this.o.id, step, true);
    const out = o.logPath ?? join(this.runDir, `${step}.out`);
    const err = o.logPath ?? join(this.runDir, `${step}.err`);
    await mkdir(this.runDir, { recursive: true });
    for (const f of new Set([out, err])) await this.groupFile(f, !o.logPath);
    const { execa } = await import('execa');
    try {
      // Limits on the steps that do real work (start/primary wait steps), not on every health check.
      const limited = /^(start|primary)/.test(l.step);
      const started = this.launch(unit, step, l, out, err, limited);
      const timer = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), o.timeoutMs).unref());
      const r = await Promise.race([started, timer]);
      if (r === 'timeout') {
        await this.systemctl(['stop', unit]);
        await started.catch(() => undefined);
        return { exitCode: undefined, timedOut: true, stdout: '', stderr: '' };
      }
      let exitCode = 0;
      let signal: string | undefined;
      if (r.exitCode !== 0) {
        const show = await execa(this.o.systemctl ?? 'systemctl', ['show', '--property=ExecMainStatus', '--property=ExecMainCode', '--property=LoadState', unit], { reject: false, stdin: 'ignore' });
        const f = Object.fromEntries(String(show.stdout).split('\n').map((x) => [x.slice(0, x.indexOf('=')), x.slice(x.indexOf('=') + 1)]));
        if (f.LoadState !== 'loaded') return { exitCode: undefined, timedOut: false, stdout: '', stderr: r.stderr, spawnError: `systemctl start ${unit}: ${r.stderr.trim().slice(0, 300)}` };
        exitCode = Number(f.ExecMainStatus) || 1;
        // ExecMainCode 1 is CLD_EXITED; 2 and 3 are killed and dumped: ExecMainStatus is then the signal.
        if (f.ExecMainCode === '2' || f.ExecMainCode === '3') signal = `signal ${f.ExecMainStatus}`;
      }
      const read = async (p: string) => (o.logPath ? '' : await readFile(p, 'utf8').catch(() => ''));
      return { exitCode, signal, timedOut: false, stdout: await read(out), stderr: await read(err) };
    } finally {
      await this.systemctl(['reset-failed', unit]);
      for (const f of [join(this.runDir, step), ...(o.logPath ? [] : [out, err])]) await rm(f, { force: true });
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
    const r = await this.systemctl(['kill', `--signal=${signal}`, '--kill-who=all', ...units]);
    if (r.exitCode !== 0) this.o.logger.warn({ event: 'container-unit-kill-failed', container: this.o.id, units: [...units], signal, stderr: String(r.stderr).slice(0, 300) }, 'systemctl kill failed');
  }

  async release(): Promise<void> {}
}
