import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ImageStore } from '../../depot/images/catalog.ts';
import { Shipper } from '../../ship/shipper.ts';
import { localShipTarget, type ShipTarget } from '../../depot/images/ship-target.ts';
import { startSshd, type TestSshd } from '../../lab/loopback/sshd.ts';
import { failure } from '../helpers/failure.ts';

// The target depot's disk fills up: a small tmpfs holds its image store.
const BLOCK = 128 * 1024;
let root: string;
let mnt: string | undefined;
let sshd: TestSshd;
let sender: ImageStore;
let id: string;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'nav-ship-full-'));
  sshd = await startSshd();
  sender = new ImageStore({ dir: join(root, 'sender'), keepVersions: 2, blockSize: BLOCK });
  await sender.start();
  const src = join(root, 'src');
  await mkdir(src);
  await writeFile(join(src, 'disk.img'), randomBytes(6 * 1024 * 1024));
  id = await sender.import(src, 'zabbix');
  mnt = join(root, 'tmpfs');
  await mkdir(mnt);
  await execa('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', mnt]);
});

afterAll(async () => {
  await sshd?.stop();
  if (mnt) await execa('umount', [mnt], { reject: false });
  if (root) await rm(root, { recursive: true, force: true });
});

describe('shipping to a full disk', { timeout: 60_000 }, () => {
  it('the disk fills during the transfer: clear DISK_FULL, staging cleaned, sender not stuck', async () => {
    const target = new ImageStore({ dir: join(mnt!, 'store-a'), keepVersions: 2 });
    await target.start();
    const base = localShipTarget(target, sshd.host, sshd.port);
    // Something else takes 4 MiB right after the target said it had room.
    const filling: ShipTarget = {
      ...base,
      prepare: async (m) => {
        const r = await base.prepare(m);
        await writeFile(join(mnt!, 'filler'), Buffer.alloc(4 * 1024 * 1024, 1));
        return r;
      },
    };
    const s = new Shipper({
      store: sender,
      ssh: { user: sshd.user, keyFile: sshd.userKeyFile, knownHostsFile: sshd.knownHostsFile },
      requestsInFlight: 16,
      stallTimeoutMs: 10_000,
    });
    const t0 = Date.now();
    const e = await failure(s.ship(id, filling));
    expect(Date.now() - t0).toBeLessThan(20_000);
    expect(e.code).toBe('DISK_FULL');
    expect(e.message).toContain(join(target.dir, 'staging'));
    expect(e.message).toMatch(/\d+ bytes to write, \d+ free/);
    expect(await readdir(join(target.dir, 'staging'))).toEqual([]);
    expect(await target.has(id)).toBe(false);
    expect(s.tracker.list()).toEqual([]);
    expect(s.tracker.history()[0]).toMatchObject({ state: 'failed' });
    await rm(join(mnt!, 'filler'));
    await rm(target.dir, { recursive: true, force: true });
  });

  it('an image larger than the free space is refused before anything is sent', async () => {
    await writeFile(join(mnt!, 'filler2'), Buffer.alloc(3 * 1024 * 1024, 1));
    const target = new ImageStore({ dir: join(mnt!, 'store-b'), keepVersions: 2 });
    await target.start();
    const s = new Shipper({
      store: sender,
      ssh: { user: sshd.user, keyFile: sshd.userKeyFile, knownHostsFile: sshd.knownHostsFile },
      requestsInFlight: 16,
    });
    const e = await failure(s.ship(id, localShipTarget(target, sshd.host, sshd.port)));
    expect(e.code).toBe('DISK_FULL');
    expect(e.message).toContain(target.dir);
    expect(e.message).toContain(`${6 * 1024 * 1024} bytes needed`);
    expect(s.tracker.history()[0]).toMatchObject({ state: 'failed', bytesSent: 0 });
    expect(await readdir(join(target.dir, 'staging'))).toEqual([]);
  });
});
