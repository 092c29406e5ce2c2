import { randomBytes } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { chmod, copyFile, lstat, mkdir, open, readdir, readFile, rename, rm, stat, statfs, truncate, writeFile } from 'node:fs/promises';
import { dirname, join, resolve, sep } from 'node:path';
import { execa } from 'execa';
import type { Logger } from '../shared/logger.ts';
import { silentLogger } from '../shared/logger.ts';
import { NavigatorError, errorMessage, isNavigatorError } from '../shared/errors.ts';
import {
  DEFAULT_BLOCK_SIZE,
  blockLength,
  canonicalJson,
  hashBlocks,
  hashFile,
  manifestId,
  parseManifest,
  totalBytes,
  unsafePathReason,
  type ImageManifest,
  type ManifestFile,
} from './image-manifest.ts';

// The image store: immutable, content-addressed image folders.
//
//   <dir>/images/<id>/manifest.json + files/...   committed images, never modified
//   <dir>/staging/<id>.<random>/                  an image being received (manifest.json,
//                                                 receive.json, files/...)
//   <dir>/quarantine/<id>.<random>/               images that failed verification at rest
//
// An image becomes visible only by an atomic rename of a verified staging folder, so readers
// never see a half-written image. Containers never run from the stored copy: clone() makes a
// copy-on-write copy (`cp --reflink=auto -a`).

export interface ImageStoreOptions {
  /** Store folder (config.store.dir). */
  dir: string;
  /** Versions kept per image name (config.store.keepVersions). */
  keepVersions: number;
  logger?: Logger;
  /** Block size for images imported here (default 4 MiB; tests use smaller ones). */
  blockSize?: number;
  /** Ids that must never be pruned (images in use by containers, transfers). */
  pinned?: () => Iterable<string>;
}

export interface ImageInfo {
  id: string;
  name: string;
  version: string;
  created: string;
  bytes: number;
  files: number;
}

export interface BadItem {
  path: string;
  /** Block index when one block is wrong; absent when the whole file is. */
  block?: number;
  reason: string;
}

export type VerifyResult = { ok: true; id: string } | { ok: false; id: string; bad: BadItem[]; quarantined: boolean };

export type CommitResult = { ok: true; id: string; verifiedBytes: number } | { ok: false; id: string; bad: BadItem[] };

/** Blocks the sender must write, per file path. */
export interface MissingBlocks {
  path: string;
  size: number;
  blocks: number[];
}

export type PrepareResult =
  | { state: 'present'; id: string }
  | {
      state: 'staging';
      id: string;
      /** Absolute folder on this host where the sender writes file data (files/<path>). */
      filesDir: string;
      /** Image the staging folder was seeded from (delta), if any. */
      baseId?: string;
      resumed: boolean;
      missing: MissingBlocks[];
      missingBytes: number;
      totalBytes: number;
    };

export interface ImageStatus {
  id: string;
  state: 'ready' | 'staging' | 'absent';
  name?: string;
  version?: string;
  bytes?: number;
  files?: number;
}

/** What a staging folder remembers: which blocks were copied from a verified base image. */
interface ReceiveState {
  id: string;
  baseId?: string;
  trusted: Record<string, number[]>;
}

const ID_RE = /^[0-9a-f]{64}$/;

function isEnospc(err: unknown, text = ''): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT' || /No space left on device|Disk quota exceeded/i.test(text || errorMessage(err));
}

function rand(): string {
  return randomBytes(6).toString('hex');
}

export class ImageStore {
  readonly dir: string;
  readonly keepVersions: number;
  readonly blockSize: number;
  private readonly log: Logger;
  private readonly pinned: () => Iterable<string>;
  private readonly manifests = new Map<string, ImageManifest>();
  /** Manifests of staging folders by folder name (receiving() runs every heartbeat). */
  private readonly stagingManifests = new Map<string, ImageManifest>();
  /** Per-id chains so prepare/commit/receive of the same image in this process run one at a time. */
  private readonly locks = new Map<string, Promise<unknown>>();

  constructor(opts: ImageStoreOptions) {
    this.dir = resolve(opts.dir);
    this.keepVersions = opts.keepVersions;
    this.blockSize = opts.blockSize ?? DEFAULT_BLOCK_SIZE;
    this.log = (opts.logger ?? silentLogger()).child({ component: 'image-store' });
    this.pinned = opts.pinned ?? (() => []);
  }

  async start(): Promise<void> {
    for (const d of ['images', 'staging', 'quarantine']) await mkdir(join(this.dir, d), { recursive: true });
    // Folders being built or removed when the process died are garbage.
    for (const e of await readdir(join(this.dir, 'staging'))) {
      if (e.startsWith('.')) await rm(join(this.dir, 'staging', e), { recursive: true, force: true });
    }
  }

  async stop(): Promise<void> {
    await Promise.allSettled([...this.locks.values()]);
  }

  // ---- paths ---------------------------------------------------------------------------------

  /** Resolve a path below the store folder; anything that escapes it is refused. */
  resolveInside(...parts: string[]): string {
    const p = resolve(this.dir, ...parts);
    if (p !== this.dir && !p.startsWith(this.dir + sep)) {
      throw new NavigatorError('PATH_OUTSIDE_STORE', `path ${JSON.stringify(parts.join('/'))} resolves to ${p}, outside the image store ${this.dir}`);
    }
    return p;
  }

  private checkId(id: string): string {
    if (typeof id !== 'string' || !ID_RE.test(id)) {
      const escapes = typeof id === 'string' && (id.includes('/') || id.includes('..') || id.includes('\0'));
      if (escapes) throw new NavigatorError('PATH_OUTSIDE_STORE', `image id ${JSON.stringify(String(id).slice(0, 100))} is a path, refused: ids are 64 hex digits inside ${this.dir}`);
      throw new NavigatorError('BAD_REQUEST', `invalid image id ${JSON.stringify(String(id).slice(0, 100))}: expected 64 lowercase hex digits`);
    }
    return id;
  }

  private imageDir(id: string): string {
    return this.resolveInside('images', this.checkId(id));
  }

  private fileIn(filesDir: string, rel: string): string {
    const why = unsafePathReason(rel);
    if (why) throw new NavigatorError('PATH_OUTSIDE_STORE', `file path ${JSON.stringify(rel.slice(0, 200))} ${why}`);
    const p = resolve(filesDir, rel);
    if (!p.startsWith(filesDir + sep)) throw new NavigatorError('PATH_OUTSIDE_STORE', `file path ${JSON.stringify(rel)} escapes ${filesDir}`);
    return p;
  }

  /** Folder holding the files of a stored image (read-only use: shipping). */
  imageFilesDir(id: string): string {
    return join(this.imageDir(id), 'files');
  }

  private async withLock<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(id) ?? Promise.resolve();
    const run = prev.then(fn, fn);
    const tail = run.catch(() => undefined);
    this.locks.set(id, tail);
    try {
      return await run;
    } finally {
      if (this.locks.get(id) === tail) this.locks.delete(id);
    }
  }

  // ---- queries -------------------------------------------------------------------------------

  async has(id: string): Promise<boolean> {
    const dir = this.imageDir(id);
    try {
      await stat(join(dir, 'manifest.json'));
      return true;
    } catch {
      return false;
    }
  }

  async getManifest(id: string): Promise<ImageManifest> {
    const cached = this.manifests.get(id);
    if (cached) return cached;
    const dir = this.imageDir(id);
    let raw: string;
    try {
      raw = await readFile(join(dir, 'manifest.json'), 'utf8');
    } catch {
      throw new NavigatorError('NOT_FOUND', `image ${id} is not in the store ${this.dir}`);
    }
    const m = parseManifest(JSON.parse(raw), `manifest of ${id}`);
    if (manifestId(m) !== id) throw new NavigatorError('IMAGE_CORRUPT', `manifest of image ${id} does not hash to its id`);
    this.manifests.set(id, m);
    return m;
  }

  async list(): Promise<ImageInfo[]> {
    const out: ImageInfo[] = [];
    for (const id of await readdir(join(this.dir, 'images')).catch(() => [] as string[])) {
      if (!ID_RE.test(id)) continue;
      try {
        const m = await this.getManifest(id);
        out.push({ id, name: m.name, version: m.version, created: m.created, bytes: totalBytes(m), files: m.files.length });
      } catch (err) {
        this.log.warn({ event: 'image-unreadable', id, err: errorMessage(err) }, 'stored image has an unreadable manifest');
      }
    }
    return out.sort((a, b) => (a.created < b.created ? 1 : a.created > b.created ? -1 : a.id < b.id ? -1 : 1));
  }

  async status(id: string): Promise<ImageStatus> {
    this.checkId(id);
    if (await this.has(id)) {
      const m = await this.getManifest(id);
      return { id, state: 'ready', name: m.name, version: m.version, bytes: totalBytes(m), files: m.files.length };
    }
    if ((await this.stagingDirs(id)).length > 0) return { id, state: 'staging' };
    return { id, state: 'absent' };
  }

  /** Bytes free for new data in the store's file system. */
  async freeBytes(): Promise<number> {
    const s = await statfs(this.dir);
    return s.bavail * s.bsize;
  }

  // ---- import, verify, clone, prune ----------------------------------------------------------

  /** Copy a folder into the store as a new image; returns its id. */
  async import(srcDir: string, name: string, opts: { version?: string; created?: Date } = {}): Promise<string> {
    const src = resolve(srcDir);
    const files = await this.walkRegularFiles(src, true);
    // Default `created` is the newest file time of the source, so importing an unchanged folder
    // again (bootstrap after pre-staging) yields the same content id instead of a new version.
    const mtimes = await Promise.all(files.map(async (f) => (await stat(join(src, f))).mtimeMs));
    const created = (opts.created ?? new Date(Math.floor(Math.max(0, ...mtimes)))).toISOString();
    const work = this.resolveInside('staging', `.import-${rand()}`);
    const filesDir = join(work, 'files');
    const needed = (await Promise.all(files.map(async (f) => (await stat(join(src, f))).size))).reduce((a, b) => a + b, 0);
    const started = Date.now();
    try {
      await mkdir(work, { recursive: true });
      const r = await execa('cp', ['--reflink=auto', '-a', '--', src, filesDir], { reject: false });
      if (r.exitCode !== 0) {
        if (isEnospc(undefined, String(r.stderr))) throw this.diskFull(needed, `importing ${src}`);
        throw new NavigatorError('COMMAND_FAILED', `cp of ${src} into the image store failed: ${String(r.stderr).trim()}`);
      }
      // Hash the copy, not the source: what is stored is exactly what the manifest describes.
      const entries: ManifestFile[] = [];
      for (const rel of files.sort()) {
        const p = join(filesDir, rel);
        const st = await lstat(p);
        const h = await hashFile(p, this.blockSize);
        entries.push({ path: rel, size: h.size, mode: st.mode & 0o7777, sha256: h.sha256, blocks: h.blocks });
      }
      const manifest = parseManifest({ format: 1, name, version: opts.version ?? created, created, blockSize: this.blockSize, files: entries }, `import of ${src}`);
      const id = manifestId(manifest);
      await writeFile(join(work, 'manifest.json'), canonicalJson(manifest));
      await this.install(work, id);
      this.log.info({ event: 'image-imported', id, name, bytes: needed, durationMs: Date.now() - started }, 'image imported');
      await this.prune();
      return id;
    } catch (err) {
      await rm(work, { recursive: true, force: true });
      if (isEnospc(err)) throw this.diskFull(needed, `importing ${src}`);
      throw err;
    }
  }

  /**
   * Check every file and block of a stored image against its manifest. A damaged image is moved
   * to quarantine (so has() is false and it is never cloned or used as a delta base) unless
   * `quarantine: false`.
   */
  async verify(id: string, opts: { quarantine?: boolean } = {}): Promise<VerifyResult> {
    const dir = this.imageDir(id);
    let manifest: ImageManifest;
    try {
      manifest = await this.getManifest(id);
    } catch (err) {
      if (isNavigatorError(err, 'NOT_FOUND')) throw err;
      return this.afterBadVerify(id, dir, [{ path: 'manifest.json', reason: errorMessage(err) }], opts.quarantine !== false);
    }
    const bad = await this.checkFiles(join(dir, 'files'), manifest, {}, true);
    if (bad.length === 0) {
      this.log.info({ event: 'image-verified', id }, 'image verified');
      return { ok: true, id };
    }
    return this.afterBadVerify(id, dir, bad, opts.quarantine !== false);
  }

  private async afterBadVerify(id: string, dir: string, bad: BadItem[], quarantine: boolean): Promise<VerifyResult> {
    this.log.error({ event: 'image-corrupt', id, bad: bad.slice(0, 10) }, 'stored image failed verification');
    if (!quarantine) return { ok: false, id, bad, quarantined: false };
    this.manifests.delete(id);
    await rename(dir, this.resolveInside('quarantine', `${id}.${rand()}`));
    return { ok: false, id, bad, quarantined: true };
  }

  /** Copy-on-write clone of an image's files into `dest` (which must not exist yet). */
  async clone(id: string, dest: string): Promise<void> {
    const dir = this.imageDir(id);
    if (!(await this.has(id))) throw new NavigatorError('NOT_FOUND', `image ${id} is not in the store ${this.dir}`);
    const target = resolve(dest);
    if (target === this.dir || target.startsWith(this.dir + sep + 'images')) {
      throw new NavigatorError('BAD_REQUEST', `clone destination ${target} is inside the stored images`);
    }
    if (await lstat(target).then(() => true, () => false)) throw new NavigatorError('CONFLICT', `clone destination ${target} already exists`);
    await mkdir(dirname(target), { recursive: true });
    const started = Date.now();
    const r = await execa('cp', ['--reflink=auto', '-a', '--', join(dir, 'files'), target], { reject: false });
    if (r.exitCode !== 0) {
      await rm(target, { recursive: true, force: true });
      if (isEnospc(undefined, String(r.stderr))) {
        const m = await this.getManifest(id);
        throw new NavigatorError('DISK_FULL', `no space left in ${dirname(target)} to clone image ${id} (${totalBytes(m)} bytes needed)`, {
          path: dirname(target),
          neededBytes: totalBytes(m),
        });
      }
      throw new NavigatorError('COMMAND_FAILED', `cp of image ${id} to ${target} failed: ${String(r.stderr).trim()}`);
    }
    this.log.info({ event: 'image-cloned', id, dest: target, durationMs: Date.now() - started }, 'image cloned');
  }

  /** Remove the oldest versions of each name beyond keepVersions, never a pinned one. */
  async prune(extraPinned: Iterable<string> = []): Promise<string[]> {
    const pinned = new Set([...this.pinned(), ...extraPinned]);
    const byName = new Map<string, ImageInfo[]>();
    for (const img of await this.list()) byName.set(img.name, [...(byName.get(img.name) ?? []), img]);
    const removed: string[] = [];
    for (const versions of byName.values()) {
      for (const old of versions.slice(this.keepVersions)) {
        if (pinned.has(old.id)) continue;
        if (this.locks.has(old.id)) continue;
        await this.remove(old.id);
        removed.push(old.id);
      }
    }
    return removed;
  }

  /** Remove one image (rename out first, so it disappears atomically). */
  async remove(id: string): Promise<void> {
    const dir = this.imageDir(id);
    const trash = this.resolveInside('staging', `.trash-${id}-${rand()}`);
    try {
      await rename(dir, trash);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    this.manifests.delete(id);
    await rm(trash, { recursive: true, force: true });
    this.log.info({ event: 'image-removed', id }, 'image removed');
  }

  // ---- receiving -----------------------------------------------------------------------------

  private async stagingDirs(id: string): Promise<string[]> {
    const out: string[] = [];
    for (const e of await readdir(join(this.dir, 'staging')).catch(() => [] as string[])) {
      if (!e.startsWith(`${id}.`)) continue;
      const d = this.resolveInside('staging', e);
      if (await stat(join(d, 'manifest.json')).then(() => true, () => false)) out.push(d);
    }
    return out.sort();
  }

  /**
   * Images being received, for the heartbeat: staging folders written to within `activeMs`
   * (a folder left by a cut-off transfer stays for a resume but is not "in progress"), with the
   * bytes on disk so far (allocated blocks: the files are sparse until written; blocks seeded
   * from a delta base count as present) and the image's total.
   */
  async receiving(activeMs = 60_000, now = Date.now()): Promise<Array<{ image: string; bytes: number; total: number }>> {
    const out: Array<{ image: string; bytes: number; total: number }> = [];
    const entries = await readdir(join(this.dir, 'staging')).catch(() => [] as string[]);
    for (const e of entries) {
      const id = e.split('.')[0] ?? '';
      if (e.startsWith('.') || !ID_RE.test(id)) continue;
      const dir = this.resolveInside('staging', e);
      let manifest = this.stagingManifests.get(e);
      if (!manifest) {
        try {
          manifest = parseManifest(JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')), `staged manifest of ${id}`);
        } catch {
          continue; // not complete yet, or being removed
        }
        if (this.stagingManifests.size > 64) this.stagingManifests.clear();
        this.stagingManifests.set(e, manifest);
      }
      let bytes = 0;
      let newest = (await stat(dir).catch(() => undefined))?.mtimeMs ?? 0;
      for (const f of manifest.files) {
        const st = await stat(this.fileIn(join(dir, 'files'), f.path)).catch(() => undefined);
        if (!st) continue;
        bytes += Math.min(st.size, st.blocks * 512);
        newest = Math.max(newest, st.mtimeMs);
      }
      if (now - newest > activeMs) continue;
      const total = totalBytes(manifest);
      out.push({ image: id, bytes: Math.min(bytes, total), total });
    }
    return out;
  }

  /**
   * Get a staging folder ready to receive `manifest` and say which blocks must be sent.
   * - image already stored: state 'present', nothing to send;
   * - a staging folder for it exists (an earlier transfer was cut off): resume — the blocks on
   *   disk are hashed and only those that do not match the manifest are asked for;
   * - otherwise a new staging folder; when another version of the same name is stored (or
   *   `baseId` is given), its files are copied in first (reflink where the file system can) and
   *   only blocks whose hashes differ are asked for (delta).
   */
  async prepareReceive(manifestInput: unknown, opts: { baseId?: string } = {}): Promise<PrepareResult> {
    const manifest = parseManifest(manifestInput);
    const id = manifestId(manifest);
    return this.withLock(id, () => this.prepareLocked(id, manifest, opts));
  }

  private async prepareLocked(id: string, manifest: ImageManifest, opts: { baseId?: string }): Promise<PrepareResult> {
    if (await this.has(id)) return { state: 'present', id };
    const total = totalBytes(manifest);
    const existing = (await this.stagingDirs(id))[0];
    if (existing) {
      const state = await this.readState(existing, id);
      const filesDir = join(existing, 'files');
      const missing: MissingBlocks[] = [];
      for (const f of manifest.files) {
        const p = this.fileIn(filesDir, f.path);
        const trusted = new Set(state.trusted[f.path] ?? []);
        const candidates = f.blocks.map((_, i) => i).filter((i) => !trusted.has(i));
        let onDisk = new Map<number, string>();
        const st = await lstat(p).catch(() => undefined);
        if (!st || !st.isFile()) {
          await rm(p, { recursive: true, force: true });
          await mkdir(dirname(p), { recursive: true });
          await writeFile(p, '');
          await truncate(p, f.size);
        } else {
          if (st.size !== f.size) await truncate(p, f.size);
          onDisk = await hashBlocks(p, manifest.blockSize, candidates);
        }
        const need = candidates.filter((i) => onDisk.get(i) !== f.blocks[i]);
        if (need.length > 0) missing.push({ path: f.path, size: f.size, blocks: need });
      }
      const missingBytes = this.bytesOf(manifest, missing);
      this.log.info({ event: 'receive-resumed', id, missingBytes, totalBytes: total }, 'resuming a cut-off receive');
      return { state: 'staging', id, filesDir, ...(state.baseId ? { baseId: state.baseId } : {}), resumed: true, missing, missingBytes, totalBytes: total };
    }

    const base = await this.pickBase(manifest, opts.baseId);
    const baseManifest = base ? await this.getManifest(base) : undefined;
    const baseFiles = new Map((baseManifest?.files ?? []).map((f) => [f.path, f]));
    const free = await this.freeBytes();
    if (free < total) throw this.diskFull(total, `receiving image ${manifest.name} ${id}`, free);

    const work = this.resolveInside('staging', `.new-${rand()}`);
    const filesDir = join(work, 'files');
    const state: ReceiveState = { id, ...(base ? { baseId: base } : {}), trusted: {} };
    const missing: MissingBlocks[] = [];
    try {
      await mkdir(filesDir, { recursive: true });
      for (const f of manifest.files) {
        const p = this.fileIn(filesDir, f.path);
        await mkdir(dirname(p), { recursive: true });
        const old = baseFiles.get(f.path);
        let trusted: number[] = [];
        if (old && base) {
          // Blocks with equal hashes at the same index are equal bytes: copy, don't send.
          trusted = f.blocks.map((h, i) => (old.blocks[i] === h ? i : -1)).filter((i) => i >= 0);
        }
        if (trusted.length > 0 && base) {
          await copyFile(join(this.imageDir(base), 'files', f.path), p, fsConstants.COPYFILE_FICLONE);
          await truncate(p, f.size);
          state.trusted[f.path] = trusted;
        } else {
          await writeFile(p, '', { mode: 0o600 });
          await truncate(p, f.size);
        }
        const t = new Set(trusted);
        const need = f.blocks.map((_, i) => i).filter((i) => !t.has(i));
        if (need.length > 0) missing.push({ path: f.path, size: f.size, blocks: need });
      }
      await writeFile(join(work, 'receive.json'), JSON.stringify(state));
      // manifest.json last: a staging folder with a manifest is complete enough to resume.
      await writeFile(join(work, 'manifest.json'), canonicalJson(manifest));
      const final = this.resolveInside('staging', `${id}.${rand()}`);
      await rename(work, final);
      const missingBytes = this.bytesOf(manifest, missing);
      this.log.info({ event: 'receive-prepared', id, name: manifest.name, baseId: base, missingBytes, totalBytes: total }, 'staging ready');
      return {
        state: 'staging',
        id,
        filesDir: join(final, 'files'),
        ...(base ? { baseId: base } : {}),
        resumed: false,
        missing,
        missingBytes,
        totalBytes: total,
      };
    } catch (err) {
      await rm(work, { recursive: true, force: true });
      if (isEnospc(err)) throw this.diskFull(total, `receiving image ${manifest.name} ${id}`);
      throw err;
    }
  }

  private bytesOf(m: ImageManifest, missing: MissingBlocks[]): number {
    const byPath = new Map(m.files.map((f) => [f.path, f]));
    let n = 0;
    for (const mb of missing) {
      const f = byPath.get(mb.path)!;
      for (const i of mb.blocks) n += blockLength(m, f, i);
    }
    return n;
  }

  /** The newest stored version of the same image name, or the given base. */
  private async pickBase(m: ImageManifest, baseId?: string): Promise<string | undefined> {
    if (baseId) {
      if (await this.has(baseId)) return baseId;
      return undefined;
    }
    const same = (await this.list()).filter((i) => i.name === m.name);
    return same[0]?.id;
  }

  private async readState(stagingDir: string, id: string): Promise<ReceiveState> {
    try {
      const s = JSON.parse(await readFile(join(stagingDir, 'receive.json'), 'utf8')) as ReceiveState;
      // Trust base copies only while the base is still a stored (verified) image.
      if (s.id === id && (!s.baseId || (await this.has(s.baseId)))) return s;
    } catch {
      // fall through: nothing trusted, everything is hashed
    }
    return { id, trusted: {} };
  }

  /**
   * Verify a staged image and make it visible with one atomic rename. Blocks that were copied
   * from a verified base image are trusted; every other block is hashed. On a mismatch the
   * staging folder is kept so the sender can re-send just the bad blocks.
   */
  async commitStaged(id: string): Promise<CommitResult> {
    this.checkId(id);
    return this.withLock(id, async () => {
      const dirs = await this.stagingDirs(id);
      if (await this.has(id)) {
        for (const d of dirs) await rm(d, { recursive: true, force: true });
        return { ok: true, id, verifiedBytes: 0 };
      }
      const dir = dirs[0];
      if (!dir) throw new NavigatorError('NOT_FOUND', `no staged image ${id} in ${this.dir}/staging`);
      const started = Date.now();
      let manifest: ImageManifest;
      try {
        manifest = parseManifest(JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')), `staged manifest of ${id}`);
        if (manifestId(manifest) !== id) throw new Error('manifest does not hash to the image id');
      } catch (err) {
        await rm(dir, { recursive: true, force: true });
        throw new NavigatorError('IMAGE_CORRUPT', `staged manifest of ${id} is invalid: ${errorMessage(err)}`);
      }
      const state = await this.readState(dir, id);
      const filesDir = join(dir, 'files');
      const bad = await this.checkFiles(filesDir, manifest, state.trusted, false);
      if (bad.length > 0) {
        this.log.warn({ event: 'receive-verify-failed', id, bad: bad.slice(0, 10), badCount: bad.length }, 'staged image refused');
        return { ok: false, id, bad };
      }
      try {
        for (const f of manifest.files) await chmod(this.fileIn(filesDir, f.path), f.mode);
        await rm(join(dir, 'receive.json'), { force: true });
        await rename(dir, this.imageDir(id));
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        // Another process committed the same image first (it renamed this very staging folder
        // from under us, or its own): same content, keep theirs.
        if (code === 'ENOENT' && (await this.has(id))) return { ok: true, id, verifiedBytes: 0 };
        if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err;
        await rm(dir, { recursive: true, force: true });
      }
      for (const d of dirs.slice(1)) await rm(d, { recursive: true, force: true });
      const verifiedBytes = totalBytes(manifest);
      this.log.info({ event: 'image-committed', id, name: manifest.name, durationMs: Date.now() - started }, 'received image verified and committed');
      await this.prune();
      return { ok: true, id, verifiedBytes };
    });
  }

  /** Drop every staging folder of an image (failed or abandoned transfer). */
  async abortStaged(id: string): Promise<void> {
    this.checkId(id);
    await this.withLock(id, async () => {
      for (const d of await this.stagingDirs(id)) await rm(d, { recursive: true, force: true });
    });
  }

  /**
   * Receive an image from a local folder holding its files (what a shipper does over SFTP,
   * done with local reads and writes). Concurrent receives of the same image in this process
   * wait for each other; across processes the atomic rename decides and both succeed.
   */
  async receiveFromDir(manifestInput: unknown, srcFilesDir: string, opts: { baseId?: string } = {}): Promise<string> {
    const manifest = parseManifest(manifestInput);
    const id = manifestId(manifest);
    for (let round = 0; round < 3; round++) {
      const prep = await this.prepareReceive(manifest, opts);
      if (prep.state === 'present') return id;
      try {
        for (const mb of prep.missing) {
          const src = await open(join(resolve(srcFilesDir), mb.path), 'r');
          const dst = await open(this.fileIn(prep.filesDir, mb.path), 'r+');
          try {
            const buf = Buffer.allocUnsafe(manifest.blockSize);
            for (const i of mb.blocks) {
              const { bytesRead } = await src.read(buf, 0, manifest.blockSize, i * manifest.blockSize);
              await dst.write(buf, 0, bytesRead, i * manifest.blockSize);
            }
          } finally {
            await src.close();
            await dst.close();
          }
        }
      } catch (err) {
        if (isEnospc(err)) {
          await this.abortStaged(id);
          throw this.diskFull(prep.missingBytes, `receiving image ${manifest.name} ${id}`);
        }
        if ((err as NodeJS.ErrnoException).code === 'ENOENT' && (await this.has(id))) return id;
        throw err;
      }
      const c = await this.commitStaged(id);
      if (c.ok) return id;
    }
    await this.abortStaged(id);
    throw new NavigatorError('IMAGE_CORRUPT', `image ${id} received from ${srcFilesDir} does not match its manifest`);
  }

  // ---- helpers -------------------------------------------------------------------------------

  /** Atomically publish a complete folder as images/<id>; if it is already there, keep that. */
  private async install(work: string, id: string): Promise<void> {
    try {
      await rename(work, this.imageDir(id));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err;
      await rm(work, { recursive: true, force: true });
    }
  }

  private diskFull(needed: number, what: string, free?: number): NavigatorError {
    return new NavigatorError(
      'DISK_FULL',
      `no space left in the image store ${this.dir} while ${what}: ${needed} bytes needed${free !== undefined ? `, ${free} free` : ''}`,
      { path: this.dir, neededBytes: needed, ...(free !== undefined ? { freeBytes: free } : {}) },
    );
  }

  /** Relative paths of all regular files below root; anything else is refused or reported. */
  private async walkRegularFiles(root: string, refuseOthers: boolean): Promise<string[]> {
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

  /** Compare a files folder with a manifest: sizes, block hashes (except trusted), extras. */
  private async checkFiles(filesDir: string, m: ImageManifest, trusted: Record<string, number[]>, wholeFile: boolean): Promise<BadItem[]> {
    const bad: BadItem[] = [];
    const expected = new Set(m.files.map((f) => f.path));
    let found: string[] = [];
    try {
      found = await this.walkRegularFiles(filesDir, false);
    } catch (err) {
      return [{ path: 'files', reason: errorMessage(err) }];
    }
    for (const p of found) {
      if (p.startsWith('\0other:')) bad.push({ path: p.slice(7), reason: 'not a regular file' });
      else if (!expected.has(p)) bad.push({ path: p, reason: 'not in the manifest' });
    }
    for (const f of m.files) {
      const p = this.fileIn(filesDir, f.path);
      const st = await lstat(p).catch(() => undefined);
      if (!st || !st.isFile()) {
        bad.push({ path: f.path, reason: 'missing' });
        continue;
      }
      if (st.size !== f.size) {
        bad.push({ path: f.path, reason: `size ${st.size}, manifest says ${f.size}` });
        continue;
      }
      if (wholeFile) {
        const h = await hashFile(p, m.blockSize);
        h.blocks.forEach((b, i) => {
          if (b !== f.blocks[i]) bad.push({ path: f.path, block: i, reason: 'block hash mismatch' });
        });
        if (h.sha256 !== f.sha256 && !bad.some((b) => b.path === f.path)) bad.push({ path: f.path, reason: 'file hash mismatch' });
      } else {
        const t = new Set(trusted[f.path] ?? []);
        const idx = f.blocks.map((_, i) => i).filter((i) => !t.has(i));
        const got = await hashBlocks(p, m.blockSize, idx);
        for (const i of idx) if (got.get(i) !== f.blocks[i]) bad.push({ path: f.path, block: i, reason: 'block hash mismatch' });
      }
    }
    return bad;
  }
}

/** The store as configured (config.store), for the daemon. */
export function createImageStore(cfg: { dir: string; keepVersions: number; blockBytes?: number }, logger?: Logger, pinned?: () => Iterable<string>): ImageStore {
  return new ImageStore({ dir: cfg.dir, keepVersions: cfg.keepVersions, ...(cfg.blockBytes ? { blockSize: cfg.blockBytes } : {}), ...(logger ? { logger } : {}), ...(pinned ? { pinned } : {}) });
}
