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
// recovery_s: the last-resort recovery (every copy lost), measured by a lab run like its test's:
// test/lab/last-resort.test.ts run as a child process (the Zabbix example on six namespace
// workstations, one standby; the primary's and the standby's PCs lose power within a second),
// from the cut to the first value the trapper acknowledges on the recovering host; the test's
// own checks (data up to the database copy, movement record, alert) must pass for a figure.
// BENCH_RECOVERY=0 leaves it out (null). The window of data lost goes with it.

import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { execa } from 'execa';
import { REPO_ROOT } from '../shared/repo-root.ts';
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

/** One lab run of the last-resort recovery test; its LAST_RESORT_RESULT line. */
async function recoveryRun(): Promise<{ recovery_ms: number; window_s: number; load1: number } | null> {
  if (process.env.BENCH_RECOVERY === '0') return null;
  const load1 = loadavg()[0]!;
  const r = await execa(join(REPO_ROOT, 'node_modules/.bin/vitest'), ['run', '-c', 'vitest.lab.config.ts', 'test/lab/last-resort.test.ts'], {
    cwd: REPO_ROOT,
    env: { CI: 'true' },
    reject: false,
    timeout: 900_000,
    all: true,
  });
  const line = /LAST_RESORT_RESULT (\{.*\})/.exec(String(r.all ?? ''));
  if (r.exitCode !== 0 || !line) {
    console.error(`last-resort lab run failed (exit ${r.exitCode}); recovery_s left null:\n${String(r.all ?? '').split('\n').slice(-40).join('\n')}`);
    return null;
  }
  const res = JSON.parse(line[1]!) as { recovery_ms: number; window_s: number };
  return { recovery_ms: res.recovery_ms, window_s: res.window_s, load1 };
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
  // Last: the lab run starts 6 depots and Zabbix copies, which would disturb the workload phases.
  const recovery = await recoveryRun();
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
    recovery_s: recovery ? Math.round(recovery.recovery_ms / 100) / 10 : null,
    recovery_data_window_s: recovery ? Math.round(recovery.window_s * 10) / 10 : null,
    recovery_load1: recovery ? Math.round(recovery.load1 * 100) / 100 : null,
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
  console.log(
    out.recovery_s === null
      ? 'last-resort recovery: not measured'
      : `last-resort recovery (lab, 6 workstations, primary and standby off within 1 s): service back in ${out.recovery_s} s (target <= 30), data window lost ${out.recovery_data_window_s} s, load average at start ${out.recovery_load1}`,
  );
  console.log(JSON.stringify(out));
}

await main();
