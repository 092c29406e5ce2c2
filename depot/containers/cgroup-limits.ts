import { access, mkdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ContainerLimits } from '../../shared/config.ts';
import { errorMessage } from '../../shared/errors.ts';
import type { Logger } from '../../shared/logger.ts';

// A service container's own cgroup, so that it takes from a student's PC only what the admin
// allows (config containers.limits / containers.serviceLimits): a CPU weight below the user's
// processes (idle CPU is still the container's), an optional CPU cap, a memory cap and an IO
// weight. Written directly by the depot: cgroup v2 where the unified hierarchy has the
// controllers, else the v1 controllers (cpu, memory, blkio) — both found on lab machines. The
// container's commands enter the cgroup before they exec (wrapCommand), so no child escapes.
// When the cgroup cannot be made (no permission, no controller) the container runs without
// limits and this is logged once, with the reason: limits are a courtesy to the PC's user, not a
// safety check.

export type CgroupLayout = { kind: 'v2'; root: string } | { kind: 'v1'; cpu?: string; memory?: string; blkio?: string };

export interface CgroupFile {
  path: string;
  value: string;
}

/** Pure: the files to write for `limits` in the layout, relative to the container's cgroup folders. */
export function limitFiles(layout: CgroupLayout, dirs: ContainerCgroupDirs, limits: ContainerLimits): CgroupFile[] {
  const out: CgroupFile[] = [];
  if (layout.kind === 'v2') {
    const d = dirs.v2!;
    out.push({ path: join(d, 'cpu.weight'), value: String(limits.cpuWeight) });
    out.push({ path: join(d, 'cpu.max'), value: limits.cpuMax === undefined ? 'max 100000' : `${Math.max(1000, Math.round(limits.cpuMax * 100_000))} 100000` });
    out.push({ path: join(d, 'memory.max'), value: limits.memoryMax === undefined ? 'max' : String(limits.memoryMax) });
    out.push({ path: join(d, 'io.weight'), value: `default ${limits.ioWeight}` });
    return out;
  }
  // v1: cpu.shares 1024 is weight 100; blkio.weight 500 is weight 100 (range 10..1000).
  if (dirs.cpu) {
    out.push({ path: join(dirs.cpu, 'cpu.shares'), value: String(Math.max(2, Math.round((limits.cpuWeight * 1024) / 100))) });
    out.push({ path: join(dirs.cpu, 'cpu.cfs_period_us'), value: '100000' });
    out.push({ path: join(dirs.cpu, 'cpu.cfs_quota_us'), value: limits.cpuMax === undefined ? '-1' : String(Math.max(1000, Math.round(limits.cpuMax * 100_000))) });
  }
  if (dirs.memory) out.push({ path: join(dirs.memory, 'memory.limit_in_bytes'), value: limits.memoryMax === undefined ? '-1' : String(limits.memoryMax) });
  if (dirs.blkio) out.push({ path: join(dirs.blkio, 'blkio.weight'), value: String(Math.min(1000, Math.max(10, limits.ioWeight * 5))) });
  return out;
}

export interface ContainerCgroupDirs {
  v2?: string;
  cpu?: string;
  memory?: string;
  blkio?: string;
}

/**
 * Pure: the shared parent folder's weights. Weights count among siblings, so the `navigator`
 * folder that holds every container's cgroup carries the weight against the user's processes
 * (the last container entered sets it; per-service weights then divide it among containers).
 */
export function parentFiles(layout: CgroupLayout, limits: ContainerLimits): CgroupFile[] {
  if (layout.kind === 'v2') return [{ path: join(layout.root, 'navigator', 'cpu.weight'), value: String(limits.cpuWeight) }, { path: join(layout.root, 'navigator', 'io.weight'), value: `default ${limits.ioWeight}` }];
  return [
    ...(layout.cpu ? [{ path: join(layout.cpu, 'navigator', 'cpu.shares'), value: String(Math.max(2, Math.round((limits.cpuWeight * 1024) / 100))) }] : []),
    ...(layout.blkio ? [{ path: join(layout.blkio, 'navigator', 'blkio.weight'), value: String(Math.min(1000, Math.max(10, limits.ioWeight * 5))) }] : []),
  ];
}

/** Pure: a container's cgroup folders in the layout (one per v1 controller). */
export function cgroupDirs(layout: CgroupLayout, containerId: string): ContainerCgroupDirs {
  const leaf = join('navigator', containerId);
  if (layout.kind === 'v2') return { v2: join(layout.root, leaf) };
  return {
    ...(layout.cpu ? { cpu: join(layout.cpu, leaf) } : {}),
    ...(layout.memory ? { memory: join(layout.memory, leaf) } : {}),
    ...(layout.blkio ? { blkio: join(layout.blkio, leaf) } : {}),
  };
}

/** Pure: the limits of a service's containers: the host's, with the service's fields over them. */
export function limitsFor(service: string, all: ContainerLimits, byService: Record<string, Partial<ContainerLimits>>): ContainerLimits {
  const own = byService[service] ?? {};
  return { ...all, ...Object.fromEntries(Object.entries(own).filter(([, v]) => v !== undefined)) } as ContainerLimits;
}

/**
 * Pure: `file args…` run so that the process first joins the cgroup (each v1 controller's
 * folder, or the v2 folder), then execs the command: its children are born inside.
 */
export function wrapCommand(procsFiles: string[], file: string, args: string[]): { file: string; args: string[] } {
  if (procsFiles.length === 0) return { file, args };
  const script = 'for f in "$@"; do [ "$f" = -- ] && break; echo $$ > "$f" || exit 126; shift; done; shift; exec "$@"';
  return { file: '/bin/sh', args: ['-c', script, 'navigator-cgroup', ...procsFiles, '--', file, ...args] };
}

const exists = (p: string) => access(p).then(
  () => true,
  () => false,
);

/** The cgroup layout of this host, or undefined when neither v2 controllers nor v1 ones are usable. */
export async function detectCgroupLayout(root = '/sys/fs/cgroup'): Promise<CgroupLayout | undefined> {
  const controllers = await readFile(join(root, 'cgroup.controllers'), 'utf8').catch(() => '');
  if (/\bcpu\b/.test(controllers) && /\bmemory\b/.test(controllers)) return { kind: 'v2', root };
  const v1: CgroupLayout = { kind: 'v1' };
  if (await exists(join(root, 'cpu', 'cpu.shares'))) v1.cpu = join(root, 'cpu');
  else if (await exists(join(root, 'cpu,cpuacct', 'cpu.shares'))) v1.cpu = join(root, 'cpu,cpuacct');
  if (await exists(join(root, 'memory', 'memory.limit_in_bytes'))) v1.memory = join(root, 'memory');
  if (await exists(join(root, 'blkio', 'blkio.weight'))) v1.blkio = join(root, 'blkio');
  return v1.cpu || v1.memory ? v1 : undefined;
}

/** Makes and removes containers' cgroups on this host. */
export class CgroupHost {
  private layout: Promise<CgroupLayout | undefined> | undefined;
  private warned = false;

  constructor(private readonly opts: { logger: Logger; root?: string }) {}

  /**
   * Make (or update) the container's cgroup with `limits`; returns the cgroup.procs files its
   * commands must join, or [] when limits cannot be applied here (logged once, with why).
   */
  async enter(containerId: string, limits: ContainerLimits): Promise<string[]> {
    this.layout ??= detectCgroupLayout(this.opts.root);
    const layout = await this.layout;
    if (!layout) return this.unlimited(containerId, 'no usable cgroup controllers on this host');
    const dirs = cgroupDirs(layout, containerId);
    try {
      if (layout.kind === 'v2') {
        // Controllers must be enabled in every parent for the leaf to have them.
        await writeFile(join(layout.root, 'cgroup.subtree_control'), '+cpu +memory +io').catch(() => writeFile(join(layout.root, 'cgroup.subtree_control'), '+cpu +memory'));
        await mkdir(join(layout.root, 'navigator'), { recursive: true });
        await writeFile(join(layout.root, 'navigator', 'cgroup.subtree_control'), '+cpu +memory +io').catch(() => writeFile(join(layout.root, 'navigator', 'cgroup.subtree_control'), '+cpu +memory'));
      }
      for (const d of Object.values(dirs)) await mkdir(d, { recursive: true });
      for (const f of [...parentFiles(layout, limits), ...limitFiles(layout, dirs, limits)]) {
        // io.weight needs the io controller, absent on some kernels: the rest still applies.
        await writeFile(f.path, f.value).catch((err: unknown) => {
          if (!/(io|blkio)\.weight$/.test(f.path)) throw err;
        });
      }
    } catch (err) {
      return this.unlimited(containerId, `cannot write the cgroup (${errorMessage(err)})`);
    }
    return Object.values(dirs).map((d) => join(d, 'cgroup.procs'));
  }

  /** Remove the container's cgroup once its processes are gone (a busy one is left for later). */
  async leave(containerId: string): Promise<void> {
    const layout = await (this.layout ??= detectCgroupLayout(this.opts.root));
    if (!layout) return;
    for (const d of Object.values(cgroupDirs(layout, containerId))) await rmdir(d).catch(() => undefined);
  }

  /** The folders of a container's cgroup (for measurements and tests). */
  async dirs(containerId: string): Promise<ContainerCgroupDirs | undefined> {
    const layout = await (this.layout ??= detectCgroupLayout(this.opts.root));
    return layout ? cgroupDirs(layout, containerId) : undefined;
  }

  private unlimited(containerId: string, why: string): string[] {
    if (!this.warned) {
      this.warned = true;
      this.opts.logger.warn({ event: 'container-limits-unavailable', container: containerId, reason: why }, `service containers run without CPU/memory/IO limits: ${why}`);
    }
    return [];
  }
}
