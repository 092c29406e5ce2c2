import { blockLength, type ImageManifest } from '../depot/images/manifest.ts';
import type { MissingBlocks } from '../depot/images/receive.ts';

// The arithmetic of a send: which reads to make (segments), how many WRITE requests each lane
// keeps in flight, and which blocks to send again after the target's commit refused some.

/** A piece of a file read with one read and sent as consecutive WRITE requests. */
export interface Segment {
  path: string;
  offset: number;
  length: number;
}

/**
 * Requests' worth a lane reads at once: half its requests (so reading overlaps with the other
 * half in flight), at most 16 (4 MiB).
 */
export function segmentChunks(perLane: number): number {
  return Math.min(16, Math.max(1, Math.floor(perLane / 2)));
}

/** The reads to make (at most `seg` bytes each, never across blocks), in file and block order. */
export function sendQueue(m: ImageManifest, missing: MissingBlocks[], seg: number): Segment[] {
  const byPath = new Map(m.files.map((f) => [f.path, f]));
  const out: Segment[] = [];
  for (const mb of missing) {
    const f = byPath.get(mb.path);
    if (!f) continue;
    for (const i of mb.blocks) {
      const len = blockLength(m, f, i);
      for (let o = 0; o < len; o += seg) out.push({ path: mb.path, offset: i * m.blockSize + o, length: Math.min(seg, len - o) });
    }
  }
  return out;
}

/** WRITE requests each lane keeps in flight: the transfer's budget shared out, at least one. */
export function laneRequests(total: number, lanes: number): number {
  return Math.max(1, Math.ceil(total / Math.max(1, lanes)));
}

/** The blocks the target found damaged, as blocks to send again (items naming a whole file are left out). */
export function groupBad(bad: { path: string; block?: number }[], m: ImageManifest): MissingBlocks[] {
  const byPath = new Map<string, Set<number>>();
  for (const b of bad) {
    if (b.block === undefined) continue;
    byPath.set(b.path, (byPath.get(b.path) ?? new Set()).add(b.block));
  }
  const sizes = new Map(m.files.map((f) => [f.path, f.size]));
  return [...byPath].map(([path, s]) => ({ path, size: sizes.get(path) ?? 0, blocks: [...s].sort((a, b) => a - b) }));
}
