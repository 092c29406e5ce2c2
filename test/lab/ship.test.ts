import { randomBytes } from 'node:crypto';
import { open, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ImageStore } from '../../depot/images/catalog.ts';
import type { TransferInfo } from '../../shared/api/transfers.ts';
import type { DepotsResponse } from '../../shared/api/depots.ts';
import type { ImageRefreshView } from '../../shared/api/image-refresh.ts';
import { REPO_ROOT } from '../../shared/repo-root.ts';
import { Lab } from '../../lab/lab.ts';
import { ADMIN_TOKEN, SERVICE, SERVICE_PORT, api, placement, startCluster, waitFor, type LabCluster } from '../../lab/cluster.ts';
import { startLabSshds } from '../../lab/lab-sshd.ts';

// Image shipping through the pilots, in the namespace lab: real depot processes, a real sshd in
// every workstation namespace, the image only in the bootstrap host's store. The primary must
// ship the image to the host it places a standby on (first with every host key pinned wrong:
// refused, nothing left behind; then with the right pins), and once protected pre-stage it on
// the next K placement candidates. Then the admin changes the image folder and `navigator image
// refresh` ships the new version to every depot holding the old one, as a delta.

const BLOB = 8 * 1024 * 1024;

let lab: Lab | undefined;

afterEach(async () => {
  await lab?.destroy();
  lab = undefined;
});

/** POST /api/bootstrap on `host` from inside its namespace (the admin host is 127.0.0.1). */
async function bootstrapApi(c: LabCluster, host: string, standbys: number): Promise<{ image: string; container: string }> {
  const body = JSON.stringify({ service: SERVICE, imagePath: c.imageDir, container: { driver: 'process' }, address: c.address, iface: 'eth0', port: SERVICE_PORT, standbys });
  const r = await c.lab.exec(
    host,
    ['curl', '-sS', '--fail-with-body', '--max-time', '60', '-X', 'POST', '-H', `Authorization: Bearer ${ADMIN_TOKEN}`, '-H', 'Content-Type: application/json', '--data', body, 'http://127.0.0.1:7480/api/bootstrap'],
    { reject: false, timeoutMs: 70_000 },
  );
  if (r.exitCode !== 0) throw new Error(`bootstrap failed (${r.exitCode}): ${r.stdout} ${r.stderr}`);
  return (JSON.parse(r.stdout) as { result: { image: string; container: string } }).result;
}

async function transfers(c: LabCluster, host: string): Promise<TransferInfo[]> {
  return (await api<{ transfers: TransferInfo[] }>(c, host, '/api/transfers'))?.transfers ?? [];
}

describe('image shipping in the lab', () => {
  it('refused host keys fail the placement cleanly; with the right pins the primary ships the image, starts the standby, and pre-stages the next candidates; a changed image is refreshed on all of them as a delta', async () => {
    lab = await Lab.create({ workstations: 4 });
    const hosts = lab.workstations.map((w) => w.name);
    const ssh = await startLabSshds(lab, hosts);
    const knownHosts = join(lab.dir, 'ssh', 'known_hosts');
    await writeFile(knownHosts, ssh.wrongKnownHosts());
    const c = await startCluster(lab, hosts.length, {
      preStage: false,
      env: {
        NAVIGATOR__ship__sshUser: 'root',
        NAVIGATOR__ship__sshKeyFile: ssh.userKeyFile,
        NAVIGATOR__ship__knownHostsFile: knownHosts,
        NAVIGATOR__ship__prestageCandidates: '2',
        NAVIGATOR__pilot__placementRetryMs: '2000',
      },
    });
    await writeFile(join(c.imageDir, 'disk.img'), randomBytes(BLOB));
    const w1 = c.depots.get('w1')!;
    const logged: Array<Record<string, unknown>> = [];
    w1.onLine((line) => {
      if (/"event":"(transfer-progress|transfer-done|standby-failed|standby-placed)"/.test(line)) logged.push(JSON.parse(line) as Record<string, unknown>);
    });

    // 1. Every host key pinned wrong: the placement fails clearly and leaves nothing behind.
    const refused = w1.waitForLine(/"event":"standby-failed".*HOST_KEY_MISMATCH/, 60_000);
    const { image } = await bootstrapApi(c, 'w1', 1);
    const failedLine = JSON.parse(await refused) as { err: string; host: string };
    expect(failedLine.err).toMatch(/HOST KEY CHANGED for 10\.77\.\d+\.\d+/);
    const failedTransfers = (await transfers(c, 'w1')).filter((t) => t.state === 'failed');
    expect(failedTransfers.length).toBeGreaterThan(0);
    expect(failedTransfers[0]).toMatchObject({ imageId: image, bytesSent: 0 });
    expect(failedTransfers[0]!.error).toContain('HOST KEY CHANGED');
    for (const h of hosts.slice(1)) {
      const store = join(lab.dir, 'data', h, 'images');
      expect(await readdir(join(store, 'staging')), `staging on ${h}`).toEqual([]);
      expect(await readdir(join(store, 'images')), `images on ${h}`).toEqual([]);
    }
    expect((await placement(c, 'w1')).standbys).toEqual([]);

    // 2. Right pins: the next round ships the image and the standby starts from it.
    await writeFile(knownHosts, ssh.knownHosts());
    await waitFor(async () => (await placement(c, 'w1')).standbys.length === 1, 120_000, 'a standby running');
    const standby = (await placement(c, 'w1')).standbys[0]!;
    const received = new ImageStore({ dir: join(lab.dir, 'data', standby, 'images'), keepVersions: 3 });
    expect(await received.verify(image, { quarantine: false })).toEqual({ ok: true, id: image });
    const ipOf = (h: string) => lab!.host(h).ip;
    const shipped = (await transfers(c, 'w1')).find((t) => t.state === 'done' && t.target === `${ipOf(standby)}:22`);
    expect(shipped, 'finished transfer to the standby host in /api/transfers').toBeDefined();
    expect(shipped).toMatchObject({ imageId: image, imageName: SERVICE, kind: 'full' });
    expect(shipped!.imageBytes).toBeGreaterThan(BLOB);
    expect(shipped!.bytesSent).toBe(shipped!.imageBytes);
    const placed = logged.find((l) => l.event === 'standby-placed' && l.host === standby);
    expect(placed?.shipMs).toBeGreaterThan(0);

    // 3. Protected: the image goes to the other two candidates (K = 2) in the background.
    const others = hosts.filter((h) => h !== 'w1' && h !== standby);
    await waitFor(
      async () => {
        const d = await api<DepotsResponse>(c, 'w1', '/api/depots');
        return others.every((h) => d?.depots.find((x) => x.name === h)?.images.includes(image));
      },
      60_000,
      `image pre-staged on ${others.join(', ')}`,
    );
    const all = await transfers(c, 'w1');
    for (const h of others) {
      const t = all.find((x) => x.state === 'done' && x.target === `${ipOf(h)}:22`);
      expect(t, `pre-stage transfer to ${h}`).toMatchObject({ imageId: image, kind: 'full' });
      expect(t!.bytesSent).toBe(t!.imageBytes);
      const s = new ImageStore({ dir: join(lab.dir, 'data', h, 'images'), keepVersions: 3 });
      expect(await s.verify(image, { quarantine: false })).toEqual({ ok: true, id: image });
    }
    // Active transfers come first, then finished ones newest first.
    const firstDone = all.findIndex((t) => t.state === 'done' || t.state === 'failed');
    expect(all.slice(firstDone).every((t) => t.state === 'done' || t.state === 'failed')).toBe(true);

    // The depots advertise their sshd and (idle now) receives in /api/depots.
    const depots = await api<DepotsResponse>(c, 'w2', '/api/depots');
    for (const d of depots!.depots) expect(d).toMatchObject({ sshPort: 22, staging: [] });
    // Progress and completion are logged.
    expect(logged.some((l) => l.event === 'transfer-done' && l.state === 'done' && l.bytesSent === shipped!.bytesSent)).toBe(true);
    expect(logged.some((l) => l.event === 'transfer-progress' && l.state === 'sending')).toBe(true);

    // 4. The admin changes the image folder in place (256 KiB rewritten in one 4 MiB block) and runs
    // `navigator image refresh` on the primary's host: every depot holding the image gets the new
    // version as a delta of that one block, verified.
    const fh = await open(join(c.imageDir, 'disk.img'), 'r+');
    await fh.write(randomBytes(256 * 1024), 0, 256 * 1024, 5 * 1024 * 1024);
    await fh.close();
    const tokenFile = join(lab.dir, 'admin.token');
    await writeFile(tokenFile, `${ADMIN_TOKEN}\n`, { mode: 0o600 });
    const r = await lab.exec('w1', [process.execPath, join(REPO_ROOT, 'bin/navigator.mjs'), 'image', 'refresh', '--service', SERVICE, '--image', c.imageDir, '--api', 'http://127.0.0.1:7480', '--token-file', tokenFile, '--json'], { reject: false, timeoutMs: 120_000 });
    expect(r.exitCode, `${r.stdout} ${r.stderr}`).toBe(0);
    const job = JSON.parse(r.stdout.trim().split('\n').pop()!) as ImageRefreshView;
    expect(job).toMatchObject({ service: SERVICE, base: image, state: 'done' });
    expect(job.targets.map((t) => t.host).sort()).toEqual(hosts.filter((h) => h !== 'w1').sort());
    for (const t of job.targets) {
      expect(t).toMatchObject({ state: 'done', kind: 'delta', attempts: 1, bytesSent: 4 * 1024 * 1024 });
      const s = new ImageStore({ dir: join(lab.dir, 'data', t.host, 'images'), keepVersions: 3 });
      expect(await s.verify(job.image, { quarantine: false })).toEqual({ ok: true, id: job.image });
    }
  }, 300_000);
});
