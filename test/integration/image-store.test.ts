import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ImageStore } from '../../depot/images/catalog.ts';
import { canonicalJson, manifestId } from '../../depot/images/manifest.ts';
import { isNavigatorError, NavigatorError } from '../../shared/errors.ts';

const BLOCK = 256 * 1024;
let root: string;

async function makeSource(dir: string, diskBytes: number, seedByte?: number): Promise<void> {
  await mkdir(join(dir, 'conf'), { recursive: true });
  const data = seedByte === undefined ? randomBytes(diskBytes) : Buffer.alloc(diskBytes, seedByte);
  await writeFile(join(dir, 'disk.img'), data);
  await writeFile(join(dir, 'conf', 'machine.vmx'), 'displayName = "zabbix"\n', { mode: 0o640 });
  await writeFile(join(dir, 'empty.log'), '');
}

async function expectError(p: Promise<unknown>, code: string): Promise<NavigatorError> {
  try {
    await p;
  } catch (err) {
    if (!isNavigatorError(err)) throw err;
    expect(err.code).toBe(code);
    return err;
  }
  throw new Error(`expected ${code}, it succeeded`);
}

async function corruptByte(file: string, offset: number): Promise<void> {
  const fh = await open(file, 'r+');
  const b = Buffer.alloc(1);
  await fh.read(b, 0, 1, offset);
  b[0] = b[0]! ^ 0xff;
  await fh.write(b, 0, 1, offset);
  await fh.close();
}

/** Write the given blocks of an image's files from `srcFiles` into a staging folder (what a sender does). */
async function writeBlocks(srcFiles: string, filesDir: string, blockSize: number, items: Array<{ path: string; blocks: number[] }>): Promise<void> {
  for (const it of items) {
    const src = await open(join(srcFiles, it.path), 'r');
    const dst = await open(join(filesDir, it.path), 'r+');
    const buf = Buffer.alloc(blockSize);
    for (const i of it.blocks) {
      const { bytesRead } = await src.read(buf, 0, blockSize, i * blockSize);
      await dst.write(buf, 0, bytesRead, i * blockSize);
    }
    await src.close();
    await dst.close();
  }
}

async function until(what: string, check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const exists = (p: string) => stat(p).then(
  () => true,
  () => false,
);

/** Sender store with version 1 and version 2 (blocks 3 and 6 of disk.img changed, one file added). */
async function twoVersions(tag: string): Promise<{ sender: ImageStore; v1: string; v2: string }> {
  const src = join(root, `src-${tag}`);
  await makeSource(src, 8 * BLOCK);
  const sender = new ImageStore({ dir: join(root, `sender-${tag}`), keepVersions: 3, blockSize: BLOCK });
  await sender.start();
  const v1 = await sender.import(src, 'zabbix', { version: '1', created: new Date(Date.UTC(2026, 0, 1)) });
  for (const b of [3, 6]) await corruptByte(join(src, 'disk.img'), b * BLOCK + 99);
  await writeFile(join(src, 'conf', 'new.cfg'), 'added in version 2\n');
  const v2 = await sender.import(src, 'zabbix', { version: '2', created: new Date(Date.UTC(2026, 0, 2)) });
  return { sender, v1, v2 };
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'nav-store-test-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('image store', () => {
  it('imports a folder, lists it, verifies it and clones it', async () => {
    const src = join(root, 'src1');
    await makeSource(src, 3 * BLOCK + 1000);
    const store = new ImageStore({ dir: join(root, 'store1'), keepVersions: 2, blockSize: BLOCK });
    await store.start();
    const id = await store.import(src, 'zabbix', { version: '6.0' });
    expect(id).toMatch(/^[0-9a-f]{64}$/);
    expect(await store.has(id)).toBe(true);
    const m = await store.getManifest(id);
    expect(manifestId(m)).toBe(id);
    expect(m.files.map((f) => f.path)).toEqual(['conf/machine.vmx', 'disk.img', 'empty.log']);
    const disk = m.files.find((f) => f.path === 'disk.img')!;
    expect(disk.blocks).toHaveLength(4);
    expect(m.files.find((f) => f.path === 'conf/machine.vmx')!.mode).toBe(0o640);
    expect(m.files.find((f) => f.path === 'empty.log')!.blocks).toEqual([]);
    // The stored manifest is the canonical JSON that hashes to the id.
    expect(await readFile(join(store.dir, 'images', id, 'manifest.json'), 'utf8')).toBe(canonicalJson(m));
    expect(await store.list()).toEqual([expect.objectContaining({ id, name: 'zabbix', version: '6.0', bytes: 3 * BLOCK + 1000 + 23, files: 3 })]);
    expect(await store.status(id)).toMatchObject({ id, state: 'ready', name: 'zabbix' });
    expect(await store.verify(id)).toEqual({ ok: true, id });

    const dest = join(root, 'containers', 'c1');
    await store.clone(id, dest);
    expect((await readFile(join(dest, 'disk.img'))).equals(await readFile(join(src, 'disk.img')))).toBe(true);
    expect((await stat(join(dest, 'conf', 'machine.vmx'))).mode & 0o777).toBe(0o640);
    // Writing into the clone leaves the stored image untouched.
    await writeFile(join(dest, 'disk.img'), 'changed');
    expect(await store.verify(id)).toEqual({ ok: true, id });
    await expectError(store.clone(id, dest), 'CONFLICT');
    // Staging holds nothing after an import.
    expect(await readdir(join(store.dir, 'staging'))).toEqual([]);
  });

  it('detects a corrupt block at rest, quarantines the image and refuses to clone it', async () => {
    const src = join(root, 'src2');
    await makeSource(src, 4 * BLOCK);
    const store = new ImageStore({ dir: join(root, 'store2'), keepVersions: 2, blockSize: BLOCK });
    await store.start();
    const id = await store.import(src, 'zabbix');
    await corruptByte(join(store.dir, 'images', id, 'files', 'disk.img'), 2 * BLOCK + 17);
    const r = await store.verify(id);
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.bad).toEqual([{ path: 'disk.img', block: 2, reason: 'block hash mismatch' }]);
    expect(r.quarantined).toBe(true);
    expect(await store.has(id)).toBe(false);
    expect(await store.status(id)).toMatchObject({ state: 'absent' });
    await expectError(store.clone(id, join(root, 'containers', 'c2')), 'NOT_FOUND');
    expect((await readdir(join(store.dir, 'quarantine'))).some((e) => e.startsWith(id))).toBe(true);
  });

  it('refuses a staged image with a damaged block and commits it once the block is fixed', async () => {
    const src = join(root, 'src3');
    await makeSource(src, 3 * BLOCK);
    const sender = new ImageStore({ dir: join(root, 'store3a'), keepVersions: 2, blockSize: BLOCK });
    const target = new ImageStore({ dir: join(root, 'store3b'), keepVersions: 2 });
    await sender.start();
    await target.start();
    const id = await sender.import(src, 'zabbix');
    const m = await sender.getManifest(id);
    const prep = await target.prepareReceive(m);
    expect(prep.state).toBe('staging');
    if (prep.state !== 'staging') return;
    expect(prep.missingBytes).toBe(3 * BLOCK + 23);
    // Write everything, then damage block 1 on the target's disk.
    for (const f of m.files) await writeFile(join(prep.filesDir, f.path), await readFile(join(sender.imageFilesDir(id), f.path)));
    await corruptByte(join(prep.filesDir, 'disk.img'), BLOCK + 5);
    const c1 = await target.commitStaged(id);
    expect(c1).toEqual({ ok: false, id, bad: [{ path: 'disk.img', block: 1, reason: 'block hash mismatch' }] });
    expect(await target.has(id)).toBe(false);
    // A resume asks for exactly that block.
    const again = await target.prepareReceive(m);
    expect(again.state === 'staging' && again.resumed && again.missing).toEqual([{ path: 'disk.img', size: 3 * BLOCK, blocks: [1] }]);
    await corruptByte(join(prep.filesDir, 'disk.img'), BLOCK + 5);
    const c2 = await target.commitStaged(id);
    expect(c2).toMatchObject({ ok: true, id });
    expect(await target.verify(id)).toEqual({ ok: true, id });
    expect(await readdir(join(target.dir, 'staging'))).toEqual([]);
  });

  it('refuses manifests and ids that point outside the store', async () => {
    const store = new ImageStore({ dir: join(root, 'store4'), keepVersions: 2 });
    await store.start();
    const evil = {
      format: 1,
      name: 'evil',
      version: '1',
      created: new Date().toISOString(),
      blockSize: BLOCK,
      files: [{ path: '../../etc/cron.d/x', size: 1, mode: 0o644, sha256: 'a'.repeat(64), blocks: ['a'.repeat(64)] }],
    };
    const e = await expectError(store.prepareReceive(evil), 'BAD_REQUEST');
    expect(e.message).toContain("contains '..'");
    await expectError(store.prepareReceive({ ...evil, files: [{ ...evil.files[0]!, path: '/etc/passwd' }] }), 'BAD_REQUEST');
    await expectError(store.prepareReceive({ ...evil, files: [{ ...evil.files[0]!, path: 'a\0b' }] }), 'BAD_REQUEST');
    await expectError(store.status('../../etc'), 'PATH_OUTSIDE_STORE');
    await expectError(store.clone('../images/x', join(root, 'x')), 'PATH_OUTSIDE_STORE');
    await expectError(store.verify('zz'), 'BAD_REQUEST');
    expect(() => store.resolveInside('..', 'etc')).toThrow(/outside the image store/);
    expect(await readdir(join(store.dir, 'staging'))).toEqual([]);
  });

  it('keeps the last K versions of a name and never removes a pinned one', async () => {
    const pinned = new Set<string>();
    const store = new ImageStore({ dir: join(root, 'store5'), keepVersions: 2, blockSize: BLOCK, pinned: () => pinned });
    await store.start();
    const ids: string[] = [];
    for (let v = 1; v <= 4; v++) {
      const src = join(root, `src5-${v}`);
      await makeSource(src, BLOCK, v);
      ids.push(await store.import(src, 'zabbix', { version: String(v), created: new Date(Date.UTC(2026, 0, v)) }));
      if (v === 1) pinned.add(ids[0]!);
    }
    const other = join(root, 'src5-other');
    await makeSource(other, BLOCK, 99);
    const otherId = await store.import(other, 'mysql');
    const held = (await store.list()).map((i) => i.id).sort();
    // v1 is pinned (in use), v3 and v4 are the newest two; v2 was removed.
    expect(held).toEqual([ids[0]!, ids[2]!, ids[3]!, otherId].sort());
    pinned.clear();
    expect(await store.prune()).toEqual([ids[0]]);
  });

  it('receives the same image concurrently without corruption (same process and two store instances)', async () => {
    const src = join(root, 'src6');
    await makeSource(src, 8 * BLOCK);
    const sender = new ImageStore({ dir: join(root, 'store6a'), keepVersions: 2, blockSize: BLOCK });
    await sender.start();
    const id = await sender.import(src, 'zabbix');
    const m = await sender.getManifest(id);
    const dir = join(root, 'store6b');
    const t1 = new ImageStore({ dir, keepVersions: 2 });
    const t2 = new ImageStore({ dir, keepVersions: 2 });
    await t1.start();
    await t2.start();
    const results = await Promise.all([
      t1.receiveFromDir(m, sender.imageFilesDir(id)),
      t1.receiveFromDir(m, sender.imageFilesDir(id)),
      t2.receiveFromDir(m, sender.imageFilesDir(id)),
      t2.receiveFromDir(m, sender.imageFilesDir(id)),
    ]);
    expect(results).toEqual([id, id, id, id]);
    expect(await t1.verify(id)).toEqual({ ok: true, id });
    expect(await readdir(join(dir, 'staging'))).toEqual([]);
    expect(await readdir(join(dir, 'images'))).toEqual([id]);
  });
});

describe('delta receives (a version of the image is already stored)', () => {
  it('asks only for the changed blocks, answers before the base is copied, merges at commit, and the result verifies', async () => {
    const { sender, v1, v2 } = await twoVersions('d1');
    const target = new ImageStore({ dir: join(root, 'target-d1'), keepVersions: 3 });
    await target.start();
    await target.receiveFromDir(await sender.getManifest(v1), sender.imageFilesDir(v1));
    const m2 = await sender.getManifest(v2);
    const prep = await target.prepareReceive(m2);
    expect(prep.state).toBe('staging');
    if (prep.state !== 'staging') return;
    expect(prep).toMatchObject({ baseId: v1, resumed: false, missingBytes: 2 * BLOCK + 19 });
    expect(prep.missing).toEqual([
      { path: 'conf/new.cfg', size: 19, blocks: [0] },
      { path: 'disk.img', size: 8 * BLOCK, blocks: [3, 6] },
    ]);
    // The sender's files are sparse: the base's blocks are copied beside them, not into them.
    expect((await stat(join(prep.filesDir, 'disk.img'))).blocks * 512).toBeLessThan(4 * BLOCK);
    await writeBlocks(sender.imageFilesDir(v2), prep.filesDir, BLOCK, prep.missing);
    expect(await target.commitStaged(v2)).toEqual({ ok: true, id: v2, verifiedBytes: 8 * BLOCK + 23 + 19 });
    expect(await target.verify(v2)).toEqual({ ok: true, id: v2 });
    expect(await target.verify(v1)).toEqual({ ok: true, id: v1 });
    expect((await readFile(join(target.imageFilesDir(v2), 'disk.img'))).equals(await readFile(join(sender.imageFilesDir(v2), 'disk.img')))).toBe(true);
    expect((await stat(join(target.imageFilesDir(v2), 'conf', 'machine.vmx'))).mode & 0o777).toBe(0o640);
    expect(await readdir(join(target.dir, 'images', v2))).toEqual(['files', 'manifest.json']);
    expect(await readdir(join(target.dir, 'staging'))).toEqual([]);
  });

  it('a damaged sent block is refused and asked for again; a cut-off delta resumes with only what is missing', async () => {
    const { sender, v1, v2 } = await twoVersions('d2');
    const target = new ImageStore({ dir: join(root, 'target-d2'), keepVersions: 3 });
    await target.start();
    await target.receiveFromDir(await sender.getManifest(v1), sender.imageFilesDir(v1));
    const m2 = await sender.getManifest(v2);
    const prep = await target.prepareReceive(m2);
    if (prep.state !== 'staging') throw new Error('expected staging');
    // Cut off after block 3 of disk.img.
    await writeBlocks(sender.imageFilesDir(v2), prep.filesDir, BLOCK, [{ path: 'disk.img', blocks: [3] }]);
    const again = await target.prepareReceive(m2);
    expect(again).toMatchObject({ state: 'staging', resumed: true, baseId: v1, filesDir: prep.filesDir, missingBytes: BLOCK + 19 });
    expect(again.state === 'staging' && again.missing).toEqual([
      { path: 'conf/new.cfg', size: 19, blocks: [0] },
      { path: 'disk.img', size: 8 * BLOCK, blocks: [6] },
    ]);
    await writeBlocks(sender.imageFilesDir(v2), prep.filesDir, BLOCK, [{ path: 'conf/new.cfg', blocks: [0] }, { path: 'disk.img', blocks: [6] }]);
    await corruptByte(join(prep.filesDir, 'disk.img'), 6 * BLOCK + 1);
    expect(await target.commitStaged(v2)).toEqual({ ok: false, id: v2, bad: [{ path: 'disk.img', block: 6, reason: 'block hash mismatch' }] });
    await writeBlocks(sender.imageFilesDir(v2), prep.filesDir, BLOCK, [{ path: 'disk.img', blocks: [6] }]);
    expect(await target.commitStaged(v2)).toMatchObject({ ok: true, id: v2 });
    expect(await target.verify(v2)).toEqual({ ok: true, id: v2 });
  });

  it('a base found damaged (quarantined) before the commit is no longer trusted: its blocks are asked for and verified', async () => {
    const { sender, v1, v2 } = await twoVersions('d3');
    const target = new ImageStore({ dir: join(root, 'target-d3'), keepVersions: 3 });
    await target.start();
    await target.receiveFromDir(await sender.getManifest(v1), sender.imageFilesDir(v1));
    const prep = await target.prepareReceive(await sender.getManifest(v2));
    if (prep.state !== 'staging') throw new Error('expected staging');
    await writeBlocks(sender.imageFilesDir(v2), prep.filesDir, BLOCK, prep.missing);
    await corruptByte(join(target.imageFilesDir(v1), 'disk.img'), 5 * BLOCK + 3);
    expect(await target.verify(v1)).toMatchObject({ ok: false, quarantined: true });
    const c = await target.commitStaged(v2);
    expect(c.ok).toBe(false);
    if (c.ok) return;
    // Everything that was to come from the base: machine.vmx, empty-free blocks of disk.img.
    expect(c.bad).toEqual([
      { path: 'conf/machine.vmx', block: 0, reason: 'block hash mismatch' },
      ...[0, 1, 2, 4, 5, 7].map((block) => ({ path: 'disk.img', block, reason: 'block hash mismatch' })),
    ]);
    await writeBlocks(sender.imageFilesDir(v2), prep.filesDir, BLOCK, [
      { path: 'conf/machine.vmx', blocks: [0] },
      { path: 'disk.img', blocks: [0, 1, 2, 4, 5, 7] },
    ]);
    expect(await target.commitStaged(v2)).toMatchObject({ ok: true, id: v2 });
    expect(await target.verify(v2)).toEqual({ ok: true, id: v2 });
  });

  it('a base copy lost with the process, and a commit cut off by a crash, are taken up again by the next commit', async () => {
    const { sender, v1, v2 } = await twoVersions('d4');
    const dir = join(root, 'target-d4');
    const t1 = new ImageStore({ dir, keepVersions: 3 });
    await t1.start();
    await t1.receiveFromDir(await sender.getManifest(v1), sender.imageFilesDir(v1));
    const prep = await t1.prepareReceive(await sender.getManifest(v2));
    if (prep.state !== 'staging') throw new Error('expected staging');
    await writeBlocks(sender.imageFilesDir(v2), prep.filesDir, BLOCK, prep.missing);
    await t1.stop();
    const seedDir = join(prep.filesDir, '..', 'seed');
    for (const e of await readdir(seedDir)) await rm(join(seedDir, e));
    // The process also died in the middle of the commit (the folder under its private name).
    const staged = prep.filesDir.slice(0, -'/files'.length);
    await rename(staged, join(dir, 'staging', `.commit-${basename(staged)}`));
    const t2 = new ImageStore({ dir, keepVersions: 3 });
    await t2.start();
    expect(await t2.status(v2)).toMatchObject({ state: 'staging' });
    expect(await t2.commitStaged(v2)).toMatchObject({ ok: true, id: v2 });
    expect(await t2.verify(v2)).toEqual({ ok: true, id: v2 });
  });

  it('receives the same delta concurrently (same process and two store instances)', async () => {
    const { sender, v1, v2 } = await twoVersions('d5');
    const dir = join(root, 'target-d5');
    const t1 = new ImageStore({ dir, keepVersions: 3 });
    const t2 = new ImageStore({ dir, keepVersions: 3 });
    await t1.start();
    await t2.start();
    await t1.receiveFromDir(await sender.getManifest(v1), sender.imageFilesDir(v1));
    const m2 = await sender.getManifest(v2);
    const results = await Promise.all([
      t1.receiveFromDir(m2, sender.imageFilesDir(v2)),
      t2.receiveFromDir(m2, sender.imageFilesDir(v2)),
      t1.receiveFromDir(m2, sender.imageFilesDir(v2)),
      t2.receiveFromDir(m2, sender.imageFilesDir(v2)),
    ]);
    expect(results).toEqual([v2, v2, v2, v2]);
    await Promise.all([t1.stop(), t2.stop()]);
    expect(await t1.verify(v2)).toEqual({ ok: true, id: v2 });
    const left = await readdir(join(dir, 'staging'));
    expect(left, JSON.stringify(await Promise.all(left.map(async (e) => [e, await readdir(join(dir, 'staging', e)).catch(() => 'file')])))).toEqual([]);
    expect((await readdir(join(dir, 'images'))).sort()).toEqual([v1, v2].sort());
    expect(await readdir(join(dir, 'images', v2))).toEqual(['files', 'manifest.json']);
  });
});

describe('spare copies (the next delta starts from a copy made while the store was idle)', () => {
  it('keeps a verified spare of the newest received version; the next delta takes it instead of copying', async () => {
    const { sender, v1, v2 } = await twoVersions('s1');
    const target = new ImageStore({ dir: join(root, 'target-s1'), keepVersions: 3, spareMinBytes: 0, spareDelayMs: 0 });
    await target.start();
    await target.receiveFromDir(await sender.getManifest(v1), sender.imageFilesDir(v1));
    const spare1 = join(target.dir, 'spare', v1);
    await until('the spare of version 1', () => exists(spare1));
    // One file per manifest entry, equal to the stored image's files.
    const m1 = await target.getManifest(v1);
    for (const [n, f] of m1.files.entries()) {
      expect((await readFile(join(spare1, String(n)))).equals(await readFile(join(target.imageFilesDir(v1), f.path)))).toBe(true);
    }
    await target.receiveFromDir(await sender.getManifest(v2), sender.imageFilesDir(v2));
    // The delta took the spare's files it needed (renamed, not copied; empty.log has no blocks)...
    expect(await readdir(spare1).catch(() => [])).not.toContain('1');
    expect(await target.verify(v2)).toEqual({ ok: true, id: v2 });
    expect(await target.verify(v1)).toEqual({ ok: true, id: v1 });
    // ... and version 2, now the newest, gets the spare; version 1's is gone.
    await until('the spare of version 2', () => exists(join(target.dir, 'spare', v2)));
    await target.stop();
    expect(await readdir(join(target.dir, 'spare'))).toEqual([v2]);
    // verify() checks the spare with the image: a damaged spare is dropped, the image stays.
    const disk = (await target.getManifest(v2)).files.findIndex((f) => f.path === 'disk.img');
    await corruptByte(join(target.dir, 'spare', v2, String(disk)), 5 * BLOCK);
    expect(await target.verify(v2)).toEqual({ ok: true, id: v2 });
    expect(await readdir(join(target.dir, 'spare'))).toEqual([]);
    // Images below spareMinBytes get none.
    const small = new ImageStore({ dir: join(root, 'target-s1b'), keepVersions: 3, spareMinBytes: 1024 * 1024 * 1024, spareDelayMs: 0 });
    await small.start();
    await small.receiveFromDir(await sender.getManifest(v1), sender.imageFilesDir(v1));
    await new Promise((r) => setTimeout(r, 200));
    await small.stop();
    expect(await readdir(join(small.dir, 'spare'))).toEqual([]);
  });

  it('a received image damaged at rest is found while its spare is made, and quarantined', async () => {
    const { sender, v1 } = await twoVersions('s2');
    const target = new ImageStore({ dir: join(root, 'target-s2'), keepVersions: 3, spareMinBytes: 0, spareDelayMs: 300 });
    await target.start();
    await target.receiveFromDir(await sender.getManifest(v1), sender.imageFilesDir(v1));
    await corruptByte(join(target.imageFilesDir(v1), 'disk.img'), 2 * BLOCK + 9);
    await until('the quarantine of the damaged image', async () => !(await target.has(v1)));
    await target.stop();
    expect((await readdir(join(target.dir, 'quarantine'))).some((e) => e.startsWith(v1))).toBe(true);
    expect(await readdir(join(target.dir, 'spare'))).toEqual([]);
  });
});

describe('image store on a full disk (tmpfs)', () => {
  let mnt: string;
  beforeAll(async () => {
    mnt = join(root, 'tmpfs');
    await mkdir(mnt, { recursive: true });
    await execa('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', mnt]);
  });
  afterAll(async () => {
    if (mnt) await execa('umount', [mnt], { reject: false });
  });

  it('drops spare copies when an import needs their space', async () => {
    const sender = new ImageStore({ dir: join(root, 'store8-sender'), keepVersions: 2, blockSize: BLOCK });
    await sender.start();
    const src = join(root, 'src8');
    await makeSource(src, 2 * 1024 * 1024);
    const id = await sender.import(src, 'zabbix');
    const store = new ImageStore({ dir: join(mnt, 'store8'), keepVersions: 2, blockSize: BLOCK, spareMinBytes: 0, spareDelayMs: 0 });
    await store.start();
    await store.receiveFromDir(await sender.getManifest(id), sender.imageFilesDir(id));
    await until('the spare', () => exists(join(store.dir, 'spare', id)));
    // 8 MiB: image 2 + spare 2 leave 4 free; 5 fit only without the spare.
    const big = join(root, 'src8-big');
    await makeSource(big, 5 * 1024 * 1024);
    await store.import(big, 'mysql');
    await store.stop();
    expect(await readdir(join(store.dir, 'spare'))).toEqual([]);
    expect(await store.verify(id)).toEqual({ ok: true, id });
    await rm(store.dir, { recursive: true, force: true });
  });

  it('a delta whose copy of the base runs out of space fails clearly at commit and leaves nothing behind', async () => {
    const { sender, v1, v2 } = await twoVersions('f1');
    const store = new ImageStore({ dir: join(mnt, 'store9'), keepVersions: 3 });
    await store.start();
    await store.receiveFromDir(await sender.getManifest(v1), sender.imageFilesDir(v1));
    const prep = await store.prepareReceive(await sender.getManifest(v2));
    if (prep.state !== 'staging') throw new Error('expected staging');
    await writeBlocks(sender.imageFilesDir(v2), prep.filesDir, BLOCK, prep.missing);
    await store.stop();
    // The copy is lost (as with a crash) and the disk fills before the commit makes it again.
    const seedDir = join(prep.filesDir, '..', 'seed');
    for (const e of await readdir(seedDir)) await rm(join(seedDir, e));
    await writeFile(join(mnt, 'filler'), Buffer.alloc(4 * 1024 * 1024, 1));
    const again = new ImageStore({ dir: store.dir, keepVersions: 3 });
    await again.start();
    const e = await expectError(again.commitStaged(v2), 'DISK_FULL');
    expect(e.message).toContain(store.dir);
    expect(e.message).toContain('delta base');
    expect(await readdir(join(store.dir, 'staging'))).toEqual([]);
    expect(await again.has(v2)).toBe(false);
    expect(await again.verify(v1)).toEqual({ ok: true, id: v1 });
    await rm(join(mnt, 'filler'));
    await rm(store.dir, { recursive: true, force: true });
  });

  it('refuses an import that does not fit, names the store and the bytes, and leaves nothing behind', async () => {
    const store = new ImageStore({ dir: join(mnt, 'store'), keepVersions: 2, blockSize: BLOCK });
    await store.start();
    const small = join(root, 'src7-small');
    await makeSource(small, 5 * 1024 * 1024);
    const id = await store.import(small, 'zabbix');
    const big = join(root, 'src7-big');
    await makeSource(big, 5 * 1024 * 1024);
    const e = await expectError(store.import(big, 'zabbix'), 'DISK_FULL');
    expect(e.message).toContain(store.dir);
    expect(e.message).toMatch(/\d+ bytes needed/);
    expect(e.details).toMatchObject({ path: store.dir, neededBytes: 5 * 1024 * 1024 + 23 });
    expect(await readdir(join(store.dir, 'staging'))).toEqual([]);
    expect((await store.list()).map((i) => i.id)).toEqual([id]);

    // A receive that cannot fit is refused before anything is written.
    const sender = new ImageStore({ dir: join(root, 'store7-sender'), keepVersions: 2, blockSize: BLOCK });
    await sender.start();
    const bigId = await sender.import(big, 'other');
    await expectError(store.prepareReceive(await sender.getManifest(bigId)), 'DISK_FULL');
    expect(await readdir(join(store.dir, 'staging'))).toEqual([]);

    // A clone onto a full disk fails clearly and removes the partial copy.
    await rm(join(store.dir), { recursive: true, force: true });
    await writeFile(join(mnt, 'filler'), Buffer.alloc(6 * 1024 * 1024));
    const dest = join(mnt, 'clone');
    const ce = await expectError(sender.clone(bigId, dest), 'DISK_FULL');
    expect(ce.message).toContain(mnt);
    await expect(stat(dest)).rejects.toThrow();
  });
});
