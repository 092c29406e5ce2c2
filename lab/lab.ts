import { execa, type ResultPromise } from 'execa';
import { createWriteStream, existsSync, type WriteStream } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { randomBytes } from 'node:crypto';
import type { Logger } from '../shared/logger.ts';
import { silentLogger } from '../shared/logger.ts';
import { NavigatorError, errorMessage } from '../shared/errors.ts';
import { REPO_ROOT } from '../shared/repo-root.ts';

/**
 * The network-namespace lab: a bridge in its own namespace (nothing is added to the root
 * namespace), one namespace per workstation, one for the client (prober) and one for the ARP
 * watcher, each joined to the bridge by a veth pair, on a private 10.77.N.0/24 that exists only
 * inside these namespaces; a gateway namespace holds .1. Names carry a random lab id so parallel runs never collide; a
 * registry under /run/navlab lets a later run sweep what a crashed run left behind.
 */

export { REPO_ROOT };
const REGISTRY = '/run/navlab';
const NS_PREFIX = 'navlab-';

export interface LabHost {
  /** Short name: w1..wN, client, watch, gw. */
  name: string;
  /** Network namespace name. */
  ns: string;
  /** Interface inside the namespace. */
  iface: string;
  /** The host's own address (no prefix). */
  ip: string;
  mac: string;
  /** The bridge-side end of its veth pair (in the bridge namespace). */
  port: string;
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

export interface ExecResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

export interface SpawnOptions {
  /** Label for the log file; default: the program name. */
  name?: string;
  env?: Record<string, string>;
  cwd?: string;
}

export interface NetemOptions {
  /** Packet loss in percent, applied in each direction. */
  lossPct?: number;
  /** Delay in ms added in each direction (round trip grows by twice this). */
  delayMs?: number;
  jitterMs?: number;
}

type LineListener = (line: string, stream: 'stdout' | 'stderr') => void;

/** A long-running process inside a lab namespace; output goes to a log file and to line listeners. */
export class LabProcess {
  readonly host: string;
  readonly name: string;
  readonly argv: readonly string[];
  readonly logPath: string;
  readonly exited: Promise<{ exitCode: number | undefined; signal: string | undefined }>;
  private readonly child: ResultPromise;
  private readonly listeners = new Set<LineListener>();
  private readonly log: WriteStream;
  private done = false;
  private readonly tail: string[] = [];

  constructor(host: string, name: string, argv: readonly string[], child: ResultPromise, logPath: string) {
    this.host = host;
    this.name = name;
    this.argv = argv;
    this.child = child;
    this.logPath = logPath;
    this.log = createWriteStream(logPath, { flags: 'a' });
    for (const stream of ['stdout', 'stderr'] as const) {
      const src = child[stream];
      if (!src) continue;
      const rl = createInterface({ input: src, crlfDelay: Infinity });
      rl.on('line', (line) => {
        this.log.write(stream === 'stderr' ? `[stderr] ${line}\n` : `${line}\n`);
        this.tail.push(line);
        if (this.tail.length > 50) this.tail.shift();
        for (const l of this.listeners) l(line, stream);
      });
    }
    this.exited = Promise.resolve(child).then(
      (r) => ({ exitCode: r.exitCode, signal: r.signal }),
      (err: unknown) => ({ exitCode: undefined, signal: String((err as { signal?: string }).signal ?? 'error') }),
    ).finally(() => {
      this.done = true;
      this.log.end();
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get running(): boolean {
    return !this.done;
  }

  /** The last lines of output, for error messages. */
  lastLines(): string {
    return this.tail.join('\n');
  }

  onLine(listener: LineListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Resolves with the first line (stdout or stderr) matching `re`; rejects on timeout or exit. */
  waitForLine(re: RegExp, timeoutMs = 10_000): Promise<string> {
    return new Promise((resolveLine, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(new Error(`${this.name} on ${this.host}: no line matching ${re} within ${timeoutMs} ms; last output:\n${this.lastLines()}`));
      }, timeoutMs);
      const off = this.onLine((line) => {
        if (re.test(line)) {
          clearTimeout(timer);
          off();
          resolveLine(line);
        }
      });
      void this.exited.then((r) => {
        clearTimeout(timer);
        off();
        reject(new Error(`${this.name} on ${this.host} exited (code ${r.exitCode}, signal ${r.signal}) before printing ${re}; last output:\n${this.lastLines()}`));
      });
    });
  }

  kill(signal: NodeJS.Signals = 'SIGTERM'): void {
    if (!this.done) this.child.kill(signal);
  }

  /** SIGTERM, then SIGKILL after `graceMs`. */
  async stop(graceMs = 2000): Promise<void> {
    if (this.done) return;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }
}

interface OwnerRecord {
  pid: number;
  startTime: string;
  dir: string;
  namespaces: string[];
}

export class Lab {
  readonly id: string;
  /** First three octets of the lab subnet, e.g. `10.77.42`. */
  readonly net: string;
  readonly bridgeNs: string;
  readonly gateway: string;
  readonly dir: string;
  readonly workstations: LabHost[] = [];
  client!: LabHost;
  watch!: LabHost;
  /** The LAN's gateway (a namespace of its own at .1): a witness address that answers ARP and ping-like probes. */
  gw!: LabHost;
  private readonly hosts = new Map<string, LabHost>();
  private readonly processes = new Set<LabProcess>();
  private readonly extraBridges = new Set<string>();
  private readonly log: Logger;
  private readonly keepFiles: boolean;
  private destroyed = false;
  private spawnCount = 0;

  private constructor(id: string, octet: number, dir: string, log: Logger, keepFiles: boolean) {
    this.id = id;
    this.net = `10.77.${octet}`;
    this.bridgeNs = `${NS_PREFIX}${id}-br`;
    this.gateway = `${this.net}.1`;
    this.dir = dir;
    this.log = log;
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
      await lab.build(n);
    } catch (err) {
      await lab.destroy().catch(() => undefined);
      throw err;
    }
    return lab;
  }

  /** The host with this short name (w1, client, watch) or namespace name. */
  host(name: string): LabHost {
    const h = this.hosts.get(name) ?? [...this.hosts.values()].find((x) => x.ns === name);
    if (!h) throw new NavigatorError('NOT_FOUND', `lab ${this.id}: no host "${name}" (have ${[...this.hosts.keys()].join(', ')})`);
    return h;
  }

  /** A service address inside the lab subnet: index 0 → .100. */
  serviceAddress(index = 0, prefix = 24): string {
    return `${this.net}.${100 + index}/${prefix}`;
  }

  /** Runs a command inside a host's namespace and waits for it. Throws naming the command unless reject:false. */
  async exec(host: string, argv: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
    const h = this.host(host);
    return this.execIn(h.ns, argv, opts);
  }

  /** Starts a long-running process in a host's namespace; output to `<dir>/logs/<host>-<name>-<n>.log`. */
  spawn(host: string, argv: readonly string[], opts: SpawnOptions = {}): LabProcess {
    const h = this.host(host);
    if (argv.length === 0) throw new NavigatorError('BAD_REQUEST', 'spawn needs a command');
    const name = opts.name ?? argv[0]!.split('/').pop()!;
    const logPath = join(this.dir, 'logs', `${h.name}-${name}-${++this.spawnCount}.log`);
    const child = execa('ip', ['netns', 'exec', h.ns, ...argv], {
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

  /** Short names of the hosts whose interface carries `ip` right now (any prefix). */
  async holders(ip: string): Promise<string[]> {
    const all = await Promise.all(
      [...this.hosts.values()].map(async (h) => {
        const r = await execa('ip', ['-n', h.ns, '-j', 'addr', 'show', 'dev', h.iface], { reject: false });
        if (r.exitCode !== 0) return undefined;
        const links = JSON.parse(r.stdout || '[]') as Array<{ addr_info?: Array<{ family?: string; local?: string }> }>;
        return links.some((l) => (l.addr_info ?? []).some((a) => a.family === 'inet' && a.local === ip)) ? h.name : undefined;
      }),
    );
    return all.filter((x): x is string => x !== undefined);
  }

  /** The MAC the host's neighbour cache holds for `ip`, or undefined. */
  async neighbourMac(host: string, ip: string): Promise<string | undefined> {
    const h = this.host(host);
    const r = await run('ip', ['-n', h.ns, '-j', 'neigh', 'show', 'to', ip, 'dev', h.iface]);
    const entries = JSON.parse(r.stdout || '[]') as Array<{ lladdr?: string }>;
    return entries[0]?.lladdr?.toLowerCase();
  }

  /** The pids of every process inside a host's namespace. */
  async pids(host: string): Promise<number[]> {
    return nsPids(this.host(host).ns);
  }

  /** Kills every process in a host's namespace (default SIGKILL, as a power cut). */
  async killAll(host: string, signal: NodeJS.Signals = 'SIGKILL'): Promise<number> {
    return killNs(this.host(host).ns, signal);
  }

  /** Cuts the host's cable at the switch (its bridge port down); with kill, also every process in it dies. */
  async linkDown(host: string, opts: { kill?: boolean } = {}): Promise<void> {
    const h = this.host(host);
    await this.ip(['-n', this.bridgeNs, 'link', 'set', h.port, 'down']);
    if (opts.kill) await killNs(h.ns, 'SIGKILL');
  }

  /** Reconnects the cable. */
  async linkUp(host: string): Promise<void> {
    const h = this.host(host);
    await this.ip(['-n', this.bridgeNs, 'link', 'set', h.port, 'up']);
  }

  /** Power loss: the network goes first, then every process in the namespace is killed. */
  async powerOff(host: string): Promise<void> {
    await this.linkDown(host, { kill: true });
  }

  /**
   * Power back on: a rebooted host has only its own address (a service address held before the
   * crash is gone), no neighbour cache, no traffic shaping; then the link comes up.
   */
  async powerOn(host: string): Promise<void> {
    const h = this.host(host);
    await killNs(h.ns, 'SIGKILL');
    await this.ip(['-n', h.ns, 'addr', 'flush', 'dev', h.iface]);
    await this.ip(['-n', h.ns, 'addr', 'add', `${h.ip}/24`, 'dev', h.iface]);
    await this.ip(['-n', h.ns, 'neigh', 'flush', 'dev', h.iface]);
    await this.clearNetem(h.name);
    await this.linkUp(h.name);
    if (h.name !== 'gw') await this.ip(['-n', h.ns, 'route', 'replace', 'default', 'via', this.gateway, 'dev', h.iface]);
  }

  /**
   * Splits the LAN: each group gets its own bridge; hosts in no group (the gateway `gw` too, unless
   * listed) stay on the main bridge. Calling again re-partitions from scratch.
   */
  async partition(groups: readonly (readonly string[])[]): Promise<void> {
    const seen = new Set<string>();
    const target = new Map<string, string>();
    for (const h of this.hosts.values()) target.set(h.name, 'br0');
    groups.forEach((g, i) => {
      for (const name of g) {
        const h = this.host(name);
        if (seen.has(h.name)) throw new NavigatorError('BAD_REQUEST', `partition: host ${h.name} is in two groups`);
        seen.add(h.name);
        target.set(h.name, `brp${i}`);
      }
    });
    for (let i = 0; i < groups.length; i++) {
      const br = `brp${i}`;
      if (!this.extraBridges.has(br)) {
        await this.ip(['-n', this.bridgeNs, 'link', 'add', br, 'type', 'bridge', 'mcast_snooping', '0']);
        await this.ip(['-n', this.bridgeNs, 'link', 'set', br, 'up']);
        this.extraBridges.add(br);
      }
    }
    await Promise.all([...target].map(([name, br]) => this.ip(['-n', this.bridgeNs, 'link', 'set', this.host(name).port, 'master', br])));
    this.log.info({ event: 'lab-partition', groups }, 'lab partitioned');
  }

  /** Every host back on the main bridge. */
  async heal(): Promise<void> {
    await Promise.all([...this.hosts.values()].map((h) => this.ip(['-n', this.bridgeNs, 'link', 'set', h.port, 'master', 'br0'])));
    for (const br of this.extraBridges) await this.ip(['-n', this.bridgeNs, 'link', 'del', br]);
    this.extraBridges.clear();
    this.log.info({ event: 'lab-heal' }, 'lab partition healed');
  }

  /**
   * Loss and delay on a host's link, both directions (on both ends of its veth). Uses tc netem
   * where the kernel has it; kernels without netem (CONFIG_NET_SCH_NETEM off, as on these CI
   * machines) still get loss: a classic-BPF classifier drawing a random number per packet and a
   * mirred redirect of the losers into an interface that is down. Delay has no such fallback.
   */
  async netem(host: string, opts: NetemOptions): Promise<void> {
    const h = this.host(host);
    const args: string[] = [];
    if (opts.delayMs !== undefined) {
      if (!(opts.delayMs >= 0)) throw new NavigatorError('BAD_REQUEST', 'netem delayMs must be ≥ 0');
      args.push('delay', `${opts.delayMs}ms`);
      if (opts.jitterMs) args.push(`${opts.jitterMs}ms`);
    }
    if (opts.lossPct !== undefined) {
      if (!(opts.lossPct >= 0 && opts.lossPct <= 100)) throw new NavigatorError('BAD_REQUEST', 'netem lossPct must be 0..100');
      args.push('loss', `${opts.lossPct}%`);
    }
    if (args.length === 0) throw new NavigatorError('BAD_REQUEST', 'netem needs lossPct and/or delayMs');
    await this.clearNetem(h.name);
    const ends = [[h.ns, h.iface], [this.bridgeNs, h.port]] as const;
    if (await netemSupported()) {
      for (const [ns, dev] of ends) await this.tc(['-n', ns, 'qdisc', 'replace', 'dev', dev, 'root', 'netem', ...args]);
      return;
    }
    if (opts.delayMs) throw new NavigatorError('BAD_REQUEST', 'netem delay needs the kernel\'s netem qdisc (CONFIG_NET_SCH_NETEM), which this kernel lacks; only lossPct works here');
    if (!opts.lossPct) return;
    // Drop when a per-packet random u32 exceeds the threshold: P(drop) = lossPct / 100.
    const threshold = Math.max(0, Math.min(0xffffffff, Math.floor((1 - opts.lossPct / 100) * 2 ** 32) - 1));
    const bytecode = `4,32 0 0 ${0xfffff000 + 56},37 0 1 ${threshold},6 0 0 4294967295,6 0 0 0`;
    for (const [ns, dev] of ends) {
      const sink = `bh-${dev}`.slice(0, 15);
      await this.ip(['-n', ns, 'link', 'add', sink, 'type', 'veth', 'peer', 'name', `${sink.slice(0, 13)}-p`]);
      await this.tc(['-n', ns, 'qdisc', 'add', 'dev', dev, 'clsact']);
      await this.tc(['-n', ns, 'filter', 'add', 'dev', dev, 'egress', 'bpf', 'bytecode', bytecode, 'action', 'mirred', 'egress', 'redirect', 'dev', sink]);
    }
  }

  async clearNetem(host: string): Promise<void> {
    const h = this.host(host);
    for (const [ns, dev] of [[h.ns, h.iface], [this.bridgeNs, h.port]] as const) {
      for (const kind of ['root', 'clsact']) {
        const r = await execa('tc', ['-n', ns, 'qdisc', 'del', 'dev', dev, kind], { reject: false });
        // "nothing to delete" is the normal state without shaping.
        if (r.exitCode !== 0 && !/Cannot delete qdisc with handle of zero|No such file|Invalid handle|Cannot find specified qdisc/i.test(r.stderr)) {
          throw new NavigatorError('COMMAND_FAILED', `tc -n ${ns} qdisc del dev ${dev} ${kind} failed: ${r.stderr.trim()}`);
        }
      }
      await execa('ip', ['-n', ns, 'link', 'del', `bh-${dev}`.slice(0, 15)], { reject: false });
    }
  }

  /** Stops every process and removes every namespace and file this lab made; safe to call twice. */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    const errors: string[] = [];
    await Promise.all([...this.processes].map((p) => p.stop(500).catch((e: unknown) => errors.push(errorMessage(e)))));
    const namespaces = [...[...this.hosts.values()].map((h) => h.ns), this.bridgeNs];
    for (const ns of namespaces) {
      try {
        await removeNs(ns);
      } catch (e) {
        errors.push(errorMessage(e));
      }
    }
    await rm(join(REGISTRY, `${this.id}.json`), { force: true });
    if (!this.keepFiles) await rm(this.dir, { recursive: true, force: true });
    else this.log.info({ event: 'lab-files-kept', dir: this.dir }, 'lab files kept');
    if (errors.length > 0) throw new NavigatorError('INTERNAL', `lab ${this.id} cleanup: ${errors.join('; ')}`);
  }

  private async build(n: number): Promise<void> {
    const names = [...Array.from({ length: n }, (_, i) => `w${i + 1}`), 'client', 'watch', 'gw'];
    const namespaces = [this.bridgeNs, ...names.map((x) => `${NS_PREFIX}${this.id}-${x}`)];
    // Register before creating anything, so a crash at any point leaves something to sweep.
    await mkdir(REGISTRY, { recursive: true });
    const owner: OwnerRecord = { pid: process.pid, startTime: await procStartTime(process.pid), dir: this.dir, namespaces };
    await writeFile(join(REGISTRY, `${this.id}.json.tmp`), JSON.stringify(owner));
    await rename(join(REGISTRY, `${this.id}.json.tmp`), join(REGISTRY, `${this.id}.json`));

    const br = this.bridgeNs;
    await this.ip(['netns', 'add', br]);
    await this.ip(['-n', br, 'link', 'set', 'lo', 'up']);
    // The bridge namespace holds no address: it is only the switch. The gateway is a host of its own.
    await this.ip(['-n', br, 'link', 'add', 'br0', 'type', 'bridge', 'mcast_snooping', '0']);
    await this.ip(['-n', br, 'link', 'set', 'br0', 'up']);

    const hosts = await Promise.all(
      names.map(async (name, i): Promise<LabHost> => {
        const ns = `${NS_PREFIX}${this.id}-${name}`;
        const ip = name === 'client' ? `${this.net}.200` : name === 'watch' ? `${this.net}.201` : name === 'gw' ? this.gateway : `${this.net}.${10 + i + 1}`;
        const port = `p-${name}`;
        await this.ip(['netns', 'add', ns]);
        await this.ip(['-n', br, 'link', 'add', port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
        await this.ip(['-n', br, 'link', 'set', port, 'master', 'br0', 'up']);
        await this.ip(['-n', ns, 'link', 'set', 'lo', 'up']);
        // No IPv6 link-local address: keeps DAD/router-solicit noise off the lab LAN.
        await this.ip(['-n', ns, 'link', 'set', 'eth0', 'addrgenmode', 'none']);
        await this.ip(['-n', ns, 'addr', 'add', `${ip}/24`, 'dev', 'eth0']);
        await this.ip(['-n', ns, 'link', 'set', 'eth0', 'up']);
        if (name !== 'gw') await this.ip(['-n', ns, 'route', 'add', 'default', 'via', this.gateway, 'dev', 'eth0']);
        const link = JSON.parse((await this.ip(['-n', ns, '-j', 'link', 'show', 'eth0'])).stdout) as Array<{ address: string }>;
        return { name, ns, iface: 'eth0', ip, mac: link[0]!.address.toLowerCase(), port };
      }),
    );
    for (const h of hosts) {
      this.hosts.set(h.name, h);
      if (h.name === 'client') this.client = h;
      else if (h.name === 'watch') this.watch = h;
      else if (h.name === 'gw') this.gw = h;
      else this.workstations.push(h);
    }
    this.log.info({ event: 'lab-created', id: this.id, net: `${this.net}.0/24`, hosts: names }, 'lab created');
  }

  private async execIn(ns: string, argv: readonly string[], opts: ExecOptions): Promise<ExecResult> {
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

  private ip(args: string[]): Promise<ExecResult> {
    return run('ip', args);
  }

  private tc(args: string[]): Promise<ExecResult> {
    return run('tc', args);
  }
}

async function run(file: string, args: readonly string[]): Promise<ExecResult> {
  const r = await execa(file, args, { reject: false, timeout: 15_000 });
  if (r.exitCode !== 0) {
    throw new NavigatorError('COMMAND_FAILED', `${file} ${args.join(' ')} failed (${r.timedOut ? 'timed out' : `exit ${r.exitCode}`}): ${r.stderr.trim() || '(no stderr)'}`, {
      command: [file, ...args],
      stderr: r.stderr,
    });
  }
  return { exitCode: 0, stdout: r.stdout, stderr: r.stderr };
}

let netemCache: Promise<boolean> | undefined;

/** Whether the kernel has the netem qdisc (checked once, on lo of a scratch namespace). */
function netemSupported(): Promise<boolean> {
  netemCache ??= (async () => {
    const ns = `navlabprobe-${process.pid}-${randomBytes(2).toString('hex')}`;
    await execa('ip', ['netns', 'add', ns]);
    try {
      const r = await execa('tc', ['-n', ns, 'qdisc', 'add', 'dev', 'lo', 'root', 'netem', 'delay', '1ms'], { reject: false });
      return r.exitCode === 0;
    } finally {
      await execa('ip', ['netns', 'del', ns], { reject: false });
    }
  })();
  return netemCache;
}

async function nsPids(ns: string): Promise<number[]> {
  const r = await execa('ip', ['netns', 'pids', ns], { reject: false });
  if (r.exitCode !== 0) return [];
  return r.stdout.split(/\s+/).filter(Boolean).map(Number).filter((p) => Number.isInteger(p) && p > 0 && p !== process.pid);
}

async function killNs(ns: string, signal: NodeJS.Signals): Promise<number> {
  let killed = 0;
  // Repeat: a dying supervisor may fork once more before it goes.
  for (let round = 0; round < 20; round++) {
    const pids = await nsPids(ns);
    if (pids.length === 0) return killed;
    for (const pid of pids) {
      try {
        process.kill(pid, signal);
        killed++;
      } catch {
        // already gone
      }
    }
    if (signal !== 'SIGKILL') return killed;
    await new Promise((r) => setTimeout(r, 20));
  }
  const left = await nsPids(ns);
  if (left.length > 0) throw new NavigatorError('INTERNAL', `processes ${left.join(',')} in ${ns} survived SIGKILL`);
  return killed;
}

async function removeNs(ns: string): Promise<void> {
  const exists = await execa('ip', ['netns', 'pids', ns], { reject: false });
  if (exists.exitCode !== 0) return;
  await killNs(ns, 'SIGKILL');
  const r = await execa('ip', ['netns', 'del', ns], { reject: false });
  if (r.exitCode !== 0 && !/No such file/i.test(r.stderr)) throw new NavigatorError('COMMAND_FAILED', `ip netns del ${ns} failed: ${r.stderr.trim()}`);
}

async function procStartTime(pid: number): Promise<string> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    // Field 22 (starttime); the command name in field 2 may hold spaces, so count after ')'.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? '';
  } catch {
    return '';
  }
}

async function ownerAlive(rec: OwnerRecord | undefined): Promise<boolean> {
  if (!rec) return false;
  const st = await procStartTime(rec.pid);
  return st !== '' && st === rec.startTime;
}

/**
 * Removes labs whose owning process is gone (a crashed or killed earlier run): kills their
 * processes, deletes their namespaces and temp dirs. Labs of live processes are left alone, so
 * parallel test files never sweep each other. Returns the namespaces removed.
 */
export async function sweepLabs(log: Logger = silentLogger()): Promise<string[]> {
  const removed: string[] = [];
  // Namespaces first, registry second: a lab registers before it creates namespaces, so every
  // namespace listed here already has its owner record on disk when we read the registry.
  const list = await execa('ip', ['-j', 'netns', 'list'], { reject: false });
  const names: string[] = list.exitCode === 0 && list.stdout.trim() ? (JSON.parse(list.stdout) as Array<{ name: string }>).map((x) => x.name) : [];
  const owners = new Map<string, OwnerRecord | undefined>();
  try {
    for (const f of await readdir(REGISTRY)) {
      if (!f.endsWith('.json')) continue;
      const id = f.slice(0, -5);
      try {
        owners.set(id, JSON.parse(await readFile(join(REGISTRY, f), 'utf8')) as OwnerRecord);
      } catch {
        owners.set(id, undefined);
      }
    }
  } catch {
    // no registry yet
  }
  const byId = new Map<string, string[]>();
  for (const name of names) {
    const probe = /^navlabprobe-(\d+)-/.exec(name);
    if (probe && !existsSync(`/proc/${probe[1]}`)) await execa('ip', ['netns', 'del', name], { reject: false });
    const m = /^navlab-([0-9a-z]+)-/.exec(name);
    if (!m) continue;
    const arr = byId.get(m[1]!) ?? [];
    arr.push(name);
    byId.set(m[1]!, arr);
  }
  for (const id of new Set([...byId.keys(), ...owners.keys()])) {
    const rec = owners.get(id);
    if (await ownerAlive(rec)) continue;
    // A lab without a registry entry is being created only if its entry was written first — so it is stale.
    for (const ns of byId.get(id) ?? []) {
      try {
        await removeNs(ns);
        removed.push(ns);
      } catch (e) {
        log.warn({ event: 'lab-sweep-failed', ns, err: errorMessage(e) }, 'could not remove a leftover lab namespace');
      }
    }
    if (rec?.dir && rec.dir.startsWith(join(tmpdir(), 'navlab-'))) await rm(rec.dir, { recursive: true, force: true });
    await rm(join(REGISTRY, `${id}.json`), { force: true });
  }
  if (removed.length > 0) log.info({ event: 'lab-swept', namespaces: removed }, 'removed leftover lab namespaces');
  return removed;
}
