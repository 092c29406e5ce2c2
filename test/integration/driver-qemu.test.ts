import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtemp, rm, access } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from '../../shared/logger.ts';
import { QemuSpec } from '../../depot/containers/drivers/driver.ts';
import { createDriver } from '../../depot/containers/drivers/factory.ts';
import { QemuDriver, kvmAvailable } from '../../depot/containers/drivers/qemu.ts';
import { QmpClient } from '../../depot/containers/drivers/qmp.ts';
import { alive } from '../../depot/containers/drivers/proc.ts';

// Real qemu-system-x86_64 with no guest OS: the machine sits in its firmware, but QMP answers,
// which proves start, status, the graceful attempt (system_powerdown is ignored without an OS,
// so stop must fall back to quit/kill) and forced stop.

let root: string;
const drivers: QemuDriver[] = [];

function make(name: string, spec: Partial<QemuSpec> = {}): QemuDriver {
  const d = createDriver(QemuSpec.parse({ driver: 'qemu', memoryMb: 64, ...spec }), {
    id: name,
    dir: join(root, name),
    logger: silentLogger(),
  }) as QemuDriver;
  drivers.push(d);
  return d;
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'nav-qemu-'));
});

afterAll(async () => {
  for (const d of drivers) await d.stop({ timeoutMs: 0 }).catch(() => undefined);
  await rm(root, { recursive: true, force: true });
});

describe('qemu driver', () => {
  it('builds the command line with QMP, pidfile, no display and KVM when available', async () => {
    const d = make('args', { disk: 'disk.qcow2', guestAgent: true });
    const a = d.args();
    expect(a).toEqual(expect.arrayContaining(['-nodefaults', '-display', 'none', '-m', '64', '-machine', 'pc']));
    expect(a[a.indexOf('-qmp') + 1]).toBe(`unix:${join(root, 'args', 'qmp.sock')},server=on,wait=off`);
    expect(a[a.indexOf('-pidfile') + 1]).toBe(join(root, 'args', 'qemu.pid'));
    expect(a[a.indexOf('-drive') + 1]).toBe(`file=${join(root, 'args', 'disk.qcow2')},format=qcow2,if=virtio`);
    expect(a.includes('-enable-kvm')).toBe(kvmAvailable());
    expect(make('nokvm', { kvm: 'off' }).args()).not.toContain('-enable-kvm');
    expect(() => make('bad', { disk: '../../etc/passwd' })).toThrow(expect.objectContaining({ code: 'PATH_OUTSIDE_STORE' }));
  });

  it('starts, reports running over QMP, and a powerdown the guest ignores falls back to quit', async () => {
    const { mkdir } = await import('node:fs/promises');
    await mkdir(join(root, 'vm1'), { recursive: true });
    const d = make('vm1');
    expect(await d.status()).toBe('stopped');
    await d.start();
    const pid = await d.pid();
    expect(pid).toBeGreaterThan(0);
    expect(alive(pid!)).toBe(true);
    expect(await d.status()).toBe('running');

    // QMP directly: the handshake and query-status work on the driver's socket.
    const q = await QmpClient.connect(d.qmpPath);
    expect(await q.execute('query-status')).toMatchObject({ running: true, status: 'running' });
    q.close();

    // Starting again is a no-op on the same process.
    await d.start();
    expect(await d.pid()).toBe(pid);

    const t0 = Date.now();
    const r = await d.stop({ timeoutMs: 800 });
    const took = Date.now() - t0;
    expect(r).toEqual({ forced: true });
    expect(took).toBeGreaterThanOrEqual(800);
    expect(took).toBeLessThan(8000);
    expect(alive(pid!)).toBe(false);
    expect(await d.status()).toBe('stopped');
    await expect(access(d.qmpPath)).rejects.toThrow();
    await expect(access(d.pidFile)).rejects.toThrow();
  });

  it('forced stop (timeout 0) ends a running machine at once, and a restart works', async () => {
    const { mkdir } = await import('node:fs/promises');
    await mkdir(join(root, 'vm2'), { recursive: true });
    const d = make('vm2');
    await d.start();
    const pid = (await d.pid())!;
    const t0 = Date.now();
    expect(await d.stop({ timeoutMs: 0 })).toEqual({ forced: true });
    expect(Date.now() - t0).toBeLessThan(4000);
    expect(alive(pid)).toBe(false);
    expect(await d.status()).toBe('stopped');
    // Stopping a stopped machine is not an error.
    expect(await d.stop({ timeoutMs: 0 })).toEqual({ forced: false });
    await d.start();
    expect(await d.status()).toBe('running');
    expect(await d.pid()).not.toBe(pid);
    await d.stop({ timeoutMs: 0 });
  });

  it('exec goes through the guest agent channel; with no agent in the guest it times out clearly', async () => {
    const { mkdir } = await import('node:fs/promises');
    await mkdir(join(root, 'vm4'), { recursive: true });
    await expect(make('vm4-noagent').exec('/bin/true', [])).rejects.toThrow(/needs qemu-guest-agent/);
    const d = make('vm4', { guestAgent: true });
    await d.start();
    await access(d.qgaPath);
    await expect(d.exec('/bin/true', [], { timeoutMs: 500 })).rejects.toMatchObject({ code: 'TIMEOUT' });
    await d.stop({ timeoutMs: 0 });
  });

  it('a QEMU that cannot start reports its own error', async () => {
    const { mkdir } = await import('node:fs/promises');
    await mkdir(join(root, 'vm3'), { recursive: true });
    const d = make('vm3', { disk: 'missing.qcow2' });
    await expect(d.start()).rejects.toThrow(/qemu exited at start .*missing\.qcow2/);
    expect(await d.status()).toBe('stopped');
  });
});
