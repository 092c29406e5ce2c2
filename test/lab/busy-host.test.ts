import { afterAll, describe, expect, it } from 'vitest';
import { Lab, type LabProcess } from '../../lab/lab.ts';
import { api, waitFor } from '../../lab/cluster.ts';
import type { DepotRow } from '../../shared/api/depots.ts';
import { CLIENT, clientSql } from './zabbix-fixture.ts';
import { SenderLoop, bootstrapZabbix, movements, sqlOn, startZabbixCluster, zabbixPlacement, type ZabbixCluster } from './zabbix-lab.ts';

// Leave a busy workstation: the Zabbix example on three workstations (one standby, its database a
// replica), zabbix_sender feeding a trapper item every 200 ms through the service address. A CPU
// hog — a busy loop started as the PC's user, in the primary's workstation cgroup — runs longer
// than busy.sustainMs: the primary moves by one planned switchover to the standby, no value
// Zabbix acknowledged is lost, and the movement record says "host busy" with the figures. Then
// the hog stops there and one starts on the new primary's host: no move before busy.minIntervalMs
// after the first (the hysteresis holds it, and says so), and one once it has passed — so the
// hysteresis is what held it, not a move that could never happen.
//
// The workstations share one kernel, so each depot measures its "host" from its workstation's
// own cgroup (busy.cgroup = Lab.userCgroup), where only the hog runs: the load of the machine
// (other tests run beside this one) is not part of any workstation's figure.

const SUSTAIN_MS = 10_000;
const MIN_INTERVAL_MS = 60_000;
const SAMPLE_MS = 2000;
// One busy loop takes up to one of the machine's two CPUs (50 % of the "host"), but this machine
// is shared with other lab runs (load average 15 seen): with 16 runnable tasks on 2 CPUs it
// gets about 1/8 of one, 6 % of the host. The threshold is under that, and far above the 0 % of
// a workstation cgroup with nothing in it (every sample of the spell must be over it).
const CPU_PCT = 3;

let lab: Lab | undefined;
let cluster: ZabbixCluster | undefined;
let sender: SenderLoop | undefined;
const hogs: LabProcess[] = [];

afterAll(async () => {
  for (const h of hogs) await h.stop(1000).catch(() => undefined);
  await sender?.stop().catch(() => undefined);
  await lab?.destroy();
  await cluster?.cleanup();
});

interface LogLine {
  time: number;
  event: string;
  [k: string]: unknown;
}

/** Every JSON line of `event` a depot logs from now on. */
function collect(p: LabProcess, events: string[]): LogLine[] {
  const out: LogLine[] = [];
  p.onLine((line) => {
    if (!line.startsWith('{')) return;
    const msg = parseLine(line);
    if (events.includes(msg.event)) out.push(msg);
  });
  return out;
}

/** A depot's log line, its ISO time as ms. */
function parseLine(line: string): LogLine {
  const msg = JSON.parse(line) as { event: string; time: string | number; [k: string]: unknown };
  return { ...msg, time: typeof msg.time === 'number' ? msg.time : Date.parse(msg.time) };
}

async function hog(l: Lab, host: string): Promise<LabProcess> {
  await l.userCgroup(host);
  const p = l.spawn(host, [process.execPath, '-e', 'for (;;) {}'], { name: 'cpu-hog', asUser: true });
  hogs.push(p);
  return p;
}

describe('leave a busy workstation', () => {
  it('a CPU hog on the primary\'s host: one switchover, no acknowledged value lost; no move back before the hysteresis allows', async () => {
    const t0 = Date.now();
    const step = (what: string) => console.log(`[busy host +${((Date.now() - t0) / 1000).toFixed(1)} s] ${what}`);
    lab = await Lab.create({ workstations: 3 });
    const l = lab;
    const cgroups = new Map<string, string>();
    for (const w of l.workstations) cgroups.set(w.name, (await l.userCgroup(w.name)).view);
    const c = (cluster = await startZabbixCluster(l, 3, {
      syncIntervalMs: 2000,
      env: (host) => ({
        NAVIGATOR__busy__cgroup: cgroups.get(host)!,
        NAVIGATOR__busy__excludeCgroups: '[]',
        NAVIGATOR__busy__cpuPct: String(CPU_PCT),
        NAVIGATOR__busy__sampleMs: String(SAMPLE_MS),
        NAVIGATOR__busy__sustainMs: String(SUSTAIN_MS),
        NAVIGATOR__busy__minIntervalMs: String(MIN_INTERVAL_MS),
      }),
    }));
    const logs = new Map(c.hosts.map((h) => [h, collect(c.depots.get(h)!, ['busy-move', 'busy-moved', 'busy-move-failed', 'busy-move-waiting', 'host-busy', 'host-not-busy'])]));
    await bootstrapZabbix(c, 'w1', 1);
    await waitFor(async () => {
      const p = await zabbixPlacement(c, 'w1');
      return p.primary === 'w1' && p.standbys.length === 1 && p.standbys[0]!.lastSyncAt !== null && Date.now() - p.standbys[0]!.lastSyncAt < 3000;
    }, 150_000, 'a primary on w1 and one replicating standby');
    const standby = (await zabbixPlacement(c, 'w1')).standbys[0]!.host;
    await sqlOn(c, 'w1', clientSql());
    sender = await SenderLoop.start(c, { host: CLIENT.host, key: CLIENT.trapKey, intervalMs: 200 });
    await waitFor(async () => sender!.acked().length >= 25, 60_000, 'the trapper to take values');
    // Nothing is busy yet: no host has reported a busy spell, nothing moved.
    expect([...logs.values()].flat().filter((m) => m.event === 'host-busy' || m.event === 'busy-move')).toEqual([]);
    step(`primary w1, standby ${standby} replicating; ${sender.acked().length} values acknowledged; CPU hog on w1`);

    // 1. A hog on the primary's host, longer than busy.sustainMs.
    const hogAt = Date.now();
    const hog1 = await hog(l, 'w1');
    const moved = parseLine(await c.depots.get('w1')!.waitForLine(/"event":"busy-moved"/, SUSTAIN_MS + 90_000)) as LogLine & { to: string; durationMs: number };
    step(`busy move: w1 -> ${moved.to} in ${moved.durationMs} ms`);
    expect(moved.to).toBe(standby);
    const w1Logs = logs.get('w1')!;
    const busyAt = w1Logs.find((m) => m.event === 'host-busy')!.time;
    const decidedAt = w1Logs.find((m) => m.event === 'busy-move')!.time;
    // Not before the host had been busy for sustainMs (the rule's own bound, measured by the depot).
    expect(decidedAt - busyAt).toBeGreaterThanOrEqual(SUSTAIN_MS);
    await waitFor(async () => (await zabbixPlacement(c, standby)).primary === standby, 30_000, `${standby} to be primary`);
    // The busy signal is gossiped: a third depot sees w1 busy (the hog still runs) and the new primary's host not.
    const seen = await api<{ depots: DepotRow[] }>(c, 'w3', '/api/depots');
    const row = (h: string) => seen?.depots.find((d) => d.name === h)?.busy;
    expect(row('w1')).toMatchObject({ busy: true });
    expect(row(standby)).toMatchObject({ busy: false });
    await waitFor(async () => sender!.acked().some((r) => r.start > moved.time), 60_000, 'the trapper to answer the new primary');
    const firstRecords = await waitForRecords(c, standby, 1);
    expect(firstRecords.filter((r) => r.event === 'switchover')).toHaveLength(1);
    expect(firstRecords.filter((r) => r.event === 'failover')).toEqual([]);
    const first = firstRecords.find((r) => r.event === 'switchover')!;
    expect(first).toMatchObject({ host: standby, fromHost: 'w1', failover: false });
    expect(first.reason).toMatch(new RegExp(`^planned switchover: host busy: w1 user CPU [\\d.]+ % \\(threshold ${CPU_PCT} %\\) for \\d+ s; to ${standby} \\(user CPU [\\d.]+ %\\)$`));
    // No acknowledged value lost: every one is in the new primary's database.
    await new Promise((r) => setTimeout(r, 3000));
    const acked1 = sender.acked().filter((r) => r.end < moved.time);
    const present1 = new Set((await sqlOn(c, standby, `SELECT value FROM history_uint WHERE itemid = ${CLIENT.trapItemId}`)).map((r) => Number(r[0])));
    expect(acked1.length).toBeGreaterThan(10);
    expect(acked1.filter((r) => !present1.has(r.seq)).map((r) => r.seq)).toEqual([]);
    const outage1 = largestGap(sender.acked(), decidedAt - 2000, moved.time + 10_000);

    // 2. The hog stops on w1 and one starts on the new primary's host: w1 is not busy and holds
    //    the standby, but the hysteresis keeps the service where it is until minIntervalMs has passed.
    await hog1.stop(1000);
    const hog2At = Date.now();
    const hog2 = await hog(l, standby);
    const allowedAt = first.time + MIN_INTERVAL_MS;
    step(`hog moved to ${standby}; the next busy move is allowed at +${((allowedAt - t0) / 1000).toFixed(1)} s`);
    const held = await c.depots.get(standby)!.waitForLine(/"event":"busy-move-waiting".*the last busy move/, Math.max(5000, allowedAt - Date.now() - 2000));
    step(`held: ${(JSON.parse(held) as { why: string }).why}`);
    // Until the hysteresis allows it (less 3 s for the gap between the record's time and this
    // process's view of it; the same machine's clock), the primary stays and nothing moved. (No
    // primary for a moment is a lease lost and won back on this loaded machine, not a move.)
    while (Date.now() < allowedAt - 3000) {
      expect([standby, undefined]).toContain((await zabbixPlacement(c, 'w1')).primary);
      await new Promise((r) => setTimeout(r, 1000));
    }
    expect(logs.get(standby)!.filter((m) => m.event === 'busy-move')).toEqual([]);
    // Then the service leaves the busy host (a check that the hold was the hysteresis), to a
    // standby whose host is not busy: w1 again, or the host the standby keeper placed one on.
    const back = parseLine(await c.depots.get(standby)!.waitForLine(/"event":"busy-moved"/, 90_000)) as LogLine & { to: string };
    expect(back.to).not.toBe(standby);
    const backDecidedAt = logs.get(standby)!.find((m) => m.event === 'busy-move')!.time;
    expect(backDecidedAt).toBeGreaterThanOrEqual(allowedAt);
    await hog2.stop(1000);
    await waitFor(async () => sender!.acked().some((r) => r.start > back.time), 60_000, `the trapper to answer ${back.to}`);
    const records = await waitForRecords(c, back.to, 2);
    const switchovers = records.filter((r) => r.event === 'switchover').sort((a, b) => a.time - b.time);
    expect(switchovers.map((r) => `${r.fromHost}->${r.host}`)).toEqual([`w1->${standby}`, `${standby}->${back.to}`]);
    expect(switchovers[1]!.reason).toMatch(new RegExp(`^planned switchover: host busy: ${standby} user CPU [\\d.]+ % \\(threshold ${CPU_PCT} %\\) for \\d+ s; to ${back.to} \\(user CPU [\\d.]+ %\\)$`));
    expect(records.filter((r) => r.event === 'failover')).toEqual([]);

    // Every acknowledged value, across both moves, is in the final primary's database.
    await new Promise((r) => setTimeout(r, 3000));
    await sender.stop();
    await new Promise((r) => setTimeout(r, 2000));
    const acked = sender.acked();
    const present = new Set((await sqlOn(c, back.to, `SELECT value FROM history_uint WHERE itemid = ${CLIENT.trapItemId}`)).map((r) => Number(r[0])));
    const lost = acked.filter((r) => !present.has(r.seq)).map((r) => r.seq);
    expect(lost).toEqual([]);
    const figures = {
      hogToBusyMs: busyAt - hogAt,
      hogToDecisionMs: decidedAt - hogAt,
      hogToMovedMs: moved.time - hogAt,
      switchoverMs: moved.durationMs,
      senderOutageMs: outage1,
      heldUntilAllowedMs: backDecidedAt - hog2At,
      minIntervalMs: MIN_INTERVAL_MS,
      ackedTotal: acked.length,
      lost: lost.length,
      reason: first.reason,
    };
    console.log(`busy host figures: ${JSON.stringify(figures)}`);
  }, 480_000);
});

/** The service's movement records once at least `n` switchovers are among them. */
async function waitForRecords(c: ZabbixCluster, host: string, n: number) {
  let records: Awaited<ReturnType<typeof movements>> = [];
  await waitFor(async () => {
    records = await movements(c, host);
    return records.filter((r) => r.event === 'switchover').length >= n;
  }, 30_000, `${n} switchover records on ${host}`);
  return records;
}

/** The longest time between two acknowledged values (by their answer times) within [from, to]. */
function largestGap(acked: Array<{ end: number }>, from: number, to: number): number {
  const inside = acked.filter((r) => r.end >= from && r.end <= to).map((r) => r.end);
  let gap = 0;
  for (let i = 1; i < inside.length; i++) gap = Math.max(gap, inside[i]! - inside[i - 1]!);
  return gap;
}
