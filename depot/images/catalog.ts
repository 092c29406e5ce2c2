import { lstat, mkdir, readdir, readFile, rename, rm, stat, statfs, writeFile } from 'node:fs/promises';
import { dirname, join, resolve, sep } from 'node:path';
import type { Logger } from '../../shared/logger.ts';
import { silentLogger } from '../../shared/logger.ts';
import { SystemClock, type Clock } from '../../shared/clock.ts';
import { StoreSection } from '../../shared/config.ts';
import { NavigatorError, errorMessage, isNavigatorError } from '../../shared/errors.ts';
import { fsyncDir, fsyncTree } from '../../shared/durable-file.ts';
import { canonicalJson, manifestId, parseManifest, totalBytes, type ImageManifest, type ManifestFile } from './manifest.ts';
import { checkFiles, hashFile, walkRegularFiles, type BadItem } from './file-checks.ts';
import { ID_RE, StoreLayout, isEnospc, rand } from './store-layout.ts';
import { StoreActivity } from './activity.ts';
import { SpareCopies } from './spare-copies.ts';
import { DeltaSeeds } from './delta-seeds.ts';
import { Receiver, type PrepareResult } from './receive.ts';
import { ReceiveCommit, type CommitResult } from './receive-commit.ts';

// The image store: immutable, content-addressed image folders (the layout: store-layout.ts).
// This is its catalog and the one class its users hold: what is stored (list, status,
// manifests), import, verify (a damaged image goes to quarantine), clone, and pruning to
// keepVersions per name, never an image that is pinned or being received. Receiving
// (receive.ts, receive-commit.ts, delta-seeds.ts) and spare copies (spare-copies.ts) are its
// parts; their methods here only hand over.
//
// An image becomes visible only by an atomic rename of a verified staging folder, so readers
// never see a half-written image. Containers never run from the stored copy: clone() makes a
// copy-on-write copy (`cp --reflink=auto -a`).

/** Options left out take the config's defaults (section `store`). */
export interface ImageStoreOptions {
  /** Store folder (config.store.dir). */
  dir: string;
  /** Versions kept per image name (config.store.keepVersions). */
  keepVersions: number;
  logger?: Logger;
  /** When the store was last busy, and when spare copies are due. */
  clock?: Clock;
  /** Block size for images imported here (config.store.blockBytes; tests use smaller ones). */
  blockSize?: number;
  /** Ids that must never be pruned (images in use by containers, transfers). */
  pinned?: () => Iterable<string>;
  /**
   * Keep a spare copy of the newest received version of each image name (config.store.spareCopies), made
   * when the store is idle: on a file system without reflink the next delta then starts from it
   * instead of waiting for a whole copy of the base. Costs one image's space per name; made only
   * if as much stays free, dropped whenever an import or receive needs the space.
   */
  spareCopies?: boolean;
  /** Images smaller than this get no spare: copying them is quick anyway (config.store.spareMinBytes). */
  spareMinBytes?: number;
  /** Quiet time (no import, verify, clone, receive) before spares are made after a commit, so the copy does not compete with the clone that often follows (config.store.spareDelayMs). */
  spareDelayMs?: number;
  /** At start, staging folders not written to for this long are removed (config.store.stagingMaxAgeMs). */
  stagingMaxAgeMs?: number;
  /** An image failed verification: a stored one (quarantined) or a received one (its bad blocks are sent again). */
  onVerifyFailed?: (failure: ImageVerifyFailure) => void;
}

export interface ImageVerifyFailure {
  id: string;
  name: string;
  stage: 'stored' | 'received';
  badItems: number;
  /** The first bad item, for people (path, block, reason). */
  first: string;
}

export function describeBad(bad: readonly BadItem[]): string {
  const b = bad[0];
  return b ? `${b.path}${b.block !== undefined ? ` block ${b.block}` : ''}: ${b.reason}` : '';
}

export interface ImageInfo {
  id: string;
  name: string;
  version: string;
  created: string;
  bytes: number;
  files: number;
}

export type VerifyResult = { ok: true; id: string } | { ok: false; id: string; bad: BadItem[]; quarantined: boolean };

export interface ImageStatus {
  id: string;
  state: 'ready' | 'staging' | 'absent';
  name?: string;
  version?: string;
  bytes?: number;
  files?: number;
}

export class ImageStore {
  readonly dir: string;
  readonly keepVersions: number;
  readonly blockSize: number;
  private readonly log: Logger;
  private readonly pinned: () => Iterable<string>;
  private readonly manifests = new Map<string, ImageManifest>();
  private readonly layout: StoreLayout;
  private readonly activity: StoreActivity;
  private readonly spares: SpareCopies;
  private readonly seeds: DeltaSeeds;
  private readonly receiver: Receiver;
  private readonly committer: ReceiveCommit;
  private readonly onVerifyFailed: ((f: ImageVerifyFailure) => void) | undefined;

  private readonly stagingMaxAgeMs: number;

  constructor(opts: ImageStoreOptions) {
    this.onVerifyFailed = opts.onVerifyFailed;
    this.stagingMaxAgeMs = opts.stagingMaxAgeMs ?? StoreSection.parse({}).stagingMaxAgeMs;
    this.layout = new StoreLayout(opts.dir);
    this.dir = this.layout.dir;
    this.keepVersions = opts.keepVersions;
    const defaults = StoreSection.parse({});
    this.blockSize = opts.blockSize ?? defaults.blockBytes;
    this.log = (opts.logger ?? silentLogger()).child({ component: 'image-store' });
    this.pinned = opts.pinned ?? (() => []);
    const clock = opts.clock ?? new SystemClock();
    const activity = (this.activity = new StoreActivity(clock));
    const { layout, log } = this;
    this.spares = new SpareCopies({
      settings: {
        enabled: opts.spareCopies ?? defaults.spareCopies,
        minBytes: opts.spareMinBytes ?? defaults.spareMinBytes,
        delayMs: opts.spareDelayMs ?? defaults.spareDelayMs,
      },
      clock,
      layout,
      catalog: this,
      storeBusy: () => !activity.idle() || this.seeds.copying(),
      lastActive: () => activity.lastActive,
      log,
    });
    this.seeds = new DeltaSeeds({ layout, catalog: this, spares: this.spares, log });
    this.committer = new ReceiveCommit({
      layout,
      activity,
      seeds: this.seeds,
      catalog: this,
      received: (name) => this.spares.received(name),
      log,
      refused: (id, name, bad) => this.onVerifyFailed?.({ id, name, stage: 'received', badItems: bad.length, first: describeBad(bad) }),
    });
    this.receiver = new Receiver({ layout, activity, seeds: this.seeds, catalog: this, spares: this.spares, commit: (id) => this.committer.commit(id), log });
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
    // Receives abandoned long ago (their sender gave up or left): stale staging goes.
    const maxAge = this.stagingMaxAgeMs;
    for (const e of await readdir(join(this.dir, 'staging'))) {
      const p = join(this.dir, 'staging', e);
      const age = Date.now() - (await newestWrite(p));
      if (age > maxAge) {
        await rm(p, { recursive: true, force: true });
        this.log.info({ event: 'stale-staging-removed', folder: e, ageMs: Math.round(age) }, 'removed a staging folder not written to for long');
      }
    }
  }

  async stop(): Promise<void> {
    const spare = this.spares.stop();
    await Promise.allSettled([...this.activity.running(), ...this.seeds.running(), spare]);
  }

  /** Resolve a path below the store folder; anything that escapes it is refused. */
  resolveInside(...parts: string[]): string {
    return this.layout.resolveInside(...parts);
  }

  /** Folder holding the files of a stored image (read-only use: shipping). */
  imageFilesDir(id: string): string {
    return this.layout.imageFilesDir(id);
  }

  // ---- queries -------------------------------------------------------------------------------

  async has(id: string): Promise<boolean> {
    const dir = this.layout.imageDir(id);
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
    const dir = this.layout.imageDir(id);
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

  /** Stored images, newest first. */
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
    this.layout.checkId(id);
    if (await this.has(id)) {
      const m = await this.getManifest(id);
      return { id, state: 'ready', name: m.name, version: m.version, bytes: totalBytes(m), files: m.files.length };
    }
    if ((await this.layout.stagingDirs(id)).length > 0) return { id, state: 'staging' };
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
    return this.activity.busyWhile(() => this.importNow(srcDir, name, opts));
  }

  private async importNow(srcDir: string, name: string, opts: { version?: string; created?: Date }): Promise<string> {
    const src = resolve(srcDir);
    const files = await walkRegularFiles(src, true);
    // Default `created` is the newest file time of the source, so importing an unchanged folder
    // again (bootstrap after pre-staging) yields the same content id instead of a new version.
    const mtimes = await Promise.all(files.map(async (f) => (await stat(join(src, f))).mtimeMs));
    const created = (opts.created ?? new Date(Math.floor(Math.max(0, ...mtimes)))).toISOString();
    const work = this.layout.resolveInside('staging', `.import-${rand()}`);
    const filesDir = join(work, 'files');
    const needed = (await Promise.all(files.map(async (f) => (await stat(join(src, f))).size))).reduce((a, b) => a + b, 0);
    const started = Date.now();
    if ((await this.freeBytes()) < needed) await this.spares.dropAll();
    try {
      await mkdir(work, { recursive: true });
      const { execa } = await import('execa');
      const r = await execa('cp', ['--reflink=auto', '-a', '--', src, filesDir], { reject: false });
      if (r.exitCode !== 0) {
        if (isEnospc(undefined, String(r.stderr))) throw this.layout.diskFull(needed, `importing ${src}`);
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
      if (isEnospc(err)) throw this.layout.diskFull(needed, `importing ${src}`);
      throw err;
    }
  }

  /** Atomically publish a complete folder as images/<id>; if it is already there, keep that. */
  private async install(work: string, id: string): Promise<void> {
    try {
      await fsyncTree(work);
      await rename(work, this.layout.imageDir(id));
      await fsyncDir(dirname(this.layout.imageDir(id)));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err;
      await rm(work, { recursive: true, force: true });
    }
  }

  /**
   * Check every file and block of a stored image against its manifest. A damaged image is moved
   * to quarantine (so has() is false and it is never cloned or used as a delta base) unless
   * `quarantine: false`.
   */
  async verify(id: string, opts: { quarantine?: boolean } = {}): Promise<VerifyResult> {
    return this.activity.busyWhile(() => this.verifyNow(id, opts));
  }

  private async verifyNow(id: string, opts: { quarantine?: boolean }): Promise<VerifyResult> {
    const dir = this.layout.imageDir(id);
    let manifest: ImageManifest;
    try {
      manifest = await this.getManifest(id);
    } catch (err) {
      if (isNavigatorError(err, 'NOT_FOUND')) throw err;
      return this.afterBadVerify(id, dir, [{ path: 'manifest.json', reason: errorMessage(err) }], opts.quarantine !== false);
    }
    const bad = await checkFiles(join(dir, 'files'), manifest, 'whole');
    if (bad.length === 0) {
      // Its spare, the seed of the next delta, is checked with it.
      await this.spares.check(id, manifest);
      this.log.info({ event: 'image-verified', id }, 'image verified');
      return { ok: true, id };
    }
    return this.afterBadVerify(id, dir, bad, opts.quarantine !== false);
  }

  private async afterBadVerify(id: string, dir: string, bad: BadItem[], quarantine: boolean): Promise<VerifyResult> {
    this.log.error({ event: 'image-corrupt', id, bad: bad.slice(0, 10) }, 'stored image failed verification');
    this.onVerifyFailed?.({ id, name: this.manifests.get(id)?.name ?? '', stage: 'stored', badItems: bad.length, first: describeBad(bad) });
    if (!quarantine) return { ok: false, id, bad, quarantined: false };
    this.manifests.delete(id);
    await rename(dir, this.layout.resolveInside('quarantine', `${id}.${rand()}`));
    await this.spares.drop(id);
    return { ok: false, id, bad, quarantined: true };
  }

  /** Copy-on-write clone of an image's files into `dest` (which must not exist yet). */
  async clone(id: string, dest: string): Promise<void> {
    return this.activity.busyWhile(() => this.cloneNow(id, dest));
  }

  private async cloneNow(id: string, dest: string): Promise<void> {
    const dir = this.layout.imageDir(id);
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
        if (this.activity.isLocked(old.id)) continue;
        await this.remove(old.id);
        removed.push(old.id);
      }
    }
    return removed;
  }

  /** Remove one image (rename out first, so it disappears atomically). */
  async remove(id: string): Promise<void> {
    const dir = this.layout.imageDir(id);
    const trash = this.layout.resolveInside('staging', `.trash-${id}-${rand()}`);
    try {
      await rename(dir, trash);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    this.manifests.delete(id);
    await rm(trash, { recursive: true, force: true });
    await this.spares.drop(id);
    this.log.info({ event: 'image-removed', id }, 'image removed');
  }

  // ---- receiving (receive.ts, receive-commit.ts) ---------------------------------------------

  /** Images being received, for the heartbeat (Receiver.receiving). */
  receiving(activeMs?: number, now?: number): Promise<Array<{ image: string; bytes: number; total: number }>> {
    return this.receiver.receiving(activeMs, now);
  }

  /** Get a staging folder ready to receive `manifest` and say which blocks must be sent (Receiver.prepare). */
  prepareReceive(manifestInput: unknown, opts: { baseId?: string } = {}): Promise<PrepareResult> {
    return this.receiver.prepare(manifestInput, opts);
  }

  /** Verify a staged image and make it visible atomically (ReceiveCommit.commit). */
  commitStaged(id: string): Promise<CommitResult> {
    return this.committer.commit(id);
  }

  /** Drop every staging folder of an image (failed or abandoned transfer). */
  abortStaged(id: string): Promise<void> {
    return this.receiver.abort(id);
  }

  /** Receive an image from a local folder holding its files (Receiver.receiveFromDir). */
  receiveFromDir(manifestInput: unknown, srcFilesDir: string, opts: { baseId?: string } = {}): Promise<string> {
    return this.receiver.receiveFromDir(manifestInput, srcFilesDir, opts);
  }
}

/** Newest modification time (ms) of a folder and everything below it. */
async function newestWrite(path: string): Promise<number> {
  const st = await lstat(path).catch(() => undefined);
  if (!st) return Date.now();
  let newest = st.mtimeMs;
  if (st.isDirectory()) for (const e of await readdir(path).catch(() => [] as string[])) newest = Math.max(newest, await newestWrite(join(path, e)));
  return newest;
}
