import { constants as fsConstants } from 'node:fs';
import { copyFile, lstat, mkdir, readFile, rename, rm } from 'node:fs/promises';
import { basename, join } from 'node:path';
import type { Logger } from '../../shared/logger.ts';
import { errorMessage } from '../../shared/errors.ts';
import type { ImageManifest } from './manifest.ts';
import { rand, type StoreLayout } from './store-layout.ts';

// The seed copies of a delta receive (see "Delta receives" in receive.ts): the base image's
// files copied by the kernel into <staging>/seed/<index> in the background while the sender
// sends, and what a staging folder remembers about them (receive.json: which blocks come from
// the base).

/** What a staging folder remembers: which blocks were copied from a verified base image. */
export interface ReceiveState {
  id: string;
  baseId?: string;
  trusted: Record<string, number[]>;
}

/** A file of a delta receive copied from the base into seed/<index> (index in the base's manifest). */
export interface SeedFile {
  index: number;
  path: string;
  baseSize: number;
}

export interface DeltaSeedsOptions {
  layout: StoreLayout;
  /** The stored images a seed is copied from. */
  catalog: { getManifest(id: string): Promise<ImageManifest>; has(id: string): Promise<boolean> };
  /** Spare copies stand in for a copy of the base (spare-copies.ts). */
  spares: { beingMade(id: string): Promise<void> | undefined; take(id: string, n: number, dest: string): Promise<boolean> };
  log: Logger;
}

export class DeltaSeeds {
  /** Background copies of delta bases by staging folder; each resolves with its first error. */
  private readonly seeds = new Map<string, Promise<unknown>>();
  private readonly layout: StoreLayout;
  private readonly log: Logger;

  constructor(private readonly opts: DeltaSeedsOptions) {
    this.layout = opts.layout;
    this.log = opts.log;
  }

  /** Some seed copy is running (spares wait for a quiet store). */
  copying(): boolean {
    return this.seeds.size > 0;
  }

  /** A seed copy runs for this staging folder (started by this process). */
  copyingInto(dir: string): boolean {
    return this.seeds.has(dir);
  }

  /** The running copies, to wait for at stop. */
  running(): Promise<unknown>[] {
    return [...this.seeds.values()];
  }

  /** The staging folder's receive.json, trusted only while its base is still a stored image. */
  async readState(stagingDir: string, id: string): Promise<ReceiveState> {
    try {
      const s = JSON.parse(await readFile(join(stagingDir, 'receive.json'), 'utf8')) as ReceiveState;
      // Trust base copies only while the base is still a stored (verified, not quarantined) image.
      if (s.id === id && (!s.baseId || (await this.opts.catalog.has(s.baseId)))) return s;
    } catch {
      // fall through: nothing trusted, everything is hashed
    }
    return { id, trusted: {} };
  }

  /** The seed copy each file with trusted blocks is built from (none when the base is gone). */
  async plan(state: ReceiveState): Promise<Map<string, SeedFile>> {
    const out = new Map<string, SeedFile>();
    if (!state.baseId) return out;
    const base = await this.opts.catalog.getManifest(state.baseId).catch(() => undefined);
    for (const [j, old] of (base?.files ?? []).entries()) {
      if (state.trusted[old.path]?.length) out.set(old.path, { index: j, path: old.path, baseSize: old.size });
    }
    return out;
  }

  /** Seeded files of a staging folder whose copy is not there (finished copies are seed/<index>). */
  async missing(dir: string, state: ReceiveState): Promise<SeedFile[]> {
    const out: SeedFile[] = [];
    for (const s of (await this.plan(state)).values()) {
      const st = await lstat(join(dir, 'seed', String(s.index))).catch(() => undefined);
      if (!st?.isFile() || st.size !== s.baseSize) out.push(s);
    }
    return out;
  }

  /** The seed/ folder of a staging folder, made if it is not there (seeds copied again). */
  async seedDir(dir: string): Promise<void> {
    await mkdir(join(dir, 'seed')).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'EEXIST') throw err;
    });
  }

  /**
   * Copy the base's files into <dir>/seed/<index> in the background: copy_file_range or a reflink
   * (fs.copyFile with COPYFILE_FICLONE: no byte passes through this process), into a temporary
   * name renamed when complete, so seed/<index> exists only as a whole copy. The sender writes
   * into files/ meanwhile; the two never touch the same file. A spare of the base is taken
   * instead of copying when there is one. Resolves with the first error.
   */
  start(dir: string, baseId: string, files: SeedFile[]): Promise<unknown> {
    const started = Date.now();
    const task = (async (): Promise<unknown> => {
      // A spare of the base being made now is as good as this copy, and sooner done.
      const spare = this.opts.spares.beingMade(baseId);
      if (spare) await spare;
      for (const s of files) {
        if (await this.opts.spares.take(baseId, s.index, join(dir, 'seed', String(s.index)))) continue;
        // Copied outside the staging folder: a commit or abort elsewhere can then never carry a
        // half-made copy along (it is renamed in only if seed/ is still there).
        const tmp = this.layout.resolveInside('staging', `.seed-${rand()}`);
        try {
          await copyFile(join(this.layout.imageDir(baseId), 'files', s.path), tmp, fsConstants.COPYFILE_FICLONE);
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
  async done(dir: string): Promise<unknown> {
    let err: unknown;
    for (let p = this.seeds.get(dir); p; p = this.seeds.get(dir)) {
      err ??= await p;
      if (this.seeds.get(dir) === p) break;
    }
    return err;
  }

  /** Wait for the seed copies of every staging folder of image `id` in this process. */
  async doneFor(id: string): Promise<void> {
    for (const dir of [...this.seeds.keys()]) if (basename(dir).startsWith(`${id}.`)) await this.done(dir);
  }

  /** Remove a staging folder once its seed copies (this process) have stopped writing into it. */
  async dropStaging(dir: string): Promise<void> {
    await rm(dir, { recursive: true, force: true });
    // A copy still running writes into an unlinked file; wait for it so its space is free again.
    await this.done(dir);
  }
}
