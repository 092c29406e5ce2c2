import { readFileSync } from 'node:fs';
import { statfs } from 'node:fs/promises';
import { cpus, freemem, hostname, loadavg, networkInterfaces, totalmem, uptime } from 'node:os';
import { dirname } from 'node:path';

// What a depot tells the others about its host, sampled for every heartbeat (the address list at
// most every membership.hostAddressesTtlMs, the CPU count once). Placement
// (pilot/placement.ts) ranks hosts on these figures, so they must be cheap and never throw.

export interface ResourceSample {
  hostName: string;
  /** Non-internal IPv4/IPv6 addresses of the host. */
  hostAddresses: string[];
  /** Host boot time, ms since the epoch. */
  bootTime: number;
  uptimeS: number;
  load: [number, number, number];
  cpus: number;
  memFreeBytes: number;
  memTotalBytes: number;
  /** Free bytes available to unprivileged writes on the file system of the image store. */
  diskFreeBytes: number;
}

let addressCache: { at: number; list: string[] } | undefined;
let cpuCount: number | undefined;

/** How sampleResources reuses the host's address list: reading it is a netlink dump of every interface. */
export interface AddressReuse {
  /** Reuse a list read less than this long ago (membership.hostAddressesTtlMs). */
  ttlMs: number;
  /** The time now, from the depot's clock. */
  now: number;
}

/** Non-internal addresses of this host, read again once the last read is `ttlMs` old. */
function hostAddresses({ ttlMs, now }: AddressReuse): string[] {
  if (addressCache && now - addressCache.at < ttlMs && now >= addressCache.at) return addressCache.list;
  addressCache = { at: now, list: readHostAddresses() };
  return addressCache.list;
}

function readHostAddresses(): string[] {
  const out: string[] = [];
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (!a.internal) out.push(a.address);
  }
  return out.slice(0, 32);
}

/** Free disk of the file system holding `dir`; walks up to the nearest existing parent. */
async function freeDiskBytes(dir: string): Promise<number> {
  let path = dir;
  for (let i = 0; i < 64; i++) {
    try {
      const s = await statfs(path);
      return Number(s.bavail) * Number(s.bsize);
    } catch (err) {
      const parent = dirname(path);
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || parent === path) return 0;
      path = parent;
    }
  }
  return 0;
}

let kernelBootTime: number | undefined;

/**
 * Host boot time (ms). The kernel's `btime` never changes; now − uptime would wobble by a few
 * ms on every sample, and a heartbeat whose content "changed" is gossiped at once.
 */
export function bootTimeMs(): number {
  if (kernelBootTime === undefined) {
    try {
      const m = /^btime (\d+)$/m.exec(readFileSync('/proc/stat', 'utf8'));
      kernelBootTime = m ? Number(m[1]) * 1000 : undefined;
    } catch {
      kernelBootTime = undefined;
    }
    kernelBootTime ??= Math.round((Date.now() - uptime() * 1000) / 60_000) * 60_000;
  }
  return kernelBootTime;
}

export async function sampleResources(storeDir: string, addresses: AddressReuse): Promise<ResourceSample> {
  const up = uptime();
  const [l1, l5, l15] = loadavg();
  return {
    hostName: hostname(),
    hostAddresses: hostAddresses(addresses),
    bootTime: bootTimeMs(),
    uptimeS: Math.round(up),
    load: [round2(l1 ?? 0), round2(l5 ?? 0), round2(l15 ?? 0)],
    // Read once: os.cpus() parses /proc/cpuinfo and every CPU's frequency file.
    cpus: (cpuCount ??= Math.max(1, cpus().length)),
    memFreeBytes: freemem(),
    memTotalBytes: totalmem(),
    diskFreeBytes: await freeDiskBytes(storeDir),
  };
}

function round2(n: number): number {
  return Math.round(n * 100) / 100;
}
