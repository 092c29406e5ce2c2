import { describe, it, expect } from 'vitest';
import { GuestServiceAddress, addressListed } from '../../pilot/guest-address.ts';
import { guestAddressFromHost, QemuDriver } from '../../depot/containers/drivers/qemu.ts';
import { ContainerSpec, QemuSpec } from '../../depot/containers/drivers/driver.ts';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { REPO_ROOT } from '../../shared/repo-root.ts';
import { silentLogger } from '../../shared/logger.ts';

// The service address inside a QEMU guest, with a fake guest (what the guest agent would run):
// the commands it sends, idempotence, refusals and errors. The real guest: test/lab/vm-guest.test.ts.

interface Call {
  cmd: string;
  args: string[];
}

function fakeGuest(opts: { held?: boolean; addFails?: string } = {}) {
  const calls: Call[] = [];
  const spawned: Call[] = [];
  let held = opts.held ?? false;
  const run = async (cmd: string, args: string[]) => {
    calls.push({ cmd, args });
    if (args[0] === 'addr' && args[1] === 'add') {
      if (opts.addFails) return { exitCode: 2, stdout: '', stderr: opts.addFails };
      if (held) return { exitCode: 2, stdout: '', stderr: 'RTNETLINK answers: File exists' };
      held = true;
      return { exitCode: 0, stdout: '', stderr: '' };
    }
    if (args[0] === 'addr' && args[1] === 'del') {
      if (!held) return { exitCode: 2, stdout: '', stderr: 'RTNETLINK answers: Cannot assign requested address' };
      held = false;
      return { exitCode: 0, stdout: '', stderr: '' };
    }
    if (args[0] === '-j') return { exitCode: 0, stdout: JSON.stringify([{ ifname: 'eth0', addr_info: held ? [{ family: 'inet', local: '10.0.0.100', prefixlen: 24 }] : [] }]), stderr: '' };
    return { exitCode: 1, stdout: '', stderr: 'unexpected' };
  };
  const spawn = async (cmd: string, args: string[]) => {
    spawned.push({ cmd, args });
  };
  return { calls, spawned, run, spawn, isHeld: () => held, drop: () => (held = false) };
}

describe('GuestServiceAddress', () => {
  it('take adds the address in the guest and announces it from the guest; a second take finds it held', async () => {
    const g = fakeGuest();
    const a = new GuestServiceAddress({ address: '10.0.0.100/24', iface: 'eth0', run: g.run, spawn: g.spawn, logger: silentLogger() });
    expect(await a.take()).toMatchObject({ added: true });
    expect(g.calls[0]).toEqual({ cmd: '/usr/sbin/ip', args: ['addr', 'add', '10.0.0.100/24', 'dev', 'eth0'] });
    expect(g.spawned[0]).toEqual({ cmd: '/usr/bin/arping', args: ['-U', '-c', '3', '-i', '1', '-I', 'eth0', '10.0.0.100'] });
    expect(await a.take()).toMatchObject({ added: false });
    expect(await a.held()).toBe(true);
  });

  it('with a fence guard, take goes through it and a refusal is an error (no lease)', async () => {
    const g = fakeGuest();
    let asked = 0;
    const a = new GuestServiceAddress({ address: '10.0.0.100/24', iface: 'eth0', run: g.run, spawn: g.spawn, logger: silentLogger(), adder: async () => (asked++, false) });
    await expect(a.take()).rejects.toMatchObject({ code: 'CONFLICT' });
    expect(asked).toBe(1);
    expect(g.calls).toEqual([]);
    expect(g.spawned).toEqual([]);
  });

  it('reassert re-adds an address the guest lost and always sends one gratuitous ARP', async () => {
    const g = fakeGuest({ held: true });
    const a = new GuestServiceAddress({ address: '10.0.0.100/24', iface: 'eth0', run: g.run, spawn: g.spawn, logger: silentLogger() });
    expect(await a.reassert()).toEqual({ readded: false });
    g.drop();
    expect(await a.reassert()).toEqual({ readded: true });
    expect(g.isHeld()).toBe(true);
    expect(g.spawned.map((s) => s.args[2])).toEqual(['1', '1']);
  });

  it('release removes it; already gone is fine; other failures name the command', async () => {
    const g = fakeGuest({ held: true });
    const a = new GuestServiceAddress({ address: '10.0.0.100/24', iface: 'eth0', run: g.run, spawn: g.spawn, logger: silentLogger() });
    expect(await a.release()).toMatchObject({ removed: true });
    expect(await a.release()).toMatchObject({ removed: false });
    const bad = fakeGuest({ addFails: 'Cannot find device "eth0"' });
    const b = new GuestServiceAddress({ address: '10.0.0.100/24', iface: 'eth0', run: bad.run, spawn: bad.spawn, logger: silentLogger() });
    await expect(b.take()).rejects.toThrow(/ip addr add 10.0.0.100\/24 dev eth0 in the guest failed .*Cannot find device/);
  });

  it('refuses bad input with a clear error', () => {
    const g = fakeGuest();
    expect(() => new GuestServiceAddress({ address: '10.0.0.300/24', iface: 'eth0', run: g.run, spawn: g.spawn, logger: silentLogger() })).toThrow(/not an IPv4 address/);
    expect(() => new GuestServiceAddress({ address: '10.0.0.1/24', iface: 'eth0; reboot', run: g.run, spawn: g.spawn, logger: silentLogger() })).toThrow(/interface name/);
    expect(() => addressListed('{not json', '10.0.0.1', 24, 'eth0')).toThrow(/unreadable JSON/);
  });
});

describe('qemu driver: the guest on the LAN', () => {
  const ipJson = (local: string, prefixlen: number) => JSON.stringify([{ ifname: 'navbr0', addr_info: [{ family: 'inet', local, prefixlen }] }]);

  it('guest address = the host address on the bridge plus the offset, same prefix; leaving the subnet is refused', () => {
    expect(guestAddressFromHost(ipJson('10.77.3.11', 24), 40, 'navbr0')).toBe('10.77.3.51/24');
    expect(guestAddressFromHost(ipJson('192.168.0.250', 23), 10, 'navbr0')).toBe('192.168.1.4/23');
    expect(() => guestAddressFromHost(ipJson('10.77.3.250', 24), 5, 'navbr0')).toThrow(/leaves the subnet/);
    expect(() => guestAddressFromHost(JSON.stringify([{ addr_info: [] }]), 5, 'navbr0')).toThrow(/no IPv4 address/);
  });

  it('boots the kernel with the guest address on its command line and the NIC on the bridge with a stable MAC', () => {
    const spec = QemuSpec.parse({ driver: 'qemu', kernel: 'vmlinuz', initrd: 'initrd.img', append: 'root=/dev/vda rw console=ttyS0', disk: 'disk.qcow2', kvm: 'off', guestAgent: true, network: { bridge: 'navbr0', guestAddress: '10.77.3.51/24', gateway: '10.77.3.1' } });
    const d = new QemuDriver(spec, { id: 'zbx-w1', dir: '/srv/c/zbx-w1', logger: silentLogger() });
    const a = d.args();
    expect(a[a.indexOf('-kernel') + 1]).toBe('/srv/c/zbx-w1/vmlinuz');
    expect(a[a.indexOf('-initrd') + 1]).toBe('/srv/c/zbx-w1/initrd.img');
    expect(a[a.indexOf('-append') + 1]).toBe('root=/dev/vda rw console=ttyS0 navigator.ip=10.77.3.51/24 navigator.gw=10.77.3.1');
    expect(a[a.indexOf('-netdev') + 1]).toBe('bridge,id=lan0,br=navbr0');
    expect(a[a.indexOf('-device', a.indexOf('-netdev')) + 1]).toMatch(/^virtio-net-pci,netdev=lan0,mac=52:54:00(:[0-9a-f]{2}){3}$/);
    expect(d.mac()).toBe(new QemuDriver(spec, { id: 'zbx-w1', dir: '/elsewhere', logger: silentLogger() }).mac());
    expect(d.mac()).not.toBe(new QemuDriver(spec, { id: 'zbx-w2', dir: '/srv/c/zbx-w2', logger: silentLogger() }).mac());
    expect(a).not.toContain('-enable-kvm');
    expect(a).not.toContain('-accel');
    const small = new QemuDriver(QemuSpec.parse({ driver: 'qemu', kvm: 'off', tcgCacheMb: 128 }), { id: 'x', dir: '/srv/x', logger: silentLogger() }).args();
    expect(small[small.indexOf('-accel') + 1]).toBe('tcg,tb-size=128');
  });

  it("the VM example's container.yaml is a valid qemu spec", () => {
    const spec = ContainerSpec.parse(parse(readFileSync(join(REPO_ROOT, 'deploy/examples/zabbix-vm/container.yaml'), 'utf8')));
    expect(spec).toMatchObject({ driver: 'qemu', kernel: 'vmlinuz', guestAgent: true, primaryUnit: 'navigator-zabbix.service', network: { bridge: 'br0', guestAddressOffset: 40 } });
    expect(() => QemuSpec.parse({ driver: 'qemu', primaryUnit: 'x; reboot' })).toThrow(/systemd service name/);
  });

  it('refuses a kernel command line with shell characters, append without kernel, and both guest address forms', () => {
    expect(() => QemuSpec.parse({ driver: 'qemu', kernel: 'k', append: 'root=/dev/vda; rm -rf /' })).toThrow(/kernel command line/);
    expect(() => new QemuDriver(QemuSpec.parse({ driver: 'qemu', append: 'quiet' }), { id: 'x', dir: '/srv/x', logger: silentLogger() })).toThrow(/append needs kernel/);
    expect(() => QemuSpec.parse({ driver: 'qemu', network: { bridge: 'navbr0', guestAddress: '10.0.0.5/24', guestAddressOffset: 4 } })).toThrow(/not both/);
    expect(() => QemuSpec.parse({ driver: 'qemu', network: { bridge: 'br0 x' } })).toThrow(/bridge/);
  });
});

describe('guest mode of the pilot', () => {
  it('the address lives in the guest only for a qemu copy with a LAN NIC and a guest agent', async () => {
    const { guestSocketsOf } = await import('../../pilot/guest-mode.ts');
    const vm = QemuSpec.parse({ driver: 'qemu', guestAgent: true, network: { bridge: 'br0', guestAddressOffset: 40 } });
    expect(guestSocketsOf(vm, '/srv/c/zbx')).toEqual({ qmpSocket: '/srv/c/zbx/qmp.sock', qgaSocket: '/srv/c/zbx/qga.sock', nic: 'lan0' });
    expect(guestSocketsOf({ ...vm, guestAgent: false }, '/srv/c/zbx')).toBeUndefined();
    expect(guestSocketsOf(QemuSpec.parse({ driver: 'qemu', guestAgent: true }), '/srv/c/zbx')).toBeUndefined();
    expect(guestSocketsOf(ContainerSpec.parse({ driver: 'process' }), '/srv/c/zbx')).toBeUndefined();
  });

  it('a copy whose start waits for its guest to boot gets that much longer to start', async () => {
    const { containerStartTimeoutMs } = await import('../../pilot/guest-mode.ts');
    expect(containerStartTimeoutMs(ContainerSpec.parse({ driver: 'process' }))).toBe(120_000);
    expect(containerStartTimeoutMs(QemuSpec.parse({ driver: 'qemu', guestAgent: true, bootTimeoutMs: 600_000 }))).toBe(720_000);
  });

  it("fenceNow makes the guard fence at once and exit (a guest whose QEMU is gone counts as fenced)", async () => {
    const { FenceGuard } = await import('../../pilot/fence-guard.ts');
    const lines: string[] = [];
    const logger = { ...silentLogger(), child: () => ({ ...silentLogger(), info: (o: { line?: string }) => lines.push(o.line ?? '') }) } as unknown as ReturnType<typeof silentLogger>;
    const g = new FenceGuard({ address: '10.0.0.100/24', iface: 'eth0', logger, guest: { qmpSocket: '/nonexistent/qmp.sock', qgaSocket: '/nonexistent/qga.sock' } });
    await g.arm(60_000);
    expect(g.armed).toBe(true);
    expect(await g.fenceNow(10_000)).toBe(true);
    expect(lines.some((l) => l.includes('"event":"guest-fenced"'))).toBe(true);
    expect(lines.some((l) => l.includes('"reason":"asked by pilot"'))).toBe(true);
  });
});
