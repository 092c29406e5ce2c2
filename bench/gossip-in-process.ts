// bench:gossip, the second half: 128 and 256 depots in one process over the libp2p memory transport (see
// bench/gossip.ts for the whole bench). Run by gossip.ts in a child process per size (with
// MEM_NODE_ARGS), which prints its RunResult as its last stdout line.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { execa } from 'execa';
import { multiaddr } from '@multiformats/multiaddr';
import { sleep } from '../lab/loopback/depot-procs.ts';
import { Depot } from '../depot/depot.ts';
import { makeSwarmKey } from '../depot/swarm-key.ts';
import { parseConfig } from '../shared/config.ts';
import { silentLogger } from '../shared/logger.ts';
import { REPO_ROOT } from '../shared/repo-root.ts';
import { TOPICS } from '../shared/wire.ts';
import { fmt, mean, type RunResult } from './gossip-result.ts';

// In-process runs. One thread does the work of every depot, so what must fit is the cluster's
// load, not a depot's: a heartbeat costs each of the other n - 1 depots a delivery, 1.1-1.5 ms of
// this one thread at 256 depots (measured: Ed25519 signature check, then pnet + Noise + Yamux +
// protobuf for every copy, duplicates included; JSON + schema; GC). That makes n² deliveries per
// refresh round. Every setting that differs from a real depot is listed here, shown in the mode
// column, and repeated in `in_process` of the JSON line:
//
// - heartbeatRefreshMs grows with n² so the cluster receives about MEM_DELIVERIES_PER_S
//   heartbeats a second: 30 s at 128 and 120 s at 256, assuming the effective period of two
//   intervals explained next. Measured at rest: ~40 % of a core at 128, 50 % at 256, and 72 % at
//   256 in a run where the host's load moved and every depot refreshed once per interval. Views
//   converge one period after the last start (every depot has to be heard once).
// - heartbeatMs (sampling) = heartbeatRefreshMs. With a refresh above 30 s, a shorter sampling
//   interval would gossip host figures as soon as they move (at most every 30 s,
//   membership.figuresMinIntervalMs). Every depot here shares one host's load average, so they would
//   all gossip together and multiply the load. Side effect: a sample taken when the refresh is
//   due finds it a few ms short (the last heartbeat went out after its sampling took a few ms)
//   and skips it. The period becomes two intervals (heartbeat_period_measured_ms), or one when
//   a host figure moved.
// - probeIntervalMs 0 (heartbeat mode): SWIM probes would connect every depot to every other
//   one, n² connections in one process. Liveness comes from heartbeats (a depot becomes suspect
//   after 3 silent intervals). A dropped connection is still probed at once, which is how the
//   crash is seen.
// - A sparse graph: each depot dials MEM_BOOTSTRAP earlier ones and dialDiscovered is off. A
//   gossipsub mesh carries messages over several hops, where a real cluster is fully connected
//   and needs no mesh (D 0). With D 2 / Dlo 2 a depot receives each message ~2.6-3 times. With
//   D 6 it is ~7 times, and at that cost the run does not finish. Dhi 16 so a depot does not
//   refuse a newcomer's graft: at Dhi gossipsub prunes inbound grafts, and a late depot whose
//   bootstrap peers are all full stays out of the mesh (seen with Dhi 4). Depots start in
//   batches that dial only depots of earlier batches, and the next batch starts only once this
//   one has grafted its mesh and the process has caught up. Each mesh link therefore reaches
//   back into the part already connected, and a single crash is unlikely to cut the mesh in two.
// - V8 --max-semi-space-size=128 (a depot process runs with 1): hundreds of depots allocate for
//   every message, and a small young generation promotes that garbage. Measured at 256: 2.3 ms
//   -> 1.1 ms per delivery, start-up 92 -> 58 s. So each size runs in a child process of its own,
//   started with that flag.
// - The crash: every survivor that confirms the death gossips a DeadMessage of its own
//   (depot/depot.ts, declare-dead). That is n messages and n² deliveries, which this thread
//   handles one after the other while real hosts would handle them in parallel. The news reaches
//   every depot within a few seconds (death_suspected_by_all_ms). A depot marks the victim dead
//   only after its own probe, and those probes wait behind the rest of the DeadMessages, so
//   death_known_by_all_ms at 256 is mostly this one thread's backlog.

/** Heartbeats the whole cluster receives per second at rest (n² / effective period). */
const MEM_DELIVERIES_PER_S = 275;
/** Earlier depots each depot dials at start. */
const MEM_BOOTSTRAP = 3;
const MEM_MESH = { D: 2, Dlo: 2, Dhi: 16, Dout: 0, Dscore: 1, Dlazy: 0, gossipFactor: 0, mcacheGossip: 1 };
const MEM_NODE_ARGS = ['--max-semi-space-size=128'];
/** Largest batch of depots started together (batches grow 1, 2, 4, ... up to this). */
const MEM_BATCH = 32;
/** The process has caught up with a batch when the 99th percentile event-loop delay of a second is below this. */
const MEM_CALM_P99_MS = 50;

/** heartbeatRefreshMs for n depots: n² deliveries per period of two intervals, rounded up to 10 s. */
function memRefreshMs(n: number): number {
  return Math.max(30_000, Math.ceil((n * n) / (2 * MEM_DELIVERIES_PER_S) / 10) * 10_000);
}

/** Counts gossipsub's received message copies (duplicates included); everything else goes to the depot's own register. */
class CopyCountingRegister {
  inner: Depot['metrics']['gossipWire'] | undefined;
  constructor(private readonly count: { copies: number }) {}
  gauge(config: { name: string }): unknown {
    if (config.name === 'gossipsub_rpc_recv_message_total') {
      const count = this.count;
      return { inc: (a?: unknown, b?: number) => (count.copies += typeof a === 'number' ? a : (b ?? 1)), set() {}, addCollect() {} };
    }
    return this.inner!.gauge(config);
  }
  histogram(): unknown {
    return this.inner!.histogram();
  }
  avgMinMax(): unknown {
    return this.inner!.avgMinMax();
  }
}

/** Wait until this process keeps up again (p99 event-loop delay of a second below MEM_CALM_P99_MS), at most `maxMs`. */
async function calm(maxMs: number): Promise<number> {
  const h = monitorEventLoopDelay({ resolution: 10 });
  h.enable();
  const end = Date.now() + maxMs;
  try {
    for (;;) {
      h.reset();
      await sleep(1000);
      const p99 = h.percentile(99) / 1e6;
      if (p99 < MEM_CALM_P99_MS || Date.now() > end) return p99;
    }
  } finally {
    h.disable();
  }
}

function meshPeers(d: Depot, topic: string): number {
  return (d.node.services.pubsub as unknown as { getMeshPeers(t: string): string[] }).getMeshPeers(topic).length;
}

async function runInProcess(n: number): Promise<RunResult> {
  const refreshMs = memRefreshMs(n);
  const dir = await mkdtemp(join(tmpdir(), 'nav-bench-mem-'));
  const swarmKey = makeSwarmKey();
  const depots: Depot[] = [];
  const addrs: string[] = [];
  const tag = `b${n}-${process.pid}`;
  const log = silentLogger();
  const copies = { copies: 0 };
  const deaths: Array<{ peer: string; at: number; by: Depot }> = [];
  const suspects: Array<{ peer: string; at: number; by: Depot }> = [];
  const topics = [TOPICS.heartbeat, TOPICS.membership];
  try {
    const t0 = Date.now();
    for (let size = 1; depots.length < n; size = Math.min(MEM_BATCH, size * 2)) {
      const first = depots.length;
      const batch = await Promise.all(
        Array.from({ length: Math.min(size, n - first) }, async (_, k) => {
          const i = first + k;
          const config = parseConfig({
            node: { name: `mem-${String(i).padStart(3, '0')}`, dataDir: join(dir, String(i)) },
            network: { listen: [`/memory/${tag}-${i}`], mdns: false },
            membership: { heartbeatMs: refreshMs, heartbeatRefreshMs: refreshMs, probeIntervalMs: 0 },
            log: { level: 'silent' },
          });
          const register = new CopyCountingRegister(copies);
          const d = new Depot({
            config,
            log,
            swarmKey,
            privateKey: await generateKeyPair('Ed25519'),
            transport: 'memory',
            http: false,
            dialDiscovered: false,
            gossip: { ...MEM_MESH, metricsRegister: register as never },
          });
          register.inner = d.metrics.gossipWire;
          d.events.on('transition', (a) => {
            if (a.to === 'dead') deaths.push({ peer: a.peer, at: Date.now(), by: d });
            else if (a.to === 'suspect') suspects.push({ peer: a.peer, at: Date.now(), by: d });
          });
          await d.start();
          // A few random depots of earlier batches (all connected and meshed by now).
          const boot = new Set<string>();
          while (boot.size < Math.min(first, MEM_BOOTSTRAP)) boot.add(addrs[Math.floor(Math.random() * first)]!);
          await Promise.all([...boot].map((a) => d.node.dial(multiaddr(a), { signal: AbortSignal.timeout(60_000) }).catch(() => {})));
          return d;
        }),
      );
      for (const d of batch) {
        depots.push(d);
        addrs.push(`/memory/${tag}-${depots.length - 1}/p2p/${d.peerId}`);
      }
      // Each depot of the batch has grafted its mesh (to depots of earlier batches) before any
      // later depot can connect to it.
      const meshed = (d: Depot) => topics.every((t) => meshPeers(d, t) >= Math.min(MEM_MESH.Dlo, d.node.services.pubsub.getSubscribers(t).length));
      const meshDeadline = Date.now() + 60_000;
      while (!batch.every(meshed) && Date.now() < meshDeadline) await sleep(100);
      const lagMs = await calm(30_000);
      if (depots.length % 64 === 0 || depots.length === n) {
        process.stderr.write(`  ${depots.length} started (${((Date.now() - t0) / 1000).toFixed(1)} s, event-loop p99 ${lagMs.toFixed(0)} ms, ${(process.memoryUsage().rss / 2 ** 20).toFixed(0)} MB RSS)\n`);
      }
    }
    const startedAt = Date.now();
    process.stderr.write(`  ${n} in-process depots started in ${((startedAt - t0) / 1000).toFixed(1)} s; refresh ${refreshMs / 1000} s, waiting for every depot to see ${n} alive\n`);

    // Steady state from here on (no depot starts any more): its traffic is measured while the
    // views converge, which takes one or two refresh intervals.
    const w0 = Date.now();
    const b0 = depots.map((d) => ({ ...d.metrics.gossipWire.wire }));
    const copies0 = copies.copies;
    const cpu0 = process.cpuUsage();
    let delivered = 0;
    const onHeartbeat = () => delivered++;
    for (const d of depots) d.events.on('heartbeat', onHeartbeat);
    let convergeMs: number | undefined;
    const convergeDeadline = startedAt + 3 * refreshMs + 60_000;
    let lastReport = Date.now();
    for (;;) {
      const alive = depots.map((d) => d.membership.countByState().alive);
      if (alive.every((a) => a >= n)) {
        convergeMs = Date.now() - startedAt;
        break;
      }
      if (Date.now() > convergeDeadline) break;
      if (Date.now() - lastReport > 30_000) {
        lastReport = Date.now();
        process.stderr.write(`  ${alive.filter((a) => a >= n).length}/${n} depots see ${n} alive (least: ${Math.min(...alive)})\n`);
      }
      await sleep(500);
    }
    // At least one refresh interval of traffic (views can converge sooner).
    while (Date.now() - w0 < refreshMs) await sleep(500);
    const secs = (Date.now() - w0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    const sent = mean(depots.map((d, i) => (d.metrics.gossipWire.wire.rpcSentBytes - b0[i]!.rpcSentBytes) / secs));
    const recv = mean(depots.map((d, i) => (d.metrics.gossipWire.wire.rpcRecvBytes - b0[i]!.rpcRecvBytes) / secs));
    const copiesPerNodePerS = (copies.copies - copies0) / secs / n;
    const cpuPct = ((cpu.user + cpu.system) / 1e3 / 1e3 / secs) * 100;
    for (const d of depots) d.events.off('heartbeat', onHeartbeat);
    // Mean time between two heartbeats of a depot (each reaches the n - 1 others once).
    const heartbeatPeriodMs = (secs * 1000 * n) / (delivered / (n - 1));
    process.stderr.write(
      convergeMs === undefined
        ? `  NOT converged within ${((convergeDeadline - startedAt) / 1000).toFixed(0)} s\n`
        : `  converged ${convergeMs} ms after the last start; steady state over ${secs.toFixed(0)} s: ${fmt(sent)} B/s sent per depot, ${copiesPerNodePerS.toFixed(1)} message copies received per depot per s, process CPU ${cpuPct.toFixed(0)} % of a core\n`,
    );

    const victim = depots[1 + Math.floor(Math.random() * (n - 1))]!;
    const victimId = victim.peerId;
    const survivors = depots.filter((d) => d !== victim);
    const neighbours = victim.node.getPeers().length;
    const killedAt = Date.now();
    await victim.crash();
    // First `to` transition about the victim at each survivor since the crash.
    const firstAt = (list: Array<{ peer: string; at: number; by: Depot }>) => {
      const out = new Map<Depot, number>();
      for (const x of list) if (x.peer === victimId && x.at >= killedAt && !out.has(x.by)) out.set(x.by, x.at);
      return out;
    };
    const deadline = killedAt + 240_000;
    while (firstAt(deaths).size < survivors.length && Date.now() < deadline) await sleep(50);
    const dead = firstAt(deaths);
    const suspected = firstAt(suspects);
    // A survivor that learnt of the death from a report suspects first, then probes; a neighbour
    // may go straight from its failed probe round to dead.
    for (const [d, t] of dead) if (!suspected.has(d) || suspected.get(d)! > t) suspected.set(d, t);
    const known = dead.size === survivors.length ? Math.max(...dead.values()) - killedAt : undefined;
    const suspectedByAll = suspected.size === survivors.length ? Math.max(...suspected.values()) - killedAt : undefined;
    process.stderr.write(
      known === undefined
        ? `  crash of one of ${n} (${neighbours} connections): only ${dead.size}/${survivors.length} survivors marked it dead within ${deadline - killedAt} ms\n`
        : `  crash of one of ${n} (${neighbours} connections): dead for all ${survivors.length} survivors after ${known} ms (first after ${Math.min(...dead.values()) - killedAt} ms; suspected by all after ${suspectedByAll} ms)\n`,
    );
    // The other depots' own verdicts are still being gossiped: count false verdicts until the
    // process has caught up with them.
    await calm(20_000);
    // Every verdict on a depot that was running, over the whole run (start-up included).
    const falseDeaths = deaths.filter((x) => x.peer !== victimId || x.at < killedAt).length;
    return {
      mode: `in-process/memory: heartbeat ${refreshMs / 1000} s (sampled every ${refreshMs / 1000} s), routine probes off, mesh D ${MEM_MESH.D}/${MEM_MESH.Dlo}/${MEM_MESH.Dhi}, ${MEM_BOOTSTRAP} bootstrap peers (no discovery dials), ${MEM_NODE_ARGS.join(' ')}`,
      nodes: n,
      heartbeatMs: refreshMs,
      deathKnownMs: known === undefined ? [] : [known],
      bytesSentPerNodePerS: sent,
      bytesRecvPerNodePerS: recv,
      convergeMs,
      falseDeaths,
      inProcess: {
        heartbeatSampleMs: refreshMs,
        heartbeatPeriodMs,
        probeIntervalMs: 0,
        bootstrapPeers: MEM_BOOTSTRAP,
        mesh: { D: MEM_MESH.D, Dlo: MEM_MESH.Dlo, Dhi: MEM_MESH.Dhi },
        nodeArgs: MEM_NODE_ARGS.join(' '),
        copiesPerNodePerS,
        cpuPctIdle: cpuPct,
        victimConnections: neighbours,
        deathSuspectedByAllMs: suspectedByAll,
        deadMessages: deaths.filter((x) => x.peer === victimId && x.at >= killedAt).length,
        falseSuspects: suspects.filter((x) => x.peer !== victimId || x.at < killedAt).length,
        startMs: startedAt - t0,
      },
    };
  } finally {
    // All at once: a depot that is stopping ignores the others' disconnects (no probes, no verdicts).
    await Promise.all(depots.map((d) => d.crash().catch(() => {})));
    await rm(dir, { recursive: true, force: true });
  }
}


/** Run runInProcess(n) in a fresh child process with MEM_NODE_ARGS; it prints its result as the last stdout line. */
export async function runInProcessChild(n: number): Promise<RunResult> {
  const { stdout } = await execa(process.execPath, [...MEM_NODE_ARGS, '--import', 'tsx', fileURLToPath(import.meta.url)], {
    cwd: REPO_ROOT,
    env: { BENCH_MEM_CHILD: String(n) },
    stdout: 'pipe',
    stderr: 'inherit',
  });
  return JSON.parse(stdout.trim().split('\n').pop()!) as RunResult;
}

if (process.env.BENCH_MEM_CHILD) {
  // Child of runInProcessChild: one in-process run, its result as the last line.
  const r = await runInProcess(Number(process.env.BENCH_MEM_CHILD));
  console.log(JSON.stringify(r));
  process.exit(0);
}
