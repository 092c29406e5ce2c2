// npm run bench:scale — what a lease costs as the cluster grows (issue 14).
//
// In-process run, 32, 128 and 256 depots (--sizes): one process, one libp2p node per depot over the
// libp2p memory transport (pnet + Noise + Yamux, as between real depots), each with the depot's
// voter (pilot/election/voters.ts, its promises written with fsync) and election protocol
// (pilot/election/transport.ts). One copy's pilot — the pure election code of pilot/election/
// pilot-role.ts driven by its own timers, as pilot/pilot.ts drives it — bootstraps the service
// (wins term 1) and holds the lease for --renewals renewals. Measured per renewal: the requests
// the primary sends and the requests all voters serve, the renewal's round trip, and whether the
// lease ever lapsed. Run twice per size: with the voter group (election.voters, default 5; the
// first group is the best-ranked depots, pilot/election/voter-group.ts) and, for comparison, with
// every depot a voter (the behaviour before the group).
//
// Namespace run first (bench/scale-lab.ts, --lab-workstations 32, 0 skips it): depot processes
// started --batch at a time, --primary-losses power losses of the primary's host and
// --unrelated-losses of other hosts, then all but 3 off within a minute.
// --cpu-hog-s N (default 0: off): before the losses, a busy loop at normal priority on every core
// for N s (the issue asks 300), counting term changes and the longest gap meanwhile.
// --thread-probe: a tiny process beside each depot (bench/thread-probe.ts), scheduled like a
// thread of its own, measures its timer lateness and UDP renewals among probes while the depots
// churn: what a lease path off the depots' main threads would see (issue 14's open targets).
//
// Last stdout line: JSON.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createNode, type NavigatorNode } from '../depot/libp2p.ts';
import { makeSwarmKey } from '../depot/swarm-key.ts';
import { silentLogger } from '../shared/logger.ts';
import { DEFAULT_ELECTION_CONFIG, renewIntervalMs, type ElectionConfig } from '../pilot/election/settings.ts';
import { Voters } from '../pilot/election/voters.ts';
import { ElectionTransport } from '../pilot/election/transport.ts';
import { initialView } from '../pilot/election/views.ts';
import { initialGroup } from '../pilot/election/voter-group.ts';
import { createPilot, nextWakeAt, pilotCampaign, pilotReceive, pilotTick, type PilotState, type PilotStep } from '../pilot/election/pilot-role.ts';
import { monotonicNow } from '../pilot/supervisor.ts';
import { scaleLab, summarize, type ScaleLabResult } from './scale-lab.ts';

const { values } = parseArgs({
  options: {
    sizes: { type: 'string', default: '32,128,256' },
    renewals: { type: 'string', default: '30' },
    voters: { type: 'string', default: String(DEFAULT_ELECTION_CONFIG.voters) },
    'lab-workstations': { type: 'string', default: '32' },
    'primary-losses': { type: 'string', default: '10' },
    'unrelated-losses': { type: 'string', default: '10' },
    batch: { type: 'string', default: '4' },
    'cpu-hog-s': { type: 'string', default: '0' },
    'thread-probe': { type: 'boolean', default: false },
  },
});
const sizes = values.sizes.split(',').map(Number).filter((n) => n > 0);
const renewals = Number(values.renewals);

interface Run {
  depots: number;
  mode: 'group' | 'every depot';
  groupSize: number;
  electedMs: number | null;
  /** Requests the primary sent per renewal (mean over the run); null if it never won. */
  sentPerRenewal: number | null;
  /** Vote requests per election round of the bootstrap campaign. */
  sentPerVoteRound: number;
  /** Requests the voters served per renewal (mean), the primary's own voter included. */
  servedPerRenewal: number;
  renewRttMsP50: number;
  renewRttMsMax: number;
  lapses: number;
}

function pct(xs: number[], p: number): number {
  if (!xs.length) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

async function run(n: number, mode: Run['mode']): Promise<Run> {
  const swarmKey = makeSwarmKey();
  const dir = await mkdtemp(join(tmpdir(), 'nav-bench-scale-'));
  const cfg: ElectionConfig = { ...DEFAULT_ELECTION_CONFIG, voters: Number(values.voters) };
  const nodes: Array<{ node: NavigatorNode; voters: Voters; transport: ElectionTransport }> = [];
  try {
    for (let i = 0; i < n; i++) {
      const node = await createNode({ swarmKey, listen: [`/memory/scale-${process.pid}-${mode === 'group' ? 'g' : 'a'}-${i}`], transport: 'memory' });
      const voters = new Voters({ selfId: node.peerId.toString(), dir: join(dir, String(i)), cfg, now: monotonicNow, logger: silentLogger() });
      await voters.start();
      const transport = new ElectionTransport({ node, voters, logger: silentLogger(), timeoutMs: cfg.leaseMs - cfg.leaseSafetyMarginMs });
      await transport.start();
      nodes.push({ node, voters, transport });
    }
    const primary = nodes[0]!;
    // The primary knows every depot's address (as membership would tell it).
    for (const other of nodes.slice(1)) await primary.node.peerStore.merge(other.node.peerId, { multiaddrs: other.node.getMultiaddrs() });
    const ids = nodes.map((x) => x.node.peerId.toString());
    // Every depot up a day, none holds a copy but the primary's: the ranking's tie break decides.
    const candidates = ids.map((peer, i) => ({ peer, host: `ws${i}`, state: 'alive' as const, sessionS: 86_400, restarts: 0, holdsCopy: i === 0 }));
    const voterIds = mode === 'group' ? initialGroup(candidates, { voters: cfg.voters, preferred: [] }, ids[0]!) : ids;
    // Voters keep quiet for a lease after they first load a service (restart quarantine): wake them.
    const view = initialView(voterIds);
    await Promise.all(voterIds.map((v) => nodes[ids.indexOf(v)]!.voters.receive({ type: 'lease-release', v: 1, service: 'bench', term: 0, holder: 'none' })));
    await new Promise((r) => setTimeout(r, cfg.leaseMs + 50));

    let state: PilotState = createPilot({ id: `${ids[0]}/bench/1`, service: 'bench', view });
    let timer: NodeJS.Timeout | undefined;
    let renewSends = 0;
    let voteSends = 0;
    const voteRounds = new Set<number>();
    let renewRounds = 0;
    let lapses = 0;
    let electedAt: number | null = null;
    const rtts: number[] = [];
    const sentAt = new Map<number, number>();
    const t0 = monotonicNow();
    const servedBefore = () => nodes.reduce((a, x) => a + x.transport.counters.served, 0);
    let servedAtElection = 0;
    let localServed = 0;
    let done: () => void = () => undefined;
    const finished = new Promise<void>((r) => (done = r));
    const apply = (step: PilotStep): void => {
      state = step.state;
      for (const d of step.decisions) {
        if (d.kind === 'send') {
          if (d.message.type === 'vote-request' && electedAt === null) {
            voteSends++;
            voteRounds.add(d.message.seq);
          }
          if (d.message.type === 'lease-renew') {
            renewSends++;
            if (!sentAt.has(d.message.seq)) {
              sentAt.set(d.message.seq, monotonicNow());
              renewRounds++;
            }
          }
          if (d.to === ids[0] && electedAt !== null) localServed++;
          void primary.transport.request(d.to, d.message).then((reply) => {
            if (!reply) return;
            if (reply.type === 'lease-ack' && reply.granted) {
              const s = sentAt.get(reply.seq);
              if (s !== undefined) rtts.push(monotonicNow() - s);
            }
            apply(pilotReceive(state, reply, monotonicNow(), cfg));
          });
        } else if (d.kind === 'become-primary') {
          electedAt = monotonicNow();
          servedAtElection = servedBefore();
          renewSends = 0;
          renewRounds = 0;
          sentAt.clear();
          rtts.length = 0;
        } else if (d.kind === 'fence') lapses++;
      }
      if (electedAt !== null && renewRounds > renewals) {
        clearTimeout(timer);
        done();
        return;
      }
      clearTimeout(timer);
      const at = nextWakeAt(state);
      if (Number.isFinite(at)) timer = setTimeout(() => apply(pilotTick(state, monotonicNow(), cfg)), Math.max(0, at - monotonicNow()));
    };
    apply(pilotCampaign(state, monotonicNow(), cfg));
    const guard = setTimeout(done, 20_000 + renewals * renewIntervalMs(cfg) * 2);
    await finished;
    clearTimeout(guard);
    clearTimeout(timer);
    await new Promise((r) => setTimeout(r, 200));
    const rounds = Math.max(1, renewRounds);
    return {
      depots: n,
      mode,
      groupSize: voterIds.length,
      electedMs: electedAt === null ? null : Math.round(electedAt - t0),
      sentPerRenewal: electedAt === null ? null : Number((renewSends / rounds).toFixed(2)),
      sentPerVoteRound: Number((voteSends / Math.max(1, voteRounds.size)).toFixed(2)),
      servedPerRenewal: electedAt === null ? 0 : Number(((servedBefore() - servedAtElection + localServed) / rounds).toFixed(2)),
      renewRttMsP50: Math.round(pct(rtts, 50)),
      renewRttMsMax: Math.round(Math.max(0, ...rtts)),
      lapses,
    };
  } finally {
    await Promise.all(nodes.map((x) => Promise.resolve(x.node.stop()).catch(() => undefined)));
    await rm(dir, { recursive: true, force: true });
  }
}

// The namespace half first (it needs the machine quiet), then the in-process runs.
const labN = Number(values['lab-workstations']);
let lab: ScaleLabResult | undefined;
if (labN > 0) {
  lab = await scaleLab({ workstations: labN, primaryLosses: Number(values['primary-losses']), unrelatedLosses: Number(values['unrelated-losses']), batch: Number(values.batch), cpuHogS: Number(values['cpu-hog-s']), threadProbe: values['thread-probe'] });
}

const results: Run[] = [];
for (const n of sizes) {
  for (const mode of ['group', 'every depot'] as const) {
    const r = await run(n, mode);
    results.push(r);
    process.stderr.write(`${n} depots, ${mode}: ${JSON.stringify(r)}\n`);
  }
}

process.stdout.write(`\nLease cost per renewal, in process (libp2p memory transport, ${renewals} renewals, lease ${DEFAULT_ELECTION_CONFIG.leaseMs} ms, renew every ${Math.round(renewIntervalMs(DEFAULT_ELECTION_CONFIG))} ms)\n`);
process.stdout.write(`${'depots'.padEnd(8)}${'voters'.padEnd(14)}${'elected (ms)'.padStart(14)}${'votes/round'.padStart(13)}${'sent/renewal'.padStart(14)}${'served/renewal'.padStart(16)}${'rtt p50'.padStart(10)}${'rtt max'.padStart(10)}${'lapses'.padStart(8)}\n`);
for (const r of results) {
  const won = r.electedMs !== null;
  process.stdout.write(
    `${String(r.depots).padEnd(8)}${`${r.mode === 'group' ? 'group of' : 'all'} ${r.groupSize}`.padEnd(14)}${(won ? String(r.electedMs) : 'never').padStart(14)}${String(r.sentPerVoteRound).padStart(13)}${String(r.sentPerRenewal ?? '-').padStart(14)}${(won ? String(r.servedPerRenewal) : '-').padStart(16)}${(won ? String(r.renewRttMsP50) : '-').padStart(10)}${(won ? String(r.renewRttMsMax) : '-').padStart(10)}${String(r.lapses).padStart(8)}\n`,
  );
}
const group = (n: number) => results.find((r) => r.depots === n && r.mode === 'group');
if (lab) {
  const sum = summarize(lab);
  process.stdout.write(`\n${lab.workstations} depot processes in namespaces (started ${labN > 0 ? values.batch : '-'} at a time in ${lab.startMs} ms), echo service, 1 standby\n`);
  process.stdout.write(`primary power losses: ${lab.primaryOutagesMs.length}, outage p50 ${sum.primary_outage_ms_p50} ms, p95 ${sum.primary_outage_ms_p95} ms (${lab.primaryOutagesMs.join(', ')})\n`);
  if (lab.primaryTimings.length) process.stdout.write(`  as the new primaries saw it (p50/p95): detect ${sum.failover_detect_ms_p50}/${sum.failover_detect_ms_p95} ms, elect ${sum.failover_elect_ms_p50}/${sum.failover_elect_ms_p95} ms, takeover ${sum.failover_takeover_ms_p50}/${sum.failover_takeover_ms_p95} ms\n`);
  process.stdout.write(`unrelated power losses: ${lab.unrelatedOutagesMs.length}, longest gap ${sum.unrelated_outage_ms_max} ms (${lab.unrelatedOutagesMs.join(', ')}); the same windows with no fault: longest ${sum.no_fault_gap_ms_max} ms (${lab.baselineGapsMs.join(', ')})\n`);
  if (lab.cpuHog) process.stdout.write(`CPU hog: ${lab.cpuHog.hogs} busy loops (nice 0) for ${lab.cpuHog.seconds} s: ${lab.cpuHog.termChanges} term changes, longest gap ${lab.cpuHog.longestGapMs} ms\n`);
  process.stdout.write(`depots' own logs: ${lab.depotLogs.leaseLapses} lapsed leases; ${lab.depotLogs.loopStalls} event-loop stalls of 500 ms or more (longest ${lab.depotLogs.loopStallMaxMs ?? '-'} ms)\n`);
  const tp = lab.threadProbe;
  if (tp) process.stdout.write(`thread probes beside the depots (until the mass shutdown): timer lateness max ${tp.lateMaxMs} ms (p99 of 2 s windows ${tp.lateP99Ms} ms); ${tp.renewals} UDP renewals to 5 probes, 2 answers after p50 ${tp.majorityMsP50} / p99 ${tp.majorityMsP99} / max ${tp.majorityMsMax} ms, ${tp.lapses} without 2 answers in 1500 ms\n`);
  process.stdout.write(`spurious server changes ${lab.spuriousTermChanges}, split-brain moments ${lab.splitBrainEvents}, served after all but 3 off: ${lab.servedAfterMassShutdown} (survivors ${lab.survivors.join(', ')})\n`);
}
process.stdout.write(
  `${JSON.stringify({
    workstations: lab?.workstations ?? null,
    ...(lab ? summarize(lab) : { primary_outage_ms_p50: null, primary_outage_ms_p95: null, unrelated_outage_ms_max: null }),
    spurious_term_changes: lab?.spuriousTermChanges ?? null,
    split_brain_events: lab?.splitBrainEvents ?? null,
    served_after_mass_shutdown: lab?.servedAfterMassShutdown ?? null,
    // Measured in process (the same election code and transport as the depots in the lab run).
    lease_msgs_per_renewal: Object.fromEntries(sizes.map((n) => [n, group(n)?.sentPerRenewal ?? null])),
    // Before the group: every depot a voter (null: no primary within the run's time).
    lease_msgs_per_renewal_every_depot_voter: Object.fromEntries(sizes.map((n) => [n, results.find((r) => r.depots === n && r.mode === 'every depot')?.sentPerRenewal ?? null])),
    elected_ms: Object.fromEntries(results.map((r) => [`${r.depots}/${r.mode === 'group' ? 'group' : 'all'}`, r.electedMs])),
    voters_served_per_renewal: Object.fromEntries(sizes.map((n) => [n, group(n)?.servedPerRenewal ?? null])),
    renew_rtt_ms_p50: Object.fromEntries(sizes.map((n) => [n, group(n)?.renewRttMsP50 ?? null])),
    lease_lapses: results.reduce((a, r) => a + r.lapses, 0),
    thread_probe: lab?.threadProbe
      ? { late_max_ms: lab.threadProbe.lateMaxMs, late_p99_ms: lab.threadProbe.lateP99Ms, renewals: lab.threadProbe.renewals, majority_ms_p99: lab.threadProbe.majorityMsP99, majority_ms_max: lab.threadProbe.majorityMsMax, lapses: lab.threadProbe.lapses }
      : null,
    cpu_hog: lab?.cpuHog ? { seconds: lab.cpuHog.seconds, busy_loops: lab.cpuHog.hogs, term_changes: lab.cpuHog.termChanges, longest_gap_ms: lab.cpuHog.longestGapMs } : null,
    in_process: { transport: 'memory', renewals },
  })}\n`,
);
process.exit(0);
