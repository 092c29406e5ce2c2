// bench:workstation — what hosting Navigator costs the real user of a lab PC (in the spirit of
// the reference's table 5-8): the throughput of a CPU-bound workload (SHA-256 over 64 KiB
// blocks, one worker per CPU, like a student's compile or simulation) measured
//   1. alone,
//   2. beside an idle depot (a real depot process, heartbeating and probing),
//   3. beside a running service container that wants every CPU it can get (the worst case of a
//      busy Zabbix server: one busy process per CPU), in the depot's cgroup (no limits),
//   4. the same container in its own cgroup with the default limits (containers.limits: CPU
//      weight 5 against the user's 100; depot/containers/cgroup-limits.ts).
// Each phase runs BENCH_SECONDS (default 10) and is repeated BENCH_ROUNDS times (default 2,
// median kept). Prints a table and, as the last line, one JSON object. Needs root (cgroups).
//
// recovery_s (last-resort recovery when every copy is lost) belongs here too; that recovery is
// not built yet, so it is reported as null.

import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { stringify as toYaml } from 'yaml';
import { silentLogger } from '../shared/logger.ts';
import { ContainersSection } from '../shared/config.ts';
import { ProcessSpec } from '../depot/containers/drivers/driver.ts';
import { createDriver } from '../depot/containers/drivers/factory.ts';
import { CgroupHost } from '../depot/containers/cgroup-limits.ts';
import { DepotCluster } from '../lab/loopback/depot-procs.ts';
import { freePort } from '../lab/loopback/ports.ts';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2);
const CPUS = Math.max(1, cpus().length);

const WORKER = `
const { createHash } = require('node:crypto');
const { workerData, parentPort } = require('node:worker_threads');
const block = Buffer.alloc(65536, 7);
const end = Date.now() + workerData.ms;
let ops = 0;
while (Date.now() < end) { createHash('sha256').update(block).digest(); ops++; }
parentPort.postMessage(ops);
`;

/** Operations per second of the workload, one worker per CPU. */
async function workload(seconds: number): Promise<number> {
  const counts = await Promise.all(
    Array.from({ length: CPUS }, () => new Promise<number>((resolve, reject) => {
      const w = new Worker(WORKER, { eval: true, workerData: { ms: seconds * 1000 } });
      w.once('message', (n: number) => resolve(n));
      w.once('error', reject);
    })),
  );
  return counts.reduce((a, b) => a + b, 0) / seconds;
}

async function median(f: () => Promise<number>): Promise<number> {
  const v: number[] = [];
  for (let i = 0; i < ROUNDS; i++) v.push(await f());
  v.sort((a, b) => a - b);
  return v[Math.floor(v.length / 2)]!;
}

/** A process container with one busy process per CPU and a TCP health port. */
async function busyContainer(root: string, name: string, cgroup?: CgroupHost) {
  const dir = join(root, name);
  await mkdir(dir, { recursive: true });
  const port = await freePort();
  const busy = `for (let i = 0; i < ${CPUS}; i++) require('child_process').spawn(process.execPath, ['-e', 'for(;;){}'], { stdio: 'ignore' }); require('net').createServer((s) => s.end('ok')).listen(${port}, '127.0.0.1');`;
  await writeFile(join(dir, 'container.yaml'), toYaml({ name, start: [{ argv: [process.execPath, '-e', busy] }], health: { tcp: { host: '127.0.0.1', port } } }));
  const limits = ContainersSection.parse({}).limits;
  return createDriver(ProcessSpec.parse({ driver: 'process' }), {
    id: name,
    dir,
    logger: silentLogger(),
    ...(cgroup ? { cgroup: { enter: () => cgroup.enter(name, limits), leave: () => cgroup.leave(name) } } : {}),
  });
}

async function main(): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'nav-bench-ws-'));
  const results: Record<string, number | null> = {};
  try {
    results.alone_ops_s = await median(() => workload(SECONDS));

    const cluster = await DepotCluster.create('nav-bench-ws-depot-');
    try {
      await cluster.start('idle-depot', { swarmKey: await cluster.swarmKey() });
      results.with_idle_depot_ops_s = await median(() => workload(SECONDS));
    } finally {
      await cluster.stopAll();
    }

    const plain = await busyContainer(root, `busy-${process.pid}-plain`);
    await plain.start();
    try {
      results.with_service_ops_s = await median(() => workload(SECONDS));
    } finally {
      await plain.stop({ timeoutMs: 5000 });
    }

    const host = new CgroupHost({ logger: silentLogger() });
    const limited = await busyContainer(root, `busy-${process.pid}-limited`, host);
    await limited.start();
    try {
      results.with_service_limited_ops_s = await median(() => workload(SECONDS));
    } finally {
      await limited.stop({ timeoutMs: 5000 });
    }
  } finally {
    await rm(root, { recursive: true, force: true });
  }
  const alone = results.alone_ops_s!;
  const ratio = (k: string) => Math.round((results[k]! / alone) * 1000) / 1000;
  const out = {
    bench: 'workstation',
    cpus: CPUS,
    seconds: SECONDS,
    rounds: ROUNDS,
    alone_ops_s: Math.round(alone),
    with_idle_depot_ops_s: Math.round(results.with_idle_depot_ops_s!),
    with_service_ops_s: Math.round(results.with_service_ops_s!),
    with_service_limited_ops_s: Math.round(results.with_service_limited_ops_s!),
    ratio_idle_depot: ratio('with_idle_depot_ops_s'),
    ratio_unlimited: ratio('with_service_ops_s'),
    ratio_limited: ratio('with_service_limited_ops_s'),
    recovery_s: null,
  };
  const rows: Array<[string, number, string]> = [
    ['workload alone', out.alone_ops_s, '1.000'],
    ['beside an idle depot', out.with_idle_depot_ops_s, out.ratio_idle_depot.toFixed(3)],
    ['beside a busy service container, no limits', out.with_service_ops_s, out.ratio_unlimited.toFixed(3)],
    ['beside it with containers.limits (weight 5)', out.with_service_limited_ops_s, out.ratio_limited.toFixed(3)],
  ];
  console.log(`workload: SHA-256 of 64 KiB blocks on ${CPUS} workers, ${SECONDS} s per phase, median of ${ROUNDS}`);
  console.log(`${'phase'.padEnd(48)} ${'ops/s'.padStart(8)}  ratio`);
  for (const [p, v, r] of rows) console.log(`${p.padEnd(48)} ${String(v).padStart(8)}  ${r}`);
  console.log(JSON.stringify(out));
}

await main();
