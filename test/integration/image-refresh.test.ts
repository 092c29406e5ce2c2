import { mkdir, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TokenBucket } from '../../ship/bandwidth.ts';
import { ImageRefresh, refreshCandidates } from '../../pilot/image-refresh.ts';
import { StoreSection } from '../../shared/config.ts';
import { createLogger } from '../../shared/logger.ts';
import { startShipDepots, type ShipDepots, type ShipNode } from '../../bench/ship-depots.ts';
import { waitFor } from '../../lab/loopback/depot-procs.ts';

// A changed guest disk re-shipped to the depots that hold the old one, through real depots on
// loopback (each receiver with its own OpenSSH sshd; image.prepare/commit over the control
// protocol; the pilots' ImageShipping): a real qcow2 (qemu-img create, data written with
// qemu-io) is shipped in full to B and C, as to a standby and a pre-staged host; then it is
// changed in place (qemu-io writes over allocated clusters and allocates new ones: what a package
// update in a guest powered off cleanly does to its disk) and ImageRefresh imports the folder as
// the new version and ships it: B and C build it from the version they hold and receive only the
// changed blocks (a delta), a transfer cut off is resumed, every receiver verifies the result, and
// the figures are in the log and GET /api/image-refresh-like status. Store blocks: the default 4 MiB.

const BLOCK = StoreSection.parse({}).blockBytes;

let trio: ShipDepots;
let root: string;
let src: string;
let a: ShipNode;
let b: ShipNode;
let c: ShipNode;
let shipping: ShipDepots['shipping'];
let v1: string;
const logLines: Array<Record<string, unknown>> = [];

const heartbeatOf = (from: ShipNode, of: ShipNode) => trio.heartbeatOf(from, of);
const qemuIo = (file: string, ...cmds: string[]) => execa('qemu-io', ['-f', 'qcow2', ...cmds.flatMap((x) => ['-c', x]), file]);

beforeAll(async () => {
  const log = createLogger({ level: 'info', destination: { write: (line: string) => void logLines.push(JSON.parse(line) as Record<string, unknown>) } });
  trio = await startShipDepots({ prefix: 'refresh', receivers: 2, blockSize: BLOCK, aShip: { requestsInFlight: 16 }, shippingLogger: log });
  ({ root, a, shipping } = trio);
  [b, c] = trio.receivers as [ShipNode, ShipNode];

  // The guest image: a real qcow2 with 160 MiB of data in a 1 GiB disk.
  src = join(root, 'zbx-image');
  await mkdir(src);
  await execa('qemu-img', ['create', '-q', '-f', 'qcow2', join(src, 'disk.qcow2'), '1G']);
  await qemuIo(join(src, 'disk.qcow2'), 'write -P 0x11 0 96M', 'write -P 0x22 256M 64M');
  await writeFile(join(src, 'container.yaml'), 'driver: qemu\ndisk: disk.qcow2\n');
  v1 = await a.store.import(src, 'svc');
  // B and C hold v1 (a standby's host and a pre-staged one).
  for (const n of [b, c]) expect((await shipping.ensureImage(n.depot.peerId, v1)).kind).toBe('full');
  await waitFor('B and C list v1 in their heartbeats', async () => (heartbeatOf(a, b)?.images.includes(v1) && heartbeatOf(a, c)?.images.includes(v1) ? true : undefined), 10_000);
}, 120_000);

afterAll(async () => {
  await trio?.stop();
});

describe('a changed guest image re-shipped to the depots holding the old one', () => {
  it('the qcow2 changed in place reaches B as a delta and C by a resumed delta after a cut; both verify it; a small fraction of the image is sent', async () => {
    const disk = join(src, 'disk.qcow2');
    // "Package update": rewrite some allocated clusters, allocate new ones; qemu-io closes the image cleanly.
    await qemuIo(disk, 'write -P 0x33 8M 2M', 'write -P 0x44 300M 512K', 'write -P 0x55 700M 1M');
    const imageBytes = (await stat(disk)).size;

    // The transfer to C (slowed to 4 MB/s, so it is cut mid-way on any machine) is cut off once it
    // has sent two blocks' worth; the refresh's retry resumes it.
    let cut = false;
    const refresh = new ImageRefresh({
      self: { peerId: a.depot.peerId, name: 'refresh-a' },
      candidates: () => refreshCandidates(a.depot.membership.view()),
      pilotFor: () => ({ role: 'primary', spec: { image: v1 } }),
      runningImages: () => [v1],
      store: a.store,
      ship: async (peerId, imageId) => {
        if (peerId !== c.depot.peerId || cut) return shipping.ensureImage(peerId, imageId);
        cut = true;
        const abort = new AbortController();
        return shipping.shipper.ship(imageId, shipping.targetFor(peerId), { signal: abort.signal, bandwidth: new TokenBucket({ bytesPerSec: 4_000_000 }), onProgress: (t) => void (t.bytesSent >= 2 * BLOCK && abort.abort()) });
      },
      logger: createLogger({ level: 'info', destination: { write: (line: string) => void logLines.push(JSON.parse(line) as Record<string, unknown>) } }),
      retryAfterMs: 200,
    });
    const res = await refresh.refresh({ service: 'svc', imagePath: src });
    expect(res).toMatchObject({ service: 'svc', base: v1, unchanged: false, skipped: [] });
    expect(res.targets.sort()).toEqual(['refresh-b', 'refresh-c']);
    const v2 = res.image;
    expect(v2).not.toBe(v1);
    await waitFor('the refresh to finish', async () => (refresh.status()[0]!.state !== 'shipping' ? true : undefined), 120_000);
    const job = refresh.status()[0]!;
    expect(job.state).toBe('done');
    const tb = job.targets.find((t) => t.host === 'refresh-b')!;
    const tc = job.targets.find((t) => t.host === 'refresh-c')!;
    expect(tb).toMatchObject({ state: 'done', kind: 'delta', attempts: 1 });
    expect(tc).toMatchObject({ state: 'done', kind: 'resume', attempts: 2 });
    expect(tb.imageBytes).toBeGreaterThan(imageBytes);
    // The delta: the blocks holding the clusters written, the new ones and qcow2's tables — a small fraction.
    expect(tb.bytesSent!).toBeGreaterThan(0);
    expect(tb.bytesSent! / tb.imageBytes!).toBeLessThan(0.15);
    expect(tc.bytesSent!).toBeLessThan(tb.bytesSent!);
    // Both receivers hold v2, verified block by block, and nothing is left in staging; v1 stays.
    for (const n of [b, c]) {
      expect(await n.store.verify(v2, { quarantine: false })).toEqual({ ok: true, id: v2 });
      expect(await n.store.has(v1)).toBe(true);
      expect(await readdir(join(n.config.store.dir, 'staging'))).toEqual([]);
    }
    // The bytes are the changed disk's.
    const got = await readFile(join(b.store.imageFilesDir(v2), 'disk.qcow2'));
    expect(got.equals(await readFile(disk))).toBe(true);
    // Visible: the log says where each went and how much was sent; the transfers list the cut and the resume.
    const shipped = logLines.filter((l) => l.event === 'image-refresh-shipped');
    expect(shipped.map((l) => [l.host, l.kind])).toEqual([
      ['refresh-b', 'delta'],
      ['refresh-c', 'resume'],
    ]);
    expect(logLines.some((l) => l.event === 'image-refresh-ship-failed' && l.host === 'refresh-c' && l.final === false)).toBe(true);
    expect(logLines.find((l) => l.event === 'image-refresh-done')).toMatchObject({ state: 'done', depots: 2, failed: [] });
    const kinds = shipping.transfers().filter((t) => t.imageId === v2).map((t) => `${t.kind}/${t.state}`);
    expect(kinds.sort()).toEqual(['delta/done', 'delta/failed', 'resume/done']);
    console.log(JSON.stringify({ imageRefresh: { imageBytes: tb.imageBytes, deltaBytes: tb.bytesSent, deltaPct: Math.round((tb.bytesSent! / tb.imageBytes!) * 1000) / 10, deltaMs: tb.durationMs, resumeBytes: tc.bytesSent, blockBytes: BLOCK } }));

    // The same folder again: B and C already hold it, nothing is shipped.
    await waitFor('B and C list v2 in their heartbeats', async () => (heartbeatOf(a, b)?.images.includes(v2) && heartbeatOf(a, c)?.images.includes(v2) ? true : undefined), 10_000);
    const again = await refresh.refresh({ service: 'svc', imagePath: src });
    expect(again).toMatchObject({ image: v2, unchanged: false, targets: [] });
    expect(again.present.sort()).toEqual(['refresh-b', 'refresh-c']);
    await waitFor('the second refresh to finish', async () => (refresh.status()[0]!.state === 'done' ? true : undefined), 10_000);
    expect(shipping.transfers().filter((t) => t.imageId === v2)).toHaveLength(3);
    await refresh.stop();
  }, 180_000);
});
