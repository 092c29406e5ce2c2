import { access, readFile } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';

// CPU time used by a cgroup and its descendants, read from the kernel's accounting: cgroup v2
// `cpu.stat` (usage_usec) or a v1 cpuacct folder (`cpuacct.usage`, ns). The busy meter takes the
// difference of two readings. Where the host's CPU accounting hierarchy is, and which folder a
// process is in, are read here as well; everything returns undefined rather than throwing.

export interface CpuHierarchy {
  kind: 'v2' | 'v1';
  /** Mount point of the hierarchy (v2: the unified root; v1: the cpuacct mount). */
  root: string;
}

const exists = (p: string) =>
  access(p).then(
    () => true,
    () => false,
  );

/** The hierarchy that accounts CPU time on this host: v2 when its root has cpu.stat, else v1 cpuacct (alone or with cpu). */
export async function detectCpuHierarchy(base = '/sys/fs/cgroup'): Promise<CpuHierarchy | undefined> {
  if ((await exists(join(base, 'cgroup.controllers'))) && (await exists(join(base, 'cpu.stat')))) return { kind: 'v2', root: base };
  for (const d of ['cpuacct', 'cpu,cpuacct', 'cpuacct,cpu']) if (await exists(join(base, d, 'cpuacct.usage'))) return { kind: 'v1', root: join(base, d) };
  // A hybrid host: v1 controllers with the unified tree beside them.
  if (await exists(join(base, 'unified', 'cpu.stat'))) return { kind: 'v2', root: join(base, 'unified') };
  return undefined;
}

/** Pure: usage_usec of a v2 cpu.stat text, in ns. */
export function parseCpuStatNs(text: string): number | undefined {
  const m = /^usage_usec (\d+)$/m.exec(text);
  return m ? Number(m[1]) * 1000 : undefined;
}

/** CPU time (ns) used so far by the cgroup in folder `dir` (either kind), or undefined when it cannot be read. */
export async function cgroupCpuNs(dir: string): Promise<number | undefined> {
  const v2 = await readFile(join(dir, 'cpu.stat'), 'utf8').catch(() => undefined);
  const fromV2 = v2 !== undefined ? parseCpuStatNs(v2) : undefined;
  if (fromV2 !== undefined) return fromV2;
  const v1 = await readFile(join(dir, 'cpuacct.usage'), 'utf8').catch(() => undefined);
  const n = v1 !== undefined ? Number(v1.trim()) : NaN;
  return Number.isFinite(n) && n >= 0 ? n : undefined;
}

/** Pure: a configured cgroup path as a folder: absolute ones as they are, others under the hierarchy's root. */
export function cgroupFolder(h: CpuHierarchy, path: string): string {
  if (path === '' || path === '/') return h.root;
  return isAbsolute(path) ? path : join(h.root, path);
}

/** Pure: the folder of this process's cgroup in the hierarchy, from the text of /proc/self/cgroup. */
export function ownCgroupFolder(h: CpuHierarchy, procCgroup: string): string | undefined {
  for (const line of procCgroup.split('\n')) {
    const [id, controllers, path] = line.split(':', 3) as [string?, string?, string?];
    if (path === undefined) continue;
    if (h.kind === 'v2' ? id === '0' && controllers === '' : (controllers ?? '').split(',').includes('cpuacct')) return join(h.root, path);
  }
  return undefined;
}

/** Pure: `inner` is `outer` or a folder below it. */
export function within(inner: string, outer: string): boolean {
  const o = outer.replace(/\/+$/, '');
  return inner === o || inner.startsWith(`${o}/`);
}
