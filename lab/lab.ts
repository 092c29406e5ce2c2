import { execa } from 'execa';
import { mkdir, mkdtemp, rm, rmdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Logger } from '../shared/logger.ts';
import { silentLogger } from '../shared/logger.ts';
import { NavigatorError, errorMessage } from '../shared/errors.ts';
import { REPO_ROOT } from '../shared/repo-root.ts';
import { NamespaceLan, type LanHost } from './lan/namespace-lan.ts';
import type { ExecResult } from './lan/namespaces.ts';
import { thisOwner } from './lan/owner-registry.ts';
import { LAB_NS_PREFIX, labRegistry, sweepLabs } from './lab-registry.ts';
import { LoggedProcess } from './logged-process.ts';
import { detectCpuHierarchy } from '../depot/busy/cgroup-cpu.ts';
import { wrapCommand } from '../depot/containers/cgroup-limits.ts';

/**
 * The network-namespace lab, for tests and benchmarks: the namespace LAN (lab/lan) with
 * workstations w1..wN, a client (prober) and a watch (ARP watcher) namespace, and a gateway
 * namespace at .1, on a private 10.77.N.0/24 (nothing is added to the root namespace). Names
 * carry a random lab id so parallel runs never collide; a registry under /run/navlab lets a later
 * run sweep what a crashed run left behind (lab-registry.ts).
 */

export type LabHost = LanHost;

/** A workstation's user cgroup: its folder, and the same folder as processes inside the lab's namespaces see it. */
export interface UserCgroup {
  dir: string;
  view: string;
}

export interface LabOptions {
  workstations?: number;
  logger?: Logger;
  /** Keep the temp dir (logs) after destroy(); also when NAVLAB_KEEP=1. */
  keepFiles?: boolean;
}

export interface ExecOptions {
  reject?: boolean;
  timeoutMs?: number;
  input?: string;
}

export interface SpawnOptions {
  /** Label for the log file; default: the program name. */
  name?: string;
  env?: Record<string, string>;
  cwd?: string;
  /** Start the process in this workstation's user cgroup (userCgroup): the work of the PC's user. */
  asUser?: boolean;
}

/** A long-running process inside a lab namespace; output goes to a log file and to line listeners. */
export class LabProcess extends LoggedProcess {
  constructor(
    readonly host: string,
    readonly name: string,
    readonly argv: readonly string[],
    child: ConstructorParameters<typeof LoggedProcess>[0],
    readonly logPath: string,
  ) {
    super(child, { label: `${name} on ${host}`, logPath, tailLines: 50, markStderr: true });
  }
}

export class Lab extends NamespaceLan {
  declare readonly gateway: string;
  readonly dir: string;
  readonly workstations: LabHost[] = [];
  client!: LabHost;
  watch!: LabHost;
  /** The LAN's gateway (a namespace of its own at .1): a witness address that answers ARP and ping-like probes. */
  gw!: LabHost;
  private readonly processes = new Set<LabProcess>();
  private readonly keepFiles: boolean;
  private destroyed = false;
  private spawnCount = 0;
  private readonly userCgroups = new Map<string, UserCgroup>();

  private constructor(id: string, octet: number, dir: string, log: Logger, keepFiles: boolean) {
    super({ prefix: LAB_NS_PREFIX, id, net: `10.77.${octet}`, gateway: `10.77.${octet}.1`, logger: log });
    this.dir = dir;
    this.keepFiles = keepFiles;
  }

  /** Builds the lab; on any failure everything made so far is removed before the error propagates. */
  static async create(opts: LabOptions = {}): Promise<Lab> {
    const n = opts.workstations ?? 4;
    if (!Number.isInteger(n) || n < 1 || n > 80) throw new NavigatorError('BAD_REQUEST', 'workstations must be an integer 1..80');
    if (process.getuid?.() !== 0) throw new NavigatorError('BAD_REQUEST', 'the namespace lab needs root (ip netns)');
    const log = (opts.logger ?? silentLogger()).child({ component: 'lab' });
    await sweepLabs(log);
    const id = randomBytes(3).toString('hex');
    const octet = 1 + (randomBytes(1)[0]! % 254);
    const dir = await mkdtemp(join(tmpdir(), `navlab-${id}-`));
    await mkdir(join(dir, 'logs'), { recursive: true });
    const lab = new Lab(id, octet, dir, log, opts.keepFiles ?? process.env.NAVLAB_KEEP === '1');
    try {
      await lab.buildLab(n);
    } catch (err) {
      await lab.destroy().catch(() => undefined);
      throw err;
    }
    return lab;
  }

  /** A service address inside the lab subnet: index 0 → .100. */
  serviceAddress(index = 0, prefix = 24): string {
    return `${this.net}.${100 + index}/${prefix}`;
  }

  /** Runs a command inside a host's namespace and waits for it. Throws naming the command unless reject:false. */
  async exec(host: string, argv: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
    const ns = this.host(host).ns;
    const r = await execa('ip', ['netns', 'exec', ns, ...argv], {
      reject: false,
      timeout: opts.timeoutMs ?? 30_000,
      cwd: REPO_ROOT,
      ...(opts.input !== undefined ? { input: opts.input } : { stdin: 'ignore' as const }),
    });
    const res = { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
    if (opts.reject !== false && res.exitCode !== 0) {
      throw new NavigatorError('COMMAND_FAILED', `in ${ns}: ${argv.join(' ')} failed (${r.timedOut ? 'timed out' : `exit ${r.exitCode}`}): ${res.stderr.trim() || '(no stderr)'}`, {
        command: argv,
        stderr: res.stderr,
      });
    }
    return res;
  }

  /**
   * The CPU-accounting cgroup of a workstation's user work (made on first use, removed with the
   * lab): the workstations share one kernel, so /proc/stat and the load average are the whole
   * machine's; a depot measures its "host's" busy signal from this folder instead (config
   * busy.cgroup). Processes spawned with `asUser` run in it.
   */
  async userCgroup(host: string): Promise<UserCgroup> {
    const h = this.host(host);
    const known = this.userCgroups.get(h.name);
    if (known) return known;
    const hierarchy = await detectCpuHierarchy();
    if (!hierarchy) throw new NavigatorError('BAD_REQUEST', 'this machine has no CPU accounting cgroup (v2 cpu.stat or v1 cpuacct): the lab cannot give workstations a busy signal');
    const dir = join(hierarchy.root, `navlab-${this.id}`, h.name);
    await mkdir(dir, { recursive: true });
    // `ip netns exec` mounts a fresh /sys for the command, without the cgroup hierarchies: a
    // depot in the namespace reads its workstation's cgroup through a bind mount in the lab folder.
    const view = join(this.dir, 'cgroup', h.name);
    await mkdir(view, { recursive: true });
    await execa('mount', ['--bind', dir, view]);
    const cg = { dir, view };
    this.userCgroups.set(h.name, cg);
    return cg;
  }

  /** Starts a long-running process in a host's namespace; output to `<dir>/logs/<host>-<name>-<n>.log`. */
  spawn(host: string, argv: readonly string[], opts: SpawnOptions = {}): LabProcess {
    const h = this.host(host);
    if (argv.length === 0) throw new NavigatorError('BAD_REQUEST', 'spawn needs a command');
    const name = opts.name ?? argv[0]!.split('/').pop()!;
    const logPath = join(this.dir, 'logs', `${h.name}-${name}-${++this.spawnCount}.log`);
    const cgroup = opts.asUser ? this.userCgroups.get(h.name)?.dir : undefined;
    if (opts.asUser && !cgroup) throw new NavigatorError('BAD_REQUEST', `spawn as ${h.name}'s user: call userCgroup('${h.name}') first`);
    // The process joins the user cgroup before it execs, so its children are born inside.
    const cmd = wrapCommand(cgroup ? [join(cgroup, 'cgroup.procs')] : [], 'ip', ['netns', 'exec', h.ns, ...argv]);
    const child = execa(cmd.file, cmd.args, {
      reject: false,
      buffer: false,
      stdin: 'ignore',
      cwd: opts.cwd ?? REPO_ROOT,
      // Node 22 from the project's node_modules first, as npm scripts do.
      env: { PATH: `${join(REPO_ROOT, 'node_modules', '.bin')}:${process.env.PATH ?? '/usr/bin:/bin'}`, ...opts.env },
      extendEnv: true,
    });
    const p = new LabProcess(h.name, name, argv, child, logPath);
    this.processes.add(p);
    void p.exited.then(() => this.processes.delete(p));
    return p;
  }

  /** `node --import tsx SCRIPT ...` in a namespace, with this process's Node (22). */
  spawnNode(host: string, script: string, args: readonly string[] = [], opts: SpawnOptions = {}): LabProcess {
    const name = opts.name ?? script.split('/').pop()!.replace(/\.[mc]?[jt]s$/, '');
    return this.spawn(host, [process.execPath, '--import', 'tsx', resolve(REPO_ROOT, script), ...args], { ...opts, name });
  }

  /** Starts the echo service (answers with the host's short name) and waits until it listens. */
  async startEcho(host: string, port = 7000): Promise<LabProcess> {
    const h = this.host(host);
    const p = this.spawnNode(h.name, 'lab/echo-service.ts', ['--name', h.name, '--port', String(port)], { name: 'echo' });
    await p.waitForLine(/"event":"listening"/, 15_000);
    return p;
  }

  /** Stops every process and removes every namespace and file this lab made; safe to call twice. */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    const errors: string[] = [];
    await Promise.all([...this.processes].map((p) => p.stop(500).catch((e: unknown) => errors.push(errorMessage(e)))));
    errors.push(...(await this.removeNamespaces()));
    // Empty once their processes are gone (a folder still busy is left: an empty cgroup costs nothing).
    for (const cg of this.userCgroups.values()) {
      const r = await execa('umount', [cg.view], { reject: false });
      if (r.exitCode !== 0) errors.push(`umount ${cg.view}: ${String(r.stderr).trim()}`);
      await rmdir(cg.dir).catch(() => undefined);
    }
    if (this.userCgroups.size) await rmdir(join([...this.userCgroups.values()][0]!.dir, '..')).catch(() => undefined);
    await labRegistry.remove(this.id);
    if (!this.keepFiles) await rm(this.dir, { recursive: true, force: true });
    else this.log.info({ event: 'lab-files-kept', dir: this.dir }, 'lab files kept');
    if (errors.length > 0) throw new NavigatorError('INTERNAL', `lab ${this.id} cleanup: ${errors.join('; ')}`);
  }

  private async buildLab(n: number): Promise<void> {
    const names = [...Array.from({ length: n }, (_, i) => `w${i + 1}`), 'client', 'watch', 'gw'];
    // Register before creating anything, so a crash at any point leaves something to sweep.
    await labRegistry.write(this.id, { ...(await thisOwner()), dir: this.dir, namespaces: NamespaceLan.namespaceNames(LAB_NS_PREFIX, this.id, names) });
    const addressOf = (name: string, i: number): string =>
      name === 'client' ? `${this.net}.200` : name === 'watch' ? `${this.net}.201` : name === 'gw' ? this.gateway : `${this.net}.${10 + i + 1}`;
    for (const h of await this.build(names.map((name, i) => ({ name, ip: addressOf(name, i) })))) {
      if (h.name === 'client') this.client = h;
      else if (h.name === 'watch') this.watch = h;
      else if (h.name === 'gw') this.gw = h;
      else this.workstations.push(h);
    }
    this.log.info({ event: 'lab-created', id: this.id, net: `${this.net}.0/24`, hosts: names }, 'lab created');
  }
}
