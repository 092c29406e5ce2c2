import { createHash } from 'node:crypto';
import { lstat, open, readdir, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { NavigatorError, errorMessage } from '../../shared/errors.ts';
import type { ImageManifest } from './manifest.ts';
import { fileIn } from './store-layout.ts';

// Checking files against a manifest: SHA-256 of files and of their blocks, and the comparison of
// a files folder with the manifest (extra, missing, non-regular files, sizes, block hashes).

/** A file, or one block of it, that does not match the manifest. */
export interface BadItem {
  path: string;
  /** Block index when one block is wrong; absent when the whole file is. */
  block?: number;
  reason: string;
}

export interface FileHashes {
  size: number;
  sha256: string;
  blocks: string[];
}

/** Read up to `length` bytes at `position` (fewer only at the end of the file). */
export async function readBlock(fh: FileHandle, position: number, length: number): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(length);
  let got = 0;
  while (got < length) {
    const { bytesRead } = await fh.read(buf, got, length - got, position + got);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  return buf.subarray(0, got);
}

/**
 * Hash a file block by block in one pass. The next block is read while the current one is
 * hashed, so disk and CPU overlap. `wholeFile: false` skips the whole-file hash (half the CPU)
 * when only block hashes are needed.
 */
export async function hashFile(path: string, blockSize: number, opts: { wholeFile?: boolean } = {}): Promise<FileHashes> {
  const fh = await open(path, 'r');
  try {
    const whole = opts.wholeFile === false ? undefined : createHash('sha256');
    const blocks: string[] = [];
    let size = 0;
    let next = readBlock(fh, 0, blockSize);
    for (;;) {
      const buf = await next;
      if (buf.length === 0) break;
      size += buf.length;
      if (buf.length === blockSize) next = readBlock(fh, size, blockSize);
      blocks.push(createHash('sha256').update(buf).digest('hex'));
      whole?.update(buf);
      if (buf.length < blockSize) break;
    }
    return { size, sha256: whole ? whole.digest('hex') : '', blocks };
  } finally {
    await fh.close();
  }
}

/** SHA-256 of each block of a file as it is on disk now (blocks past the end are absent). */
export async function hashBlocks(path: string, blockSize: number, indices: number[]): Promise<Map<number, string>> {
  const out = new Map<number, string>();
  if (indices.length === 0) return out;
  const fh = await open(path, 'r');
  try {
    // Read the next block while hashing this one.
    let next = readBlock(fh, indices[0]! * blockSize, blockSize);
    for (let k = 0; k < indices.length; k++) {
      const buf = await next;
      if (k + 1 < indices.length) next = readBlock(fh, indices[k + 1]! * blockSize, blockSize);
      if (buf.length > 0) out.set(indices[k]!, createHash('sha256').update(buf).digest('hex'));
    }
    return out;
  } finally {
    await fh.close();
  }
}

/** Relative paths of all regular files below root; anything else is refused or reported. */
export async function walkRegularFiles(root: string, refuseOthers: boolean): Promise<string[]> {
  const out: string[] = [];
  const others: string[] = [];
  const walk = async (rel: string) => {
    const entries = await readdir(rel ? join(root, rel) : root, { withFileTypes: true });
    for (const e of entries) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) await walk(r);
      else if (e.isFile()) out.push(r);
      else others.push(r);
    }
  };
  try {
    await walk('');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new NavigatorError('NOT_FOUND', `folder ${root} does not exist`);
    throw err;
  }
  if (refuseOthers && others.length > 0) {
    throw new NavigatorError('BAD_REQUEST', `${root} holds entries that are not regular files or folders (symlinks, devices): ${others.slice(0, 5).join(', ')}`);
  }
  if (!refuseOthers) out.push(...others.map((o) => `\0other:${o}`));
  return out;
}

/**
 * Compare a files folder with a manifest: extra or non-regular files, missing files, sizes,
 * and with 'whole' every block hash and the file hashes ('structure' leaves the blocks to the
 * caller).
 */
export async function checkFiles(filesDir: string, m: ImageManifest, depth: 'whole' | 'structure'): Promise<BadItem[]> {
  const bad: BadItem[] = [];
  const expected = new Set(m.files.map((f) => f.path));
  let found: string[] = [];
  try {
    found = await walkRegularFiles(filesDir, false);
  } catch (err) {
    return [{ path: 'files', reason: errorMessage(err) }];
  }
  for (const p of found) {
    if (p.startsWith('\0other:')) bad.push({ path: p.slice(7), reason: 'not a regular file' });
    else if (!expected.has(p)) bad.push({ path: p, reason: 'not in the manifest' });
  }
  for (const f of m.files) {
    const p = fileIn(filesDir, f.path);
    const st = await lstat(p).catch(() => undefined);
    if (!st || !st.isFile()) {
      bad.push({ path: f.path, reason: 'missing' });
      continue;
    }
    if (st.size !== f.size) {
      bad.push({ path: f.path, reason: `size ${st.size}, manifest says ${f.size}` });
      continue;
    }
    if (depth === 'whole') {
      const h = await hashFile(p, m.blockSize);
      h.blocks.forEach((b, i) => {
        if (b !== f.blocks[i]) bad.push({ path: f.path, block: i, reason: 'block hash mismatch' });
      });
      if (h.sha256 !== f.sha256 && !bad.some((b) => b.path === f.path)) bad.push({ path: f.path, reason: 'file hash mismatch' });
    }
  }
  return bad;
}
