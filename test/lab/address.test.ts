import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execa } from 'execa';
import { readFile } from 'node:fs/promises';
import { ServiceAddress, parseServiceAddress } from '../../pilot/address.ts';
import { silentLogger } from '../../shared/logger.ts';
import { Lab } from '../../lab/lab.ts';
import { Prober } from '../../lab/prober.ts';

// The service-address move on real interfaces in network namespaces: ip addr + arping -U.
describe('service address in the namespace lab', () => {
  let lab: Lab;
  const log = silentLogger();
  const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
  const addrOn = (host: string, address: string): ServiceAddress =>
    new ServiceAddress({ address, iface: 'eth0', netns: lab.host(host).ns, logger: log });

  const arpingsIn = async (host: string): Promise<number> => {
    let n = 0;
    for (const pid of await lab.pids(host)) {
      const comm = await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '');
      if (comm.trim() === 'arping') n++;
    }
    return n;
  };

  beforeAll(async () => {
    lab = await Lab.create({ workstations: 2 });
    await Promise.all([lab.startEcho('w1'), lab.startEcho('w2')]);
  });
  afterAll(async () => {
    await lab?.destroy();
  });

  it('take, reassert and release are idempotent', async () => {
    const address = lab.serviceAddress(1);
    const ip = address.split('/')[0]!;
    const a = addrOn('w1', address);
    expect(await a.held()).toBe(false);
    expect((await a.take()).added).toBe(true);
    // The gratuitous ARPs go on in the background (3 over 2 s) without holding up take().
    expect(await arpingsIn('w1')).toBe(1);
    expect((await a.take()).added).toBe(false);
    expect(await a.held()).toBe(true);
    expect(await lab.holders(ip)).toEqual(['w1']);
    expect((await a.reassert()).readded).toBe(false);
    // Someone removes the address behind the pilot's back: reassert puts it back.
    await execa('ip', ['-n', lab.host('w1').ns, 'addr', 'del', address, 'dev', 'eth0']);
    expect(await a.held()).toBe(false);
    expect((await a.reassert()).readded).toBe(true);
    expect(await a.held()).toBe(true);
    expect((await a.release()).removed).toBe(true);
    // Released means no longer announced either.
    expect(await arpingsIn('w1')).toBe(0);
    expect((await a.release()).removed).toBe(false);
    expect(await a.held()).toBe(false);
    expect(await lab.holders(ip)).toEqual([]);
  });

  it('a failing command is named with its stderr', async () => {
    const bad = new ServiceAddress({ address: lab.serviceAddress(2), iface: 'nosuch0', netns: lab.host('w1').ns, logger: log });
    await expect(bad.take()).rejects.toThrow(/ip -n navlab-\w+-w1 addr add 10\.77\.\d+\.102\/24 dev nosuch0 failed \(exit \d+\): .*nosuch0/);
    await expect(bad.held()).rejects.toThrow(/addr show dev nosuch0 failed/);
    // Demotion must not fail because the interface has vanished.
    expect((await bad.release()).removed).toBe(false);
  });

  it('rejects bad input before running anything', () => {
    expect(() => parseServiceAddress('10.0.0.300/24')).toThrow(/not an IPv4 address/);
    expect(() => parseServiceAddress('10.0.0.5')).toThrow(/must look like/);
    expect(() => parseServiceAddress('10.0.0.5/33')).toThrow(/prefix length/);
    expect(() => new ServiceAddress({ address: '10.0.0.5/24', iface: 'an-interface-name-too-long', logger: log })).toThrow(/interface name/);
    expect(() => new ServiceAddress({ address: '10.0.0.5/24', iface: 'eth0', netns: 'bad ns', logger: log })).toThrow(/namespace name/);
    expect(() => new ServiceAddress({ address: '10.0.0.5/24', iface: 'eth0', garpIntervalS: 0.5, logger: log })).toThrow(/garpIntervalS/);
  });

  it('moves between hosts: gratuitous ARP updates the client, the prober measures the gap', async () => {
    const address = lab.serviceAddress(0);
    const ip = address.split('/')[0]!;
    const a = addrOn('w1', address);
    const b = addrOn('w2', address);
    await a.take();
    const prober = await Prober.start(lab, { target: ip, port: 7000 });
    try {
      await prober.waitForServer('w1', 5000);
      await sleep(300);
      // Stop client traffic so only the gratuitous ARP can change the client's cache.
      await prober.stop();
      expect(await lab.neighbourMac('client', ip)).toBe(lab.host('w1').mac);
      await a.release();
      await b.take();
      await sleep(100);
      expect(await lab.neighbourMac('client', ip)).toBe(lab.host('w2').mac);
      await b.release();
    } finally {
      await prober.stop();
    }

    // Now with the prober running: down on w1, a known pause, up on w2.
    const delayMs = 300;
    await a.take();
    const p2 = await Prober.start(lab, { target: ip, port: 7000 });
    try {
      await p2.waitForServer('w1', 5000);
      await sleep(500);
      const now = (): number => performance.timeOrigin + performance.now();
      const from = now();
      await a.release();
      const released = now();
      await sleep(delayMs);
      const taking = now();
      await b.take();
      const taken = now();
      await p2.waitForServer('w2', 3000);
      await sleep(200);
      const o = p2.outage(from, now());
      expect(o.recovered).toBe(true);
      expect(o.serverAfter).toBe('w2');
      // The gap holds the whole pause between release and take, and not much more than
      // release + pause + take + the gratuitous ARP's trip + one 10 ms probe interval.
      expect(o.outageMs).toBeGreaterThanOrEqual(taking - released - 2);
      expect(o.outageMs).toBeGreaterThanOrEqual(delayMs);
      expect(o.outageMs).toBeLessThan(taken - from + 150);
      // Without the gratuitous ARP the client would keep the old MAC for many seconds.
      expect(o.outageMs).toBeLessThan(delayMs + 500);
      // Before the move the prober saw no gap beyond its interval and scheduling noise.
      expect(p2.outage(from - 400, from - 10).outageMs).toBeLessThan(150);
    } finally {
      await p2.stop();
      await b.release();
      await a.release();
    }
  });
});
