import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execa } from 'execa';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { silentLogger } from '../../shared/logger.ts';
import { ServiceAddress } from '../../pilot/address.ts';
import { Lab } from '../../lab/lab.ts';
import { sweepLabs } from '../../lab/lab-registry.ts';
import { ArpWatch } from '../../lab/arp-watch.ts';
import { Prober, longestGap } from '../../lab/prober.ts';
import { percentile } from '../../lab/stats.ts';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function namespacesOf(id: string): Promise<string[]> {
  const r = await execa('ip', ['-j', 'netns', 'list']);
  const names = r.stdout.trim() ? (JSON.parse(r.stdout) as Array<{ name: string }>).map((x) => x.name) : [];
  return names.filter((n) => n.startsWith(`navlab-${id}-`));
}

/** Layer-2 reachability: one ARP request from `from` for `toIp` gets an answer within 1 s. */
async function reaches(lab: Lab, from: string, toIp: string): Promise<boolean> {
  const r = await lab.exec(from, ['arping', '-c', '1', '-w', '1', '-I', 'eth0', toIp], { reject: false });
  return r.exitCode === 0;
}

/** One TCP exchange with the echo service from a namespace; the reply line or undefined. */
async function hello(lab: Lab, from: string, ip: string, port = 7000): Promise<string | undefined> {
  const code = `const s=require('net').connect({host:process.argv[1],port:+process.argv[2]});let d='';s.setTimeout(1000,()=>process.exit(1));s.on('data',c=>d+=c);s.on('end',()=>{process.stdout.write(d.trim());process.exit(0)});s.on('error',()=>process.exit(1));`;
  const r = await lab.exec(from, [process.execPath, '-e', code, ip, String(port)], { reject: false });
  return r.exitCode === 0 ? r.stdout : undefined;
}

describe('namespace lab harness', () => {
  let lab: Lab;

  beforeAll(async () => {
    lab = await Lab.create({ workstations: 4 });
  });
  afterAll(async () => {
    await lab?.destroy();
  });

  it('builds 4 workstations, a client and a watcher on one private subnet', async () => {
    expect(lab.workstations.map((w) => w.name)).toEqual(['w1', 'w2', 'w3', 'w4']);
    const hosts = [...lab.workstations, lab.client, lab.watch, lab.gw];
    expect(new Set(hosts.map((h) => h.mac)).size).toBe(7);
    for (const h of hosts) {
      expect(h.ip.startsWith(`${lab.net}.`)).toBe(true);
      expect(h.port.length).toBeLessThanOrEqual(15);
    }
    expect((await namespacesOf(lab.id)).sort()).toEqual([lab.bridgeNs, ...hosts.map((h) => h.ns)].sort());
    // Nothing of the lab in the root namespace.
    const root = await execa('ip', ['-j', 'addr', 'show']);
    expect(root.stdout).not.toContain(`${lab.net}.`);
    expect(await reaches(lab, 'client', lab.host('w4').ip)).toBe(true);
    expect(await reaches(lab, 'w1', lab.gateway)).toBe(true);
    await lab.startEcho('w2');
    expect(await hello(lab, 'client', lab.host('w2').ip)).toBe('w2');
  });

  it('partitions the LAN into groups and heals it', async () => {
    const ip = (h: string): string => lab.host(h).ip;
    await lab.partition([['w1'], ['w2', 'w3']]);
    try {
      const [w1w2, w2w3, w4client, w1w4, w3gw] = await Promise.all([
        reaches(lab, 'w1', ip('w2')),
        reaches(lab, 'w2', ip('w3')),
        reaches(lab, 'w4', ip('client')),
        reaches(lab, 'w1', ip('w4')),
        reaches(lab, 'w3', lab.gateway),
      ]);
      expect({ w1w2, w2w3, w4client, w1w4, w3gw }).toEqual({ w1w2: false, w2w3: true, w4client: true, w1w4: false, w3gw: false });
    } finally {
      await lab.heal();
    }
    const [a, b] = await Promise.all([reaches(lab, 'w1', ip('w2')), reaches(lab, 'w3', lab.gateway)]);
    expect([a, b]).toEqual([true, true]);
    await expect(lab.partition([['w1'], ['w1', 'w2']])).rejects.toThrow(/w1 is in two groups/);
    await lab.heal();
  });

  it('power loss kills every process and cuts the link; power on comes back clean', async () => {
    const echo = await lab.startEcho('w3');
    const sleeper = lab.spawn('w3', ['sleep', '600']);
    const svc = new ServiceAddress({ address: lab.serviceAddress(5), iface: 'eth0', netns: lab.host('w3').ns, logger: silentLogger() });
    await svc.take();
    await svc.stopAnnouncing();
    expect((await lab.pids('w3')).length).toBeGreaterThanOrEqual(2);
    expect(await hello(lab, 'client', lab.host('w3').ip)).toBe('w3');
    await lab.powerOff('w3');
    const [e1, e2] = await Promise.all([echo.exited, sleeper.exited]);
    expect(e1.signal).toBe('SIGKILL');
    expect(e2.signal).toBe('SIGKILL');
    expect(await lab.pids('w3')).toEqual([]);
    expect(await reaches(lab, 'client', lab.host('w3').ip)).toBe(false);
    // A dead host keeps its addresses on the dead interface; a reboot must not bring them back.
    expect(await lab.holders(svc.ip)).toEqual(['w3']);
    await lab.powerOn('w3');
    expect(await lab.holders(svc.ip)).toEqual([]);
    expect(await reaches(lab, 'client', lab.host('w3').ip)).toBe(true);
    // Cable pull without power loss: processes survive.
    const echo2 = await lab.startEcho('w3');
    await lab.linkDown('w3');
    expect(await reaches(lab, 'w4', lab.host('w3').ip)).toBe(false);
    expect(echo2.running).toBe(true);
    await lab.linkUp('w3');
    expect(await hello(lab, 'client', lab.host('w3').ip)).toBe('w3');
    await echo2.stop();
  });

  it('netem: packet loss in both directions, cleared again', async () => {
    await lab.startEcho('w4');
    // Share of 10 ms TCP exchanges client → w4 that succeed during 1.5 s.
    const successRate = async (): Promise<number> => {
      const p = await Prober.start(lab, { target: lab.host('w4').ip, port: 7000 });
      await sleep(1500);
      await p.stop();
      return p.successes.length / (p.successes.length + p.failures.length);
    };
    await lab.netem('w4', { lossPct: 100 });
    try {
      expect(await reaches(lab, 'client', lab.host('w4').ip)).toBe(false);
      await lab.netem('w4', { lossPct: 30 });
      // An exchange needs about four packets through, each kept with p = 0.7: about a quarter succeed.
      const lossy = await successRate();
      expect(lossy).toBeGreaterThan(0.03);
      expect(lossy).toBeLessThan(0.7);
    } finally {
      await lab.clearNetem('w4');
    }
    expect(await successRate()).toBeGreaterThan(0.8);
    await lab.clearNetem('w4');
    await expect(lab.netem('w4', {})).rejects.toThrow(/needs lossPct/);
    await expect(lab.netem('w4', { lossPct: 120 })).rejects.toThrow(/lossPct/);
  });

  it('the ARP watcher counts two MACs answering at once, and none with one holder', async () => {
    const address = lab.serviceAddress(0);
    const ip = address.split('/')[0]!;
    const a = new ServiceAddress({ address, iface: 'eth0', netns: lab.host('w1').ns, logger: silentLogger() });
    const b = new ServiceAddress({ address, iface: 'eth0', netns: lab.host('w2').ns, logger: silentLogger() });
    const watch = await ArpWatch.start(lab, { address: ip });
    try {
      await a.take();
      await sleep(600);
      const t1 = performance.timeOrigin + performance.now();
      // A clean move: release, then take elsewhere.
      await a.release();
      await b.take();
      const moved = performance.timeOrigin + performance.now();
      await sleep(600);
      const t2 = performance.timeOrigin + performance.now();
      // Deliberate split brain: both hold the address.
      await a.take();
      await sleep(600);
      const t3 = performance.timeOrigin + performance.now();
      await a.release();
      // Measured once the release has finished: until then both hosts really do hold it.
      const released = performance.timeOrigin + performance.now();
      await sleep(300);
      expect(watch.macs(0, t1)).toEqual([lab.host('w1').mac]);
      expect(watch.macs(moved + 20, t2)).toEqual([lab.host('w2').mac]);
      expect(watch.splitBrainEvents({ to: t2 })).toBe(0);
      expect(new Set(watch.macs(t2, t3))).toEqual(new Set([lab.host('w1').mac, lab.host('w2').mac]));
      // ~600 ms at a 50 ms interval: about a dozen moments.
      expect(watch.splitBrainEvents({ from: t2, to: t3 })).toBeGreaterThanOrEqual(5);
      expect(watch.splitBrainEvents({ from: released + 50 })).toBe(0);
    } finally {
      await watch.stop();
      await a.release();
      await b.release();
    }
  });

  it('destroy removes namespaces, processes and files; the sweeper clears a crashed run only', async () => {
    const other = await Lab.create({ workstations: 1 });
    const sleeper = other.spawn('w1', ['sleep', '600']);
    expect(sleeper.pid).toBeGreaterThan(0);
    await other.destroy();
    await other.destroy();
    expect(await namespacesOf(other.id)).toEqual([]);
    expect(sleeper.running).toBe(false);
    expect((await sleeper.exited).signal).toMatch(/SIGTERM|SIGKILL/);
    expect(existsSync(other.dir)).toBe(false);

    // A crashed run: its owner process is gone, its namespaces and a process in them remain.
    const crashed = await Lab.create({ workstations: 1 });
    const orphanPid = (await execa('ip', ['netns', 'exec', crashed.host('w1').ns, 'sh', '-c', 'sleep 600 >/dev/null 2>&1 & echo $!'])).stdout.trim();
    const dead = execa('true');
    await dead;
    const regFile = `/run/navlab/${crashed.id}.json`;
    const rec = JSON.parse(await readFile(regFile, 'utf8')) as { pid: number };
    rec.pid = dead.pid!;
    await writeFile(regFile, JSON.stringify(rec));
    const removed = await sweepLabs();
    expect(removed.sort()).toEqual((await namespacesOfList(crashed)).sort());
    expect(await namespacesOf(crashed.id)).toEqual([]);
    expect(await alive(Number(orphanPid))).toBe(false);
    expect(existsSync(regFile)).toBe(false);
    // The live lab was left alone.
    expect((await namespacesOf(lab.id)).length).toBe(8);
    await crashed.destroy();
  });

  it('longestGap and percentile', () => {
    expect(longestGap([0, 10, 20, 400, 410], 15, 405)).toMatchObject({ gapMs: 380, gapStart: 20, gapEnd: 400, recovered: true });
    // Gap still open at the window end: not recovered.
    expect(longestGap([0, 10, 20], 15, 500)).toMatchObject({ gapMs: 480, gapStart: 20, gapEnd: 500, recovered: false });
    // Gaps outside the window do not count.
    expect(longestGap([0, 300, 310, 320, 330, 900], 305, 325).gapMs).toBe(10);
    // A gap that opens inside the window counts in full.
    expect(longestGap([0, 300, 310, 320, 330, 900], 305, 335).gapMs).toBe(570);
    expect(longestGap([], 0, 100)).toMatchObject({ gapMs: 100, recovered: false });
    expect(percentile([3, 1, 2], 50)).toBe(2);
    expect(percentile([1, 2, 3, 4], 50)).toBe(2.5);
    expect(percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21], 95)).toBe(20);
    expect(Number.isNaN(percentile([], 50))).toBe(true);
  });
});

/** A pid that still runs (a zombie waiting for its reaper does not count). */
async function alive(pid: number): Promise<boolean> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

function namespacesOfList(l: Lab): string[] {
  return [l.bridgeNs, ...[...l.workstations, l.client, l.watch, l.gw].map((h) => h.ns)];
}
