import { open, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { randomBytes } from 'node:crypto';

/**
 * Write a file atomically and durably: a temp file beside it, fsync, rename over the old one,
 * fsync of the folder (so the rename itself survives a power cut). Readers see the old file or
 * the new one, never a part. `mode` is set exactly (not what the umask leaves of it).
 */
export async function writeFileAtomic(path: string, data: string | Buffer, mode: number, owner?: { uid: number; gid: number }): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(3).toString('hex')}`;
  const fh = await open(tmp, 'wx', mode);
  try {
    await fh.writeFile(data);
    await fh.chmod(mode);
    if (owner) await fh.chown(owner.uid, owner.gid);
    await fh.sync();
  } catch (err) {
    await fh.close().catch(() => undefined);
    await rm(tmp, { force: true });
    throw err;
  }
  await fh.close();
  await rename(tmp, path);
  const dir = await open(dirname(path), 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}
