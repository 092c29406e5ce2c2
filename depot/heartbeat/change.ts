import type { HeartbeatMessage } from '../../shared/wire.ts';

// Whether a freshly sampled heartbeat is worth gossiping before the refresh interval is up.
// What other depots act on (addresses, images, staging progress, containers and their roles,
// sync state) goes out as soon as it changes; host figures that drift all the time (load, free
// memory and disk) only when they moved enough to matter for placement, and at most every
// membership.figuresMinIntervalMs (a busy host's load changes every second, and a heartbeat for
// each change would make every busy cluster busier still). Uptime, the send time and the
// sequence number are never a reason: they change every time. Of the busy signal, whether the
// host is busy (and since when) goes out at once; its CPU figure rides along with the next beat.

/** Smallest change of the 1-minute load average worth gossiping: this, or a quarter of it, whichever is larger. */
const LOAD_STEP = 0.5;
/** Smallest change of free memory, as a fraction of total memory, gossiped at once. */
const MEM_STEP = 0.05;
/** Smallest change of free disk in the image store, as a fraction of what was free, gossiped at once. */
const DISK_STEP = 0.02;

export type HeartbeatChange = 'first' | 'incarnation' | 'content' | 'load' | 'memory' | 'disk';

/** Changes other depots act on: gossiped at once. The others are host figures (rate-limited). */
export function isUrgent(c: HeartbeatChange): boolean {
  return c === 'first' || c === 'incarnation' || c === 'content';
}

/** What changed enough to gossip, or undefined. */
export function heartbeatChange(prev: HeartbeatMessage | undefined, next: HeartbeatMessage): HeartbeatChange | undefined {
  if (!prev) return 'first';
  if (prev.incarnation !== next.incarnation) return 'incarnation';
  if (!sameJson(stable(prev), stable(next))) return 'content';
  if (Math.abs(next.load[0] - prev.load[0]) >= Math.max(LOAD_STEP, prev.load[0] / 4)) return 'load';
  if (Math.abs(next.memFreeBytes - prev.memFreeBytes) >= MEM_STEP * Math.max(1, next.memTotalBytes)) return 'memory';
  if (Math.abs(next.diskFreeBytes - prev.diskFreeBytes) >= DISK_STEP * Math.max(1, prev.diskFreeBytes)) return 'disk';
  return undefined;
}

function stable(hb: HeartbeatMessage): unknown[] {
  return [hb.name, hb.addresses, hb.hostAddresses, hb.httpPort, hb.sshPort, hb.sshHostKey, hb.sshKey, hb.bootTime, hb.cpus, hb.memTotalBytes, hb.images, hb.staging, hb.containers, hb.sessions, hb.busy?.busy, hb.busy?.sessions, hb.busy?.since, hb.recoveryKits, hb.version];
}

function sameJson(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}
