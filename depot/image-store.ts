import { createHash, randomBytes } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { chmod, copyFile, lstat, mkdir, open, readdir, readFile, rename, rm, stat, statfs, truncate, writeFile, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join, resolve, sep } from 'node:path';
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
//                                                 receive.json, files/..., seed/<n> for a delta)
//   <dir>/quarantine/<id>.<random>/               images that failed verification at rest
//
// An image becomes visible only by an atomic rename of a verified staging folder, so readers
// never see a half-written image. Containers never run from the stored copy: clone() makes a
// copy-on-write copy (`cp --reflink=auto -a`).
//
// Delta receives. When the store holds another version of the image (the base), prepare asks
// only for the blocks whose hash differs from the base's block at the same index and answers at
// once: the sender writes those blocks into sparse files/<path> while the base's files are
// copied by the kernel (reflink, else copy_file_range: no byte through this process) into
// seed/<n> in the background, so the copy (seconds for a large image on a file system without
// reflink) overlaps the transfer instead of preceding it. Commit waits for the copy, then
// hashes each block the sender wrote and writes that same, verified buffer into the seed copy,
// which then replaces files/<path>. Why the result is the manifest's bytes: every sent block's
// SHA-256 is checked at commit; every other block is a kernel copy of the same-index block of
// the base, whose manifest has the identical hash and which was itself verified block by block
// when it was committed (or imported); a seed is used only if the copy completed (it is written
// under a temporary name and renamed, and its size must be the base file's) and only while the
// base is still a stored image — a base that verify() found damaged is in quarantine, so its
// blocks are no longer trusted and the sender is asked for them. A spare (below) stands in for
// that copy: the same kernel copy, made earlier while the store was idle, then hashed against
// the manifest in the background and by every verify() of its image (a damaged one is dropped);
// a delta that takes it before that hash ran has exactly the guarantee of its own copy. What
// this does not catch is damage to the base (or its spare) at rest that no verify() has found
// yet: the new image then carries it, exactly as a clone of the base would, and verify() of
// either image finds it (re-hashing the base here would cost a full read and hash of the image
// on every delta, which is what the delta exists to avoid).

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
  /**
   * Keep a spare copy of the newest received version of each image name (default true), made
   * when the store is idle: on a file system without reflink the next delta then starts from it
   * instead of waiting for a whole copy of the base. Costs one image's space per name; made only
   * if as much stays free, dropped whenever an import or receive needs the space.
   */
  spareCopies?: boolean;
  /** Images smaller than this get no spare: copying them is quick anyway (default 256 MiB). */
  spareMinBytes?: number;
  /** Quiet time (no import, verify, clone, receive) before spares are made after a commit, so the copy does not compete with the clone that often follows (default 500 ms). */
  spareDelayMs?: number;
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

/** A file of a delta receive copied from the base into seed/<index> (index in the base's manifest). */
interface SeedFile {
  index: number;
  path: string;
  baseSize: number;
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
  /** Background copies of delta bases by staging folder; each resolves with its first error. */
  private readonly seeds = new Map<string, Promise<unknown>>();
  private readonly spares: { enabled: boolean; minBytes: number; delayMs: number };
  /** Names of images received here: their newest version gets a spare. */
  private readonly receivedNames = new Set<string>();
  private spareTimer: NodeJS.Timeout | undefined;
  /** The spare being made (one at a time); `copied` once its files are in place, before the hash. */
  private spareBuild: { id: string; copied: Promise<void>; done: Promise<void> } | undefined;
  /** Bumped to stop a spare being made (space needed, image removed, stop). */
  private spareEpoch = 0;
  private stopped = false;
  /** Imports, verifies and clones running: spares wait for a quiet store. */
  private busy = 0;
  /** When the last import, verify, clone, receive or commit ended. */
  private lastActive = 0;

  constructor(opts: ImageStoreOptions) {
    this.dir = resolve(opts.dir);
    this.keepVersions = opts.keepVersions;
    this.blockSize = opts.blockSize ?? DEFAULT_BLOCK_SIZE;
    this.log = (opts.logger ?? silentLogger()).child({ component: 'image-store' });
    this.pinned = opts.pinned ?? (() => []);
    this.spares = { enabled: opts.spareCopies ?? true, minBytes: opts.spareMinBytes ?? 256 * 1024 * 1024, delayMs: opts.spareDelayMs ?? 500 };
  }

  async start(): Promise<void> {
    for (const d of ['images', 'staging', 'quarantine', 'spare']) await mkdir(join(this.dir, d), { recursive: true });
    // Folders being built or removed when the process died are garbage (and spares when they are off).
    for (const d of ['staging', 'spare']) {
      for (const e of await readdir(join(this.dir, d))) {
        // A commit cut off by a crash: the staging folder goes back for a resume.
        if (d === 'staging' && e.startsWith('.commit-')) await rename(join(this.dir, d, e), join(this.dir, d, e.slice(8)));
        else if (e.startsWith('.') || (d === 'spare' && !this.spares.enabled)) await rm(join(this.dir, d, e), { recursive: true, force: true });
      }
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.spareEpoch++;
    clearTimeout(this.spareTimer);
    await Promise.allSettled([...this.locks.values(), ...this.seeds.values(), this.spareBuild?.done]);
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

  private async busyWhile<T>(fn: () => Promise<T>): Promise<T> {
    this.busy++;
    try {
      return await fn();
    } finally {
      this.busy--;
      this.lastActive = Date.now();
    }
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
      this.lastActive = Date.now();
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
    return this.busyWhile(() => this.importNow(srcDir, name, opts));
  }

  private async importNow(srcDir: string, name: string, opts: { version?: string; created?: Date }): Promise<string> {
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
    if ((await this.freeBytes()) < needed) await this.dropSpares();
    try {
      await mkdir(work, { recursive: true });
      const { execa } = await import('execa');
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
    return this.busyWhile(() => this.verifyNow(id, opts));
  }

  private async verifyNow(id: string, opts: { quarantine?: boolean }): Promise<VerifyResult> {
    const dir = this.imageDir(id);
    let manifest: ImageManifest;
    try {
      manifest = await this.getManifest(id);
    } catch (err) {
      if (isNavigatorError(err, 'NOT_FOUND')) throw err;
      return this.afterBadVerify(id, dir, [{ path: 'manifest.json', reason: errorMessage(err) }], opts.quarantine !== false);
    }
    const bad = await this.checkFiles(join(dir, 'files'), manifest, 'whole');
    if (bad.length === 0) {
      // Its spare, the seed of the next delta, is checked with it.
      const spare = this.resolveInside('spare', id);
      for (const [n, f] of manifest.files.entries()) {
        const h = await hashFile(join(spare, String(n)), manifest.blockSize, { wholeFile: false }).catch(() => undefined);
        if (h && (h.size !== f.size || h.blocks.some((b, i) => b !== f.blocks[i]))) {
          this.log.warn({ event: 'spare-mismatch', id, path: f.path }, 'spare copy damaged; dropped');
          await this.dropSpare(id);
          break;
        }
      }
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
    await this.dropSpare(id);
    return { ok: false, id, bad, quarantined: true };
  }

  /** Copy-on-write clone of an image's files into `dest` (which must not exist yet). */
  async clone(id: string, dest: string): Promise<void> {
    return this.busyWhile(() => this.cloneNow(id, dest));
  }

  private async cloneNow(id: string, dest: string): Promise<void> {
    const dir = this.imageDir(id);
    if (!(await this.has(id))) throw new NavigatorError('NOT_FOUND', `image ${id} is not in the store ${this.dir}`);
    const target = resolve(dest);
    if (target === this.dir || target.startsWith(this.dir + sep + 'images')) {
      throw new NavigatorError('BAD_REQUEST', `clone destination ${target} is inside the stored images`);
    }
    if (await lstat(target).then(() => true, () => false)) throw new NavigatorError('CONFLICT', `clone destination ${target} already exists`);
    await mkdir(dirname(target), { recursive: true });
    const started = Date.now();
    const { execa } = await import('execa');
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
    await this.dropSpare(id);
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
      // A folder being verified (commit) is still an image being received.
      const name = e.startsWith('.commit-') ? e.slice(8) : e;
      const id = name.split('.')[0] ?? '';
      if (name.startsWith('.') || !ID_RE.test(id)) continue;
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
      // Finished seed copies of a delta hold the blocks not sent.
      for (const e of await readdir(join(dir, 'seed')).catch(() => [] as string[])) {
        if (!e.startsWith('.')) bytes += ((await stat(join(dir, 'seed', e)).catch(() => undefined))?.blocks ?? 0) * 512;
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
   *   `baseId` is given), only blocks whose hashes differ are asked for (delta), and the base's
   *   files are copied into seed/ in the background (see "Delta receives" above) while the
   *   sender already sends: prepare answers at once, commit waits for the copy.
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
        // Only blocks the sender writes are hashed: trusted ones come from the seed copy.
        const candidates = f.blocks.map((_, i) => i).filter((i) => !trusted.has(i));
        let onDisk = new Map<number, string>();
        const st = await lstat(p).catch(() => undefined);
        if (!st || !st.isFile()) {
          // Only inside a folder still there (not taken by a commit in another process).
          await lstat(join(existing, 'manifest.json'));
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
      // A seed copy cut off with the process (or never made) is started again; one running here
      // or finished is left alone.
      if (state.baseId && Object.keys(state.trusted).length > 0 && !this.seeds.has(existing)) {
        const base = state.baseId;
        const todo = await this.seedsMissing(existing, state);
        if (todo.length > 0) {
          await mkdir(join(existing, 'seed')).catch((err: NodeJS.ErrnoException) => {
            if (err.code !== 'EEXIST') throw err;
          });
          this.startSeed(existing, base, todo);
        }
      }
      if (!(await lstat(join(existing, 'manifest.json')).then(() => true, () => false))) {
        // Committed elsewhere meanwhile: what is left at this path was made by this resume.
        await rm(existing, { recursive: true, force: true });
        throw Object.assign(new Error(`staging folder ${existing} was taken by another receive of the same image`), { code: 'ENOENT' });
      }
      const missingBytes = this.bytesOf(manifest, missing);
      this.log.info({ event: 'receive-resumed', id, missingBytes, totalBytes: total }, 'resuming a cut-off receive');
      return { state: 'staging', id, filesDir, ...(state.baseId ? { baseId: state.baseId } : {}), resumed: true, missing, missingBytes, totalBytes: total };
    }

    const base = await this.pickBase(manifest, opts.baseId);
    const baseManifest = base ? await this.getManifest(base) : undefined;
    const baseFiles = new Map((baseManifest?.files ?? []).map((f, j) => [f.path, { f, j }]));
    const state: ReceiveState = { id, ...(base ? { baseId: base } : {}), trusted: {} };
    const missing: MissingBlocks[] = [];
    const seeded: SeedFile[] = [];
    for (const f of manifest.files) {
      const old = baseFiles.get(f.path);
      // Blocks with equal hashes at the same index are equal bytes: copy, don't send.
      const trusted = old ? f.blocks.map((h, i) => (old.f.blocks[i] === h ? i : -1)).filter((i) => i >= 0) : [];
      if (trusted.length > 0) {
        state.trusted[f.path] = trusted;
        seeded.push({ index: old!.j, path: f.path, baseSize: old!.f.size });
      }
      const t = new Set(trusted);
      const need = f.blocks.map((_, i) => i).filter((i) => !t.has(i));
      if (need.length > 0) missing.push({ path: f.path, size: f.size, blocks: need });
    }
    const missingBytes = this.bytesOf(manifest, missing);
    // A delta holds the seed copies and, until commit merges them, the sent blocks.
    const needed = seeded.length > 0 ? total + missingBytes : total;
    let free = await this.freeBytes();
    // The base's spare (if any) becomes the seed: its space is already taken.
    if (free + (base && seeded.length > 0 ? await this.spareBytes(base) : 0) < needed) {
      await this.dropSpares();
      free = await this.freeBytes();
      if (free < needed) throw this.diskFull(needed, `receiving image ${manifest.name} ${id}`, free);
    }

    const work = this.resolveInside('staging', `.new-${rand()}`);
    const filesDir = join(work, 'files');
    try {
      await mkdir(filesDir, { recursive: true });
      if (seeded.length > 0) await mkdir(join(work, 'seed'));
      for (const f of manifest.files) {
        // Sparse files of the final size: the sender writes its blocks at their offsets.
        const p = this.fileIn(filesDir, f.path);
        await mkdir(dirname(p), { recursive: true });
        await writeFile(p, '', { mode: 0o600 });
        await truncate(p, f.size);
      }
      await writeFile(join(work, 'receive.json'), JSON.stringify(state));
      // manifest.json last: a staging folder with a manifest is complete enough to resume.
      await writeFile(join(work, 'manifest.json'), canonicalJson(manifest));
    } catch (err) {
      await rm(work, { recursive: true, force: true });
      if (isEnospc(err)) throw this.diskFull(needed, `receiving image ${manifest.name} ${id}`);
      throw err;
    }
    const final = this.resolveInside('staging', `${id}.${rand()}`);
    try {
      await rename(work, final);
    } catch (err) {
      await rm(work, { recursive: true, force: true });
      throw err;
    }
    if (base && seeded.length > 0) this.startSeed(final, base, seeded);
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
  }

  /** The seed copy each file with trusted blocks is built from (none when the base is gone). */
  private async seedPlan(state: ReceiveState): Promise<Map<string, SeedFile>> {
    const out = new Map<string, SeedFile>();
    if (!state.baseId) return out;
    const base = await this.getManifest(state.baseId).catch(() => undefined);
    for (const [j, old] of (base?.files ?? []).entries()) {
      if (state.trusted[old.path]?.length) out.set(old.path, { index: j, path: old.path, baseSize: old.size });
    }
    return out;
  }

  /** Seeded files of a staging folder whose copy is not there (finished copies are seed/<index>). */
  private async seedsMissing(dir: string, state: ReceiveState): Promise<SeedFile[]> {
    const out: SeedFile[] = [];
    for (const s of (await this.seedPlan(state)).values()) {
      const st = await lstat(join(dir, 'seed', String(s.index))).catch(() => undefined);
      if (!st?.isFile() || st.size !== s.baseSize) out.push(s);
    }
    return out;
  }

  /**
   * Copy the base's files into <dir>/seed/<index> in the background: copy_file_range or a reflink
   * (fs.copyFile with COPYFILE_FICLONE: no byte passes through this process), into a temporary
   * name renamed when complete, so seed/<index> exists only as a whole copy. The sender writes
   * into files/ meanwhile; the two never touch the same file. A spare of the base is taken
   * instead of copying when there is one. Resolves with the first error.
   */
  private startSeed(dir: string, baseId: string, files: SeedFile[]): Promise<unknown> {
    const started = Date.now();
    const task = (async (): Promise<unknown> => {
      // A spare of the base being made now is as good as this copy, and sooner done.
      if (this.spareBuild?.id === baseId) await this.spareBuild.copied;
      for (const s of files) {
        if (await this.takeSpare(baseId, s.index, join(dir, 'seed', String(s.index)))) continue;
        // Copied outside the staging folder: a commit or abort elsewhere can then never carry a
        // half-made copy along (it is renamed in only if seed/ is still there).
        const tmp = this.resolveInside('staging', `.seed-${rand()}`);
        try {
          await copyFile(join(this.imageDir(baseId), 'files', s.path), tmp, fsConstants.COPYFILE_FICLONE);
          await rename(tmp, join(dir, 'seed', String(s.index)));
        } catch (err) {
          await rm(tmp, { force: true }).catch(() => undefined);
          this.log.warn({ event: 'receive-seed-failed', dir, baseId, path: s.path, err: errorMessage(err) }, 'copying the delta base failed');
          return err;
        }
      }
      this.log.debug({ event: 'receive-seeded', dir, baseId, files: files.length, durationMs: Date.now() - started }, 'delta base copied');
      return undefined;
    })().catch((err: unknown) => err);
    const all = Promise.all([this.seeds.get(dir), task]).then(([a, b]) => a ?? b);
    this.seeds.set(dir, all);
    void all.then(() => {
      if (this.seeds.get(dir) === all) this.seeds.delete(dir);
    });
    return all;
  }

  /** Wait for the background seed copies of a staging folder; resolves with their first error. */
  private async seedsDone(dir: string): Promise<unknown> {
    let err: unknown;
    for (let p = this.seeds.get(dir); p; p = this.seeds.get(dir)) {
      err ??= await p;
      if (this.seeds.get(dir) === p) break;
    }
    return err;
  }

  /** Wait for the seed copies of every staging folder of image `id` in this process. */
  private async seedsOf(id: string): Promise<void> {
    for (const dir of [...this.seeds.keys()]) if (basename(dir).startsWith(`${id}.`)) await this.seedsDone(dir);
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
      // Trust base copies only while the base is still a stored (verified, not quarantined) image.
      if (s.id === id && (!s.baseId || (await this.has(s.baseId)))) return s;
    } catch {
      // fall through: nothing trusted, everything is hashed
    }
    return { id, trusted: {} };
  }

  /**
   * Verify a staged image and make it visible with one atomic rename. Blocks written by the
   * sender are hashed; blocks of a delta come from the seed copy of the base (see "Delta
   * receives" above). On a mismatch the staging folder is kept so the sender can re-send just
   * the bad blocks.
   */
  async commitStaged(id: string): Promise<CommitResult> {
    this.checkId(id);
    return this.withLock(id, async () => {
      const dirs = await this.stagingDirs(id);
      if (await this.has(id)) {
        for (const d of dirs) await this.dropStaging(d);
        await this.seedsOf(id);
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
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
          // Taken meanwhile by a commit in another process.
          if (await this.has(id)) return { ok: true, id, verifiedBytes: 0 };
          return { ok: false, id, bad: [{ path: 'files', reason: 'another receive of this image is committing the staging folder; prepare again' }] };
        }
        await this.dropStaging(dir);
        throw new NavigatorError('IMAGE_CORRUPT', `staged manifest of ${id} is invalid: ${errorMessage(err)}`);
      }
      const what = `image ${manifest.name} ${id}`;
      const needed = totalBytes(manifest);
      // The copies of the base land in seed/ by a rename at their end: wait for them here.
      if (isEnospc(await this.seedsDone(dir))) {
        await this.dropStaging(dir);
        throw this.diskFull(needed, `copying the delta base of ${what}`);
      }
      // The commit works on the folder under a private name: a receive of the same image in
      // another process neither writes into it nor commits it meanwhile (start() puts a folder
      // left so by a crash back).
      const work = this.resolveInside('staging', `.commit-${basename(dir)}`);
      try {
        await rename(dir, work);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        if (await this.has(id)) return { ok: true, id, verifiedBytes: 0 };
        return { ok: false, id, bad: [{ path: 'files', reason: 'another receive of this image is committing the staging folder; prepare again' }] };
      }
      let result: CommitResult;
      try {
        result = await this.verifyAndMerge(id, work, manifest);
      } catch (err) {
        // Nothing fits: drop the partial image rather than keep it for a resume.
        if (isNavigatorError(err, 'DISK_FULL') || isEnospc(err)) {
          await this.dropStaging(work);
          throw isNavigatorError(err) ? err : this.diskFull(needed, `merging the received blocks of ${what}`);
        }
        await this.unprivate(work, dir);
        throw err;
      }
      if (!result.ok) {
        // Back under its name, where the sender writes the blocks again.
        if (!(await this.unprivate(work, dir))) return { ok: false, id, bad: [{ path: 'files', reason: 'staging folder moved; prepare again' }] };
        return result;
      }
      try {
        await rename(work, this.imageDir(id));
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== 'ENOTEMPTY' && code !== 'EEXIST') {
          await this.unprivate(work, dir);
          throw err;
        }
        // Another process committed the same image first: same content, keep theirs.
        await this.dropStaging(work);
      }
      for (const d of dirs.slice(1)) await this.dropStaging(d);
      // Seed copies for folders of this image gone meanwhile end now.
      await this.seedsOf(id);
      this.log.info({ event: 'image-committed', id, name: manifest.name, durationMs: Date.now() - started }, 'received image verified and committed');
      await this.prune();
      this.receivedNames.add(manifest.name);
      this.scheduleSpares();
      return result;
    });
  }

  /** Rename a commit's private folder back to its staging name (or a new one: false). */
  private async unprivate(work: string, dir: string): Promise<boolean> {
    try {
      await rename(work, dir);
      return true;
    } catch {
      await rename(work, `${dir}.${rand()}`).catch(() => undefined);
      return false;
    }
  }

  /** Verify a staging folder (private to this commit) and merge its seeds; see commitStaged. */
  private async verifyAndMerge(id: string, dir: string, manifest: ImageManifest): Promise<CommitResult> {
    const state = await this.readState(dir, id);
    // Seeds that are not there (failed copy, process restarted mid-copy) are made now.
    if (Object.keys(state.trusted).length > 0) {
      const todo = await this.seedsMissing(dir, state);
      if (todo.length > 0) {
        await mkdir(join(dir, 'seed')).catch((err: NodeJS.ErrnoException) => {
          if (err.code !== 'EEXIST') throw err;
        });
        const err = (await this.startSeed(dir, state.baseId!, todo)) ?? (await this.seedsDone(dir));
        if (isEnospc(err)) throw this.diskFull(totalBytes(manifest), `copying the delta base of image ${manifest.name} ${id}`);
        // A seed still missing: its blocks are no longer trusted, the sender sends them.
        const still = new Set((await this.seedsMissing(dir, state)).map((s) => s.path));
        if (still.size > 0) {
          for (const p of still) delete state.trusted[p];
          await writeFile(join(dir, 'receive.json'), JSON.stringify(state));
        }
      }
    }
    const merged: Array<{ from: string; to: string; seed: string }> = [];
    let bad: BadItem[];
    try {
      bad = await this.checkAndMerge(dir, manifest, state, merged);
    } catch (err) {
      // Seeds taken for the merge go back (a failed write leaves only verified blocks in them).
      for (const m of merged) await rename(m.from, m.seed).catch(() => undefined);
      throw err;
    }
    if (bad.length > 0) {
      // The merge copies stay valid seeds (base blocks plus verified sent blocks).
      for (const m of merged) await rename(m.from, m.seed).catch(() => undefined);
      this.log.warn({ event: 'receive-verify-failed', id, bad: bad.slice(0, 10), badCount: bad.length }, 'staged image refused');
      return { ok: false, id, bad };
    }
    const filesDir = join(dir, 'files');
    for (const m of merged) await rename(m.from, m.to);
    for (const f of manifest.files) await chmod(this.fileIn(filesDir, f.path), f.mode);
    await rm(join(dir, 'seed'), { recursive: true, force: true });
    await rm(join(dir, 'receive.json'), { force: true });
    return { ok: true, id, verifiedBytes: totalBytes(manifest) };
  }

  /**
   * Commit's check of a staging folder: structure (extra, missing, non-regular files, sizes),
   * then the hash of every block the sender wrote. For a seeded file each of those blocks,
   * once its hash is right, is written from the very buffer that was hashed into the seed copy
   * (taken over under a private name), which replaces files/<path> if the whole image is good.
   */
  private async checkAndMerge(dir: string, m: ImageManifest, state: ReceiveState, merged: Array<{ from: string; to: string; seed: string }>): Promise<BadItem[]> {
    const filesDir = join(dir, 'files');
    const bad = await this.checkFiles(filesDir, m, 'structure');
    if (bad.length > 0) return bad;
    const plan = await this.seedPlan(state);
    for (const f of m.files) {
      const p = this.fileIn(filesDir, f.path);
      const s = plan.get(f.path);
      let into: FileHandle | undefined;
      if (s && state.trusted[f.path]?.length) {
        const seed = join(dir, 'seed', String(s.index));
        const from = join(dir, 'seed', `.${s.index}.merge-${rand()}`);
        // Taken under a private name first, so that a seed copy finishing elsewhere at the same
        // time cannot swap the file being merged into.
        const taken = await rename(seed, from).then(
          () => true,
          (err: NodeJS.ErrnoException) => {
            if (err.code === 'ENOENT') return false;
            throw err;
          },
        );
        if (taken) {
          merged.push({ from, to: p, seed });
          into = await open(from, 'r+');
        }
      }
      // Without its seed (base gone since) no block is trusted: all are hashed, the holes fail
      // and the sender sends them.
      const t = new Set(into ? (state.trusted[f.path] ?? []) : []);
      const idx = f.blocks.map((_, i) => i).filter((i) => !t.has(i));
      try {
        if (into) await into.truncate(f.size);
        const src = await open(p, 'r');
        try {
          const readAt = async (i: number) => {
            const len = blockLength(m, f, i);
            const buf = Buffer.allocUnsafe(len);
            let got = 0;
            while (got < len) {
              const { bytesRead } = await src.read(buf, got, len - got, i * m.blockSize + got);
              if (bytesRead === 0) break;
              got += bytesRead;
            }
            return buf.subarray(0, got);
          };
          // Read the next block while this one is hashed and written.
          let next = idx.length > 0 ? readAt(idx[0]!) : undefined;
          for (let j = 0; j < idx.length; j++) {
            const i = idx[j]!;
            const buf = await next!;
            next = j + 1 < idx.length ? readAt(idx[j + 1]!) : undefined;
            if (createHash('sha256').update(buf).digest('hex') !== f.blocks[i]) {
              bad.push({ path: f.path, block: i, reason: 'block hash mismatch' });
              continue;
            }
            if (into) await into.write(buf, 0, buf.length, i * m.blockSize);
          }
          await next;
        } finally {
          await src.close();
        }
      } finally {
        await into?.close();
      }
    }
    return bad;
  }

  /** Remove a staging folder once its seed copies (this process) have stopped writing into it. */
  private async dropStaging(dir: string): Promise<void> {
    await rm(dir, { recursive: true, force: true });
    // A copy still running writes into an unlinked file; wait for it so its space is free again.
    await this.seedsDone(dir);
  }

  /** Drop every staging folder of an image (failed or abandoned transfer). */
  async abortStaged(id: string): Promise<void> {
    this.checkId(id);
    await this.withLock(id, async () => {
      for (const d of await this.stagingDirs(id)) await this.dropStaging(d);
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
      let prep: PrepareResult;
      try {
        prep = await this.prepareReceive(manifest, opts);
      } catch (err) {
        // The staging folder went from under the resume (committed by another process).
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw err;
      }
      if (prep.state === 'present') return id;
      try {
        for (const mb of prep.missing) {
          const src = await open(join(resolve(srcFilesDir), mb.path), 'r');
          const dst = await open(this.fileIn(prep.filesDir, mb.path), 'r+').catch(async (err: unknown) => {
            await src.close();
            throw err;
          });
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
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
          // Another process is committing (or committed) the folder this one was writing into.
          if (await this.has(id)) return id;
          continue;
        }
        throw err;
      }
      const c = await this.commitStaged(id);
      if (c.ok) return id;
    }
    await this.abortStaged(id);
    throw new NavigatorError('IMAGE_CORRUPT', `image ${id} received from ${srcFilesDir} does not match its manifest`);
  }

  // ---- spares --------------------------------------------------------------------------------
  //
  // spare/<id>/<n> is a copy of file n (manifest order) of image id, made in the background when
  // the store is quiet, for the newest version of each name received here: the next delta takes
  // its files as its seed (a rename) instead of copying the base while the sender waits. It is
  // published (renamed into place) once copied, then hashed against the manifest; a mismatch
  // drops it and sends the image to verify(), which quarantines it if the stored copy is the
  // damaged one. Costs: one image's space per name, and one copy and hash per received version.

  private scheduleSpares(inMs = this.spares.delayMs): void {
    if (!this.spares.enabled || this.stopped) return;
    clearTimeout(this.spareTimer);
    this.spareTimer = setTimeout(() => {
      this.spareTimer = undefined;
      this.refreshSpares().catch((err) => this.log.warn({ event: 'spare-failed', err: errorMessage(err) }, 'making a spare copy failed'));
    }, inMs);
    this.spareTimer.unref();
  }

  /** Make the spares that are wanted (one at a time) and drop the others. */
  private async refreshSpares(): Promise<void> {
    // Not while receiving (locks held, seeds copying) or making one: try again later.
    if (this.spareBuild || this.busy > 0 || this.locks.size > 0 || this.seeds.size > 0) return this.scheduleSpares();
    // Only once the store has been quiet for the whole delay.
    const quietMs = Date.now() - this.lastActive;
    if (quietMs < this.spares.delayMs) return this.scheduleSpares(this.spares.delayMs - quietMs);
    const spareDir = join(this.dir, 'spare');
    const have = (await readdir(spareDir).catch(() => [] as string[])).filter((e) => ID_RE.test(e));
    const images = await this.list();
    const names = new Set(this.receivedNames);
    for (const img of images) if (have.includes(img.id)) names.add(img.name);
    const want: ImageInfo[] = [];
    for (const name of names) {
      const newest = images.find((i) => i.name === name);
      if (newest && newest.bytes >= this.spares.minBytes) want.push(newest);
    }
    for (const e of have) if (!want.some((w) => w.id === e)) await rm(join(spareDir, e), { recursive: true, force: true });
    for (const img of want) {
      if (have.includes(img.id) || this.stopped) continue;
      const free = await this.freeBytes();
      if (free - img.bytes < img.bytes) {
        this.log.info({ event: 'spare-skipped', id: img.id, bytes: img.bytes, freeBytes: free }, 'no spare copy: it would leave less free space than the image takes');
        continue;
      }
      let copied!: () => void;
      const copiedP = new Promise<void>((r) => (copied = r));
      const done = this.makeSpare(img.id, this.spareEpoch, copied).finally(copied);
      this.spareBuild = { id: img.id, copied: copiedP, done: done.then(() => undefined, () => undefined) };
      let damaged = false;
      try {
        damaged = await done;
      } finally {
        this.spareBuild = undefined;
      }
      // The copy did not match: find out whether the stored image is damaged (quarantine).
      if (damaged) await this.verify(img.id);
    }
  }

  /** Make spare/<id>; true when the copy does not match the manifest. */
  private async makeSpare(id: string, epoch: number, copied: () => void): Promise<boolean> {
    const m = await this.getManifest(id);
    const tmp = this.resolveInside('spare', `.${id}.${rand()}`);
    const dir = this.resolveInside('spare', id);
    const started = Date.now();
    try {
      await mkdir(tmp);
      for (const [n, f] of m.files.entries()) {
        if (epoch !== this.spareEpoch) return false;
        await copyFile(join(this.imageFilesDir(id), f.path), join(tmp, String(n)), fsConstants.COPYFILE_FICLONE);
      }
      // Published only if the image is still stored and nothing asked to stop meanwhile.
      if (epoch !== this.spareEpoch || !(await this.has(id))) return false;
      await rename(tmp, dir);
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
    copied();
    const copyMs = Date.now() - started;
    // Then hashed, off any transfer's path (a few blocks at a time, paused while the store
    // receives, verifies or clones): a damaged copy (or a damaged image: verify() then
    // quarantines it) must not stay. A delta that took files meanwhile has a plain kernel copy,
    // like one it copied itself.
    for (const [n, f] of m.files.entries()) {
      const p = join(dir, String(n));
      const st = await stat(p).catch(() => undefined);
      if (!st) continue; // taken by a delta meanwhile
      let damaged = st.size !== f.size;
      for (let first = 0; first < f.blocks.length && !damaged; first += 2) {
        if (!(await this.quietFor(epoch))) return false;
        const idx = Array.from({ length: Math.min(2, f.blocks.length - first) }, (_, k) => first + k);
        const got = await hashBlocks(p, m.blockSize, idx).catch(() => undefined);
        if (!got) break; // taken meanwhile
        damaged = idx.some((i) => got.get(i) !== f.blocks[i]);
      }
      // A delta that took the file while it was hashed writes its own blocks into it.
      if (damaged && (await lstat(p).then(() => true, () => false))) {
        this.log.warn({ event: 'spare-mismatch', id, path: f.path }, 'spare copy does not match the manifest; verifying the stored image');
        await rm(dir, { recursive: true, force: true });
        return true;
      }
    }
    this.log.info({ event: 'spare-made', id, bytes: totalBytes(m), copyMs, durationMs: Date.now() - started }, 'spare copy ready for the next delta');
    return false;
  }

  /** Wait while the store receives, verifies or clones; false once the spare is no longer wanted. */
  private async quietFor(epoch: number): Promise<boolean> {
    while (this.busy > 0 || this.locks.size > 0 || this.seeds.size > 0) {
      if (epoch !== this.spareEpoch) return false;
      await new Promise((r) => setTimeout(r, 100));
    }
    return epoch === this.spareEpoch;
  }

  /** Move file n of image id's spare to dest; false when there is no such spare file. */
  private async takeSpare(id: string, n: number, dest: string): Promise<boolean> {
    if (!this.spares.enabled) return false;
    return rename(this.resolveInside('spare', id, String(n)), dest).then(
      () => true,
      () => false,
    );
  }

  private async spareBytes(id: string): Promise<number> {
    const dir = this.resolveInside('spare', id);
    let n = 0;
    for (const e of await readdir(dir).catch(() => [] as string[])) n += (await stat(join(dir, e)).catch(() => undefined))?.size ?? 0;
    return n;
  }

  private async dropSpare(id: string): Promise<void> {
    if (this.spareBuild?.id === id) {
      this.spareEpoch++;
      await this.spareBuild.done.catch(() => undefined);
    }
    await rm(this.resolveInside('spare', id), { recursive: true, force: true });
  }

  /** Free the space of every spare (an import or receive needs it). */
  private async dropSpares(): Promise<void> {
    this.spareEpoch++;
    await this.spareBuild?.done.catch(() => undefined);
    const dir = join(this.dir, 'spare');
    for (const e of await readdir(dir).catch(() => [] as string[])) await rm(join(dir, e), { recursive: true, force: true });
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

  /**
   * Compare a files folder with a manifest: extra or non-regular files, missing files, sizes,
   * and with 'whole' every block hash and the file hashes ('structure' leaves the blocks to the
   * caller).
   */
  private async checkFiles(filesDir: string, m: ImageManifest, depth: 'whole' | 'structure'): Promise<BadItem[]> {
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
}

/** The store as configured (config.store), for the daemon. */
export function createImageStore(
  cfg: { dir: string; keepVersions: number; blockBytes?: number; spareCopies?: boolean },
  logger?: Logger,
  pinned?: () => Iterable<string>,
): ImageStore {
  return new ImageStore({
    dir: cfg.dir,
    keepVersions: cfg.keepVersions,
    ...(cfg.blockBytes ? { blockSize: cfg.blockBytes } : {}),
    ...(cfg.spareCopies !== undefined ? { spareCopies: cfg.spareCopies } : {}),
    ...(logger ? { logger } : {}),
    ...(pinned ? { pinned } : {}),
  });
}
