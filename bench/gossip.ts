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
//  2. 128 and 256 depots in this one process over the libp2p memory transport, each
//     bootstrapped to a few earlier ones; one crash each (no `left`), measured from events.
//
// Prints a table and, as the last line, one JSON object. Knobs (env): BENCH_NODES (32),
// BENCH_KILLS (4), BENCH_IDLE_S (10), BENCH_MEM_NODES ("128,256", "" to skip),
// BENCH_NODE_ARGS (V8 flags for depot processes, e.g. "--max-semi-space-size=1").

import { readFile, mkdtemp, rm } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { execa } from 'execa';
import { DEPOT_NODE_FLAGS } from '../depot/runtime-flags.ts';
import { multiaddr } from '@multiformats/multiaddr';
import { DepotCluster, getDepots, sleep, waitFor, type DepotProc } from '../test/helpers/depot-procs.ts';
import { Depot } from '../depot/daemon.ts';
import { makeSwarmKey } from '../depot/swarm-key.ts';
import { parseConfig } from '../shared/config.ts';
import { silentLogger } from '../shared/logger.ts';

const N_PROC = Number(process.env.BENCH_NODES ?? 32);
const KILLS = Number(process.env.BENCH_KILLS ?? 4);
const IDLE_S = Number(process.env.BENCH_IDLE_S ?? 10);
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
  convergeMs: number;
  falseDeaths: number;
  heartbeatMs?: number;
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
    await sleep(5000); // let start-up work (compilation, GC) settle

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

/** gossipsub's own defaults, for the sparse in-process graph. */
const SPARSE_GOSSIP = { D: 6, Dlo: 4, Dhi: 12, Dout: 2, Dscore: 4, Dlazy: 6, gossipFactor: 0.25, mcacheGossip: 3 };

async function runInProcess(n: number): Promise<RunResult> {
  // Heartbeats scaled so the whole cluster stays near 4000 heartbeat deliveries a second.
  const hbMs = Math.max(1000, Math.round((n * n) / 4));
  const dir = await mkdtemp(join(tmpdir(), 'nav-bench-mem-'));
  const swarmKey = makeSwarmKey();
  const depots: Depot[] = [];
  const tag = `b${n}-${process.pid}`;
  const log = silentLogger();
  try {
    const t0 = Date.now();
    const addrs: string[] = [];
    for (let i = 0; i < n; i++) {
      const privateKey = await generateKeyPair('Ed25519');
      // A few random earlier depots (always including the first) as bootstrap: a sparse graph.
      const boot = new Set<string>();
      if (i > 0) boot.add(addrs[0]!);
      while (boot.size < Math.min(i, 6)) boot.add(addrs[Math.floor(Math.random() * i)]!);
      const config = parseConfig({
        node: { name: `mem-${String(i).padStart(3, '0')}`, dataDir: join(dir, String(i)) },
        network: { listen: [`/memory/${tag}-${i}`], mdns: false },
        // Heartbeat mode (no routine probes): SWIM probes would connect every depot to every
        // other one, 32 k connections in one process at 256. Liveness here comes from the
        // heartbeats, as it would with probeIntervalMs 0 (a dropped connection is still probed).
        membership: { heartbeatMs: hbMs, heartbeatRefreshMs: hbMs, probeIntervalMs: 0 },
        log: { level: 'silent' },
      });
      // One process cannot verify N² signed heartbeats a second, nor hold N² connections: a
      // sparse graph with gossipsub's default mesh (D 6) carries the gossip over several hops.
      const d = new Depot({ config, log, swarmKey, privateKey, transport: 'memory', http: false, dialDiscovered: false, gossip: SPARSE_GOSSIP });
      await d.start();
      await Promise.all([...boot].map((a) => d.node.dial(multiaddr(a), { signal: AbortSignal.timeout(20_000) }).catch(() => {})));
      depots.push(d);
      addrs.push(`/memory/${tag}-${i}/p2p/${d.peerId}`);
      if ((i + 1) % 32 === 0) process.stderr.write(`  ${i + 1} started (${((Date.now() - t0) / 1000).toFixed(1)} s)\n`);
    }
    process.stderr.write(`  ${n} in-process depots started in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
    const startedAt = Date.now();
    await waitFor(`all ${n} depots to see ${n} alive`, async () => (depots.every((d) => d.membership.countByState().alive >= n) ? true : undefined), 20 * hbMs, 500);
    const convergeMs = Date.now() - startedAt;
    process.stderr.write(`  converged ${convergeMs} ms after the last start\n`);
    const victim = depots[1 + Math.floor(Math.random() * (n - 1))]!;
    const victimId = victim.peerId;
    const survivors = depots.filter((d) => d !== victim);
    const deadSeen = new Map<Depot, number>();
    let falseDeaths = 0;
    for (const d of survivors) {
      d.events.on('transition', (a) => {
        if (a.to !== 'dead') return;
        if (a.peer === victimId) {
          if (!deadSeen.has(d)) deadSeen.set(d, Date.now());
        } else falseDeaths++;
      });
    }
    const w0 = Date.now();
    const b0 = depots.map((d) => ({ ...d.metrics.gossipWire.wire }));
    await sleep(Math.max(5000, 2 * hbMs));
    const secs = (Date.now() - w0) / 1000;
    const sent = mean(depots.map((d, i) => (d.metrics.gossipWire.wire.rpcSentBytes - b0[i]!.rpcSentBytes) / secs));
    const recv = mean(depots.map((d, i) => (d.metrics.gossipWire.wire.rpcRecvBytes - b0[i]!.rpcRecvBytes) / secs));

    const killedAt = Date.now();
    await victim.crash();
    const known = await waitFor(`all survivors to mark the victim dead`, async () => (deadSeen.size === survivors.length ? Math.max(...deadSeen.values()) - killedAt : undefined), 20 * hbMs, 50);
    process.stderr.write(`  crash of one of ${n}: dead for all ${survivors.length} survivors after ${known} ms\n`);
    return { mode: `in-process/memory hb ${hbMs} ms`, nodes: n, heartbeatMs: hbMs, deathKnownMs: [known], bytesSentPerNodePerS: sent, bytesRecvPerNodePerS: recv, convergeMs, falseDeaths };
  } finally {
    for (const d of depots) await d.stop().catch(() => {});
    await rm(dir, { recursive: true, force: true });
  }
}

function fmt(x: number | undefined, digits = 0): string {
  return x === undefined || Number.isNaN(x) ? '-' : x.toFixed(digits);
}

async function main(): Promise<void> {
  const results: RunResult[] = [];
  const loadBefore = loadavg()[0]!;
  process.stderr.write(`bench:gossip: load average ${loadBefore.toFixed(1)} on ${cpus().length} cores; ${N_PROC} processes (${KILLS} kills, ${IDLE_S} s idle), in-process: ${MEM_NODES.join(', ') || 'none'}\n`);
  if (N_PROC > 0) results.push(await runProcesses(N_PROC));
  for (const n of MEM_NODES) results.push(await runInProcess(n));

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
    String(r.convergeMs),
    String(r.falseDeaths),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ');
  console.log(line(head));
  for (const r of rows) console.log(line(r));
  const main32 = results.find((r) => r.mode === 'processes/tcp') ?? results[0]!;
  const summary = {
    bench: 'gossip',
    nodes: main32.nodes,
    death_known_by_all_ms_p50: Math.round(percentile(main32.deathKnownMs, 50)),
    death_known_by_all_ms_p95: Math.round(percentile(main32.deathKnownMs, 95)),
    kills: main32.deathKnownMs.length,
    // Everything a depot sends on its libp2p connections (TCP payload bytes), per second.
    bytes_per_node_per_s: Math.round(main32.tcpSentPerNodePerS ?? main32.bytesSentPerNodePerS ?? NaN),
    bytes_received_per_node_per_s: Math.round(main32.tcpRecvPerNodePerS ?? main32.bytesRecvPerNodePerS ?? NaN),
    gossip_sent_bytes_per_node_per_s: Math.round(main32.bytesSentPerNodePerS ?? NaN),
    gossip_received_bytes_per_node_per_s: Math.round(main32.bytesRecvPerNodePerS ?? NaN),
    published_bytes_per_node_per_s: Math.round(main32.publishedBytesPerNodePerS ?? NaN),
    rss_mb_per_depot: Number((main32.rssMbPerDepot ?? NaN).toFixed(1)),
    rss_mb_max: Number((main32.rssMbMax ?? NaN).toFixed(1)),
    cpu_pct_per_depot_idle: Number((main32.cpuPctIdle ?? NaN).toFixed(2)),
    false_deaths: main32.falseDeaths,
    node_args: NODE_ARGS.join(' '),
    host_cores: cpus().length,
    host_load_avg_1m_before: Number(loadBefore.toFixed(1)),
    host_load_avg_1m_after: Number(loadavg()[0]!.toFixed(1)),
    in_process: results
      .filter((r) => r !== main32)
      .map((r) => ({
        nodes: r.nodes,
        heartbeat_ms: r.heartbeatMs,
        death_known_by_all_ms: r.deathKnownMs[0],
        death_known_by_all_heartbeats: r.heartbeatMs ? Number((r.deathKnownMs[0]! / r.heartbeatMs).toFixed(2)) : undefined,
        bytes_per_node_per_s: Math.round(r.bytesSentPerNodePerS ?? NaN),
        converge_ms: r.convergeMs,
        false_deaths: r.falseDeaths,
      })),
  };
  console.log(JSON.stringify(summary));
}

await main();
