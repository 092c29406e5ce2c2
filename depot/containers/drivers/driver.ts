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

export const QemuSpec = z
  .object({
    driver: z.literal('qemu'),
    disk: RelPath.optional().describe('Boot disk image, relative to the container folder; none = a machine with no guest OS'),
    diskFormat: z.enum(['qcow2', 'raw']).default('qcow2'),
    memoryMb: z.number().int().min(16).max(1_048_576).default(512),
    cpus: z.number().int().min(1).max(256).default(1),
    machine: z.string().regex(/^[a-z0-9._-]{1,32}$/).default('pc').describe('QEMU machine type'),
    kvm: z.enum(['auto', 'on', 'off']).default('auto').describe('auto: -enable-kvm when /dev/kvm exists'),
    guestAddress: z.string().max(64).optional().describe('Address of the guest on the LAN, when known statically'),
    guestAgent: z.boolean().default(false).describe('Add a virtio-serial channel for qemu-guest-agent (needed by exec)'),
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
