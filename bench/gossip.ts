// bench:gossip — how fast every depot learns that one died, and what gossip costs at rest.
//
//  1. N_PROC depots (default 32) as real processes on loopback, each bootstrapped to every
//     earlier one (the full connectivity mDNS gives on a LAN). Idle window: CPU from
//     /proc/PID/stat, RSS from /proc/PID/status, and the bytes each depot puts on the wire: the
//     TCP byte counters (`ss -ti`) of all its libp2p connections — gossip, probes, identify,
//     Yamux and Noise framing included (the HTTP API the bench polls is left out) — beside
//     gossipsub's own RPC byte count from /metrics.
//     Then kill -9 a depot KILLS times; death_known_by_all = kill -> the last survivor's
//     `member-transition ... to dead` log line.
//  2. 128 and 256 depots in one process (a child process per size) over the libp2p memory
//     transport, on a sparse graph with a gossipsub mesh and heartbeats scaled to what one thread
//     can carry (every setting that differs from a real depot: see "In-process runs" below; they
//     show in the mode column and in `in_process`). Views must converge (every depot sees n
//     alive); gossip bytes at rest; then one crash (no `left`): crash -> the last survivor's
//     `dead` transition, from events. False deaths are counted over the whole run.
//
// Prints a table and, as the last line, one JSON object. Knobs (env): BENCH_NODES (32),
// BENCH_KILLS (4), BENCH_IDLE_S (10), BENCH_SETTLE_S (60: after convergence, before the idle window), BENCH_MEM_NODES ("128,256", "" to skip),
// BENCH_NODE_ARGS (Node flags of depot processes; unset: depot/runtime-flags.ts, as deployed).

import { readFile, mkdtemp, rm } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { execa } from 'execa';
import { DEPOT_NODE_FLAGS } from '../depot/runtime-flags.ts';
import { multiaddr } from '@multiformats/multiaddr';
import { DepotCluster, getDepots, sleep, waitFor, type DepotProc } from '../lab/loopback/depot-procs.ts';
import { Depot } from '../depot/depot.ts';
import { makeSwarmKey } from '../depot/swarm-key.ts';
import { parseConfig } from '../shared/config.ts';
import { silentLogger } from '../shared/logger.ts';
import { REPO_ROOT } from '../shared/repo-root.ts';
import { TOPICS } from '../shared/wire.ts';

const N_PROC = Number(process.env.BENCH_NODES ?? 32);
const KILLS = Number(process.env.BENCH_KILLS ?? 4);
const IDLE_S = Number(process.env.BENCH_IDLE_S ?? 10);
const SETTLE_S = Number(process.env.BENCH_SETTLE_S ?? 60);
const MEM_NODES = (process.env.BENCH_MEM_NODES ?? '128,256').split(',').filter(Boolean).map(Number);
// Unset: the flags the systemd unit runs depots with (depot/runtime-flags.ts).
const NODE_ARGS = process.env.BENCH_NODE_ARGS === undefined ? DEPOT_NODE_FLAGS : process.env.BENCH_NODE_ARGS.split(' ').filter(Boolean);
const CLK_TCK = 100; // Linux USER_HZ

interface RunResult {
  mode: string;
  nodes: number;
  deathKnownMs: number[];
  bytesSentPerNodePerS?: number;
  bytesRecvPerNodePerS?: number;
  /** All TCP bytes of the depot's libp2p connections (processes only). */
  tcpSentPerNodePerS?: number;
  tcpRecvPerNodePerS?: number;
  publishedBytesPerNodePerS?: number;
  rssMbPerDepot?: number;
  rssMbMax?: number;
  cpuPctIdle?: number;
  /** Undefined: the views did not converge within the run's limit. */
  convergeMs?: number;
  falseDeaths: number;
  heartbeatMs?: number;
  /** In-process runs: the settings that differ from a real depot, and what the one process did. */
  inProcess?: {
    heartbeatSampleMs: number;
    /** Measured mean time between two heartbeats of a depot, steady state. */
    heartbeatPeriodMs: number;
    probeIntervalMs: number;
    bootstrapPeers: number;
    mesh: { D: number; Dlo: number; Dhi: number };
    nodeArgs: string;
    /** Gossip message copies (duplicates included) received per depot per second, steady state. */
    copiesPerNodePerS: number;
    /** CPU of the whole process (all depots), % of one core, steady state. */
    cpuPctIdle: number;
    victimConnections: number;
    /** Crash to the last survivor suspecting the victim (the news reached everyone; its own probe decides). */
    deathSuspectedByAllMs?: number;
    /** DeadMessages gossiped about the victim: every survivor that confirms the death gossips its own. */
    deadMessages: number;
    falseSuspects: number;
    startMs: number;
  };
}

function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1));
  return s[i]!;
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);

async function procCpuTicks(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]); // utime + stime (fields 14, 15)
}

async function procRssMb(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const m = /VmRSS:\s+(\d+) kB/.exec(status);
  return m ? Number(m[1]) / 1024 : NaN;
}

/** Bytes sent and received per process over its TCP connections, from `ss -tinp` (skips sockets on `skipPorts`). */
async function tcpBytesByPid(pids: ReadonlySet<number>, skipPorts: ReadonlySet<number>): Promise<Map<number, { sent: number; received: number }>> {
  const { stdout } = await execa('ss', ['-tinpH', 'state', 'established']);
  const out = new Map<number, { sent: number; received: number }>();
  const lines = stdout.split('\n');
  for (let i = 0; i + 1 < lines.length; i++) {
    const head = lines[i]!;
    const pid = Number(/pid=(\d+)/.exec(head)?.[1]);
    if (!pids.has(pid)) continue;
    const ports = [...head.matchAll(/:(\d+)\s/g)].map((m) => Number(m[1]));
    const info = lines[i + 1]!;
    i++;
    if (ports.some((p) => skipPorts.has(p))) continue;
    const sent = Number(/bytes_sent:(\d+)/.exec(info)?.[1] ?? 0);
    const received = Number(/bytes_received:(\d+)/.exec(info)?.[1] ?? 0);
    const t = out.get(pid) ?? { sent: 0, received: 0 };
    t.sent += sent;
    t.received += received;
    out.set(pid, t);
  }
  return out;
}

async function scrape(api: string): Promise<Record<string, number>> {
  const text = await (await fetch(`${api}/metrics`, { signal: AbortSignal.timeout(15_000) })).text();
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const m = /^(navigator_gossip_wire_sent_bytes_total|navigator_gossip_wire_received_bytes_total|navigator_gossip_published_bytes_total)(\{[^}]*\})? ([0-9.e+]+)$/.exec(line);
    if (m) out[m[1]!] = (out[m[1]!] ?? 0) + Number(m[3]);
  }
  return out;
}

function deadAt(d: DepotProc, victim: string): number | undefined {
  for (let i = d.lines.length - 1; i >= 0; i--) {
    const line = d.lines[i]!;
    if (!line.includes('"member-transition"') || !line.includes(victim) || !line.includes('"to":"dead"')) continue;
    return Date.parse((JSON.parse(line) as { time: string }).time);
  }
  return undefined;
}

/** Deaths of depots that were never killed, after `since` (start-up on a loaded host aside). */
function countFalseDeaths(procs: DepotProc[], killed: Set<string>, since: number): number {
  let n = 0;
  for (const d of procs) {
    for (const line of d.lines) {
      if (!line.includes('"member-transition"') || !line.includes('"to":"dead"')) continue;
      const ev = JSON.parse(line) as { peer: string; time: string };
      if (!killed.has(ev.peer) && Date.parse(ev.time) >= since) n++;
    }
  }
  return n;
}

async function runProcesses(n: number): Promise<RunResult> {
  const cluster = await DepotCluster.create('nav-bench-');
  try {
    const key = await cluster.swarmKey();
    const t0 = Date.now();
    const procs: DepotProc[] = [];
    procs.push(await cluster.start('depot-01', { swarmKey: key, nodeArgs: NODE_ARGS, timeoutMs: 60_000 }));
    // Start in small batches: 2 cores compile TypeScript for every process.
    for (let i = 1; i < n; i += 4) {
      const batch = [];
      for (let j = i; j < Math.min(n, i + 4); j++) {
        const name = `depot-${String(j + 1).padStart(2, '0')}`;
        batch.push(cluster.start(name, { swarmKey: key, nodeArgs: NODE_ARGS, bootstrap: procs.map((p) => p.addr), timeoutMs: 240_000 }));
      }
      procs.push(...(await Promise.all(batch)));
    }
    const lastStart = Math.max(...procs.map((p) => p.startedAt));
    process.stderr.write(`  ${n} depot processes started in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
    let lastCounts = '';
    await waitFor(
      `all ${n} depots to see ${n} alive`,
      async () => {
        const alive = await Promise.all(procs.map(async (p) => (await getDepots(p.api, 10_000)).counts.alive));
        const counts = alive.join(' ');
        if (counts !== lastCounts) process.stderr.write(`  alive counts: ${counts}\n`);
        lastCounts = counts;
        return alive.every((a) => a >= n) ? true : undefined;
      },
      180_000,
      1000,
    );
    const convergedAt = Date.now();
    const convergeMs = convergedAt - lastStart;
    process.stderr.write(`  converged ${convergeMs} ms after the last start; settling, then ${IDLE_S} s idle window\n`);
    // Idle means a depot's steady state, not its first minute: the last depots started ~30 s ago
    // still run their start-up member syncs (every second for 30 s), V8 still optimises hot code.
    process.stderr.write(`  settling ${SETTLE_S} s before the idle window\n`);
    await sleep(SETTLE_S * 1000);

    const pids = new Set(procs.map((p) => p.pid));
    const apiPorts = new Set(procs.map((p) => Number(new URL(p.api).port)));
    const m0 = await Promise.all(procs.map((p) => scrape(p.api)));
    const t0b = await tcpBytesByPid(pids, apiPorts);
    const c0 = await Promise.all(procs.map((p) => procCpuTicks(p.pid)));
    const w0 = Date.now();
    await sleep(IDLE_S * 1000);
    const c1 = await Promise.all(procs.map((p) => procCpuTicks(p.pid)));
    const t1b = await tcpBytesByPid(pids, apiPorts);
    const w1 = Date.now();
    const m1 = await Promise.all(procs.map((p) => scrape(p.api)));
    const rss = await Promise.all(procs.map((p) => procRssMb(p.pid)));
    const secs = (w1 - w0) / 1000;
    const per = (k: string) => mean(procs.map((_, i) => ((m1[i]![k] ?? 0) - (m0[i]![k] ?? 0)) / secs));
    const cpuPct = mean(procs.map((_, i) => ((c1[i]! - c0[i]!) / CLK_TCK / secs) * 100));
    // Connections opened during the window count from zero; closed ones drop out (steady state: few).
    const tcp = (k: 'sent' | 'received') => mean(procs.map((p) => Math.max(0, (t1b.get(p.pid)?.[k] ?? 0) - (t0b.get(p.pid)?.[k] ?? 0)) / secs));

    const killed = new Set<string>();
    const deathKnownMs: number[] = [];
    const victims = procs.slice(1).sort(() => Math.random() - 0.5).slice(0, Math.min(KILLS, n - 2));
    for (const victim of victims) {
      const survivors = procs.filter((p) => !p.exited && p !== victim);
      // Kill at a random point of the heartbeat cycle.
      await sleep(Math.floor(Math.random() * 1000));
      const killedAt = Date.now();
      killed.add(victim.peerId);
      await cluster.signal(victim, 'SIGKILL');
      const known = await waitFor(
        `all survivors to mark ${victim.name} dead`,
        async () => {
          const times = survivors.map((s) => deadAt(s, victim.peerId));
          return times.every((t) => t !== undefined) ? Math.max(...(times as number[])) - killedAt : undefined;
        },
        20_000,
        100,
      );
      deathKnownMs.push(known);
      process.stderr.write(`  kill -9 ${victim.name}: dead for all ${survivors.length} survivors after ${known} ms\n`);
      await sleep(1000);
    }
    return {
      mode: 'processes/tcp',
      nodes: n,
      deathKnownMs,
      bytesSentPerNodePerS: per('navigator_gossip_wire_sent_bytes_total'),
      bytesRecvPerNodePerS: per('navigator_gossip_wire_received_bytes_total'),
      tcpSentPerNodePerS: tcp('sent'),
      tcpRecvPerNodePerS: tcp('received'),
      publishedBytesPerNodePerS: per('navigator_gossip_published_bytes_total'),
      rssMbPerDepot: mean(rss),
      rssMbMax: Math.max(...rss),
      cpuPctIdle: cpuPct,
      convergeMs,
      falseDeaths: countFalseDeaths(procs, killed, convergedAt),
    };
  } finally {
    await cluster.stopAll();
  }
}

// ---------------------------------------------------------------------------------------------
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
//   depot/heartbeat-change.ts). Every depot here shares one host's load average, so they would
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
//   (depot/daemon.ts, declare-dead). That is n messages and n² deliveries, which this thread
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
async function runInProcessChild(n: number): Promise<RunResult> {
  const { stdout } = await execa(process.execPath, [...MEM_NODE_ARGS, '--import', 'tsx', fileURLToPath(import.meta.url)], {
    cwd: REPO_ROOT,
    env: { BENCH_MEM_CHILD: String(n) },
    stdout: 'pipe',
    stderr: 'inherit',
  });
  return JSON.parse(stdout.trim().split('\n').pop()!) as RunResult;
}

function fmt(x: number | undefined, digits = 0): string {
  return x === undefined || Number.isNaN(x) ? '-' : x.toFixed(digits);
}

async function main(): Promise<void> {
  const results: RunResult[] = [];
  const loadBefore = loadavg()[0]!;
  process.stderr.write(`bench:gossip: load average ${loadBefore.toFixed(1)} on ${cpus().length} cores; ${N_PROC} processes (${KILLS} kills, ${IDLE_S} s idle), in-process: ${MEM_NODES.join(', ') || 'none'}\n`);
  if (N_PROC > 0) results.push(await runProcesses(N_PROC));
  for (const n of MEM_NODES) results.push(await runInProcessChild(n));

  const head = ['mode', 'nodes', 'death p50 ms', 'death p95 ms', 'kills', 'TCP sent B/s/node', 'TCP recv B/s/node', 'gossip sent B/s/node', 'gossip recv B/s/node', 'published B/s/node', 'RSS MB/depot', 'CPU % idle', 'converge ms', 'false deaths'];
  const rows = results.map((r) => [
    r.mode,
    String(r.nodes),
    fmt(percentile(r.deathKnownMs, 50)),
    fmt(percentile(r.deathKnownMs, 95)),
    String(r.deathKnownMs.length),
    fmt(r.tcpSentPerNodePerS),
    fmt(r.tcpRecvPerNodePerS),
    fmt(r.bytesSentPerNodePerS),
    fmt(r.bytesRecvPerNodePerS),
    fmt(r.publishedBytesPerNodePerS),
    r.rssMbPerDepot === undefined ? '-' : `${fmt(r.rssMbPerDepot, 1)} (max ${fmt(r.rssMbMax, 1)})`,
    fmt(r.cpuPctIdle, 2),
    fmt(r.convergeMs),
    String(r.falseDeaths),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ');
  console.log(line(head));
  for (const r of rows) console.log(line(r));
  // The process run (absent with BENCH_NODES=0: its fields are null then).
  const main32 = results.find((r) => r.mode === 'processes/tcp');
  const num = (x: number | undefined, digits = 0) => (x === undefined || Number.isNaN(x) ? null : Number(x.toFixed(digits)));
  const summary = {
    bench: 'gossip',
    nodes: main32?.nodes ?? 0,
    death_known_by_all_ms_p50: num(percentile(main32?.deathKnownMs ?? [], 50)),
    death_known_by_all_ms_p95: num(percentile(main32?.deathKnownMs ?? [], 95)),
    kills: main32?.deathKnownMs.length ?? 0,
    // Everything a depot sends on its libp2p connections (TCP payload bytes), per second.
    bytes_per_node_per_s: num(main32?.tcpSentPerNodePerS ?? main32?.bytesSentPerNodePerS),
    bytes_received_per_node_per_s: num(main32?.tcpRecvPerNodePerS ?? main32?.bytesRecvPerNodePerS),
    gossip_sent_bytes_per_node_per_s: num(main32?.bytesSentPerNodePerS),
    gossip_received_bytes_per_node_per_s: num(main32?.bytesRecvPerNodePerS),
    published_bytes_per_node_per_s: num(main32?.publishedBytesPerNodePerS),
    rss_mb_per_depot: num(main32?.rssMbPerDepot, 1),
    rss_mb_max: num(main32?.rssMbMax, 1),
    cpu_pct_per_depot_idle: num(main32?.cpuPctIdle, 2),
    false_deaths: main32?.falseDeaths ?? null,
    node_args: NODE_ARGS.join(' '),
    host_cores: cpus().length,
    host_load_avg_1m_before: Number(loadBefore.toFixed(1)),
    host_load_avg_1m_after: Number(loadavg()[0]!.toFixed(1)),
    // Settings that differ from a real depot are listed with each run (see runInProcess).
    in_process: results
      .filter((r) => r.inProcess)
      .map((r) => ({
        nodes: r.nodes,
        heartbeat_ms: r.heartbeatMs,
        heartbeat_sample_ms: r.inProcess?.heartbeatSampleMs,
        heartbeat_period_measured_ms: num(r.inProcess?.heartbeatPeriodMs),
        probe_interval_ms: r.inProcess?.probeIntervalMs,
        bootstrap_peers: r.inProcess?.bootstrapPeers,
        dial_discovered: r.inProcess ? false : undefined,
        mesh: r.inProcess?.mesh,
        node_args: r.inProcess?.nodeArgs,
        // null: not every survivor marked the victim dead within the limit.
        death_known_by_all_ms: r.deathKnownMs[0] ?? null,
        death_known_by_all_heartbeats: r.heartbeatMs && r.deathKnownMs[0] !== undefined ? num(r.deathKnownMs[0] / r.heartbeatMs, 3) : null,
        death_suspected_by_all_ms: r.inProcess?.deathSuspectedByAllMs ?? null,
        dead_messages: r.inProcess?.deadMessages,
        // gossipsub RPC bytes (in-process there is no TCP to count).
        bytes_per_node_per_s: num(r.bytesSentPerNodePerS),
        bytes_received_per_node_per_s: num(r.bytesRecvPerNodePerS),
        message_copies_received_per_node_per_s: num(r.inProcess?.copiesPerNodePerS, 2),
        process_cpu_pct_idle: num(r.inProcess?.cpuPctIdle, 1),
        start_ms: r.inProcess?.startMs,
        // null: the views did not converge within the limit.
        converge_ms: r.convergeMs ?? null,
        false_deaths: r.falseDeaths,
        false_suspects: r.inProcess?.falseSuspects,
      })),
  };
  console.log(JSON.stringify(summary));
}

if (process.env.BENCH_MEM_CHILD) {
  // Child of runInProcessChild: one in-process run, its result as the last line.
  const r = await runInProcess(Number(process.env.BENCH_MEM_CHILD));
  console.log(JSON.stringify(r));
  process.exit(0);
} else await main();
