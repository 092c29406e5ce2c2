import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ImageStore } from '../../depot/image-store.ts';
import { canonicalJson, manifestId } from '../../depot/image-manifest.ts';
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
