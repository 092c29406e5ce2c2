import { describe, it, expect } from 'vitest';
import { execa } from 'execa';
import { mkdtemp, readFile, writeFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cgroupDirs, limitFiles, limitsFor, parentFiles, wrapCommand } from '../../depot/containers/cgroup-limits.ts';
import { ContainersSection } from '../../shared/config.ts';

const defaults = ContainersSection.parse({});

describe('container limits', () => {
  it('defaults: a CPU and IO weight below a user process, no hard caps', () => {
    expect(defaults.limits).toEqual({ cpuWeight: 5, ioWeight: 10 });
    expect(defaults.limitsEnabled).toBe(true);
  });

  it("a service's own fields replace the host's", () => {
    const c = ContainersSection.parse({ limits: { cpuWeight: 30 }, serviceLimits: { zabbix: { memoryMax: 1 << 30, cpuMax: 1 } } });
    expect(limitsFor('zabbix', c.limits, c.serviceLimits)).toEqual({ cpuWeight: 30, ioWeight: 10, memoryMax: 1 << 30, cpuMax: 1 });
    expect(limitsFor('other', c.limits, c.serviceLimits)).toEqual({ cpuWeight: 30, ioWeight: 10 });
    expect(() => ContainersSection.parse({ serviceLimits: { '../x': {} } })).toThrow();
    expect(() => ContainersSection.parse({ limits: { cpuWeight: 0 } })).toThrow();
  });

  it('cgroup v2 files', () => {
    const layout = { kind: 'v2' as const, root: '/sys/fs/cgroup' };
    const dirs = cgroupDirs(layout, 'zabbix-ab12cd');
    expect(dirs).toEqual({ v2: '/sys/fs/cgroup/navigator/zabbix-ab12cd' });
    expect(limitFiles(layout, dirs, { cpuWeight: 20, ioWeight: 50, cpuMax: 1.5, memoryMax: 1024 })).toEqual([
      { path: '/sys/fs/cgroup/navigator/zabbix-ab12cd/cpu.weight', value: '20' },
      { path: '/sys/fs/cgroup/navigator/zabbix-ab12cd/cpu.max', value: '150000 100000' },
      { path: '/sys/fs/cgroup/navigator/zabbix-ab12cd/memory.max', value: '1024' },
      { path: '/sys/fs/cgroup/navigator/zabbix-ab12cd/io.weight', value: 'default 50' },
    ]);
    expect(limitFiles(layout, dirs, { cpuWeight: 100, ioWeight: 100 }).map((f) => f.value)).toEqual(['100', 'max 100000', 'max', 'default 100']);
  });

  it('cgroup v1 files: weight 100 is 1024 shares and blkio 500', () => {
    const layout = { kind: 'v1' as const, cpu: '/c/cpu', memory: '/c/memory', blkio: '/c/blkio' };
    const dirs = cgroupDirs(layout, 'x');
    expect(limitFiles(layout, dirs, { cpuWeight: 100, ioWeight: 100 })).toEqual([
      { path: '/c/cpu/navigator/x/cpu.shares', value: '1024' },
      { path: '/c/cpu/navigator/x/cpu.cfs_period_us', value: '100000' },
      { path: '/c/cpu/navigator/x/cpu.cfs_quota_us', value: '-1' },
      { path: '/c/memory/navigator/x/memory.limit_in_bytes', value: '-1' },
      { path: '/c/blkio/navigator/x/blkio.weight', value: '500' },
    ]);
    expect(limitFiles({ kind: 'v1', cpu: '/c/cpu' }, cgroupDirs({ kind: 'v1', cpu: '/c/cpu' }, 'x'), { cpuWeight: 1, ioWeight: 1, cpuMax: 0.001 })).toEqual([
      { path: '/c/cpu/navigator/x/cpu.shares', value: '10' },
      { path: '/c/cpu/navigator/x/cpu.cfs_period_us', value: '100000' },
      { path: '/c/cpu/navigator/x/cpu.cfs_quota_us', value: '1000' },
    ]);
  });

  it("the shared parent folder carries the weight against the user's processes (weights count among siblings)", () => {
    expect(parentFiles({ kind: 'v1', cpu: '/c/cpu', blkio: '/c/blkio' }, { cpuWeight: 20, ioWeight: 20 })).toEqual([
      { path: '/c/cpu/navigator/cpu.shares', value: '205' },
      { path: '/c/blkio/navigator/blkio.weight', value: '100' },
    ]);
    expect(parentFiles({ kind: 'v2', root: '/r' }, { cpuWeight: 20, ioWeight: 30 })).toEqual([
      { path: '/r/navigator/cpu.weight', value: '20' },
      { path: '/r/navigator/io.weight', value: 'default 30' },
    ]);
  });

  it('the wrapper writes its pid to every procs file, then execs the command with its arguments intact', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'nav-cg-'));
    try {
      const files = [join(dir, 'a.procs'), join(dir, 'b procs')];
      for (const f of files) await writeFile(f, '');
      const cmd = wrapCommand(files, 'sh', ['-c', 'echo "$$|$1|$2"', 'x', '--', 'two words']);
      const r = await execa(cmd.file, cmd.args);
      const [pid, a1, a2] = r.stdout.split('|');
      expect(a1).toBe('--');
      expect(a2).toBe('two words');
      for (const f of files) expect((await readFile(f, 'utf8')).trim()).toBe(pid);
      expect(wrapCommand([], 'true', ['x'])).toEqual({ file: 'true', args: ['x'] });
      // A procs file that cannot be written stops the command from running at all.
      const bad = wrapCommand([join(dir, 'missing', 'cgroup.procs')], 'sh', ['-c', 'echo ran']);
      const r2 = await execa(bad.file, bad.args, { reject: false });
      expect(r2.exitCode).toBe(126);
      expect(r2.stdout).toBe('');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
