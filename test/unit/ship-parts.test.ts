import { createHash, createHmac, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { TokenBucket, prestageBytesPerSec } from '../../ship/bandwidth.ts';
import { checkHostKey, fingerprint, knownHostName, parseKnownHosts } from '../../ship/ssh-known-hosts.ts';
import { Prestager } from '../../ship/prestager.ts';
import { planPrestage, type PrestageCandidate } from '../../ship/prestage-plan.ts';
import { laneRequests, segmentChunks, sendQueue } from '../../ship/send-queue.ts';
import type { ShipOptions, ShipResult } from '../../ship/shipper.ts';
import type { ShipTarget } from '../../depot/images/ship-target.ts';
import { rawSftpWriter } from '../../ship/sftp-write.ts';
import { sshEndpointOf } from '../../ship/image-shipping.ts';
import { TransferTracker } from '../../ship/transfers.ts';
import { canonicalJson, ImageManifest, manifestId, parseManifest, unsafePathReason } from '../../depot/images/manifest.ts';

const H = (s: string) => createHash('sha256').update(s).digest('hex');

describe('known_hosts pinning', () => {
  const keyA = randomBytes(51);
  const keyB = randomBytes(51);
  const text = [
    '# comment',
    `[10.0.0.5]:2222 ssh-ed25519 ${keyA.toString('base64')}`,
    `ws1,10.0.0.6 ssh-ed25519 ${keyB.toString('base64')}`,
    '',
  ].join('\n');
  const entries = parseKnownHosts(text);

  it('accepts the pinned key for host:port and names hosts like OpenSSH', () => {
    expect(knownHostName('10.0.0.5', 2222)).toBe('[10.0.0.5]:2222');
    expect(knownHostName('ws1', 22)).toBe('ws1');
    expect(checkHostKey(entries, '10.0.0.5', 2222, keyA, 'kh')).toEqual({ ok: true });
    expect(checkHostKey(entries, 'ws1', 22, keyB, 'kh')).toEqual({ ok: true });
    expect(checkHostKey(entries, '10.0.0.6', 22, keyB, 'kh')).toEqual({ ok: true });
  });

  it('refuses a changed key and an unknown host with the fingerprint in the message', () => {
    const changed = checkHostKey(entries, '10.0.0.5', 2222, keyB, '/etc/kh');
    expect(changed).toMatchObject({ ok: false, reason: 'changed' });
    if (!changed.ok) {
      expect(changed.message).toContain(fingerprint(keyB));
      expect(changed.message).toContain(fingerprint(keyA));
      expect(changed.message).toContain('[10.0.0.5]:2222');
    }
    // Same host on another port is another entry: unknown.
    expect(checkHostKey(entries, '10.0.0.5', 22, keyA, 'kh')).toMatchObject({ ok: false, reason: 'unknown' });
  });

  it('matches hashed host names (HashKnownHosts yes)', () => {
    const salt = randomBytes(20);
    const hash = createHmac('sha1', salt).update('[ws9]:2200').digest('base64');
    const hashed = parseKnownHosts(`|1|${salt.toString('base64')}|${hash} ssh-ed25519 ${keyA.toString('base64')}\n`);
    expect(checkHostKey(hashed, 'ws9', 2200, keyA, 'kh')).toEqual({ ok: true });
    expect(checkHostKey(hashed, 'ws8', 2200, keyA, 'kh')).toMatchObject({ ok: false, reason: 'unknown' });
  });

  it('fingerprints like ssh-keygen -l (SHA256, unpadded base64)', () => {
    expect(fingerprint(Buffer.from('abc'))).toBe(`SHA256:${createHash('sha256').update('abc').digest('base64').replace(/=+$/, '')}`);
  });
});

describe('token bucket', () => {
  it('lets a burst through, then paces to the rate', () => {
    const b = new TokenBucket({ bytesPerSec: 1_000_000, burstBytes: 500_000 });
    expect(b.reserve(500_000, 0)).toBe(0);
    expect(b.reserve(250_000, 0)).toBe(250);
    // After the wait the debt is paid; 1 s later a full second of rate is available again (capped by burst).
    expect(b.reserve(0, 250)).toBe(0);
    expect(b.reserve(500_000, 1250)).toBe(0);
    expect(b.reserve(1, 1250)).toBe(1);
  });

  it('never exceeds the rate over a long run (random request sizes, fake time)', () => {
    for (let seed = 1; seed <= 50; seed++) {
      let x = seed;
      const rnd = () => ((x = (x * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
      const rate = 100_000 + Math.floor(rnd() * 10_000_000);
      const b = new TokenBucket({ bytesPerSec: rate });
      let now = 0;
      let sent = 0;
      for (let i = 0; i < 500; i++) {
        const n = 1 + Math.floor(rnd() * 300_000);
        now += b.reserve(n, now);
        sent += n;
      }
      // Over the elapsed time at most rate x time plus one burst went out.
      expect(sent).toBeLessThanOrEqual((rate * now) / 1000 + b.burstBytes + rate / 1000);
    }
  });

  it('computes the pre-staging rate from link speed and percentage', () => {
    expect(prestageBytesPerSec(1000, 50)).toBe(62_500_000);
    expect(() => new TokenBucket({ bytesPerSec: 0 })).toThrow(/bytesPerSec/);
  });
});

describe('pre-staging plan', () => {
  const img = 'a'.repeat(64);
  it('takes the top K alive candidates that do not run a copy, and says why others are skipped', () => {
    const ranked: PrestageCandidate[] = [
      { host: 'ws1', alive: true, images: [], hostsCopy: true },
      { host: 'ws2', alive: false, images: [] },
      { host: 'ws3', alive: true, images: [img] },
      { host: 'ws4', alive: true, images: [] },
      { host: 'ws5', alive: true, images: [] },
    ];
    expect(planPrestage({ ranked, imageId: img, k: 2 })).toEqual({
      targets: ['ws3', 'ws4'],
      ship: ['ws4'],
      staged: ['ws3'],
      skipped: [
        { host: 'ws1', reason: 'already runs a copy' },
        { host: 'ws2', reason: 'not alive' },
        { host: 'ws5', reason: 'not in the top 2' },
      ],
    });
    expect(planPrestage({ ranked, imageId: img, k: 2, busy: new Set(['ws4']) }).ship).toEqual([]);
    expect(planPrestage({ ranked, imageId: img, k: 0 }).targets).toEqual([]);
  });

  it('holds its invariants for random rankings', () => {
    for (let seed = 1; seed <= 200; seed++) {
      let x = seed;
      const rnd = () => ((x = (x * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
      const ranked: PrestageCandidate[] = Array.from({ length: Math.floor(rnd() * 10) }, (_, i) => ({
        host: `ws${Math.floor(rnd() * 12)}`,
        alive: rnd() > 0.2,
        images: rnd() > 0.5 ? [img] : [],
        hostsCopy: rnd() > 0.8,
      }));
      const k = Math.floor(rnd() * 4);
      const busy = new Set(ranked.filter(() => rnd() > 0.8).map((c) => c.host));
      const p = planPrestage({ ranked, imageId: img, k, busy });
      expect(p.targets.length).toBeLessThanOrEqual(k);
      expect(new Set(p.targets).size).toBe(p.targets.length);
      for (const h of p.ship) {
        expect(p.targets).toContain(h);
        expect(busy.has(h)).toBe(false);
      }
      for (const h of p.targets) {
        const c = ranked.find((r) => r.host === h)!;
        expect(c.alive && !c.hostsCopy).toBe(true);
      }
      expect(p.ship.filter((h) => p.staged.includes(h))).toEqual([]);
      // Every listed candidate is either a target or skipped (a busy target is both: it stays a target).
      const busySkipped = p.skipped.filter((s) => s.reason === 'transfer in progress');
      for (const s of busySkipped) expect(p.targets).toContain(s.host);
      expect(p.targets.length + p.skipped.length - busySkipped.length).toBe(ranked.length);
      expect(p.ship.length + p.staged.length + busySkipped.length).toBe(p.targets.length);
    }
  });
});

describe('pre-staging runs', () => {
  const img = 'c'.repeat(64);
  const target = (host: string): ShipTarget => ({ host, port: 22, prepare: async () => ({ state: 'present', id: img }), commit: async () => ({ ok: true, id: img, verifiedBytes: 0 }), abort: async () => undefined });
  const result = (host: string): ShipResult => ({ id: img, target: host, kind: 'full', imageBytes: 1, bytesSent: 1, connections: 1, rounds: 1, resentBlocks: 0, connectMs: 0, prepareMs: 0, sendMs: 0, commitMs: 0, durationMs: 0 });

  /** A shipper whose transfers finish when the test says so (or fail, or end on abort). */
  function fakeShipper() {
    const pending = new Map<string, { resolve: () => void; reject: (e: Error) => void }>();
    const started: string[] = [];
    return {
      started,
      finish: (host: string) => pending.get(host)?.resolve(),
      fail: (host: string) => pending.get(host)?.reject(new Error(`ssh to ${host} refused`)),
      ship: (_id: string, t: ShipTarget, o: ShipOptions = {}) =>
        new Promise<ShipResult>((resolve, reject) => {
          started.push(t.host);
          o.signal?.addEventListener('abort', () => reject(new Error('transfer aborted')), { once: true });
          pending.set(t.host, { resolve: () => resolve(result(t.host)), reject });
        }),
    };
  }
  const tick = () => new Promise((r) => setTimeout(r, 0));
  const ranked = (...hosts: string[]): PrestageCandidate[] => hosts.map((host) => ({ host, alive: true, images: [] }));

  it('passes over a host that failed lately and gives its place to the next one', async () => {
    let now = 0;
    const s = fakeShipper();
    const p = new Prestager({ shipper: s, targetFor: target, k: 1, bytesPerSec: 1e6, retryAfterMs: 60_000, now: () => now });
    expect(p.reconcile(ranked('ws1', 'ws2'), img).ship).toEqual(['ws1']);
    await tick();
    s.fail('ws1');
    await p.idle();
    expect(p.results[0]).toMatchObject({ host: 'ws1', ok: false });
    const plan = p.reconcile(ranked('ws1', 'ws2'), img);
    expect(plan).toMatchObject({ targets: ['ws2'], ship: ['ws2'] });
    expect(plan.skipped).toContainEqual({ host: 'ws1', reason: 'pre-staging failed lately' });
    await tick();
    s.finish('ws2');
    await p.idle();
    now = 60_001;
    expect(p.reconcile(ranked('ws1', 'ws2'), img).ship).toEqual(['ws1']);
    await p.stop();
  });

  it('cancel() drops queued work for a host and aborts its running transfer without counting a failure', async () => {
    const s = fakeShipper();
    const p = new Prestager({ shipper: s, targetFor: target, k: 3, bytesPerSec: 1e6 });
    p.reconcile(ranked('ws1', 'ws2', 'ws3'), img);
    await tick();
    expect(s.started).toEqual(['ws1']);
    await p.cancel('ws3');
    await p.cancel('ws1');
    expect(p.results[0]).toMatchObject({ host: 'ws1', ok: false, cancelled: true });
    await tick();
    expect(s.started).toEqual(['ws1', 'ws2']);
    s.finish('ws2');
    await p.idle();
    expect(s.started).toEqual(['ws1', 'ws2']);
    // ws1 was cancelled, not failed: it is planned again at once.
    expect(p.reconcile(ranked('ws1'), img).ship).toEqual(['ws1']);
    await p.stop();
  });

  it('drops queued transfers that are no longer wanted (the depot stopped being primary)', async () => {
    let wanted = true;
    const s = fakeShipper();
    const p = new Prestager({ shipper: s, targetFor: target, k: 2, bytesPerSec: 1e6, wanted: () => wanted });
    p.reconcile(ranked('ws1', 'ws2'), img);
    await tick();
    wanted = false;
    s.finish('ws1');
    await p.idle();
    expect(s.started).toEqual(['ws1']);
    await p.stop();
  });

  it('finds a depot\'s sshd from its heartbeat', () => {
    const hb = { addresses: ['/ip4/127.0.0.1/tcp/7470/p2p/x', '/ip4/10.0.0.7/tcp/7470/p2p/x'], hostAddresses: ['10.0.0.7', '192.168.1.9'] };
    expect(sshEndpointOf({ ...hb, sshPort: 2222 }, 22)).toEqual({ host: '10.0.0.7', port: 2222 });
    expect(sshEndpointOf({ addresses: [], hostAddresses: ['192.168.1.9'] }, 22)).toEqual({ host: '192.168.1.9', port: 22 });
    expect(sshEndpointOf({ addresses: [], hostAddresses: [] }, 22)).toBeUndefined();
  });
});

describe('transfer tracker', () => {
  it('derives rate and ETA and moves finished transfers to the history', () => {
    let now = 1000;
    const t = new TransferTracker(() => now);
    const info = t.begin({ imageId: 'b'.repeat(64), imageName: 'zbx', target: 'ws2:22', imageBytes: 1000 });
    t.update(info.key, { state: 'sending', bytesToSend: 1000 });
    now = 3000;
    t.update(info.key, { bytesSent: 500 }, 1000);
    expect(t.list()[0]).toMatchObject({ rateBps: 250, etaMs: 2000, state: 'sending' });
    t.end(info.key, 'done');
    expect(t.list()).toEqual([]);
    expect(t.history()[0]).toMatchObject({ state: 'done', etaMs: 0 });
  });
});

describe('image manifest', () => {
  const base = {
    format: 1 as const,
    name: 'zbx',
    version: '1',
    created: '2026-01-01T00:00:00.000Z',
    blockSize: 65536,
    files: [
      { path: 'b/disk.img', size: 65537, mode: 0o644, sha256: H('x'), blocks: [H('1'), H('2')] },
      { path: 'a.vmx', size: 3, mode: 0o600, sha256: H('y'), blocks: [H('3')] },
    ],
  };

  it('has a stable id whatever the key order, and sorts files', () => {
    const m = parseManifest(base);
    expect(m.files.map((f) => f.path)).toEqual(['a.vmx', 'b/disk.img']);
    const reordered = JSON.parse(JSON.stringify({ files: m.files, blockSize: 65536, created: base.created, version: '1', name: 'zbx', format: 1 }));
    expect(manifestId(parseManifest(reordered))).toBe(manifestId(m));
    expect(canonicalJson({ b: 1, a: [2, { d: 1, c: 2 }] })).toBe('{"a":[2,{"c":2,"d":1}],"b":1}');
  });

  it('refuses unsafe paths, wrong block counts, duplicates and file/folder clashes', () => {
    for (const p of ['../x', 'a/../../x', '/etc/passwd', 'a//b', 'a/', './a', 'a\0b', 'a\\b', '']) {
      expect(unsafePathReason(p), p).toBeDefined();
      expect(() => parseManifest({ ...base, files: [{ ...base.files[1]!, path: p }] }), p).toThrow(/invalid image manifest/);
    }
    expect(unsafePathReason('a/b..c/.d')).toBeUndefined();
    expect(() => parseManifest({ ...base, files: [{ ...base.files[0]!, blocks: [H('1')] }] })).toThrow(/expected 2/);
    expect(() => parseManifest({ ...base, files: [base.files[1]!, base.files[1]!] })).toThrow(/duplicate/);
    expect(() => parseManifest({ ...base, files: [base.files[1]!, { ...base.files[1]!, path: 'a.vmx/x' }] })).toThrow(/both a file and a folder/);
    expect(ImageManifest.safeParse({ ...base, blockSize: 1000 }).success).toBe(false);
  });
});

describe('send plan', () => {
  const block = 1024 * 1024;
  const manifest = (sizes: Record<string, number>) =>
    ({
      name: 'img',
      blockSize: block,
      files: Object.entries(sizes).map(([path, size]) => ({ path, size, blocks: Array.from({ length: Math.ceil(size / block) }, (_, i) => H(`${path}${i}`)) })),
    }) as unknown as ImageManifest;

  it('cuts the missing blocks into segments that never cross a block, in order, covering exactly the missing bytes', () => {
    const m = manifest({ 'disk.img': 5 * block + 100, 'a.vmx': 10 });
    const q = sendQueue(m, [{ path: 'disk.img', size: 5 * block + 100, blocks: [0, 3, 5] }, { path: 'a.vmx', size: 10, blocks: [0] }], 300 * 1024);
    expect(q.map((s) => s.path)).toEqual([...Array(4).fill('disk.img'), ...Array(4).fill('disk.img'), 'disk.img', 'a.vmx']);
    expect(q.slice(0, 4).map((s) => [s.offset, s.length])).toEqual([
      [0, 300 * 1024],
      [300 * 1024, 300 * 1024],
      [600 * 1024, 300 * 1024],
      [900 * 1024, 124 * 1024],
    ]);
    expect(q[8]).toEqual({ path: 'disk.img', offset: 5 * block, length: 100 });
    expect(q[9]).toEqual({ path: 'a.vmx', offset: 0, length: 10 });
    expect(q.reduce((n, s) => n + s.length, 0)).toBe(2 * block + 100 + 10);
    for (const s of q) expect(Math.floor(s.offset / block)).toBe(Math.floor((s.offset + s.length - 1) / block));
  });

  it('shares the request budget between connections and reads at most half a lane’s buffers at once', () => {
    expect(laneRequests(64, 2)).toBe(32);
    expect(laneRequests(5, 2)).toBe(3);
    expect(laneRequests(1, 4)).toBe(1);
    expect(segmentChunks(32)).toBe(16);
    expect(segmentChunks(64)).toBe(16);
    expect(segmentChunks(8)).toBe(4);
    expect(segmentChunks(1)).toBe(1);
    for (let n = 1; n <= 256; n++) expect(segmentChunks(laneRequests(n, 3))).toBeLessThanOrEqual(laneRequests(n, 3));
  });
});

describe('SFTP WRITE requests built in place (ssh2 internals)', () => {
  // A stand-in with the ssh2 1.x SFTPWrapper fields rawSftpWriter uses.
  function fakeSftp(window: number, packetSize = 100) {
    const sent: Buffer[] = [];
    const sftp = {
      _writeReqid: 41,
      _requests: {} as Record<number, { cb: (err?: Error) => void }>,
      _buffer: [] as Buffer[],
      _waitWindow: false,
      _chunkcb: undefined as undefined | (() => void),
      outgoing: { id: 7, window, packetSize, state: 'open' },
      _protocol: { channelData: (id: number, data: Buffer) => sent.push(Buffer.from(data)) },
    };
    // What ssh2's client does on CHANNEL_WINDOW_ADJUST.
    const adjust = (n: number) => {
      sftp.outgoing.window += n;
      if (sftp._waitWindow) {
        sftp._waitWindow = false;
        sftp._chunkcb?.call(sftp);
      }
    };
    return { sftp, sent, adjust };
  }
  const request = (w: NonNullable<ReturnType<typeof rawSftpWriter>>, handle: Buffer, data: Buffer) => {
    const buf = Buffer.alloc(w.headerBytes(handle) + data.length);
    data.copy(buf, w.headerBytes(handle));
    return buf;
  };

  it('lays out SSH_FXP_WRITE like the protocol says, 64-bit offsets included, and registers the answer callback', () => {
    const { sftp, sent } = fakeSftp(1 << 20, 1 << 20);
    const w = rawSftpWriter(sftp as never)!;
    expect(w).toBeDefined();
    const handle = Buffer.from([1, 2, 3, 4]);
    const data = randomBytes(50);
    const answers: (Error | undefined)[] = [];
    w.write(request(w, handle, data), handle, 5 * 2 ** 32 + 17, (e) => answers.push(e));
    expect(sent).toHaveLength(1);
    const p = sent[0]!;
    expect(p.readUInt32BE(0)).toBe(p.length - 4);
    expect(p[4]).toBe(6);
    expect(p.readUInt32BE(5)).toBe(42);
    expect(p.readUInt32BE(9)).toBe(4);
    expect(p.subarray(13, 17)).toEqual(handle);
    expect(p.readBigUInt64BE(17)).toBe(5n * 2n ** 32n + 17n);
    expect(p.readUInt32BE(25)).toBe(50);
    expect(p.subarray(29)).toEqual(data);
    expect(sftp._writeReqid).toBe(42);
    sftp._requests[42]!.cb();
    expect(answers).toEqual([undefined]);
  });

  it('sends what the window allows in packet-size pieces, queues the rest in order and sends it when the window opens', () => {
    const { sftp, sent, adjust } = fakeSftp(250, 100);
    const w = rawSftpWriter(sftp as never)!;
    const handle = Buffer.from('h');
    const a = request(w, handle, randomBytes(200)); // 226 bytes
    const b = request(w, handle, randomBytes(80)); // 106 bytes
    w.write(a, handle, 0, () => {});
    w.write(b, handle, 200, () => {});
    expect(sent.map((x) => x.length)).toEqual([100, 100, 26, 24]);
    expect(sftp.outgoing.window).toBe(0);
    expect(sftp._buffer.map((x) => x.length)).toEqual([82]);
    adjust(50);
    adjust(1000);
    expect(sent.map((x) => x.length)).toEqual([100, 100, 26, 24, 50, 32]);
    expect(Buffer.concat(sent)).toEqual(Buffer.concat([a, b]));
    expect(sftp._buffer).toEqual([]);
    // A new request goes straight out once nothing is queued.
    w.write(request(w, handle, randomBytes(10)), handle, 280, () => {});
    expect(sent).toHaveLength(7);
  });

  it('is not used when ssh2 does not look like 1.x inside (then sftp.write does the work)', () => {
    const { sftp } = fakeSftp(100);
    expect(rawSftpWriter({ ...sftp, _requests: undefined } as never)).toBeUndefined();
    expect(rawSftpWriter({ ...sftp, _protocol: {} } as never)).toBeUndefined();
    expect(rawSftpWriter({ ...sftp, outgoing: undefined } as never)).toBeUndefined();
    expect(rawSftpWriter({ ...sftp, server: true } as never)).toBeUndefined();
  });
});
