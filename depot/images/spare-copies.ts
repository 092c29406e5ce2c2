import { constants as fsConstants } from 'node:fs';
import { copyFile, lstat, mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../../shared/logger.ts';
import type { Clock, TimerHandle } from '../../shared/clock.ts';
import { errorMessage } from '../../shared/errors.ts';
import { totalBytes, type ImageManifest } from './manifest.ts';
import { hashBlocks, hashFile } from './file-checks.ts';
import { ID_RE, rand, type StoreLayout } from './store-layout.ts';

// Spare copies. spare/<id>/<n> is a copy of file n (manifest order) of image id, made in the
// background when the store is quiet, for the newest version of each name received here: the
// next delta takes its files as its seed (a rename) instead of copying the base while the sender
// waits (receive.ts, "Delta receives"). It is published (renamed into place) once copied, then
// hashed against the manifest; a mismatch drops it and sends the image to verify(), which
// quarantines it if the stored copy is the damaged one. Costs: one image's space per name, and
// one copy and hash per received version.

export interface SpareSettings {
  /** Spares are made at all (ImageStoreOptions.spareCopies). */
  enabled: boolean;
  /** Images smaller than this get no spare. */
  minBytes: number;
  /** Quiet time before spares are made. */
  delayMs: number;
}

/** What the spares need of the store's catalog. */
export interface SpareCatalog {
  list(): Promise<Array<{ id: string; name: string; bytes: number }>>;
  getManifest(id: string): Promise<ImageManifest>;
  has(id: string): Promise<boolean>;
  freeBytes(): Promise<number>;
  verify(id: string): Promise<unknown>;
}

export interface SpareCopiesOptions {
  settings: SpareSettings;
  /** When spares are due (the store's quiet time), and the waits while it is busy. */
  clock: Clock;
  layout: StoreLayout;
  catalog: SpareCatalog;
  /** True while the store imports, verifies, clones or receives (spares wait for a quiet store). */
  storeBusy: () => boolean;
  /** When the last import, verify, clone, receive or commit ended. */
  lastActive: () => number;
  log: Logger;
}

export class SpareCopies {
  readonly enabled: boolean;
  private readonly settings: SpareSettings;
  private readonly layout: StoreLayout;
  private readonly log: Logger;
  /** Names of images received here: their newest version gets a spare. */
  private readonly receivedNames = new Set<string>();
  private timer: TimerHandle | undefined;
  /** The spare being made (one at a time); `copied` once its files are in place, before the hash. */
  private build: { id: string; copied: Promise<void>; done: Promise<void> } | undefined;
  /** Bumped to stop a spare being made (space needed, image removed, stop). */
  private epoch = 0;
  private stopped = false;

  constructor(private readonly opts: SpareCopiesOptions) {
    this.settings = opts.settings;
    this.enabled = opts.settings.enabled;
    this.layout = opts.layout;
    this.log = opts.log;
  }

  /** An image of this name was received: its newest version gets a spare once the store is quiet. */
  received(name: string): void {
    this.receivedNames.add(name);
    this.schedule();
  }

  /** Stop making spares; returns the spare being made, to wait for. */
  stop(): Promise<void> | undefined {
    this.stopped = true;
    this.epoch++;
    this.opts.clock.clear(this.timer);
    return this.build?.done;
  }

  /** Check the spare of a verified image (verify() checks it with its image); a damaged one is dropped. */
  async check(id: string, manifest: ImageManifest): Promise<void> {
    const spare = this.layout.resolveInside('spare', id);
    for (const [n, f] of manifest.files.entries()) {
      const h = await hashFile(join(spare, String(n)), manifest.blockSize, { wholeFile: false }).catch(() => undefined);
      if (h && (h.size !== f.size || h.blocks.some((b, i) => b !== f.blocks[i]))) {
        this.log.warn({ event: 'spare-mismatch', id, path: f.path }, 'spare copy damaged; dropped');
        await this.drop(id);
        break;
      }
    }
  }

  /** When the spare of `id` is being made now: resolves once its files are in place (before the hash). */
  beingMade(id: string): Promise<void> | undefined {
    return this.build?.id === id ? this.build.copied : undefined;
  }

  /** Move file n of image id's spare to dest; false when there is no such spare file. */
  async take(id: string, n: number, dest: string): Promise<boolean> {
    if (!this.enabled) return false;
    return rename(this.layout.resolveInside('spare', id, String(n)), dest).then(
      () => true,
      () => false,
    );
  }

  /** Bytes the spare of `id` takes. */
  async bytes(id: string): Promise<number> {
    const dir = this.layout.resolveInside('spare', id);
    let n = 0;
    for (const e of await readdir(dir).catch(() => [] as string[])) n += (await stat(join(dir, e)).catch(() => undefined))?.size ?? 0;
    return n;
  }

  async drop(id: string): Promise<void> {
    if (this.build?.id === id) {
      this.epoch++;
      await this.build.done.catch(() => undefined);
    }
    await rm(this.layout.resolveInside('spare', id), { recursive: true, force: true });
  }

  /** Free the space of every spare (an import or receive needs it). */
  async dropAll(): Promise<void> {
    this.epoch++;
    await this.build?.done.catch(() => undefined);
    const dir = join(this.layout.dir, 'spare');
    for (const e of await readdir(dir).catch(() => [] as string[])) await rm(join(dir, e), { recursive: true, force: true });
  }

  private schedule(inMs = this.settings.delayMs): void {
    if (!this.enabled || this.stopped) return;
    this.opts.clock.clear(this.timer);
    this.timer = this.opts.clock.setTimeout(() => {
      this.timer = undefined;
      this.refresh().catch((err) => this.log.warn({ event: 'spare-failed', err: errorMessage(err) }, 'making a spare copy failed'));
    }, inMs);
  }

  /** Make the spares that are wanted (one at a time) and drop the others. */
  private async refresh(): Promise<void> {
    // Not while receiving (locks held, seeds copying) or making one: try again later.
    if (this.build || this.opts.storeBusy()) return this.schedule();
    // Only once the store has been quiet for the whole delay.
    const quietMs = this.opts.clock.now() - this.opts.lastActive();
    if (quietMs < this.settings.delayMs) return this.schedule(this.settings.delayMs - quietMs);
    const spareDir = join(this.layout.dir, 'spare');
    const have = (await readdir(spareDir).catch(() => [] as string[])).filter((e) => ID_RE.test(e));
    const images = await this.opts.catalog.list();
    const names = new Set(this.receivedNames);
    for (const img of images) if (have.includes(img.id)) names.add(img.name);
    const want: typeof images = [];
    for (const name of names) {
      const newest = images.find((i) => i.name === name);
      if (newest && newest.bytes >= this.settings.minBytes) want.push(newest);
    }
    for (const e of have) if (!want.some((w) => w.id === e)) await rm(join(spareDir, e), { recursive: true, force: true });
    for (const img of want) {
      if (have.includes(img.id) || this.stopped) continue;
      const free = await this.opts.catalog.freeBytes();
      if (free - img.bytes < img.bytes) {
        this.log.info({ event: 'spare-skipped', id: img.id, bytes: img.bytes, freeBytes: free }, 'no spare copy: it would leave less free space than the image takes');
        continue;
      }
      let copied!: () => void;
      const copiedP = new Promise<void>((r) => (copied = r));
      const done = this.make(img.id, this.epoch, copied).finally(copied);
      this.build = { id: img.id, copied: copiedP, done: done.then(() => undefined, () => undefined) };
      let damaged = false;
      try {
        damaged = await done;
      } finally {
        this.build = undefined;
      }
      // The copy did not match: find out whether the stored image is damaged (quarantine).
      if (damaged) await this.opts.catalog.verify(img.id);
    }
  }

  /** Make spare/<id>; true when the copy does not match the manifest. */
  private async make(id: string, epoch: number, copied: () => void): Promise<boolean> {
    const m = await this.opts.catalog.getManifest(id);
    const tmp = this.layout.resolveInside('spare', `.${id}.${rand()}`);
    const dir = this.layout.resolveInside('spare', id);
    const started = Date.now();
    try {
      await mkdir(tmp);
      for (const [n, f] of m.files.entries()) {
        if (epoch !== this.epoch) return false;
        await copyFile(join(this.layout.imageFilesDir(id), f.path), join(tmp, String(n)), fsConstants.COPYFILE_FICLONE);
      }
      // Published only if the image is still stored and nothing asked to stop meanwhile.
      if (epoch !== this.epoch || !(await this.opts.catalog.has(id))) return false;
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
    while (this.opts.storeBusy()) {
      if (epoch !== this.epoch) return false;
      await this.opts.clock.sleep(100);
    }
    return epoch === this.epoch;
  }
}
