import { randomBytes } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, open, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { ImageStore } from '../../depot/images/catalog.ts';
import { TokenBucket } from '../../ship/bandwidth.ts';
import { Prestager } from '../../ship/prestager.ts';
import { Shipper } from '../../ship/shipper.ts';
import { senderStats } from '../../ship/ssh-connection.ts';
import { localShipTarget, type ShipTarget } from '../../depot/images/ship-target.ts';
import { rawSftpWriter } from '../../ship/sftp-write.ts';
import { startSshd, type TestSshd } from '../../lab/loopback/sshd.ts';
import { failure } from '../helpers/failure.ts';

// Image shipping against a real OpenSSH sshd on a loopback port.
const BLOCK = 128 * 1024;
const DISK = 96 * BLOCK; // 12 MiB, 96 blocks: 1 changed block is ~1 %
const EXTRA = 'displayName = "zabbix"\n'.length;

let root: string;
let sshd: TestSshd;
let sender: ImageStore;
let v1: string;
let v2: string;
let n = 0;

function shipper(extra: Partial<ConstructorParameters<typeof Shipper>[0]> = {}): Shipper {
  return new Shipper({
    store: sender,
    ssh: { user: sshd.user, keyFile: sshd.userKeyFile, knownHostsFile: sshd.knownHostsFile },
    requestsInFlight: 16,
    stallTimeoutMs: 10_000,
    // The test images are a few MiB: use every connection anyway (the default keeps small sends on one).
    singleConnectionBytes: 0,
    ...extra,
  });
}

async function newTarget(): Promise<ImageStore> {
  const t = new ImageStore({ dir: join(root, `target-${++n}`), keepVersions: 3 });
  await t.start();
  return t;
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'nav-ship-test-'));
  sshd = await startSshd();
  sender = new ImageStore({ dir: join(root, 'sender'), keepVersions: 3, blockSize: BLOCK });
  await sender.start();
  const src = join(root, 'src');
  await mkdir(src);
  await writeFile(join(src, 'disk.img'), randomBytes(DISK));
  await writeFile(join(src, 'machine.vmx'), 'displayName = "zabbix"\n');
  v1 = await sender.import(src, 'zabbix', { version: '1', created: new Date(Date.UTC(2026, 0, 1)) });
  // Version 2: one block of 96 changed.
  const src2 = join(root, 'src2');
  await mkdir(src2);
  await copyFile(join(src, 'disk.img'), join(src2, 'disk.img'));
  await copyFile(join(src, 'machine.vmx'), join(src2, 'machine.vmx'));
  const fh = await open(join(src2, 'disk.img'), 'r+');
  await fh.write(randomBytes(100), 0, 100, 40 * BLOCK + 7);
  await fh.close();
  v2 = await sender.import(src2, 'zabbix', { version: '2', created: new Date(Date.UTC(2026, 0, 2)) });
});

afterAll(async () => {
  await sshd?.stop();
  if (root) await rm(root, { recursive: true, force: true });
});

// Real transfers on a machine that may be busy with the rest of the suite: generous timeouts.
describe('image shipping over SFTP', { timeout: 60_000 }, () => {
  it('ships a full image; the target verifies and commits it; progress is tracked', async () => {
    const target = await newTarget();
    const s = shipper();
    const seen: number[] = [];
    s.tracker.on('progress', (t) => {
      if (t.state === 'sending') seen.push(s.tracker.list().length);
    });
    const r = await s.ship(v1, localShipTarget(target, sshd.host, sshd.port));
    expect(r).toMatchObject({ id: v1, kind: 'full', imageBytes: DISK + EXTRA, bytesSent: DISK + EXTRA, connections: 2, rounds: 1, resentBlocks: 0 });
    expect(await target.has(v1)).toBe(true);
    expect(await target.verify(v1)).toEqual({ ok: true, id: v1 });
    expect((await readFile(join(target.imageFilesDir(v1), 'disk.img'))).equals(await readFile(join(sender.imageFilesDir(v1), 'disk.img')))).toBe(true);
    expect(await readdir(join(target.dir, 'staging'))).toEqual([]);
    // It was listed while running, and is in the history now.
    expect(seen.length).toBeGreaterThan(0);
    expect(seen.every((c) => c === 1)).toBe(true);
    expect(s.tracker.list()).toEqual([]);
    expect(s.tracker.history()[0]).toMatchObject({ imageId: v1, state: 'done', kind: 'full', bytesSent: DISK + EXTRA, etaMs: 0 });
    // Shipping again sends nothing.
    const again = await s.ship(v1, localShipTarget(target, sshd.host, sshd.port));
    expect(again).toMatchObject({ kind: 'present', bytesSent: 0 });
  });

  it('spreads the blocks over several connections, small requests and one connection alike; a small send uses one', async () => {
    const cases = [
      { opts: { connections: 3, requestsInFlight: 4, chunkBytes: 48 * 1024 }, used: 3 },
      { opts: { connections: 1 }, used: 1 },
      { opts: { connections: 3, singleConnectionBytes: 64 * 1024 * 1024 }, used: 1 }, // a small send: no waiting for more logins
    ];
    for (const { opts: extra, used } of cases) {
      const target = await newTarget();
      const r = await shipper(extra).ship(v1, localShipTarget(target, sshd.host, sshd.port));
      expect(r).toMatchObject({ kind: 'full', connections: used, bytesSent: DISK + EXTRA, rounds: 1 });
      expect((await readFile(join(target.imageFilesDir(v1), 'disk.img'))).equals(await readFile(join(sender.imageFilesDir(v1), 'disk.img')))).toBe(true);
    }
  });

  it('ships over the connections it could open when an extra one fails', async () => {
    const target = await newTarget();
    const s = shipper({ connections: 3 });
    const real = Shipper.prototype.connect;
    let calls = 0;
    const spy = vi.spyOn(s, 'connect').mockImplementation(function (this: Shipper, t, signal) {
      if (++calls === 2) return Promise.reject(new Error('MaxStartups'));
      return real.call(this, t, signal);
    });
    try {
      const r = await s.ship(v1, localShipTarget(target, sshd.host, sshd.port));
      expect(calls).toBe(3);
      expect(r).toMatchObject({ kind: 'full', connections: 2, bytesSent: DISK + EXTRA });
      expect(await target.verify(v1)).toEqual({ ok: true, id: v1 });
    } finally {
      spy.mockRestore();
    }
  });

  it("builds WRITE requests in place with this ssh2 (its internals are what ship/sftp-write.ts expects)", async () => {
    const conn = await shipper().connect({ host: sshd.host, port: sshd.port });
    try {
      const sftp = await new Promise<Parameters<typeof rawSftpWriter>[0]>((res, rej) => conn.sftp((e, s) => (e ? rej(e) : res(s))));
      // Undefined here means every transfer falls back to sftp.write() and its extra copy.
      expect(rawSftpWriter(sftp)).toBeDefined();
    } finally {
      conn.end();
    }
  });

  it('recycles packet memory across key re-exchanges, with each cipher family', async () => {
    // The server re-keys every MiB, so a transfer crosses many key exchanges (ssh2 installs a
    // new packet writer each time; the recycling must follow it and never hand out a slab twice).
    const rekeying = await startSshd({ extraConfig: ['RekeyLimit 1M'] });
    const spy = vi.spyOn(Shipper.prototype, 'connect');
    try {
      for (const cipher of ['aes128-gcm@openssh.com', 'chacha20-poly1305@openssh.com', 'aes128-ctr']) {
        spy.mockClear();
        const target = await newTarget();
        const s = shipper({ ssh: { user: rekeying.user, keyFile: rekeying.userKeyFile, knownHostsFile: rekeying.knownHostsFile, ciphers: [cipher] } });
        const conns = spy.mock.results.length;
        const r = await s.ship(v1, localShipTarget(target, rekeying.host, rekeying.port));
        expect(r).toMatchObject({ kind: 'full', connections: 2, bytesSent: DISK + EXTRA, rounds: 1 });
        expect(await target.verify(v1)).toEqual({ ok: true, id: v1 });
        const clients = await Promise.all(spy.mock.results.slice(conns).map((x) => x.value as ReturnType<Shipper['connect']>));
        expect(clients).toHaveLength(2);
        for (const c of clients) {
          const st = senderStats.get(c)!;
          expect(st.recycled, cipher).toBeGreaterThan(st.fresh);
          // The first handshake installs one writer, each later key exchange another.
          expect(st.writers, cipher).toBeGreaterThan(2);
        }
      }
    } finally {
      spy.mockRestore();
      await rekeying.stop();
    }
  });

  it('delta: when the target holds version 1, only the changed block of version 2 is sent', async () => {
    const target = await newTarget();
    const s = shipper();
    await s.ship(v1, localShipTarget(target, sshd.host, sshd.port));
    const r = await s.ship(v2, localShipTarget(target, sshd.host, sshd.port));
    expect(r.kind).toBe('delta');
    expect(r.bytesSent).toBe(BLOCK);
    expect(r.bytesSent / r.imageBytes).toBeLessThan(0.011);
    expect(await target.verify(v2)).toEqual({ ok: true, id: v2 });
    expect(await target.verify(v1)).toEqual({ ok: true, id: v1 });
  });

  it('resume: a transfer cut off half way sends only the rest on the next try', async () => {
    const target = await newTarget();
    const s = shipper();
    const total = DISK + EXTRA;
    const ac = new AbortController();
    // Limit the rate so the cut lands in the middle, whatever the machine's speed.
    const e = await failure(
      s.ship(v1, localShipTarget(target, sshd.host, sshd.port), {
        signal: ac.signal,
        bandwidth: new TokenBucket({ bytesPerSec: 12 * 1024 * 1024 }),
        onProgress: (p) => {
          if (p.bytesSent >= total / 3) ac.abort();
        },
      }),
    );
    expect(e.code).toBe('TRANSFER_FAILED');
    expect(await target.has(v1)).toBe(false);
    const first = s.tracker.history()[0]!;
    expect(first.state).toBe('failed');
    expect(first.bytesSent).toBeGreaterThanOrEqual(total / 3);
    expect(first.bytesSent).toBeLessThan(total);

    const r = await s.ship(v1, localShipTarget(target, sshd.host, sshd.port));
    expect(r.kind).toBe('resume');
    // Acknowledged writes are on the target's disk: at most the blocks cut in the middle are sent again.
    expect(r.bytesSent).toBeLessThanOrEqual(total - first.bytesSent + 2 * BLOCK);
    // Writes still in flight when the cut came may land after the tracker's last count, so
    // the two tries together can be a little short of the total; the verify below proves
    // nothing is missing.
    expect(r.bytesSent + first.bytesSent).toBeGreaterThanOrEqual(total - 2 * BLOCK);
    expect(await target.verify(v1)).toEqual({ ok: true, id: v1 });
  });

  it('resume: a sender process killed mid-transfer; the next try sends only what is not on the target yet', async () => {
    const target = await newTarget();
    const total = DISK + EXTRA;
    const child = execa(
      process.execPath,
      [
        '--import',
        'tsx',
        fileURLToPath(new URL('../helpers/ship-child.ts', import.meta.url)),
        JSON.stringify({
          senderDir: sender.dir,
          targetDir: target.dir,
          id: v1,
          host: sshd.host,
          port: sshd.port,
          user: sshd.user,
          keyFile: sshd.userKeyFile,
          knownHostsFile: sshd.knownHostsFile,
          bytesPerSec: 4 * 1024 * 1024,
        }),
      ],
      { reject: false },
    );
    // Kill it once a third of the image is on the target's disk (staging files are sparse).
    let onDisk = 0;
    const deadline = Date.now() + 25_000;
    while (Date.now() < deadline) {
      const st = await target.status(v1);
      if (st.state === 'staging') {
        const dirs = (await readdir(join(target.dir, 'staging'))).filter((d) => d.startsWith(v1));
        const f = dirs[0] ? await stat(join(target.dir, 'staging', dirs[0], 'files', 'disk.img')).catch(() => undefined) : undefined;
        onDisk = f ? f.blocks * 512 : 0;
        if (onDisk >= total / 3) break;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    child.kill('SIGKILL');
    const exit = await child;
    expect(exit.signal).toBe('SIGKILL');
    expect(onDisk).toBeGreaterThanOrEqual(total / 3);
    expect(await target.has(v1)).toBe(false);

    const r = await shipper().ship(v1, localShipTarget(target, sshd.host, sshd.port));
    expect(r.kind).toBe('resume');
    // What reached the disk before the kill is not sent again (but for blocks cut in the middle).
    expect(r.bytesSent).toBeLessThanOrEqual(total - onDisk + 2 * BLOCK);
    expect(await target.verify(v1)).toEqual({ ok: true, id: v1 });
  });

  it('a block damaged in flight is refused by the target and sent again', async () => {
    const target = await newTarget();
    const s = shipper();
    let damaged = 0;
    const r = await s.ship(v1, localShipTarget(target, sshd.host, sshd.port), {
      transformChunk: (c, data) => {
        if (c.round === 1 && c.path === 'disk.img' && c.offset <= 50 * BLOCK && c.offset + data.length > 50 * BLOCK) {
          data[50 * BLOCK - c.offset] = data[50 * BLOCK - c.offset]! ^ 0x55;
          damaged++;
        }
        return data;
      },
    });
    expect(damaged).toBe(1);
    expect(r.rounds).toBe(2);
    expect(r.resentBlocks).toBe(1);
    expect(r.bytesSent).toBe(DISK + EXTRA + BLOCK);
    expect(await target.verify(v1)).toEqual({ ok: true, id: v1 });
  });

  it('a block that arrives damaged every time fails the transfer clearly after the last round', async () => {
    const target = await newTarget();
    const s = shipper({ maxRounds: 2 });
    const e = await failure(
      s.ship(v1, localShipTarget(target, sshd.host, sshd.port), {
        transformChunk: (c, data) => {
          if (c.path === 'disk.img' && c.offset === 0) data[0] = data[0]! ^ 1;
          return data;
        },
      }),
    );
    expect(e.code).toBe('IMAGE_CORRUPT');
    expect(e.message).toMatch(/disk\.img block 0/);
    expect(await target.has(v1)).toBe(false);
  });

  it('refuses an unknown or changed host key, naming host and fingerprint, and leaves no staging behind', async () => {
    const target = await newTarget();
    const empty = join(root, 'known_hosts_empty');
    await writeFile(empty, '# nothing pinned\n');
    const e1 = await failure(
      shipper({ ssh: { user: sshd.user, keyFile: sshd.userKeyFile, knownHostsFile: empty } }).ship(v1, localShipTarget(target, sshd.host, sshd.port)),
    );
    expect(e1.code).toBe('HOST_KEY_MISMATCH');
    expect(e1.message).toContain(`[127.0.0.1]:${sshd.port}`);
    expect(e1.message).toMatch(/SHA256:[A-Za-z0-9+/]{43}/);
    expect(e1.message).toContain('not pinned');

    // A different key pinned for this host: a changed key.
    const other = await startSshd();
    try {
      const changed = join(root, 'known_hosts_changed');
      await writeFile(changed, `[127.0.0.1]:${sshd.port} ${other.hostPublicKey}\n`);
      const e2 = await failure(
        shipper({ ssh: { user: sshd.user, keyFile: sshd.userKeyFile, knownHostsFile: changed } }).ship(v1, localShipTarget(target, sshd.host, sshd.port)),
      );
      expect(e2.code).toBe('HOST_KEY_MISMATCH');
      expect(e2.message).toContain('HOST KEY CHANGED');
      expect(e2.message).toContain(`[127.0.0.1]:${sshd.port}`);
    } finally {
      await other.stop();
    }
    expect(await readdir(join(target.dir, 'staging'))).toEqual([]);
  });

  it("refuses a manifest with '../' paths (target) and a target asking for a path outside the image (sender)", async () => {
    const target = await newTarget();
    const m = await sender.getManifest(v1);
    const evil = { ...m, files: [{ ...m.files[0]!, path: '../../../root/.ssh/authorized_keys' }] };
    const e1 = await failure(target.prepareReceive(evil));
    expect(e1.code).toBe('BAD_REQUEST');
    expect(e1.message).toContain("contains '..'");
    expect(await readdir(join(target.dir, 'staging'))).toEqual([]);

    const lying: ShipTarget = {
      ...localShipTarget(target, sshd.host, sshd.port),
      prepare: async (mm) => ({
        state: 'staging',
        id: v1,
        filesDir: join(root, 'lying'),
        resumed: false,
        missing: [{ path: '../../etc/passwd', size: 10, blocks: [0] }],
        missingBytes: 10,
        totalBytes: 10 + mm.files.length,
      }),
    };
    const e2 = await failure(shipper().ship(v1, lying));
    expect(e2.code).toBe('BAD_REQUEST');
    expect(e2.message).toContain('../../etc/passwd');
  });

  it('pre-stages the image on the top K candidates under a bandwidth limit', async () => {
    const targets = new Map<string, ImageStore>();
    for (const h of ['ws1', 'ws2', 'ws3']) targets.set(h, await newTarget());
    const bytesPerSec = 16 * 1024 * 1024;
    const p = new Prestager({
      shipper: shipper(),
      targetFor: (host) => localShipTarget(targets.get(host)!, sshd.host, sshd.port),
      k: 2,
      bytesPerSec,
    });
    const t0 = Date.now();
    const ranked = [
      { host: 'ws1', alive: true, images: [] },
      { host: 'ws2', alive: false, images: [] },
      { host: 'ws3', alive: true, images: [] },
    ];
    const plan = p.reconcile(ranked, v1);
    expect(plan.ship).toEqual(['ws1', 'ws3']);
    expect(p.inProgress().sort()).toEqual(['ws1', 'ws3']);
    // A second reconcile while running queues nothing new.
    expect(p.reconcile(ranked, v1).ship).toEqual([]);
    await p.idle();
    const elapsed = (Date.now() - t0) / 1000;
    expect(p.results.map((r) => r.ok)).toEqual([true, true]);
    expect(await targets.get('ws1')!.has(v1)).toBe(true);
    expect(await targets.get('ws3')!.has(v1)).toBe(true);
    expect(await targets.get('ws2')!.has(v1)).toBe(false);
    // 2 x 12 MiB at 16 MiB/s, less the initial burst (1/4 s of rate): at least ~1.25 s.
    const minSeconds = (2 * (DISK + EXTRA) - bytesPerSec / 4) / bytesPerSec;
    expect(elapsed).toBeGreaterThanOrEqual(minSeconds * 0.95);
    const after = p.reconcile(
      ranked.map((c) => ({ ...c, images: c.host === 'ws2' ? [] : [v1] })),
      v1,
    );
    expect(after).toMatchObject({ ship: [], staged: ['ws1', 'ws3'] });
    await p.stop();
  });
});
