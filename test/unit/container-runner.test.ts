import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { chooseRunner, createRunner, launchEntries, limitSettings, lookupUser, minimalEnv, unitName, unitOfPid } from '../../depot/containers/runner.ts';
import { createLogger } from '../../shared/logger.ts';

// How a service container's command is launched (depot/containers/runner.ts): the systemd-run
// arguments, the unit name, the environment, and the direct runner's environment for real.

const user = { name: 'navigator-svc', uid: 990, gid: 990, home: '/nonexistent' };

describe('container runner', () => {
  it('chooses systemd only when systemd is PID 1 and the service user exists, unless told', () => {
    expect(chooseRunner('auto', { systemd: true, user: true })).toBe('systemd');
    expect(chooseRunner('auto', { systemd: true, user: false })).toBe('direct');
    expect(chooseRunner('auto', { systemd: false, user: true })).toBe('direct');
    expect(chooseRunner('direct', { systemd: true, user: true })).toBe('direct');
    expect(chooseRunner('systemd', { systemd: false, user: false })).toBe('systemd');
  });

  it('names units after the templates: navigator-ctr@<container>:<step>.service', () => {
    expect(unitName('echo-1a2b', 'start0')).toBe('navigator-ctr@echo-1a2b:start0.service');
    expect(unitName('echo-1a2b', 'health-7-1', true)).toBe('navigator-ctr-once@echo-1a2b:health-7-1.service');
    expect(unitName('a b/c@:', 'x')).toBe('navigator-ctr@a_b_c__:x.service');
  });

  it('turns the limits into unit settings, unset ones back to none', () => {
    expect(limitSettings({ cpuWeight: 10, ioWeight: 20 })).toEqual(['CPUWeight=10', 'IOWeight=20', 'CPUQuota=', 'MemoryMax=infinity']);
    expect(limitSettings({ cpuWeight: 10, ioWeight: 20, cpuMax: 0.5, memoryMax: 268435456 })).toEqual(['CPUWeight=10', 'IOWeight=20', 'CPUQuota=50%', 'MemoryMax=268435456']);
  });

  it('gives a command PATH, HOME, LANG and its own env, never the depot environment', () => {
    const env = minimalEnv({ MYSQL_HOME: '/x' }, '/nonexistent', { PATH: '/bin', LANG: 'de_DE.UTF-8', NAVIGATOR_ADMIN_TOKEN: 'secret', HOME: '/var/lib/navigator' });
    expect(env).toEqual({ PATH: '/bin', HOME: '/nonexistent', LANG: 'de_DE.UTF-8', MYSQL_HOME: '/x' });
    // containers.passEnv names the depot's variables passed on; the manifest's env wins.
    expect(minimalEnv({ A: 'manifest' }, '/h', { PATH: '/bin', ECHO_NAME: 'w1', A: 'depot', SECRET: 's' }, ['ECHO_NAME', 'A', 'MISSING'])).toEqual({ PATH: '/bin', HOME: '/h', LANG: 'C.UTF-8', ECHO_NAME: 'w1', A: 'manifest' });
  });

  it("writes the launcher's entries: output files, then env -i -C with the minimal environment, then the command", () => {
    const launch = { step: 'start0', file: '/usr/bin/node', args: ['echo.js', '--port', '7000'], cwd: '/srv/c', env: { A: '1 2' } };
    const e = launchEntries(launch, '/nonexistent', '/srv/c/logs/o', '/srv/c/logs/e');
    expect(e.slice(0, 6)).toEqual(['/srv/c/logs/o', '/srv/c/logs/e', '/usr/bin/env', '-i', '-C', '/srv/c']);
    expect(e.slice(-4)).toEqual(['/usr/bin/node', 'echo.js', '--port', '7000']);
    expect(e.slice(6, -4).sort()).toEqual(['A=1 2', `HOME=/nonexistent`, `LANG=${process.env.LANG || 'C.UTF-8'}`, `PATH=${process.env.PATH}`].sort());
    expect(() => launchEntries({ ...launch, file: 'X=1' }, '/', 'o', 'e')).toThrow(/"="/);
    expect(() => launchEntries({ ...launch, args: ['a\0b'] }, '/', 'o', 'e')).toThrow(/NUL/);
    expect(() => launchEntries({ ...launch, env: { 'A B': 'x' } }, '/', 'o', 'e')).toThrow(/not valid/);
  });

  it('finds the container unit of a process from its cgroup', () => {
    const read = (text: string) => () => text;
    expect(unitOfPid(5, read('0::/system.slice/system-navigator\\x2dctr.slice/navigator-ctr@echo:start0.service\n'))).toBe('navigator-ctr@echo:start0.service');
    expect(unitOfPid(5, read('0::/system.slice/system-navigator\\x2dctr\\x2donce.slice/navigator-ctr-once@echo:health-1-2.service\n'))).toBe('navigator-ctr-once@echo:health-1-2.service');
    expect(unitOfPid(5, read('0::/system.slice/navigator-depot.service\n'))).toBeUndefined();
    expect(unitOfPid(5, read('12:pids:/system.slice/navigator-ctr@x:primary0.service/sub\n0::/\n'))).toBe('navigator-ctr@x:primary0.service');
    expect(unitOfPid(5, () => {
      throw new Error('gone');
    })).toBeUndefined();
  });

  it('looks users up in a passwd file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'nav-runner-'));
    try {
      writeFileSync(join(dir, 'passwd'), 'root:x:0:0:root:/root:/bin/bash\nnavigator-svc:x:991:989:Navigator service containers:/nonexistent:/usr/sbin/nologin\n');
      expect(lookupUser('navigator-svc', join(dir, 'passwd'))).toEqual({ name: 'navigator-svc', uid: 991, gid: 989, home: '/nonexistent' });
      expect(lookupUser('nobody-here', join(dir, 'passwd'))).toBeUndefined();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('direct, depot as root: commands drop to the service user, in a folder handed to its group', async () => {
    // `nobody` stands in for navigator-svc (a test must not make system users on the lab host).
    const nobody = lookupUser('nobody')!;
    expect(nobody).toBeDefined();
    const dir = mkdtempSync(join(tmpdir(), 'nav-runner-'));
    try {
      writeFileSync(join(dir, 'secret-of-depot'), 'x', { mode: 0o600 });
      const runner = createRunner({ kind: 'direct', id: 'c1', dir, logger: createLogger({ level: 'silent' }), user: nobody });
      await runner.prepare();
      const r = await runner.run({ step: 'exec', file: 'sh', args: ['-c', 'id -u; id -G; grep -E "^(Cap(Eff|Prm|Bnd|Amb)|NoNewPrivs)" /proc/self/status; touch made-by-container && echo wrote'], cwd: dir, env: {} }, { timeoutMs: 5000 });
      expect(r.exitCode, r.stderr).toBe(0);
      const [uid, groups, ...rest] = r.stdout.trim().split('\n');
      if (process.getuid?.() === 0) {
        expect(Number(uid)).toBe(nobody.uid);
        expect(groups!.split(' ').map(Number)).toContain(nobody.gid);
        expect(groups!.split(' ').map(Number)).not.toContain(0);
        const caps = rest.filter((x) => x.startsWith('Cap'));
        expect(caps).toHaveLength(4);
        for (const l of caps) expect(l).toMatch(/:\s+0{16}$/);
        expect(rest).toContain('NoNewPrivs:\t1');
        // The folder was handed to its group, so it can write there.
        expect(rest.at(-1)).toBe('wrote');
      } else {
        // Not root: nothing to drop, it runs as the depot's user.
        expect(Number(uid)).toBe(process.getuid?.());
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('direct: a command sees only the minimal environment', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'nav-runner-'));
    const before = process.env.NAVIGATOR_TEST_SECRET;
    process.env.NAVIGATOR_TEST_SECRET = 'do-not-pass';
    try {
      const runner = createRunner({ kind: 'direct', id: 'c1', dir, logger: createLogger({ level: 'silent' }) });
      await runner.prepare();
      const r = await runner.run({ step: 'exec', file: 'env', args: [], cwd: dir, env: { OWN: 'yes' } }, { timeoutMs: 5000 });
      expect(r.exitCode).toBe(0);
      const names = r.stdout.split('\n').filter(Boolean).map((l) => l.split('=')[0]).sort();
      expect(names).toEqual(['HOME', 'LANG', 'OWN', 'PATH']);
    } finally {
      if (before === undefined) delete process.env.NAVIGATOR_TEST_SECRET;
      else process.env.NAVIGATOR_TEST_SECRET = before;
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
