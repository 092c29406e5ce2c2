import { existsSync } from 'node:fs';
import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { randomBytes } from 'node:crypto';
import { execa } from 'execa';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FenceGuard } from '../../pilot/fence-guard.ts';
import { silentLogger } from '../../shared/logger.ts';

// The primary's dead man's switch, for real: a namespace with an interface holding the
// service address; the guard must drop it when its lease runs out or its pilot disappears,
// and must leave it alone on a clean release.

let ns: string;
const ADDRESS = '10.99.0.100/24';

async function held(): Promise<boolean> {
  const r = await execa('ip', ['-n', ns, '-j', 'addr', 'show', 'dev', 'svc0']);
  return (JSON.parse(r.stdout) as Array<{ addr_info: Array<{ local: string }> }>).some((l) => l.addr_info.some((a) => a.local === '10.99.0.100'));
}

async function waitUntil(check: () => Promise<boolean>, ms: number): Promise<number> {
  const t0 = Date.now();
  while (!(await check())) {
    if (Date.now() - t0 > ms) throw new Error(`condition not met within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return Date.now() - t0;
}

beforeEach(async () => {
  ns = `navfence-${randomBytes(3).toString('hex')}`;
  await execa('ip', ['netns', 'add', ns]);
  // A veth pair (this kernel has no dummy driver); only svc0 matters.
  await execa('ip', ['-n', ns, 'link', 'add', 'svc0', 'type', 'veth', 'peer', 'name', 'svc1']);
  await execa('ip', ['-n', ns, 'link', 'set', 'svc0', 'up']);
  await execa('ip', ['-n', ns, 'addr', 'add', ADDRESS, 'dev', 'svc0']);
});
afterEach(async () => {
  await execa('ip', ['netns', 'del', ns], { reject: false });
});

describe('fence guard', () => {
  it('drops the address when the lease runs out without renewal', async () => {
    const guard = new FenceGuard({ address: ADDRESS, iface: 'svc0', netns: ns, logger: silentLogger() });
    await guard.arm(300);
    expect(await held()).toBe(true);
    const took = await waitUntil(async () => !(await held()), 3000);
    expect(took).toBeLessThan(1500);
    await guard.release();
  });

  it('keeps the address while the lease is renewed, and on a clean release', async () => {
    const guard = new FenceGuard({ address: ADDRESS, iface: 'svc0', netns: ns, logger: silentLogger() });
    await guard.arm(300);
    for (let i = 0; i < 10; i++) {
      guard.lease(300);
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(await held()).toBe(true);
    await guard.release();
    await new Promise((r) => setTimeout(r, 500));
    expect(await held()).toBe(true);
  });

  it('drops the address when its pilot process dies (kill -9), even with a long lease left', async () => {
    // A separate Node process owns the guard, as the depot does; kill it hard.
    const script = `
      import { FenceGuard } from ${JSON.stringify(new URL('../../pilot/fence-guard.ts', import.meta.url).pathname)};
      import { silentLogger } from ${JSON.stringify(new URL('../../shared/logger.ts', import.meta.url).pathname)};
      const g = new FenceGuard({ address: '${ADDRESS}', iface: 'svc0', netns: '${ns}', logger: silentLogger() });
      await g.arm(60000);
      process.stdout.write('armed\\n');
      setInterval(() => g.lease(60000), 1000);
    `;
    const owner = execa(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { reject: false });
    await new Promise<void>((resolve, reject) => {
      owner.stdout?.on('data', (d: Buffer) => d.toString().includes('armed') && resolve());
      void owner.then((r) => reject(new Error(`guard owner exited early: ${r.stderr}`)));
    });
    expect(await held()).toBe(true);
    owner.kill('SIGKILL');
    const took = await waitUntil(async () => !(await held()), 5000);
    expect(took).toBeLessThan(3000);
  });

  it('is the only writer: adds the address only while the lease lies ahead, never after a fence', async () => {
    await execa('ip', ['-n', ns, 'addr', 'del', ADDRESS, 'dev', 'svc0']);
    const guard = new FenceGuard({ address: ADDRESS, iface: 'svc0', netns: ns, logger: silentLogger() });
    await guard.prepare();
    // Ready, but no lease yet: no add.
    expect(await guard.add()).toBe(false);
    expect(await held()).toBe(false);
    guard.lease(400);
    expect(await guard.add()).toBe(true);
    expect(await held()).toBe(true);
    // The lease runs out: the address goes, and a late add (a pilot waking from a pause) is refused.
    await waitUntil(async () => !(await held()), 3000);
    expect(await guard.add()).toBe(false);
    expect(guard.armed).toBe(false);
    expect(await held()).toBe(false);
    await guard.release();
  });

  it('retries the delete until the address is gone, then stops the primary-only process groups', async () => {
    // An `ip` that fails its first three `addr del` (a busy netlink, say).
    const bin = await mkdtemp(join(tmpdir(), 'navfence-bin-'));
    const realIp = (await execa('sh', ['-c', 'command -v ip'])).stdout.trim();
    const counter = join(bin, 'count');
    await writeFile(
      join(bin, 'ip'),
      `#!/bin/sh\ncase "$*" in *"addr del"*) n=$(cat ${counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > ${counter}; if [ $n -le 3 ]; then echo "RTNETLINK answers: Device or resource busy" >&2; exit 2; fi;; esac\nexec ${realIp} "$@"\n`,
    );
    await chmod(join(bin, 'ip'), 0o755);
    // A primary-only process in its own process group, as the process driver starts them.
    const primary = execa('sleep', ['600'], { detached: true, reject: false });
    const pgids = join(bin, 'primary-pgids.json');
    await writeFile(pgids, JSON.stringify([primary.pid]));
    const savedPath = process.env.PATH;
    process.env.PATH = `${bin}:${savedPath}`;
    let fenced = false;
    try {
      const guard = new FenceGuard({ address: ADDRESS, iface: 'svc0', netns: ns, logger: silentLogger(), primaryPgidsFile: pgids, onFenced: () => (fenced = true) });
      await guard.arm(200);
      await waitUntil(async () => !(await held()), 5000);
      await waitUntil(async () => fenced, 8000);
      expect(Number((await execa('cat', [counter])).stdout)).toBeGreaterThanOrEqual(4);
      const r = await primary;
      expect(r.signal).toBe('SIGTERM');
      await guard.release();
    } finally {
      process.env.PATH = savedPath;
      primary.kill('SIGKILL');
      await rm(bin, { recursive: true, force: true });
    }
  });

  it('SIGTERM with a lease held fences; without one it just exits', async () => {
    const idle = new FenceGuard({ address: ADDRESS, iface: 'svc0', netns: ns, logger: silentLogger() });
    await idle.prepare();
    process.kill(idle.pid!, 'SIGTERM');
    await waitUntil(async () => idle.pid === undefined, 3000);
    expect(await held()).toBe(true);
    const guard = new FenceGuard({ address: ADDRESS, iface: 'svc0', netns: ns, logger: silentLogger() });
    await guard.arm(60_000);
    process.kill(guard.pid!, 'SIGTERM');
    const took = await waitUntil(async () => !(await held()), 3000);
    expect(took).toBeLessThan(2000);
  });

  it('with a SIGTERM grace (systemctl stop of the whole depot unit): a release in time leaves the address, else it fences when the grace ends', async () => {
    // A clean stop: the pilot hands over and releases the guard within the grace.
    const released = new FenceGuard({ address: ADDRESS, iface: 'svc0', netns: ns, logger: silentLogger(), sigtermGraceMs: 1500 });
    await released.arm(60_000);
    const pid = released.pid!;
    process.kill(pid, 'SIGTERM');
    await new Promise((r) => setTimeout(r, 500));
    expect(await held()).toBe(true);
    await released.release();
    expect(await waitUntil(async () => !existsSync(`/proc/${pid}`), 3000)).toBeGreaterThanOrEqual(0);
    expect(await held()).toBe(true);
    // No release: the address goes when the grace is over.
    const stuck = new FenceGuard({ address: ADDRESS, iface: 'svc0', netns: ns, logger: silentLogger(), sigtermGraceMs: 1500 });
    await stuck.arm(60_000);
    const t0 = performance.now();
    process.kill(stuck.pid!, 'SIGTERM');
    await waitUntil(async () => !(await held()), 5000);
    const took = performance.now() - t0;
    expect(took).toBeGreaterThanOrEqual(1400);
    expect(took).toBeLessThan(4000);
  });
});
