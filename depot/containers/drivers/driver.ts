import type { ContainerRunner } from '../runner.ts';
import { z } from 'zod';
import type { Logger } from '../../../shared/logger.ts';
import { ContainersSection, type Config } from '../../../shared/config.ts';
import { ContainerState } from '../../../shared/wire.ts';

// One interface over the three ways a depot can run a service container. The container spec a
// caller sends names only what differs per container (files inside the container's folder,
// sizes); which binaries run comes from the depot's own options or from the image itself, so a
// control request cannot make a depot run an arbitrary host program.

export type ContainerStateName = z.infer<typeof ContainerState>;
export const DriverName = z.enum(['vmrun', 'qemu', 'process']);
export type DriverName = z.infer<typeof DriverName>;

/** A path inside the container's folder: relative, no way out of it. */
export const RelPath = z
  .string()
  .min(1)
  .max(512)
  .describe('Path relative to the container folder (the copy-on-write clone of the image)');

export const VmrunSpec = z
  .object({
    driver: z.literal('vmrun'),
    vmx: RelPath.describe('The .vmx file, relative to the container folder'),
    hostType: z.enum(['ws', 'player']).default('ws').describe('vmrun -T: VMware Workstation or Player'),
    credentialsFile: RelPath.optional().describe('YAML {user, password} of the guest account used by runProgramInGuest'),
  })
  .strict();
export type VmrunSpec = z.infer<typeof VmrunSpec>;

const IFNAME = /^[A-Za-z0-9_.-]{1,15}$/;
const CIDR4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}\/([1-9]|[12]\d|3[0-2])$/;

/**
 * The guest's NIC: virtio-net on a tap that QEMU's bridge helper (/usr/lib/qemu/qemu-bridge-helper,
 * allowed bridges in /etc/qemu/bridge.conf) makes and joins to `bridge`, a bridge of the host that
 * carries the host's LAN interface. The guest's LAN address reaches the guest on its kernel
 * command line (navigator.ip=, navigator.gw=; the guest image's boot service sets it).
 */
export const QemuNetwork = z
  .object({
    bridge: z.string().regex(IFNAME, 'bridge: an interface name (1-15 of A-Za-z0-9_.-)').describe("The host's bridge the guest's tap joins (the host's LAN address is on it)"),
    mac: z
      .string()
      .regex(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/, 'mac: six lower-case hex pairs')
      .optional()
      .describe("The guest NIC's MAC; default 52:54:00 followed by three bytes of the container id's hash"),
    guestAddress: z.string().regex(CIDR4, 'guestAddress: IPv4 with prefix, e.g. 10.0.0.21/24').optional().describe("The guest's LAN address with prefix, the same on every host (one copy per LAN only)"),
    guestAddressOffset: z
      .number()
      .int()
      .min(1)
      .max(65_535)
      .optional()
      .describe("The guest's LAN address = the host's address on `bridge` plus this many, same prefix: one distinct guest address per host from one spec"),
    gateway: z.string().regex(/^[0-9.]{7,15}$/, 'gateway: an IPv4 address').optional().describe("The guest's default gateway"),
  })
  .strict()
  .refine((n) => !(n.guestAddress && n.guestAddressOffset), { message: 'network: give guestAddress or guestAddressOffset, not both' });
export type QemuNetwork = z.infer<typeof QemuNetwork>;

export const QemuSpec = z
  .object({
    driver: z.literal('qemu'),
    disk: RelPath.optional().describe('Boot disk image, relative to the container folder; none = a machine with no guest OS'),
    diskFormat: z.enum(['qcow2', 'raw']).default('qcow2'),
    memoryMb: z.number().int().min(16).max(1_048_576).default(512),
    cpus: z.number().int().min(1).max(256).default(1),
    machine: z.string().regex(/^[a-z0-9._-]{1,32}$/).default('pc').describe('QEMU machine type'),
    kvm: z.enum(['auto', 'on', 'off']).default('auto').describe('auto: -enable-kvm when /dev/kvm opens and the CPU shows vmx/svm; otherwise TCG emulation'),
    guestAddress: z.string().max(64).optional().describe('Address of the guest on the LAN, when known statically'),
    guestAgent: z.boolean().default(false).describe('Add a virtio-serial channel for qemu-guest-agent (needed by exec)'),
    kernel: RelPath.optional().describe('Guest kernel booted directly (-kernel), relative to the container folder; none = boot from the disk'),
    initrd: RelPath.optional().describe('Initrd of that kernel (-initrd), relative to the container folder'),
    append: z
      .string()
      .max(1024)
      .regex(/^[A-Za-z0-9 ._=\/:,@+-]*$/, 'kernel command line: letters, digits, space and ._=/:,@+- only')
      .optional()
      .describe('Kernel command line (-append), e.g. "root=/dev/vda rw console=ttyS0 net.ifnames=0"; only with kernel'),
    primaryUnit: z
      .string()
      .regex(/^[A-Za-z0-9@._-]{1,120}\.service$/, 'primaryUnit: a systemd service name, e.g. navigator-zabbix.service')
      .optional()
      .describe("systemd unit in the guest that runs only on the primary: started through the guest agent on promotion, stopped on demotion (needs guestAgent)"),
    bootTimeoutMs: z
      .number()
      .int()
      .min(1000)
      .max(3_600_000)
      .optional()
      .describe('With guestAgent: start() returns only once the guest agent answers (the guest has booted), failing after this long; without it, once QMP answers'),
    tcgCacheMb: z
      .number()
      .int()
      .min(16)
      .max(2048)
      .optional()
      .describe("Without KVM: TCG's translated-code cache (-accel tcg,tb-size=N); QEMU's default is 1024 MiB, which a long-running guest fills and keeps resident"),
    network: QemuNetwork.optional().describe("The guest's NIC on the host's LAN (virtio-net on a bridge); none = no NIC"),
  })
  .strict();
export type QemuSpec = z.infer<typeof QemuSpec>;

export const ProcessSpec = z
  .object({
    driver: z.literal('process'),
    manifest: RelPath.default('container.yaml').describe('The container manifest, relative to the container folder'),
  })
  .strict();
export type ProcessSpec = z.infer<typeof ProcessSpec>;

export const ContainerSpec = z.discriminatedUnion('driver', [VmrunSpec, QemuSpec, ProcessSpec]);
export type ContainerSpec = z.infer<typeof ContainerSpec>;

export interface ExecResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

export interface StopOptions {
  /** How long the graceful stop may take before the driver forces it. 0 = force at once. */
  timeoutMs?: number;
}

export interface StopResult {
  /** The graceful stop did not finish in time and the container was killed / powered off hard. */
  forced: boolean;
}

export interface ContainerDriver {
  readonly kind: DriverName;
  start(): Promise<void>;
  /** Graceful first, forced after `timeoutMs`. Stopping a stopped container is not an error. */
  stop(opts?: StopOptions): Promise<StopResult>;
  status(): Promise<ContainerStateName>;
  exec(cmd: string, args: string[], opts?: { timeoutMs?: number }): Promise<ExecResult>;
  /** Address of the service inside the container, when the driver can tell. */
  guestAddress(): Promise<string | undefined>;
  /** Start a program in the guest without waiting for it (drivers with a guest agent). */
  spawnInGuest?(cmd: string, args: string[]): Promise<void>;
  /** The copy's role changed: start or stop what runs only on the primary (optional). */
  setRole?(role: 'primary' | 'standby' | 'none'): Promise<void>;
}

/** What every driver gets besides its spec: its folder and the depot's choice of binaries. */
export interface DriverContext {
  /** Container id, used in names (QEMU -name, log lines). */
  id: string;
  /** The container folder (clone of the image); every spec path is inside it. */
  dir: string;
  logger: Logger;
  /** vmrun binary (default `vmrun` on PATH). */
  vmrunPath?: string;
  /** QEMU binary (default `qemu-system-x86_64`). */
  qemuPath?: string;
  /** Driver timing (config section `containers`; default: its defaults). */
  timing?: DriverTiming;
  /** The container's own cgroup (process driver): enter returns the cgroup.procs files to join, [] for none. */
  cgroup?: { enter(): Promise<string[]>; leave(): Promise<void> };
  /** How the process driver launches commands (../runner.ts); default: directly, in `cgroup`. */
  runner?: ContainerRunner;
}

/** The drivers' knobs in config section `containers`. */
export type DriverTiming = Pick<Config['containers'], 'processPrimaryStopMs' | 'processTermRepeatMs' | 'qemuStartTimeoutMs' | 'vmrunCommandTimeoutMs'>;

const DEFAULT_TIMING: DriverTiming = ContainersSection.parse({});

export function driverTiming(ctx: DriverContext): DriverTiming {
  return ctx.timing ?? DEFAULT_TIMING;
}
