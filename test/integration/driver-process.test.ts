import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { chmod, mkdir, mkdtemp, readFile, readlink, rm, stat, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { stringify as toYaml } from 'yaml';
import mysql from 'mysql2/promise';
import { silentLogger } from '../../shared/logger.ts';
import { ProcessSpec } from '../../depot/containers/drivers/driver.ts';
import { createDriver } from '../../depot/containers/drivers/factory.ts';
import { ProcessDriver, type ContainerManifestInput } from '../../depot/containers/drivers/process.ts';
import { tcpOpen } from '../../shared/tcp-probe.ts';
import { alive, groupMembers } from '../../depot/containers/drivers/proc.ts';
import { freePort } from '../../lab/loopback/ports.ts';
import { CgroupHost } from '../../depot/containers/cgroup-limits.ts';
import { ContainersSection } from '../../shared/config.ts';

// The process driver with real services: a private mariadbd as the container (its data folder
// initialised by a one-shot start step), and a small TCP server inside a network namespace.

let root: string;
const drivers: ProcessDriver[] = [];
const namespaces: string[] = [];

async function container(name: string, manifest: ContainerManifestInput): Promise<ProcessDriver> {
  const dir = join(root, name);
  await mkdir(dir, { recursive: true });
  await chmod(dir, 0o755);
  await writeFile(join(dir, 'container.yaml'), toYaml(manifest));
  const d = createDriver(ProcessSpec.parse({ driver: 'process' }), { id: name, dir, logger: silentLogger() }) as ProcessDriver;
  drivers.push(d);
  return d;
}

/** A TCP server (node) that answers "hi"; `ignoreTerm` makes it ignore SIGTERM; it forks a child. */
function serverArgv(host: string, port: number, opts: { ignoreTerm?: boolean; noChild?: boolean } = {}): string[] {
  const script = [
    opts.ignoreTerm ? "process.on('SIGTERM', () => {});" : '',
    opts.noChild ? '' : "require('child_process').spawn('sleep', ['1000'], { stdio: 'ignore' });",
    `require('net').createServer((s) => { s.on('error', () => {}); s.end('hi'); }).listen(${port}, '${host}');`,
  ].join('\n');
  return [process.execPath, '-e', script];
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'nav-proc-'));
  await chmod(root, 0o755); // mariadbd runs as mysql and must reach its data folder
});

afterAll(async () => {
  for (const d of drivers) await d.stop({ timeoutMs: 0 }).catch(() => undefined);
  for (const ns of namespaces) await execa('ip', ['netns', 'del', ns], { reject: false });
  await rm(root, { recursive: true, force: true });
});

describe('process driver', () => {
  it('runs a private mariadbd as a container: health check, exec, graceful stop, restart', async () => {
    const port = await freePort();
    const d = await container('db', {
      name: 'db',
      dataDir: 'data',
      start: [
        {
          argv: ['mariadb-install-db', '--no-defaults', '--user=mysql', '--datadir=${dataDir}', '--auth-root-authentication-method=normal', '--skip-test-db', '--skip-name-resolve'],
          wait: true,
        },
        {
          argv: [
            'mariadbd', '--no-defaults', '--user=mysql', '--datadir=${dataDir}', '--socket=${dataDir}/mysqld.sock',
            `--port=${port}`, '--bind-address=127.0.0.1', '--pid-file=${dataDir}/mysqld.pid', '--skip-name-resolve',
            '--innodb-buffer-pool-size=16M', '--skip-log-bin',
          ],
        },
      ],
      // banner: healthy once mariadbd sends its handshake, i.e. is ready for connections, not
      // merely when its port is open (it can hang on a SIGTERM that comes in between).
      health: { tcp: { host: '127.0.0.1', port, banner: true } },
      startTimeoutMs: 60_000,
    });
    expect(await d.status()).toBe('stopped');
    await d.start();
    expect(await d.status()).toBe('running');
    expect(await d.guestAddress()).toBe('127.0.0.1');

    const sock = join(root, 'db', 'data', 'mysqld.sock');
    const conn = await mysql.createConnection({ socketPath: sock, user: 'root' });
    const [rows] = await conn.query('SELECT 40 + 2 AS answer');
    expect(rows).toEqual([{ answer: 42 }]);
    await conn.end();

    const r = await d.exec('mariadb', ['--no-defaults', '-S', sock, '-u', 'root', '-N', '-e', 'SELECT VERSION()']);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toMatch(/MariaDB/);

    const pid = Number((await readFile(join(root, 'db', 'data', 'mysqld.pid'), 'utf8')).trim());
    expect(alive(pid)).toBe(true);
    const res = await d.stop({ timeoutMs: 30_000 });
    expect(res).toEqual({ forced: false });
    expect(alive(pid)).toBe(false);
    expect(await d.status()).toBe('stopped');
    expect(await tcpOpen('127.0.0.1', port, 500)).toBe(false);
    // A clean shutdown: InnoDB wrote its shutdown record.
    const errLog = await readFile(join(root, 'db', 'logs', 'start-1.log'), 'utf8');
    expect(errLog).toMatch(/Shutdown complete/);

    // Start again on the same data (the install step is idempotent on an initialised folder).
    await d.start();
    expect(await d.status()).toBe('running');
    // Stopped right after the health check passes.
    expect(await d.stop({ timeoutMs: 30_000 })).toEqual({ forced: false });
  }, 120_000);

  it('kills the whole process group, by force when SIGTERM is ignored', async () => {
    const port = await freePort();
    const d = await container('stubborn', {
      name: 'stubborn',
      start: [{ argv: serverArgv('127.0.0.1', port, { ignoreTerm: true }) }],
      health: { tcp: { host: '127.0.0.1', port } },
    });
    await d.start();
    expect(await d.status()).toBe('running');
    const pgid = JSON.parse(await readFile(join(root, 'stubborn', '.navigator-pgids.json'), 'utf8'))[0] as number;
    expect(groupMembers(pgid).length).toBeGreaterThanOrEqual(2); // the server and its sleep child
    const t0 = Date.now();
    expect(await d.stop({ timeoutMs: 500 })).toEqual({ forced: true });
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(groupMembers(pgid)).toEqual([]);
    expect(await d.status()).toBe('stopped');
  });

  it('uses the stop command when the manifest has one, and reports a dead process as failed', async () => {
    const port = await freePort();
    const d = await container('withstop', {
      name: 'withstop',
      start: [{ argv: serverArgv('127.0.0.1', port, { noChild: true }) }, { argv: ['sleep', '1000'] }],
      stop: { argv: ['pkill', '-TERM', '-f', `listen\\(${port},`] },
      health: { command: ['bash', '-c', 'exec 3<>"/dev/tcp/127.0.0.1/$1"', 'health', String(port)] },
    });
    await d.start();
    expect(await d.status()).toBe('running');
    const groups = JSON.parse(await readFile(join(root, 'withstop', '.navigator-pgids.json'), 'utf8')) as number[];
    expect(groups).toHaveLength(2);
    // One of the two processes dies on its own: the container is failed, not running.
    process.kill(-groups[1]!, 'SIGKILL');
    await waitFor(async () => (await d.status()) === 'failed');
    // The stop command ends the server; the rest is killed at the deadline.
    expect(await d.stop({ timeoutMs: 2000 })).toEqual({ forced: false });
    expect(await d.status()).toBe('stopped');
  });

  it('fails a start whose process exits early, with the tail of its log, leaving nothing behind', async () => {
    const d = await container('broken', {
      name: 'broken',
      start: [{ argv: ['bash', '-c', 'echo "cannot bind: address in use" >&2; exit 3'] }],
      health: { tcp: { host: '127.0.0.1', port: 1 } },
    });
    await expect(d.start()).rejects.toThrow(/exited \(code 3\).*cannot bind: address in use/);
    expect(await d.status()).toBe('stopped');
  });

  it('refuses an invalid manifest with the field named', async () => {
    const d = await container('invalid', { name: 'x y', start: [], health: { tcp: { port: 0 } } } as unknown as ContainerManifestInput);
    await expect(d.start()).rejects.toThrow(/invalid container manifest[\s\S]*name:[\s\S]*start:[\s\S]*health/);
  });

  it('runs a container inside a network namespace', async () => {
    const ns = `nav-ct-${randomBytes(4).toString('hex')}`;
    namespaces.push(ns);
    await execa('ip', ['netns', 'add', ns]);
    await execa('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    const port = await freePort();
    const d = await container('netns', {
      name: 'netns',
      netns: ns,
      start: [{ argv: serverArgv('127.0.0.1', port) }],
      health: { tcp: { host: '127.0.0.1', port, banner: true } },
    });
    await d.start();
    expect(await d.status()).toBe('running');
    // The server listens in the namespace, not on the host's loopback.
    expect(await tcpOpen('127.0.0.1', port, 500)).toBe(false);
    const pgid = JSON.parse(await readFile(join(root, 'netns', '.navigator-pgids.json'), 'utf8'))[0] as number;
    const nsOfPid = await readlink(`/proc/${pgid}/ns/net`);
    const nsFile = await stat(`/run/netns/${ns}`);
    expect(nsOfPid).toBe(`net:[${nsFile.ino}]`);
    // exec runs in the namespace too.
    const r = await d.exec('ip', ['-o', 'link', 'show']);
    expect(r.stdout.trim().split('\n')).toHaveLength(1); // only lo
    expect(await d.stop({ timeoutMs: 5000 })).toEqual({ forced: false });
    expect(await d.status()).toBe('stopped');
  });
  it('runs a container in its own cgroup with the configured limits; its children are born inside; the cgroup goes with it', async () => {
    const host = new CgroupHost({ logger: silentLogger() });
    const limits = ContainersSection.parse({ limits: { cpuWeight: 10, cpuMax: 0.5, memoryMax: 256 * 1024 * 1024 } }).limits;
    const port = await freePort();
    const id = `limited-${randomBytes(3).toString('hex')}`;
    const dir = join(root, id);
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'container.yaml'), toYaml({ name: id, start: [{ argv: serverArgv('127.0.0.1', port) }], health: { tcp: { host: '127.0.0.1', port } } }));
    const d = createDriver(ProcessSpec.parse({ driver: 'process' }), { id, dir, logger: silentLogger(), cgroup: { enter: () => host.enter(id, limits), leave: () => host.leave(id) } }) as ProcessDriver;
    drivers.push(d);
    await d.start();
    const dirs = (await host.dirs(id))!;
    const pgid = JSON.parse(await readFile(join(dir, '.navigator-pgids.json'), 'utf8'))[0] as number;
    const members = groupMembers(pgid);
    expect(members.length).toBeGreaterThanOrEqual(2); // the server and the sleep it forked
    const cpuDir = dirs.v2 ?? dirs.cpu!;
    const inside = (await readFile(join(cpuDir, 'cgroup.procs'), 'utf8')).trim().split('\n').map(Number);
    for (const pid of members) expect(inside).toContain(pid);
    if (dirs.v2) {
      expect((await readFile(join(dirs.v2, 'cpu.weight'), 'utf8')).trim()).toBe('10');
      expect((await readFile(join(dirs.v2, 'cpu.max'), 'utf8')).trim()).toBe('50000 100000');
      expect((await readFile(join(dirs.v2, 'memory.max'), 'utf8')).trim()).toBe(String(256 * 1024 * 1024));
    } else {
      expect((await readFile(join(dirs.cpu!, 'cpu.shares'), 'utf8')).trim()).toBe('102');
      expect((await readFile(join(dirs.cpu!, 'cpu.cfs_quota_us'), 'utf8')).trim()).toBe('50000');
      expect((await readFile(join(dirs.memory!, 'memory.limit_in_bytes'), 'utf8')).trim()).toBe(String(256 * 1024 * 1024));
    }
    expect(await d.stop({ timeoutMs: 5000 })).toEqual({ forced: false });
    await expect(stat(cpuDir)).rejects.toThrow(/ENOENT/);
  });
});

async function waitFor(cond: () => Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}
