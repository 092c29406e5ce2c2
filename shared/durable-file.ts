import { randomBytes } from 'node:crypto';
import { open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

// One way to replace a small file (metadata, keys, assignments) so that a crash or a power loss
// leaves either the old content or the new, never a torn or empty file: write a temporary file
// next to it, fsync it, rename it over the target, fsync the directory (the rename itself).

/** Make a directory's entries (a create, a rename) durable. */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Replace `path` with `data` atomically and durably (tmp + fsync + rename + directory fsync). */
export async function writeFileDurable(path: string, data: string | Uint8Array, opts: { mode?: number; exclusive?: boolean; owner?: { uid: number; gid: number } } = {}): Promise<void> {
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.${randomBytes(4).toString('hex')}.tmp`);
  const fh = await open(tmp, 'wx', opts.mode ?? 0o600);
  try {
    try {
      await fh.writeFile(data);
      // The mode asked for, not what the umask leaves of it.
      await fh.chmod(opts.mode ?? 0o600);
      if (opts.owner) await fh.chown(opts.owner.uid, opts.owner.gid);
      await fh.sync();
    } finally {
      await fh.close();
    }
    if (opts.exclusive) {
      // Never replace an existing file (a key): link fails if the target appeared meanwhile.
      const { link } = await import('node:fs/promises');
      await link(tmp, path);
      await rm(tmp, { force: true });
    } else {
      await rename(tmp, path);
    }
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  await fsyncDir(dir);
}

/**
 * fsync every regular file and folder below `dir` (then `dir` itself): what a later rename
 * publishes is on disk first, so a power loss cannot leave a published image with missing data.
 */
export async function fsyncTree(dir: string): Promise<{ files: number }> {
  const { readdir } = await import('node:fs/promises');
  let files = 0;
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) files += (await fsyncTree(p)).files;
    else if (e.isFile()) {
      const fh = await open(p, 'r');
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
      files++;
    }
  }
  await fsyncDir(dir);
  return { files };
}
