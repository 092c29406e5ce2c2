import type { ResultPromise } from 'execa';
import type { Logger } from '../shared/logger.ts';
import { NavigatorError, errorMessage } from '../shared/errors.ts';

/**
 * The service-address move on the host, for `process` containers: the primary adds the service
 * address to its interface and announces it with gratuitous ARP so every neighbour's ARP cache
 * points at the new MAC at once (no wait for cache expiry); it re-asserts periodically while
 * primary and removes the address on demotion. Every operation is idempotent.
 */

/** Minimal execa-like runner, injectable for tests of error paths. */
export type CommandRunner = (file: string, args: readonly string[], options?: { reject?: boolean; timeout?: number }) => ResultPromise | Promise<CommandResult>;

export interface CommandResult {
  exitCode?: number | undefined;
  stdout: unknown;
  stderr: unknown;
  failed?: boolean;
  timedOut?: boolean;
  isTerminated?: boolean;
}

/** A running arping: a promise of its result, killable when the runner is execa. */
type Announcer = Promise<CommandResult> & { kill?: (signal?: NodeJS.Signals) => unknown };

export interface ServiceAddressOptions {
  /** The service address with prefix, e.g. `10.77.3.100/24`. */
  address: string;
  /** The interface that carries it, e.g. `eth0`. */
  iface: string;
  /** Network namespace to act in (`ip -n NS`, `ip netns exec NS arping`); absent = current namespace. */
  netns?: string | undefined;
  logger: Logger;
  run?: CommandRunner;
  /** Gratuitous ARPs sent by take(); the first goes out immediately, the rest `garpIntervalS` apart. */
  garpCount?: number;
  /** Seconds between gratuitous ARPs (arping from iputils accepts whole seconds only). */
  garpIntervalS?: number;
  /** Time limit for each `ip` command. */
  commandTimeoutMs?: number;
  /**
   * Who adds the address (the pilot's fence guard, which does so only while the lease lies
   * ahead): resolves false when it refused. Absent: `ip addr add` here (tools, tests).
   */
  adder?: () => Promise<boolean>;
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const IFNAME = /^[A-Za-z0-9_.:-]{1,15}$/;
const NSNAME = /^[A-Za-z0-9_.-]{1,64}$/;

/** Parses `a.b.c.d/nn`; throws BAD_REQUEST naming what is wrong. */
export function parseServiceAddress(text: string): { ip: string; prefix: number } {
  const m = /^([^/]+)\/(\d{1,2})$/.exec(text.trim());
  if (!m) throw new NavigatorError('BAD_REQUEST', `service address "${text}" must look like 10.0.0.5/24 (IPv4 with prefix length)`);
  const ip = m[1]!;
  const prefix = Number(m[2]);
  if (!IPV4.test(ip)) throw new NavigatorError('BAD_REQUEST', `service address "${text}": "${ip}" is not an IPv4 address`);
  if (prefix < 1 || prefix > 32) throw new NavigatorError('BAD_REQUEST', `service address "${text}": prefix length must be 1..32`);
  return { ip, prefix };
}

// iproute2 before 5.x printed RTNETLINK texts; newer kernels answer with extack messages.
const ALREADY_HELD = /File exists|Address already assigned/i;
const ALREADY_GONE = /Cannot assign requested address|Address not found/i;
const NO_DEVICE = /Cannot find device/i;

export class ServiceAddress {
  readonly ip: string;
  readonly prefix: number;
  readonly iface: string;
  readonly netns: string | undefined;
  private readonly log: Logger;
  /** opts.run, or execa once a command has run (imported then: most pilots never hold an address). */
  private run: CommandRunner | undefined;
  private readonly garpCount: number;
  private readonly garpIntervalS: number;
  private readonly commandTimeoutMs: number;
  /** Background arping announcing the address; killed on release so we never announce what we dropped. */
  private announcer: Announcer | undefined;
  private announcerDone: Promise<void> = Promise.resolve();
  private readonly adder: (() => Promise<boolean>) | undefined;

  constructor(opts: ServiceAddressOptions) {
    const { ip, prefix } = parseServiceAddress(opts.address);
    if (!IFNAME.test(opts.iface)) throw new NavigatorError('BAD_REQUEST', `interface name "${opts.iface}" is invalid (1-15 chars of A-Za-z0-9_.:-)`);
    if (opts.netns !== undefined && !NSNAME.test(opts.netns)) throw new NavigatorError('BAD_REQUEST', `network namespace name "${opts.netns}" is invalid`);
    const garpCount = opts.garpCount ?? 3;
    const garpIntervalS = opts.garpIntervalS ?? 1;
    if (!Number.isInteger(garpCount) || garpCount < 1 || garpCount > 100) throw new NavigatorError('BAD_REQUEST', 'garpCount must be an integer 1..100');
    if (!Number.isInteger(garpIntervalS) || garpIntervalS < 1 || garpIntervalS > 60) throw new NavigatorError('BAD_REQUEST', 'garpIntervalS must be a whole number of seconds 1..60');
    this.ip = ip;
    this.prefix = prefix;
    this.iface = opts.iface;
    this.netns = opts.netns;
    this.log = opts.logger.child({ component: 'service-address', address: `${ip}/${prefix}`, iface: opts.iface, ...(opts.netns ? { netns: opts.netns } : {}) });
    this.run = opts.run;
    this.garpCount = garpCount;
    this.garpIntervalS = garpIntervalS;
    this.commandTimeoutMs = opts.commandTimeoutMs ?? 5000;
    this.adder = opts.adder;
  }

  /** Add through the fence guard; a refusal is an error (no lease: this copy must not serve). */
  private async addByGuard(adder: () => Promise<boolean>): Promise<void> {
    if (!(await adder())) throw new NavigatorError('CONFLICT', `the fence guard refused to add ${this.cidr} on ${this.iface}: no lease (or fencing)`);
  }

  get cidr(): string {
    return `${this.ip}/${this.prefix}`;
  }

  /**
   * Adds the address (already held is fine) and starts announcing it: the first gratuitous ARP
   * leaves immediately, the others follow in the background so takeover is not delayed.
   */
  async take(): Promise<{ added: boolean; durationMs: number }> {
    const started = performance.now();
    if (this.adder) {
      await this.addByGuard(this.adder);
      this.announce(this.garpCount, await this.runner());
      const durationMs = Math.round(performance.now() - started);
      this.log.info({ event: 'address-taken', added: true, durationMs, by: 'fence-guard' }, 'service address held and announced');
      return { added: true, durationMs };
    }
    const res = await this.runIp(['addr', 'add', this.cidr, 'dev', this.iface]);
    let added = true;
    if (res.exitCode !== 0) {
      if (ALREADY_HELD.test(text(res.stderr))) added = false;
      else throw this.failure(this.ipArgv(['addr', 'add', this.cidr, 'dev', this.iface]), res);
    }
    this.announce(this.garpCount, await this.runner());
    const durationMs = Math.round(performance.now() - started);
    this.log.info({ event: 'address-taken', added, durationMs }, 'service address held and announced');
    return { added, durationMs };
  }

  /** Re-checks the address is present (re-adds it if something removed it) and sends one gratuitous ARP. */
  async reassert(): Promise<{ readded: boolean }> {
    let readded = false;
    if (!(await this.held())) {
      this.log.warn({ event: 'address-missing' }, 'service address vanished while primary; adding it again');
      if (this.adder) {
        await this.addByGuard(this.adder);
        const run = await this.runner();
        if (!this.announcer) this.announce(1, run);
        return { readded: true };
      }
      const res = await this.runIp(['addr', 'add', this.cidr, 'dev', this.iface]);
      if (res.exitCode !== 0 && !ALREADY_HELD.test(text(res.stderr))) throw this.failure(this.ipArgv(['addr', 'add', this.cidr, 'dev', this.iface]), res);
      readded = true;
    }
    // Only one announcer at a time: a reassert during take's announcement adds nothing.
    const run = await this.runner();
    if (!this.announcer) this.announce(1, run);
    return { readded };
  }

  /** Stops announcing and removes the address (already gone is fine). */
  async release(): Promise<{ removed: boolean; durationMs: number }> {
    const started = performance.now();
    await this.stopAnnouncing();
    const res = await this.runIp(['addr', 'del', this.cidr, 'dev', this.iface]);
    let removed = true;
    if (res.exitCode !== 0) {
      if (ALREADY_GONE.test(text(res.stderr))) removed = false;
      else if (NO_DEVICE.test(text(res.stderr))) {
        // No interface, no address: demotion must not fail because the container's link is gone.
        this.log.warn({ event: 'address-release-no-device', stderr: text(res.stderr).trim() }, 'interface is gone; nothing to release');
        removed = false;
      } else throw this.failure(this.ipArgv(['addr', 'del', this.cidr, 'dev', this.iface]), res);
    }
    const durationMs = Math.round(performance.now() - started);
    this.log.info({ event: 'address-released', removed, durationMs }, 'service address released');
    return { removed, durationMs };
  }

  /** True when the interface carries exactly this address with this prefix. */
  async held(): Promise<boolean> {
    const res = await this.runIp(['-j', 'addr', 'show', 'dev', this.iface]);
    if (res.exitCode !== 0) throw this.failure(this.ipArgv(['-j', 'addr', 'show', 'dev', this.iface]), res);
    let parsed: unknown;
    try {
      parsed = JSON.parse(text(res.stdout) || '[]');
    } catch (err) {
      throw new NavigatorError('COMMAND_FAILED', `ip -j addr show dev ${this.iface}: unreadable JSON (${errorMessage(err)})`);
    }
    if (!Array.isArray(parsed)) return false;
    for (const link of parsed as Array<{ addr_info?: Array<{ family?: string; local?: string; prefixlen?: number }> }>) {
      for (const a of link.addr_info ?? []) {
        if (a.family === 'inet' && a.local === this.ip && a.prefixlen === this.prefix) return true;
      }
    }
    return false;
  }

  /** Resolves when the current background announcement has finished (tests, clean shutdown). */
  announced(): Promise<void> {
    return this.announcerDone;
  }

  /** Kills a running announcement without touching the address. */
  async stopAnnouncing(): Promise<void> {
    if (this.announcer) {
      this.announcer.kill?.('SIGKILL');
      await this.announcerDone;
    }
  }

  private async runner(): Promise<CommandRunner> {
    this.run ??= (await import('execa')).execa as unknown as CommandRunner;
    return this.run;
  }

  private announce(count: number, run: CommandRunner): void {
    // One announcer at a time: a new announcement replaces one still running, so release() can
    // always stop the only one there is.
    this.announcer?.kill?.('SIGKILL');
    const argv = [
      ...(this.netns ? ['ip', 'netns', 'exec', this.netns] : []),
      'arping', '-U', '-c', String(count), '-i', String(this.garpIntervalS), '-I', this.iface, this.ip,
    ];
    const [file, ...args] = argv as [string, ...string[]];
    // Not awaited: the first packet leaves as soon as arping starts; takeover continues meanwhile.
    const child = run(file, args, { reject: false, timeout: (count * this.garpIntervalS + 5) * 1000 }) as Announcer;
    this.announcer = child;
    this.announcerDone = Promise.resolve(child).then(
      (res: CommandResult) => {
        if (this.announcer === child) this.announcer = undefined;
        // A kill by release() is expected; any other failure is worth a warning (the address is still held).
        if (res.exitCode !== 0 && (!res.isTerminated || res.timedOut)) {
          this.log.warn({ event: 'garp-failed', command: argv.join(' '), exitCode: res.exitCode, stderr: text(res.stderr).trim() }, 'gratuitous ARP failed');
        }
      },
      (err: unknown) => {
        if (this.announcer === child) this.announcer = undefined;
        this.log.warn({ event: 'garp-failed', command: argv.join(' '), err: errorMessage(err) }, 'gratuitous ARP could not run');
      },
    );
  }

  private ipArgv(args: string[]): string[] {
    return this.netns ? ['-n', this.netns, ...args] : args;
  }

  private async runIp(args: string[]): Promise<CommandResult> {
    try {
      const run = await this.runner();
      return await run('ip', this.ipArgv(args), { reject: false, timeout: this.commandTimeoutMs });
    } catch (err) {
      throw new NavigatorError('COMMAND_FAILED', `ip ${this.ipArgv(args).join(' ')}: ${errorMessage(err)}`, { command: ['ip', ...this.ipArgv(args)] }, { cause: err });
    }
  }

  private failure(args: string[], res: CommandResult): NavigatorError {
    const stderr = text(res.stderr).trim();
    const why = res.timedOut ? 'timed out' : `exit ${res.exitCode ?? '?'}`;
    return new NavigatorError('COMMAND_FAILED', `ip ${args.join(' ')} failed (${why}): ${stderr || '(no stderr)'}`, { command: ['ip', ...args], stderr, exitCode: res.exitCode });
  }
}

function text(v: unknown): string {
  if (typeof v === 'string') return v;
  if (v === undefined || v === null) return '';
  if (Array.isArray(v)) return v.join('\n');
  return String(v);
}
