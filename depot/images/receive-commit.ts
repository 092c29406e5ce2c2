import { createHash } from 'node:crypto';
import { fsyncDir, fsyncTree } from '../../shared/durable-file.ts';
import { chmod, chown, lstat, open, readdir, readFile, rename, rm, writeFile, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { Logger } from '../../shared/logger.ts';
import { NavigatorError, errorMessage, isNavigatorError } from '../../shared/errors.ts';
import { blockLength, manifestId, parseManifest, totalBytes, type ImageManifest } from './manifest.ts';
import { checkFiles, readBlock, type BadItem } from './file-checks.ts';
import { fileIn, isEnospc, rand, type StoreLayout } from './store-layout.ts';
import type { StoreActivity } from './activity.ts';
import type { DeltaSeeds, ReceiveState } from './delta-seeds.ts';

// The end of a receive: verify a staged image and make it visible with one atomic rename
// (see "Delta receives" in receive.ts for why a delta's result is the manifest's bytes).

export type CommitResult = { ok: true; id: string; verifiedBytes: number } | { ok: false; id: string; bad: BadItem[] };

export interface ReceiveCommitOptions {
  layout: StoreLayout;
  activity: StoreActivity;
  seeds: DeltaSeeds;
  catalog: { has(id: string): Promise<boolean>; prune(): Promise<unknown> };
  /** A committed image's name: its newest version gets a spare copy. */
  received: (name: string) => void;
  log: Logger;
  /** A staged image failed verification (its bad blocks are asked for again). */
  refused?: (id: string, name: string, bad: BadItem[]) => void;
}

const TAKEN = 'another receive of this image is committing the staging folder; prepare again';

export class ReceiveCommit {
  private readonly layout: StoreLayout;
  private readonly seeds: DeltaSeeds;
  private readonly log: Logger;

  constructor(private readonly opts: ReceiveCommitOptions) {
    this.layout = opts.layout;
    this.seeds = opts.seeds;
    this.log = opts.log;
  }

  /**
   * Verify a staged image and make it visible with one atomic rename. Blocks written by the
   * sender are hashed; blocks of a delta come from the seed copy of the base. On a mismatch the
   * staging folder is kept so the sender can re-send just the bad blocks.
   */
  async commit(id: string): Promise<CommitResult> {
    this.layout.checkId(id);
    return this.opts.activity.withLock(id, async () => {
      const dirs = await this.layout.stagingDirs(id);
      if (await this.opts.catalog.has(id)) {
        for (const d of dirs) await this.seeds.dropStaging(d);
        await this.seeds.doneFor(id);
        return { ok: true, id, verifiedBytes: 0 };
      }
      const dir = dirs[0];
      if (!dir) throw new NavigatorError('NOT_FOUND', `no staged image ${id} in ${this.layout.dir}/staging`);
      const started = Date.now();
      let manifest: ImageManifest;
      try {
        manifest = parseManifest(JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')), `staged manifest of ${id}`);
        if (manifestId(manifest) !== id) throw new Error('manifest does not hash to the image id');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
          // Taken meanwhile by a commit in another process.
          if (await this.opts.catalog.has(id)) return { ok: true, id, verifiedBytes: 0 };
          return { ok: false, id, bad: [{ path: 'files', reason: TAKEN }] };
        }
        await this.seeds.dropStaging(dir);
        throw new NavigatorError('IMAGE_CORRUPT', `staged manifest of ${id} is invalid: ${errorMessage(err)}`);
      }
      const what = `image ${manifest.name} ${id}`;
      const needed = totalBytes(manifest);
      // The copies of the base land in seed/ by a rename at their end: wait for them here.
      if (isEnospc(await this.seeds.done(dir))) {
        await this.seeds.dropStaging(dir);
        throw this.layout.diskFull(needed, `copying the delta base of ${what}`);
      }
      // The commit works on the folder under a private name: a receive of the same image in
      // another process neither writes into it nor commits it meanwhile (start() puts a folder
      // left so by a crash back).
      const work = this.layout.resolveInside('staging', `.commit-${basename(dir)}`);
      try {
        await rename(dir, work);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        if (await this.opts.catalog.has(id)) return { ok: true, id, verifiedBytes: 0 };
        return { ok: false, id, bad: [{ path: 'files', reason: TAKEN }] };
      }
      let result: CommitResult;
      try {
        result = await this.verifyAndMerge(id, work, manifest);
      } catch (err) {
        // Nothing fits: drop the partial image rather than keep it for a resume.
        if (isNavigatorError(err, 'DISK_FULL') || isEnospc(err)) {
          await this.seeds.dropStaging(work);
          throw isNavigatorError(err) ? err : this.layout.diskFull(needed, `merging the received blocks of ${what}`);
        }
        await unprivate(work, dir);
        throw err;
      }
      if (!result.ok) {
        // Back under its name, where the sender writes the blocks again.
        if (!(await unprivate(work, dir))) return { ok: false, id, bad: [{ path: 'files', reason: 'staging folder moved; prepare again' }] };
        return result;
      }
      try {
        // Every verified byte on disk before the rename publishes it; the rename durable after.
        await fsyncTree(work);
        await rename(work, this.layout.imageDir(id));
        await fsyncDir(dirname(this.layout.imageDir(id)));
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== 'ENOTEMPTY' && code !== 'EEXIST') {
          await unprivate(work, dir);
          throw err;
        }
        // Another process committed the same image first: same content, keep theirs.
        await this.seeds.dropStaging(work);
      }
      for (const d of dirs.slice(1)) await this.seeds.dropStaging(d);
      // Seed copies for folders of this image gone meanwhile end now.
      await this.seeds.doneFor(id);
      this.log.info({ event: 'image-committed', id, name: manifest.name, durationMs: Date.now() - started }, 'received image verified and committed');
      await this.opts.catalog.prune();
      this.opts.received(manifest.name);
      return result;
    });
  }

  /** Verify a staging folder (private to this commit) and merge its seeds; see commit(). */
  private async verifyAndMerge(id: string, dir: string, manifest: ImageManifest): Promise<CommitResult> {
    const state = await this.seeds.readState(dir, id);
    // Seeds that are not there (failed copy, process restarted mid-copy) are made now.
    if (Object.keys(state.trusted).length > 0) {
      const todo = await this.seeds.missing(dir, state);
      if (todo.length > 0) {
        await this.seeds.seedDir(dir);
        const err = (await this.seeds.start(dir, state.baseId!, todo)) ?? (await this.seeds.done(dir));
        if (isEnospc(err)) throw this.layout.diskFull(totalBytes(manifest), `copying the delta base of image ${manifest.name} ${id}`);
        // A seed still missing: its blocks are no longer trusted, the sender sends them.
        const still = new Set((await this.seeds.missing(dir, state)).map((s) => s.path));
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
      this.opts.refused?.(id, manifest.name, bad);
      return { ok: false, id, bad };
    }
    const filesDir = join(dir, 'files');
    for (const m of merged) await rename(m.from, m.to);
    for (const f of manifest.files) await chmod(fileIn(filesDir, f.path), f.mode);
    await rm(join(dir, 'seed'), { recursive: true, force: true });
    await rm(join(dir, 'receive.json'), { force: true });
    await ownTree(dir);
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
    const bad = await checkFiles(filesDir, m, 'structure');
    if (bad.length > 0) return bad;
    const plan = await this.seeds.plan(state);
    for (const f of m.files) {
      const p = fileIn(filesDir, f.path);
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
          const readAt = (i: number) => readBlock(src, i * m.blockSize, blockLength(m, f, i));
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
}

/** Rename a commit's private folder back to its staging name (or a new one: false). */
async function unprivate(work: string, dir: string): Promise<boolean> {
  try {
    await rename(work, dir);
    return true;
  } catch {
    await rename(work, `${dir}.${rand()}`).catch(() => undefined);
    return false;
  }
}

/**
 * A committed image is the depot's alone. In staging its folders and files belong to the receive
 * account's group (the package's setgid staging folder, depot/install/layout.ts); that group
 * goes, with the setgid bit of the folders — which also keeps a clone (`cp -a`) from having to
 * make setgid folders, refused to the depot under systemd's RestrictSUIDSGID.
 */
async function ownTree(dir: string): Promise<void> {
  const gid = process.getgid?.() ?? -1;
  const walk = async (p: string): Promise<void> => {
    const st = await lstat(p);
    if (st.isSymbolicLink()) return;
    if (st.gid !== gid && gid >= 0) await chown(p, -1, gid);
    if (st.isDirectory()) {
      if (st.mode & 0o2000) await chmod(p, st.mode & 0o1777);
      for (const e of await readdir(p)) await walk(join(p, e));
    }
  };
  await walk(dir);
}
