import { chmod, lstat, mkdir, open, readdir, readFile, rename, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import type { Logger } from '../../shared/logger.ts';
import { NavigatorError } from '../../shared/errors.ts';
import { blocksBytes, canonicalJson, manifestId, parseManifest, totalBytes, type ImageManifest } from './manifest.ts';
import { hashBlocks } from './file-checks.ts';
import { ID_RE, fileIn, isEnospc, rand, type StoreLayout } from './store-layout.ts';
import type { StoreActivity } from './activity.ts';
import type { DeltaSeeds, ReceiveState, SeedFile } from './delta-seeds.ts';
import type { CommitResult } from './receive-commit.ts';

// Receiving an image into staging: prepare (say which blocks to send), the sender writes them
// into files/<path>, commit (receive-commit.ts) verifies and renames; abort drops the folder.
//
// Delta receives. When the store holds another version of the image (the base), prepare asks
// only for the blocks whose hash differs from the base's block at the same index and answers at
// once: the sender writes those blocks into sparse files/<path> while the base's files are
// copied by the kernel (reflink, else copy_file_range: no byte through this process) into
// seed/<n> in the background (delta-seeds.ts), so the copy (seconds for a large image on a file
// system without reflink) overlaps the transfer instead of preceding it. Commit waits for the
// copy, then hashes each block the sender wrote and writes that same, verified buffer into the
// seed copy, which then replaces files/<path>. Why the result is the manifest's bytes: every
// sent block's SHA-256 is checked at commit; every other block is a kernel copy of the
// same-index block of the base, whose manifest has the identical hash and which was itself
// verified block by block when it was committed (or imported); a seed is used only if the copy
// completed (it is written under a temporary name and renamed, and its size must be the base
// file's) and only while the base is still a stored image — a base that verify() found damaged
// is in quarantine, so its blocks are no longer trusted and the sender is asked for them. A
// spare (spare-copies.ts) stands in for that copy: the same kernel copy, made earlier while the
// store was idle, then hashed against the manifest in the background and by every verify() of
// its image (a damaged one is dropped); a delta that takes it before that hash ran has exactly
// the guarantee of its own copy. What this does not catch is damage to the base (or its spare)
// at rest that no verify() has found yet: the new image then carries it, exactly as a clone of
// the base would, and verify() of either image finds it (re-hashing the base here would cost a
// full read and hash of the image on every delta, which is what the delta exists to avoid).

/**
 * Mode of a staged file until commit sets the manifest's: writable by the group too, because the
 * sender may log in as another account than this depot's (the package's receive-only account,
 * whose group the setgid staging folder hands to everything made in it). Others get nothing.
 */
const STAGED_FILE_MODE = 0o660;

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

export interface ReceiverOptions {
  layout: StoreLayout;
  activity: StoreActivity;
  seeds: DeltaSeeds;
  catalog: {
    has(id: string): Promise<boolean>;
    getManifest(id: string): Promise<ImageManifest>;
    /** Stored images, newest first. */
    list(): Promise<Array<{ id: string; name: string }>>;
    freeBytes(): Promise<number>;
  };
  spares: { bytes(id: string): Promise<number>; dropAll(): Promise<void> };
  /** Verify and commit a staged image (ReceiveCommit.commit). */
  commit: (id: string) => Promise<CommitResult>;
  log: Logger;
}

export class Receiver {
  private readonly layout: StoreLayout;
  private readonly seeds: DeltaSeeds;
  private readonly log: Logger;
  /** Manifests of staging folders by folder name (receiving() runs every heartbeat). */
  private readonly stagingManifests = new Map<string, ImageManifest>();

  constructor(private readonly opts: ReceiverOptions) {
    this.layout = opts.layout;
    this.seeds = opts.seeds;
    this.log = opts.log;
  }

  /**
   * Images being received, for the heartbeat: staging folders written to within `activeMs`
   * (a folder left by a cut-off transfer stays for a resume but is not "in progress"), with the
   * bytes on disk so far (allocated blocks: the files are sparse until written; blocks seeded
   * from a delta base count as present) and the image's total.
   */
  async receiving(activeMs = 60_000, now = Date.now()): Promise<Array<{ image: string; bytes: number; total: number }>> {
    const out: Array<{ image: string; bytes: number; total: number }> = [];
    const entries = await readdir(join(this.layout.dir, 'staging')).catch(() => [] as string[]);
    for (const e of entries) {
      // A folder being verified (commit) is still an image being received.
      const name = e.startsWith('.commit-') ? e.slice(8) : e;
      const id = name.split('.')[0] ?? '';
      if (name.startsWith('.') || !ID_RE.test(id)) continue;
      const dir = this.layout.resolveInside('staging', e);
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
        const st = await stat(fileIn(join(dir, 'files'), f.path)).catch(() => undefined);
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
  async prepare(manifestInput: unknown, opts: { baseId?: string } = {}): Promise<PrepareResult> {
    const manifest = parseManifest(manifestInput);
    const id = manifestId(manifest);
    return this.opts.activity.withLock(id, async () => {
      if (await this.opts.catalog.has(id)) return { state: 'present', id };
      const existing = (await this.layout.stagingDirs(id))[0];
      if (existing) return this.resume(existing, id, manifest);
      return this.startNew(id, manifest, opts);
    });
  }

  /** Prepare over a staging folder left by a cut-off transfer: ask for what is not on disk yet. */
  private async resume(existing: string, id: string, manifest: ImageManifest): Promise<PrepareResult> {
    const total = totalBytes(manifest);
    const state = await this.seeds.readState(existing, id);
    const filesDir = join(existing, 'files');
    const missing: MissingBlocks[] = [];
    for (const f of manifest.files) {
      const p = fileIn(filesDir, f.path);
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
        await chmod(p, STAGED_FILE_MODE);
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
    if (state.baseId && Object.keys(state.trusted).length > 0 && !this.seeds.copyingInto(existing)) {
      const base = state.baseId;
      const todo = await this.seeds.missing(existing, state);
      if (todo.length > 0) {
        await this.seeds.seedDir(existing);
        this.seeds.start(existing, base, todo);
      }
    }
    if (!(await lstat(join(existing, 'manifest.json')).then(() => true, () => false))) {
      // Committed elsewhere meanwhile: what is left at this path was made by this resume.
      await rm(existing, { recursive: true, force: true });
      throw Object.assign(new Error(`staging folder ${existing} was taken by another receive of the same image`), { code: 'ENOENT' });
    }
    const missingBytes = blocksBytes(manifest, missing);
    this.log.info({ event: 'receive-resumed', id, missingBytes, totalBytes: total }, 'resuming a cut-off receive');
    return { state: 'staging', id, filesDir, ...(state.baseId ? { baseId: state.baseId } : {}), resumed: true, missing, missingBytes, totalBytes: total };
  }

  /** Prepare a new staging folder: sparse files, and for a delta the seed copies of the base. */
  private async startNew(id: string, manifest: ImageManifest, opts: { baseId?: string }): Promise<PrepareResult> {
    const total = totalBytes(manifest);
    const base = await this.pickBase(manifest, opts.baseId);
    const baseManifest = base ? await this.opts.catalog.getManifest(base) : undefined;
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
    const missingBytes = blocksBytes(manifest, missing);
    // A delta holds the seed copies and, until commit merges them, the sent blocks.
    const needed = seeded.length > 0 ? total + missingBytes : total;
    let free = await this.opts.catalog.freeBytes();
    // The base's spare (if any) becomes the seed: its space is already taken.
    if (free + (base && seeded.length > 0 ? await this.opts.spares.bytes(base) : 0) < needed) {
      await this.opts.spares.dropAll();
      free = await this.opts.catalog.freeBytes();
      if (free < needed) throw this.layout.diskFull(needed, `receiving image ${manifest.name} ${id}`, free);
    }

    const work = this.layout.resolveInside('staging', `.new-${rand()}`);
    const filesDir = join(work, 'files');
    try {
      await mkdir(filesDir, { recursive: true });
      if (seeded.length > 0) await mkdir(join(work, 'seed'));
      for (const f of manifest.files) {
        // Sparse files of the final size: the sender writes its blocks at their offsets.
        const p = fileIn(filesDir, f.path);
        await mkdir(dirname(p), { recursive: true });
        await writeFile(p, '');
        await chmod(p, STAGED_FILE_MODE);
        await truncate(p, f.size);
      }
      await writeFile(join(work, 'receive.json'), JSON.stringify(state));
      // manifest.json last: a staging folder with a manifest is complete enough to resume.
      await writeFile(join(work, 'manifest.json'), canonicalJson(manifest));
    } catch (err) {
      await rm(work, { recursive: true, force: true });
      if (isEnospc(err)) throw this.layout.diskFull(needed, `receiving image ${manifest.name} ${id}`);
      throw err;
    }
    const final = this.layout.resolveInside('staging', `${id}.${rand()}`);
    try {
      await rename(work, final);
    } catch (err) {
      await rm(work, { recursive: true, force: true });
      throw err;
    }
    if (base && seeded.length > 0) this.seeds.start(final, base, seeded);
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

  /** The newest stored version of the same image name, or the given base. */
  private async pickBase(m: ImageManifest, baseId?: string): Promise<string | undefined> {
    if (baseId) {
      if (await this.opts.catalog.has(baseId)) return baseId;
      return undefined;
    }
    const same = (await this.opts.catalog.list()).filter((i) => i.name === m.name);
    return same[0]?.id;
  }

  /** Drop every staging folder of an image (failed or abandoned transfer). */
  async abort(id: string): Promise<void> {
    this.layout.checkId(id);
    await this.opts.activity.withLock(id, async () => {
      for (const d of await this.layout.stagingDirs(id)) await this.seeds.dropStaging(d);
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
        prep = await this.prepare(manifest, opts);
      } catch (err) {
        // The staging folder went from under the resume (committed by another process).
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw err;
      }
      if (prep.state === 'present') return id;
      try {
        for (const mb of prep.missing) {
          const src = await open(join(resolve(srcFilesDir), mb.path), 'r');
          const dst = await open(fileIn(prep.filesDir, mb.path), 'r+').catch(async (err: unknown) => {
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
          await this.abort(id);
          throw this.layout.diskFull(prep.missingBytes, `receiving image ${manifest.name} ${id}`);
        }
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
          // Another process is committing (or committed) the folder this one was writing into.
          if (await this.opts.catalog.has(id)) return id;
          continue;
        }
        throw err;
      }
      const c = await this.opts.commit(id);
      if (c.ok) return id;
    }
    await this.abort(id);
    throw new NavigatorError('IMAGE_CORRUPT', `image ${id} received from ${srcFilesDir} does not match its manifest`);
  }
}
