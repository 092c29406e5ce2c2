// bench:containers — what the container lifecycle and the control protocol cost here.
//
//  1. Control round trip: depot A calls container.status on depot B over libp2p (TCP loopback,
//     pnet + Noise + Yamux, one stream per request) BENCH_CALLS times (default 300).
//  2. Process container (a node TCP server): start until the health check passes, graceful stop.
//  3. Process container running a private mariadbd: start until its port answers, graceful stop.
//  4. QEMU with no guest OS: start until QMP answers, forced stop.
//
// Prints a table and, as the last line, one JSON object. Knobs (env): BENCH_CALLS (300),
// BENCH_TRIALS (5).

import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify as toYaml } from 'yaml';
import { silentLogger } from '../shared/logger.ts';
import { createNode } from '../depot/libp2p.ts';
import { makeSwarmKey } from '../depot/swarm-key.ts';
import { ContainerManager } from '../depot/containers/manager.ts';
import { ControlServer } from '../depot/control/server.ts';
import { ControlClient } from '../depot/control/client.ts';
import { registerContainerControl } from '../depot/containers/control-methods.ts';
import { ControlGuard } from '../depot/control/guard.ts';
import { QemuSpec } from '../depot/containers/drivers/driver.ts';
import { createDriver } from '../depot/containers/drivers/factory.ts';

const CALLS = Number(process.env.BENCH_CALLS ?? 300);
const TRIALS = Number(process.env.BENCH_TRIALS ?? 5);

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const a = srv.address();
      srv.close(() => resolve(typeof a === 'object' && a ? a.port : 0));
    });
  });
}

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? NaN;
}

const round = (x: number) => Math.round(x * 100) / 100;

async function main(): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'nav-bench-containers-'));
  await chmod(root, 0o755);
  const log = silentLogger();
  const manager = new ContainerManager({ root: join(root, 'containers'), logger: log, statusIntervalMs: 60_000 });
  const swarmKey = makeSwarmKey();
  const [a, b] = await Promise.all([
    createNode({ swarmKey, listen: ['/ip4/127.0.0.1/tcp/0'] }),
    createNode({ swarmKey, listen: ['/ip4/127.0.0.1/tcp/0'] }),
  ]);
  const server = new ControlServer({ node: b, logger: log });
  // A is the lease holder of the benchmark's services (as B's voter would say), in term 0.
  const guard = new ControlGuard({ logger: silentLogger() });
  guard.setAuthority({ holder: async () => ({ peer: a.peerId.toString(), term: 0 }) });
  registerContainerControl(server, manager, guard);
  const results: Record<string, number> = {};
  try {
    await manager.start();
    await server.start();
    await a.dial(b.getMultiaddrs()[0]!);
    const client = new ControlClient({ node: a });

    // A process container: a node TCP server.
    const port = await freePort();
    const webDir = join(root, 'containers', 'web');
    await mkdir(webDir, { recursive: true });
    const script = `require('net').createServer((s) => { s.on('error', () => {}); s.end('x'); }).listen(${port}, '127.0.0.1');`;
    await writeFile(join(webDir, 'container.yaml'), toYaml({ name: 'web', start: [{ argv: [process.execPath, '-e', script] }], health: { tcp: { port } } }));
    const webStart: number[] = [];
    const webStop: number[] = [];
    for (let i = 0; i < TRIALS; i++) {
      let t = performance.now();
      await client.call(b.peerId, 'container.start', { id: 'web', service: 'web', spec: { driver: 'process' }, term: 0 });
      webStart.push(performance.now() - t);
      if (i < TRIALS - 1) {
        t = performance.now();
        await client.call(b.peerId, 'container.stop', { id: 'web', timeoutMs: 10_000 });
        webStop.push(performance.now() - t);
      }
    }

    // Control round trips against the running container.
    for (let i = 0; i < 20; i++) await client.call(b.peerId, 'container.status', { id: 'web' });
    const rtt: number[] = [];
    for (let i = 0; i < CALLS; i++) {
      const t = performance.now();
      await client.call(b.peerId, 'container.status', { id: 'web' });
      rtt.push(performance.now() - t);
    }
    await client.call(b.peerId, 'container.stop', { id: 'web', timeoutMs: 10_000 });

    // mariadbd as a process container.
    const dbPort = await freePort();
    const dbDir = join(root, 'containers', 'db');
    await mkdir(dbDir, { recursive: true });
    await writeFile(
      join(dbDir, 'container.yaml'),
      toYaml({
        name: 'db',
        start: [
          {
            argv: ['mariadb-install-db', '--no-defaults', '--user=mysql', '--datadir=${dataDir}', '--auth-root-authentication-method=normal', '--skip-test-db', '--skip-name-resolve'],
            wait: true,
          },
          {
            argv: [
              'mariadbd', '--no-defaults', '--user=mysql', '--datadir=${dataDir}', '--socket=${dataDir}/mysqld.sock', `--port=${dbPort}`,
              '--bind-address=127.0.0.1', '--pid-file=${dataDir}/mysqld.pid', '--skip-name-resolve', '--innodb-buffer-pool-size=16M', '--skip-log-bin',
            ],
          },
        ],
        health: { tcp: { port: dbPort, banner: true } },
      }),
    );
    const dbStart: number[] = [];
    const dbStop: number[] = [];
    for (let i = 0; i < Math.min(TRIALS, 3); i++) {
      let t = performance.now();
      await manager.startContainer({ id: 'db', service: 'db', spec: { driver: 'process' } });
      dbStart.push(performance.now() - t);
      t = performance.now();
      await manager.stopContainer('db', { timeoutMs: 30_000 });
      dbStop.push(performance.now() - t);
    }

    // QEMU with no guest OS.
    const qdir = join(root, 'vm');
    await mkdir(qdir);
    const vm = createDriver(QemuSpec.parse({ driver: 'qemu', memoryMb: 64 }), { id: 'vm', dir: qdir, logger: log });
    const qStart: number[] = [];
    const qStop: number[] = [];
    for (let i = 0; i < TRIALS; i++) {
      let t = performance.now();
      await vm.start();
      qStart.push(performance.now() - t);
      t = performance.now();
      await vm.stop({ timeoutMs: 0 });
      qStop.push(performance.now() - t);
    }

    const rows: Array<[string, number[]]> = [
      ['control round trip (container.status)', rtt],
      ['process container start (node server, first = first start + data dir)', webStart],
      ['process container graceful stop', webStop],
      ['mariadbd container start (install step + handshake received)', dbStart],
      ['mariadbd container graceful stop', dbStop],
      ['qemu start (QMP answering)', qStart],
      ['qemu forced stop (quit)', qStop],
    ];
    const keys = ['control_rtt', 'process_start', 'process_stop', 'mariadb_start', 'mariadb_stop', 'qemu_start', 'qemu_stop'];
    console.log(`${'measure'.padEnd(72)} ${'n'.padStart(4)} ${'p50 ms'.padStart(9)} ${'p95 ms'.padStart(9)} ${'max ms'.padStart(9)}`);
    rows.forEach(([name, xs], i) => {
      console.log(`${name.padEnd(72)} ${String(xs.length).padStart(4)} ${round(pct(xs, 50)).toFixed(2).padStart(9)} ${round(pct(xs, 95)).toFixed(2).padStart(9)} ${round(Math.max(...xs)).toFixed(2).padStart(9)}`);
      results[`${keys[i]}_p50_ms`] = round(pct(xs, 50));
      results[`${keys[i]}_p95_ms`] = round(pct(xs, 95));
    });
  } finally {
    await manager.stopAll({ timeoutMs: 0 }).catch(() => undefined);
    await manager.stop();
    await server.stop().catch(() => undefined);
    await Promise.allSettled([a.stop(), b.stop()]);
    await rm(root, { recursive: true, force: true });
  }
  console.log(JSON.stringify({ bench: 'containers', calls: CALLS, trials: TRIALS, ...results }));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
