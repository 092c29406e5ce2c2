import { afterEach, describe, expect, it } from 'vitest';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BusyMeter } from '../../depot/busy/busy-meter.ts';
import { cgroupFolder, detectCpuHierarchy, ownCgroupFolder, parseCpuStatNs, within } from '../../depot/busy/cgroup-cpu.ts';
import { activeLocalSessions, isActiveLocal, parseSessionRecord } from '../../depot/busy/login-sessions.ts';
import { FakeClock } from '../../shared/clock.ts';
import { BusySection } from '../../shared/config.ts';
import { silentLogger } from '../../shared/logger.ts';

// The busy meter on a cgroup tree written by the test (v1 cpuacct and v2 cpu.stat files): the
// measured cgroup's CPU time less Navigator's own cgroups inside it, as a share of all CPUs; the
// depot itself subtracted only when it runs inside the measured cgroup; no signal when the
// cgroup cannot be read; and the loginctl output parsers.

let dir: string | undefined;
afterEach(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

async function tree(files: Record<string, string>): Promise<string> {
  dir = await mkdtemp(join(tmpdir(), 'busy-meter-'));
  for (const [p, text] of Object.entries(files)) {
    await mkdir(join(dir, p, '..'), { recursive: true });
    await writeFile(join(dir, p), text);
  }
  return dir;
}

describe('cgroup CPU figures', () => {
  it('finds v1 cpuacct or v2, reads both kinds, places paths and this process', async () => {
    const base = await tree({ 'cpuacct/cpuacct.usage': '100\n' });
    const h = (await detectCpuHierarchy(base))!;
    expect(h).toEqual({ kind: 'v1', root: join(base, 'cpuacct') });
    expect(cgroupFolder(h, '')).toBe(h.root);
    expect(cgroupFolder(h, 'navlab/w1')).toBe(join(h.root, 'navlab/w1'));
    expect(cgroupFolder(h, '/sys/fs/cgroup/cpuacct/x')).toBe('/sys/fs/cgroup/cpuacct/x');
    expect(ownCgroupFolder(h, '4:memory:/a\n2:cpuacct:/navlab/w1\n1:cpu:/\n')).toBe(join(h.root, 'navlab/w1'));
    expect(ownCgroupFolder({ kind: 'v2', root: '/sys/fs/cgroup' }, '0::/system.slice/navigator.service\n')).toBe('/sys/fs/cgroup/system.slice/navigator.service');
    expect(parseCpuStatNs('usage_usec 1500\nuser_usec 1000\n')).toBe(1_500_000);
    expect(within('/a/b/c', '/a/b')).toBe(true);
    expect(within('/a/bc', '/a/b')).toBe(false);
    expect(await detectCpuHierarchy(join(base, 'nothing'))).toBeUndefined();
  });
});

describe('busy meter', () => {
  const config = (over: object) => BusySection.parse({ sampleMs: 1000, cpuPct: 50, sessions: true, ...over });

  it('v1: the measured cgroup less Navigator\'s inside it, of all CPUs; busy from the first sample over the threshold', async () => {
    const base = await tree({ 'cpuacct/cpuacct.usage': '0', 'cpuacct/lab/w1/cpuacct.usage': '0', 'cpuacct/lab/w1/navigator/cpuacct.usage': '0', 'cpuacct/navigator/cpuacct.usage': '0' });
    let mono = 0;
    const clock = new FakeClock(1_000_000);
    const meter = new BusyMeter({
      config: config({ cgroup: 'lab/w1', excludeCgroups: ['lab/w1/navigator', 'navigator'] }),
      clock,
      logger: silentLogger(),
      cgroupBase: base,
      cpus: 2,
      monotonic: () => mono,
      sessions: async () => ({ available: true, active: 0 }),
      procSelfCgroup: async () => '2:cpuacct:/\n',
    });
    await meter.start();
    expect(meter.signal()).toBeUndefined();
    // 1 s: the cgroup used 1.6 CPU-s, 0.4 of it in Navigator's folder inside it: 1.2 of 2 CPUs.
    await writeFile(join(base, 'cpuacct/lab/w1/cpuacct.usage'), String(1.6e9));
    await writeFile(join(base, 'cpuacct/lab/w1/navigator/cpuacct.usage'), String(0.4e9));
    // Navigator's folder outside the measured cgroup is not part of it and not subtracted.
    await writeFile(join(base, 'cpuacct/navigator/cpuacct.usage'), String(5e9));
    // The meter's own timer takes the sample (every sampleMs).
    mono = 1000;
    clock.advance(1000);
    await meter.sample();
    expect(meter.signal()).toEqual({ busy: true, cpuPct: 60, sessions: 0, since: 1_001_000 });
    await writeFile(join(base, 'cpuacct/lab/w1/cpuacct.usage'), String(1.8e9));
    mono = 2000;
    clock.advance(1000);
    await meter.sample();
    expect(meter.signal()).toEqual({ busy: false, cpuPct: 10, sessions: 0 });
    await meter.stop();
  });

  it('v2 cpu.stat; an active local session is busy; the depot itself is subtracted when inside the measured cgroup', async () => {
    const base = await tree({ 'cgroup.controllers': 'cpu memory', 'cpu.stat': 'usage_usec 0\n' });
    let mono = 0;
    const meter = new BusyMeter({
      config: config({}),
      clock: new FakeClock(),
      logger: silentLogger(),
      cgroupBase: base,
      cpus: 4,
      monotonic: () => mono,
      sessions: async () => ({ available: true, active: 1 }),
      procSelfCgroup: async () => '0::/user.slice/user-1000.slice\n',
    });
    await meter.start();
    mono = 1000;
    // Far more than this process used in the meantime: the figure stays near 40 % of 4 CPUs.
    await writeFile(join(base, 'cpu.stat'), `usage_usec ${1.6e6}\n`);
    await meter.sample();
    const s = meter.signal()!;
    expect(s.busy).toBe(true);
    expect(s.sessions).toBe(1);
    expect(s.cpuPct).toBeGreaterThan(30);
    expect(s.cpuPct).toBeLessThanOrEqual(40);
    await meter.stop();
  });

  it('no signal when the configured cgroup cannot be read', async () => {
    const base = await tree({ 'cpuacct/cpuacct.usage': '0' });
    const meter = new BusyMeter({ config: config({ cgroup: 'missing' }), clock: new FakeClock(), logger: silentLogger(), cgroupBase: base, sessions: async () => ({ available: false, active: 0, error: 'no logind' }) });
    await meter.start();
    await meter.sample();
    expect(meter.signal()).toBeUndefined();
    await meter.stop();
  });
});

describe('local login sessions (logind records)', () => {
  it('counts active local sessions of users; not remote, greeter, inactive or closing ones; absent logind is said', async () => {
    const base = await tree({
      'sessions/2': '# This is private data. Do not parse.\nUID=1000\nUSER=anna\nACTIVE=1\nSTATE=active\nREMOTE=0\nTYPE=x11\nCLASS=user\n',
      'sessions/3': 'ACTIVE=1\nSTATE=active\nREMOTE=1\nTYPE=tty\nCLASS=user\n',
      'sessions/c1': 'ACTIVE=1\nSTATE=active\nREMOTE=0\nTYPE=x11\nCLASS=greeter\n',
      'sessions/5': 'ACTIVE=0\nSTATE=online\nREMOTE=0\nTYPE=wayland\nCLASS=user\n',
      'sessions/6': 'ACTIVE=1\nSTATE=active\nREMOTE=0\nTYPE=tty\nCLASS=user\n',
      'sessions/6.ref': '',
    });
    expect(await activeLocalSessions(join(base, 'sessions'))).toEqual({ available: true, active: 2 });
    expect(await activeLocalSessions(join(base, 'none'))).toMatchObject({ available: false, active: 0, error: expect.stringContaining('not running') });
  });

  it('record fields as loginctl names them, and which sessions count', () => {
    const p = parseSessionRecord('TYPE=x11\nREMOTE=0\nACTIVE=1\nSTATE=active\nCLASS=user\n');
    expect(p).toEqual({ Type: 'x11', Remote: 'no', Active: 'yes', State: 'active', Class: 'user' });
    expect(isActiveLocal(p)).toBe(true);
    expect(isActiveLocal({ ...p, Remote: 'yes' })).toBe(false);
    expect(isActiveLocal({ ...p, Type: 'unspecified' })).toBe(false);
    expect(isActiveLocal({ ...p, Active: 'no' })).toBe(false);
    expect(isActiveLocal({ ...p, Class: 'greeter' })).toBe(false);
    expect(isActiveLocal({ ...p, Type: 'tty' })).toBe(true);
  });
});
