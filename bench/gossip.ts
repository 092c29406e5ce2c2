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
//     can carry (every setting that differs from a real depot: see "In-process runs" in
//     bench/gossip-in-process.ts; they show in the mode column and in `in_process`). Views must converge (every depot sees n
//     alive); gossip bytes at rest; then one crash (no `left`): crash -> the last survivor's
//     `dead` transition, from events. False deaths are counted over the whole run.
//
// Prints a table and, as the last line, one JSON object. Knobs (env): BENCH_NODES (32),
// BENCH_KILLS (4), BENCH_IDLE_S (10), BENCH_SETTLE_S (60: after convergence, before the idle window), BENCH_MEM_NODES ("128,256", "" to skip),
// BENCH_NODE_ARGS (Node flags of depot processes; unset: depot/runtime-flags.ts, as deployed).

import { readFile } from 'node:fs/promises';
import { execa } from 'execa';
import { cpus, loadavg } from 'node:os';
import { DEPOT_NODE_FLAGS } from '../depot/runtime-flags.ts';
import { DepotCluster, getDepots, sleep, waitFor, type DepotProc } from '../lab/loopback/depot-procs.ts';
import { fmt, mean, type RunResult } from './gossip-result.ts';
import { runInProcessChild } from './gossip-in-process.ts';

const N_PROC = Number(process.env.BENCH_NODES ?? 32);
const KILLS = Number(process.env.BENCH_KILLS ?? 4);
const IDLE_S = Number(process.env.BENCH_IDLE_S ?? 10);
const SETTLE_S = Number(process.env.BENCH_SETTLE_S ?? 60);
const MEM_NODES = (process.env.BENCH_MEM_NODES ?? '128,256').split(',').filter(Boolean).map(Number);
// Unset: the flags the systemd unit runs depots with (depot/runtime-flags.ts).
const NODE_ARGS = process.env.BENCH_NODE_ARGS === undefined ? DEPOT_NODE_FLAGS : process.env.BENCH_NODE_ARGS.split(' ').filter(Boolean);
const CLK_TCK = 100; // Linux USER_HZ

function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1));
  return s[i]!;
}


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
    // still run their start-up member exchanges (every second for 30 s), V8 still optimises hot code.
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
    // Settings that differ from a real depot are listed with each run (see bench/gossip-in-process.ts).
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


await main();
