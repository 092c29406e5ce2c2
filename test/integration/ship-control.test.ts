import { randomBytes } from 'node:crypto';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TransferInfo } from '../../shared/api/transfers.ts';
import type { DepotsResponse } from '../../shared/api/depots.ts';
import { waitFor } from '../../lab/loopback/depot-procs.ts';
import { failure } from '../helpers/failure.ts';
import { startShipDepots, type ShipDepots, type ShipNode } from '../../bench/ship-depots.ts';
import type { TestSshd } from '../../lab/loopback/sshd.ts';

// The control side of image shipping between real depots on loopback, each receiver with its own
// OpenSSH sshd: image.prepare/commit/abort over /navigator/control/1 (params checked), the sshPort
// and receives in progress in the heartbeat, ImageShipping (the pilots' sender) shipping on
// demand and pre-staging under a bandwidth limit, GET /api/transfers, and a refused host key.

const BLOCK = 256 * 1024;
const DISK = 24 * BLOCK; // 6 MiB

let t: ShipDepots;
let root: string;
let knownHosts: string;
let sshdB: TestSshd;
let sshdC: TestSshd;
let a: ShipNode;
let b: ShipNode;
let c: ShipNode;
let shipping: ShipDepots['shipping'];
let image: string;

async function getJson<T>(node: ShipNode, path: string): Promise<T> {
  const res = await fetch(`http://127.0.0.1:${node.depot.httpPort}${path}`);
  expect(res.status).toBe(200);
  return (await res.json()) as T;
}

const heartbeatOf = (from: ShipNode, of: ShipNode) => t.heartbeatOf(from, of);

beforeAll(async () => {
  // A ships; its pre-staging limit is 50 % of a 32 Mb/s link = 2 MB/s, so a pre-stage takes ~3 s.
  t = await startShipDepots({ prefix: 'ship', receivers: 2, blockSize: BLOCK, aShip: { linkMbps: 32, prestageBandwidthPct: 50, requestsInFlight: 16 } });
  ({ root, knownHosts, a, shipping } = t);
  [b, c] = t.receivers as [ShipNode, ShipNode];
  [sshdB, sshdC] = t.sshds as [TestSshd, TestSshd];
  a.depot.components.routes!.route('GET', '/api/transfers', () => ({ transfers: shipping.transfers() }));

  const src = join(root, 'src');
  await mkdir(src);
  await writeFile(join(src, 'disk.img'), randomBytes(DISK));
  await writeFile(join(src, 'container.yaml'), 'name: svc\n');
  image = await a.store.import(src, 'svc');
}, 60_000);

afterAll(async () => {
  await t?.stop();
});

describe('image shipping between depots', { timeout: 60_000 }, () => {
  it('receivers advertise their sshd port in the heartbeat and /api/depots', async () => {
    expect(heartbeatOf(a, b)?.sshPort).toBe(sshdB.port);
    expect(heartbeatOf(a, c)?.sshPort).toBe(sshdC.port);
    const d = await getJson<DepotsResponse>(a, '/api/depots');
    expect(d.depots.find((x) => x.name === 'ship-b')).toMatchObject({ sshPort: sshdB.port, staging: [], images: [] });
  });

  it('checks the params of image.prepare / image.commit / image.abort', async () => {
    const call = (method: string, params: unknown) => a.depot.components.control.call(b.depot.peerId, method, params);
    const manifest = await a.store.getManifest(image);
    const evil = { ...manifest, files: [{ ...manifest.files[0]!, path: '../../etc/cron.d/x' }] };
    const e1 = await failure(call('image.prepare', { manifest: evil }));
    expect(e1.code).toBe('PATH_OUTSIDE_STORE');
    expect(e1.message).toContain("manifest.files.0.path: path \"../../etc/cron.d/x\" contains '..'");
    expect((await failure(call('image.commit', { image: 'not-an-id' }))).message).toMatch(/image\.commit: image: must be 64 lowercase hex digits/);
    expect((await failure(call('image.abort', { image, extra: 1 }))).code).toBe('BAD_REQUEST');
    // A commit of a receive A never prepared is refused (only the preparing depot may commit).
    const e4 = await failure(call('image.commit', { image }));
    expect(e4.code).toBe('UNAUTHORIZED');
    expect(await readdir(join(b.config.store.dir, 'staging'))).toEqual([]);
  });

  it('image.prepare is served only to the lease holder of the image\'s service; refusals are counted in /metrics', async () => {
    const manifest = await a.store.getManifest(image);
    // B holds no lease: C refuses to receive from it.
    await b.depot.node.dial(c.depot.node.getMultiaddrs()[0]!);
    const fromB = await failure(b.depot.components.control.call(c.depot.peerId, 'image.prepare', { manifest }));
    expect(fromB.code).toBe('UNAUTHORIZED');
    expect(fromB.message).toContain('only to the depot holding its lease');
    // A holds svc's lease, not that of a service named otherwise.
    const other = await failure(a.depot.components.control.call(c.depot.peerId, 'image.prepare', { manifest: { ...manifest, name: 'other' } }));
    expect(other.code).toBe('UNAUTHORIZED');
    const metrics = await (await fetch(`http://127.0.0.1:${c.depot.httpPort}/metrics`)).text();
    expect(metrics).toContain('navigator_peer_refused_total{kind="image.prepare"} 2');
    expect(await readdir(join(c.config.store.dir, 'staging'))).toEqual([]);
  });

  it('a refused host key fails the transfer clearly and leaves no staging behind', async () => {
    const good = await readFile(knownHosts, 'utf8');
    // C's address pinned to B's host key: "changed".
    await writeFile(knownHosts, `[127.0.0.1]:${sshdC.port} ${sshdB.hostPublicKey}\n`);
    try {
      const e = await failure(shipping.ensureImage(c.depot.peerId, image));
      expect(e.code).toBe('HOST_KEY_MISMATCH');
      expect(e.message).toContain(`HOST KEY CHANGED for [127.0.0.1]:${sshdC.port}`);
    } finally {
      await writeFile(knownHosts, good);
    }
    expect(await readdir(join(c.config.store.dir, 'staging'))).toEqual([]);
    expect(await c.store.has(image)).toBe(false);
    const { transfers } = await getJson<{ transfers: TransferInfo[] }>(a, '/api/transfers');
    expect(transfers[0]).toMatchObject({ imageId: image, target: `127.0.0.1:${sshdC.port}`, state: 'failed', bytesSent: 0 });
    expect(transfers[0]!.error).toContain('HOST KEY CHANGED');
  });

  it('ships on demand: the receiver verifies and commits, /api/transfers shows the finished transfer', async () => {
    const r = await shipping.ensureImage(b.depot.peerId, image);
    expect(r).toMatchObject({ id: image, kind: 'full', target: `127.0.0.1:${sshdB.port}` });
    expect(r.bytesSent).toBe(r.imageBytes);
    expect(await b.store.verify(image, { quarantine: false })).toEqual({ ok: true, id: image });
    expect(await readdir(join(b.config.store.dir, 'staging'))).toEqual([]);
    const { transfers } = await getJson<{ transfers: TransferInfo[] }>(a, '/api/transfers');
    expect(transfers[0]).toMatchObject({ imageId: image, imageName: 'svc', target: `127.0.0.1:${sshdB.port}`, kind: 'full', state: 'done', bytesSent: r.imageBytes, bytesToSend: r.imageBytes, etaMs: 0 });
    // Again: the target already holds it, nothing is sent.
    expect((await shipping.ensureImage(b.depot.peerId, image)).kind).toBe('present');
    await waitFor('B heartbeat lists the image', async () => (heartbeatOf(a, b)?.images.includes(image) ? true : undefined), 5000);
  });

  it('pre-stages under the bandwidth limit; the receive shows in the heartbeat and /api/transfers while it runs', async () => {
    const plan = shipping.prestage(image, () => ({
      ranked: [
        { host: b.depot.peerId, alive: true, images: heartbeatOf(a, b)?.images ?? [] },
        { host: c.depot.peerId, alive: true, images: [] },
      ],
      busy: [],
    }));
    expect(plan).toMatchObject({ ship: [c.depot.peerId], staged: [b.depot.peerId] });
    const t0 = Date.now();
    // While it runs: C's heartbeat reports the receive, A lists the transfer as active first.
    const seen = await waitFor(
      'C reporting the receive in its heartbeat',
      async () => heartbeatOf(a, c)?.staging.find((s) => s.image === image && s.bytes > 0 && s.bytes < s.total),
      10_000,
      50,
    );
    expect(seen.total).toBe(DISK + 'name: svc\n'.length);
    const active = await getJson<{ transfers: TransferInfo[] }>(a, '/api/transfers');
    expect(active.transfers[0]).toMatchObject({ imageId: image, target: `127.0.0.1:${sshdC.port}`, state: 'sending' });
    const depots = await getJson<DepotsResponse>(a, '/api/depots');
    expect(depots.depots.find((x) => x.name === 'ship-c')?.staging[0]).toMatchObject({ image, total: seen.total });
    await shipping.prestager!.idle();
    const seconds = (Date.now() - t0) / 1000;
    expect(await c.store.verify(image, { quarantine: false })).toEqual({ ok: true, id: image });
    // 6 MiB at 2 MB/s less the first burst (1/4 s of rate): at least ~2.9 s.
    expect(seconds).toBeGreaterThan(((DISK - 500_000) / 2_000_000) * 0.9);
    const done = await getJson<{ transfers: TransferInfo[] }>(a, '/api/transfers');
    expect(done.transfers[0]).toMatchObject({ target: `127.0.0.1:${sshdC.port}`, state: 'done', bytesSent: seen.total });
    await waitFor('C staging empty in its heartbeat', async () => (heartbeatOf(a, c)?.staging.length === 0 && heartbeatOf(a, c)?.images.includes(image) ? true : undefined), 5000);
  });
});
