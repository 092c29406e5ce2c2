import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { mkdir, mkdtemp, readFile, readdir, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fsyncTree, writeFileDurable } from '../../shared/durable-file.ts';
import { ImageStore } from '../../depot/images/catalog.ts';
import { loadOrCreateIdentity } from '../../depot/identity.ts';

// Small files replaced atomically and durably (metadata, keys, assignments), image folders
// fsynced before they are published, and receives abandoned long ago removed at start.

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'nav-durable-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('durable writes', () => {
  it('replaces a file whole, with its mode, leaving no temporary file behind', async () => {
    const p = join(dir, 'meta.json');
    await writeFileDurable(p, '{"a":1}', { mode: 0o640 });
    await writeFileDurable(p, '{"a":2}', { mode: 0o640 });
    expect(await readFile(p, 'utf8')).toBe('{"a":2}');
    expect((await stat(p)).mode & 0o777).toBe(0o640);
    expect(await readdir(dir)).toEqual(['meta.json']);
  });

  it('an exclusive write never replaces an existing file (a key) and cleans up after itself', async () => {
    const p = join(dir, 'key');
    await writeFileDurable(p, 'first', { exclusive: true });
    await expect(writeFileDurable(p, 'second', { exclusive: true })).rejects.toMatchObject({ code: 'EEXIST' });
    expect(await readFile(p, 'utf8')).toBe('first');
    expect(await readdir(dir)).toEqual(['key']);
  });

  it('the identity key is created 0600 and read back the same', async () => {
    const p = join(dir, 'sub', 'identity.key');
    const a = await loadOrCreateIdentity(p);
    const b = await loadOrCreateIdentity(p);
    expect(b.publicKey.toString()).toBe(a.publicKey.toString());
    expect((await stat(p)).mode & 0o777).toBe(0o600);
    expect(await readdir(join(dir, 'sub'))).toEqual(['identity.key']);
  });

  it('fsyncs every file of a tree', async () => {
    await mkdir(join(dir, 'files', 'a'), { recursive: true });
    await writeFile(join(dir, 'files', 'a', 'x'), 'x');
    await writeFile(join(dir, 'files', 'y'), 'y');
    await writeFile(join(dir, 'manifest.json'), '{}');
    expect(await fsyncTree(dir)).toEqual({ files: 3 });
  });

  it('removes staging folders not written to for stagingMaxAgeMs at start, keeps younger ones', async () => {
    const staging = join(dir, 'store', 'staging');
    await mkdir(join(staging, 'old', 'files'), { recursive: true });
    await mkdir(join(staging, 'young', 'files'), { recursive: true });
    await writeFile(join(staging, 'old', 'files', 'disk.img'), 'x');
    await writeFile(join(staging, 'young', 'files', 'disk.img'), 'x');
    const dayAgo = new Date(Date.now() - 2 * 86_400_000);
    for (const p of [join(staging, 'old', 'files', 'disk.img'), join(staging, 'old', 'files'), join(staging, 'old')]) await utimes(p, dayAgo, dayAgo);
    const store = new ImageStore({ dir: join(dir, 'store'), keepVersions: 2, stagingMaxAgeMs: 86_400_000 });
    await store.start();
    expect(await readdir(staging)).toEqual(['young']);
    await store.stop();
  });
});
