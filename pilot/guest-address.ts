import type { Logger } from '../shared/logger.ts';
import { NavigatorError, errorMessage } from '../shared/errors.ts';
import { parseServiceAddress } from './address.ts';

/**
 * The service-address move INSIDE a QEMU guest (a VM-packed service): the same contract as
 * ServiceAddress (take, reassert, release, held; every operation idempotent), but every command
 * runs in the guest through its guest agent, since the guest's NIC, not the host's, must answer
 * for the address. The add goes through the fence guard (`adder`: it adds only while the lease
 * lies ahead); the gratuitous ARPs leave from the guest (`arping -U` in the guest), so every
 * neighbour learns the guest NIC's MAC at once.
 */

/** Runs a program in the guest and waits for it (the qemu driver's exec). */
export type GuestRun = (cmd: string, args: string[], opts?: { timeoutMs?: number }) => Promise<{ exitCode: number; stdout: string; stderr: string }>;
/** Starts a program in the guest without waiting for it (the qemu driver's spawnInGuest). */
export type GuestSpawn = (cmd: string, args: string[]) => Promise<void>;

export interface GuestServiceAddressOptions {
  /** The service address with prefix, e.g. `10.77.3.100/24`. */
  address: string;
  /** The guest's interface (the image's NIC is eth0: net.ifnames=0). */
  iface: string;
  run: GuestRun;
  spawn: GuestSpawn;
  logger: Logger;
  /** Adds the address through the fence guard; resolves false when it refused. Absent: `ip addr add` in the guest (tools, tests). */
  adder?: () => Promise<boolean>;
  /** Gratuitous ARPs sent by take(), `garpIntervalS` apart (whole seconds: iputils arping). */
  garpCount?: number;
  garpIntervalS?: number;
  /** Time limit of each guest command (guest agent round trips are slow under TCG). */
  commandTimeoutMs?: number;
}

const IFNAME = /^[A-Za-z0-9_.:-]{1,15}$/;
const ALREADY_HELD = /File exists|Address already assigned/i;
const ALREADY_GONE = /Cannot assign requested address|Address not found/i;

export class GuestServiceAddress {
  readonly ip: string;
  readonly prefix: number;
  readonly iface: string;
  private readonly log: Logger;
  private readonly garpCount: number;
  private readonly garpIntervalS: number;
  private readonly timeoutMs: number;

  constructor(private readonly opts: GuestServiceAddressOptions) {
    const { ip, prefix } = parseServiceAddress(opts.address);
    if (!IFNAME.test(opts.iface)) throw new NavigatorError('BAD_REQUEST', `guest interface name "${opts.iface}" is invalid (1-15 chars of A-Za-z0-9_.:-)`);
    this.garpCount = opts.garpCount ?? 3;
    this.garpIntervalS = opts.garpIntervalS ?? 1;
    if (!Number.isInteger(this.garpCount) || this.garpCount < 1 || this.garpCount > 100) throw new NavigatorError('BAD_REQUEST', 'garpCount must be an integer 1..100');
    if (!Number.isInteger(this.garpIntervalS) || this.garpIntervalS < 1 || this.garpIntervalS > 60) throw new NavigatorError('BAD_REQUEST', 'garpIntervalS must be a whole number of seconds 1..60');
    this.ip = ip;
    this.prefix = prefix;
    this.iface = opts.iface;
    this.timeoutMs = opts.commandTimeoutMs ?? 15_000;
    this.log = opts.logger.child({ component: 'guest-address', address: this.cidr, iface: opts.iface });
  }

  get cidr(): string {
    return `${this.ip}/${this.prefix}`;
  }

  /** Adds the address in the guest (already held is fine) and announces it from the guest. */
  async take(): Promise<{ added: boolean; durationMs: number }> {
    const started = performance.now();
    let added = true;
    if (this.opts.adder) {
      if (!(await this.opts.adder())) throw new NavigatorError('CONFLICT', `the fence guard refused to add ${this.cidr} in the guest: no lease (or fencing)`);
    } else {
      const r = await this.ip_(['addr', 'add', this.cidr, 'dev', this.iface]);
      if (r.exitCode !== 0) {
        if (ALREADY_HELD.test(r.stderr)) added = false;
        else throw this.failure(['addr', 'add', this.cidr, 'dev', this.iface], r);
      }
    }
    await this.announce(this.garpCount);
    const durationMs = Math.round(performance.now() - started);
    this.log.info({ event: 'guest-address-taken', added, durationMs }, 'service address held in the guest and announced');
    return { added, durationMs };
  }

  /** Re-adds the address if the guest lost it, and sends one gratuitous ARP from the guest. */
  async reassert(): Promise<{ readded: boolean }> {
    let readded = false;
    if (!(await this.held())) {
      this.log.warn({ event: 'guest-address-missing' }, 'service address vanished from the guest while primary; adding it again');
      if (this.opts.adder) {
        if (!(await this.opts.adder())) throw new NavigatorError('CONFLICT', `the fence guard refused to add ${this.cidr} in the guest: no lease (or fencing)`);
      } else {
        const r = await this.ip_(['addr', 'add', this.cidr, 'dev', this.iface]);
        if (r.exitCode !== 0 && !ALREADY_HELD.test(r.stderr)) throw this.failure(['addr', 'add', this.cidr, 'dev', this.iface], r);
      }
      readded = true;
    }
    await this.announce(1);
    return { readded };
  }

  /** Removes the address from the guest (already gone is fine). */
  async release(): Promise<{ removed: boolean; durationMs: number }> {
    const started = performance.now();
    const r = await this.ip_(['addr', 'del', this.cidr, 'dev', this.iface]);
    let removed = true;
    if (r.exitCode !== 0) {
      if (ALREADY_GONE.test(r.stderr)) removed = false;
      else throw this.failure(['addr', 'del', this.cidr, 'dev', this.iface], r);
    }
    const durationMs = Math.round(performance.now() - started);
    this.log.info({ event: 'guest-address-released', removed, durationMs }, 'service address released in the guest');
    return { removed, durationMs };
  }

  /** True when the guest's interface carries exactly this address with this prefix. */
  async held(): Promise<boolean> {
    const r = await this.ip_(['-j', 'addr', 'show', 'dev', this.iface]);
    if (r.exitCode !== 0) throw this.failure(['-j', 'addr', 'show', 'dev', this.iface], r);
    return addressListed(r.stdout, this.ip, this.prefix, this.iface);
  }

  private async announce(count: number): Promise<void> {
    // Not waited for: the first packet leaves as soon as arping starts in the guest.
    try {
      await this.opts.spawn('/usr/bin/arping', ['-U', '-c', String(count), '-i', String(this.garpIntervalS), '-I', this.iface, this.ip]);
    } catch (err) {
      this.log.warn({ event: 'guest-garp-failed', err: errorMessage(err) }, 'gratuitous ARP from the guest could not start');
    }
  }

  private async ip_(args: string[]): Promise<{ exitCode: number; stdout: string; stderr: string }> {
    try {
      return await this.opts.run('/usr/sbin/ip', args, { timeoutMs: this.timeoutMs });
    } catch (err) {
      throw new NavigatorError('COMMAND_FAILED', `ip ${args.join(' ')} in the guest: ${errorMessage(err)}`, { command: ['ip', ...args] }, { cause: err });
    }
  }

  private failure(args: string[], r: { exitCode: number; stderr: string }): NavigatorError {
    const stderr = r.stderr.trim();
    return new NavigatorError('COMMAND_FAILED', `ip ${args.join(' ')} in the guest failed (exit ${r.exitCode}): ${stderr || '(no stderr)'}`, { command: ['ip', ...args], stderr, exitCode: r.exitCode });
  }
}

/** Does `ip -j addr show` output list ip/prefix? Unreadable output is an error naming the interface. */
export function addressListed(json: string, ip: string, prefix: number, iface: string): boolean {
  let parsed: unknown;
  try {
    parsed = JSON.parse(json || '[]');
  } catch (err) {
    throw new NavigatorError('COMMAND_FAILED', `ip -j addr show dev ${iface} in the guest: unreadable JSON (${errorMessage(err)})`);
  }
  if (!Array.isArray(parsed)) return false;
  return (parsed as Array<{ addr_info?: Array<{ family?: string; local?: string; prefixlen?: number }> }>).some((l) =>
    (l.addr_info ?? []).some((a) => a.family === 'inet' && a.local === ip && a.prefixlen === prefix),
  );
}
