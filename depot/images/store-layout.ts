import { randomBytes } from 'node:crypto';
import { readdir, stat } from 'node:fs/promises';
import { join, resolve, sep } from 'node:path';
import { NavigatorError, errorMessage } from '../../shared/errors.ts';
import { unsafePathReason } from './manifest.ts';

// Where things are in the image store folder, and the checks that keep every path inside it:
//
//   <dir>/images/<id>/manifest.json + files/...   committed images, never modified
//   <dir>/staging/<id>.<random>/                  an image being received (manifest.json,
//                                                 receive.json, files/..., seed/<n> for a delta)
//   <dir>/quarantine/<id>.<random>/               images that failed verification at rest
//   <dir>/spare/<id>/<n>                          spare copies (spare-copies.ts)
//
// Names starting with '.' are private to one operation (a commit, an import, a copy being made).

export const ID_RE = /^[0-9a-f]{64}$/;

/** Suffix that makes a folder or file name unique. */
export function rand(): string {
  return randomBytes(6).toString('hex');
}

/** Whether an error (or a command's stderr) says the disk or the quota is full. */
export function isEnospc(err: unknown, text = ''): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT' || /No space left on device|Disk quota exceeded/i.test(text || errorMessage(err));
}

/** A file of an image below its files folder; a path that is unsafe or leaves the folder is refused. */
export function fileIn(filesDir: string, rel: string): string {
  const why = unsafePathReason(rel);
  if (why) throw new NavigatorError('PATH_OUTSIDE_STORE', `file path ${JSON.stringify(rel.slice(0, 200))} ${why}`);
  const p = resolve(filesDir, rel);
  if (!p.startsWith(filesDir + sep)) throw new NavigatorError('PATH_OUTSIDE_STORE', `file path ${JSON.stringify(rel)} escapes ${filesDir}`);
  return p;
}

export class StoreLayout {
  readonly dir: string;

  constructor(dir: string) {
    this.dir = resolve(dir);
  }

  /** Resolve a path below the store folder; anything that escapes it is refused. */
  resolveInside(...parts: string[]): string {
    const p = resolve(this.dir, ...parts);
    if (p !== this.dir && !p.startsWith(this.dir + sep)) {
      throw new NavigatorError('PATH_OUTSIDE_STORE', `path ${JSON.stringify(parts.join('/'))} resolves to ${p}, outside the image store ${this.dir}`);
    }
    return p;
  }

  checkId(id: string): string {
    if (typeof id !== 'string' || !ID_RE.test(id)) {
      const escapes = typeof id === 'string' && (id.includes('/') || id.includes('..') || id.includes('\0'));
      if (escapes) throw new NavigatorError('PATH_OUTSIDE_STORE', `image id ${JSON.stringify(String(id).slice(0, 100))} is a path, refused: ids are 64 hex digits inside ${this.dir}`);
      throw new NavigatorError('BAD_REQUEST', `invalid image id ${JSON.stringify(String(id).slice(0, 100))}: expected 64 lowercase hex digits`);
    }
    return id;
  }

  imageDir(id: string): string {
    return this.resolveInside('images', this.checkId(id));
  }

  /** Folder holding the files of a stored image. */
  imageFilesDir(id: string): string {
    return join(this.imageDir(id), 'files');
  }

  /** The staging folders of image `id` that hold a manifest (complete enough to resume). */
  async stagingDirs(id: string): Promise<string[]> {
    const out: string[] = [];
    for (const e of await readdir(join(this.dir, 'staging')).catch(() => [] as string[])) {
      if (!e.startsWith(`${id}.`)) continue;
      const d = this.resolveInside('staging', e);
      if (await stat(join(d, 'manifest.json')).then(() => true, () => false)) out.push(d);
    }
    return out.sort();
  }

  diskFull(needed: number, what: string, free?: number): NavigatorError {
    return new NavigatorError(
      'DISK_FULL',
      `no space left in the image store ${this.dir} while ${what}: ${needed} bytes needed${free !== undefined ? `, ${free} free` : ''}`,
      { path: this.dir, neededBytes: needed, ...(free !== undefined ? { freeBytes: free } : {}) },
    );
  }
}
