import { describe, expect, it } from 'vitest';
import { BUSY_REASON, busyReason, decideBusyMove, lastBusyMoveAt, type BusyMoveCandidate, type BusyMoveInput, type BusyMoveSettings } from '../../pilot/busy-move.ts';
import { nextBusySignal, cpuPercent, type BusyThresholds } from '../../depot/busy/busy-state.ts';
import { takeoverRecord, newCopyWatch, watchCampaign, watchSwitchoverExpected } from '../../pilot/copy-watch.ts';
import { MovementRecord } from '../../shared/movement.ts';
import type { BusySignal } from '../../shared/wire.ts';
import { BusySection, parseConfig } from '../../shared/config.ts';
import { busyCandidate } from '../../pilot/busy-watch.ts';
import type { CopyView } from '../../pilot/pilot.ts';
import { ContainerReport } from '../../shared/wire.ts';

// Leave a busy workstation, pure: the busy signal from samples (a quiet sample ends a spell), and
// the move rule with a fake clock — sustain, hysteresis across depots (from the movement
// records), never onto a busy host or one that cannot say, quiet hours, a standby in sync — and
// a seeded random history of samples checked against the rule's promises.

const SETTINGS: BusyMoveSettings = { enabled: true, cpuPct: 50, sustainMs: 120_000, minIntervalMs: 1_800_000 };
const T0 = Date.UTC(2026, 10, 18, 10, 0, 0); // a Wednesday, 10:00 UTC
const idle: BusySignal = { busy: false, cpuPct: 3, sessions: 0 };
const busySince = (since: number, cpuPct = 87): BusySignal => ({ busy: true, cpuPct, sessions: 0, since });

function standby(host: string, over: Partial<BusyMoveCandidate> = {}): BusyMoveCandidate {
  return { host, peerId: `peer-${host}`, up: true, inSync: true, busy: idle, ...over };
}

function input(over: Partial<BusyMoveInput> = {}): BusyMoveInput {
  return { service: 'zabbix', host: 'w1', own: busySince(T0), standbys: [standby('w2')], lastBusyMoveAt: undefined, quietHours: [], utcOffsetMin: 0, now: T0 + 130_000, settings: SETTINGS, ...over };
}

describe('busy signal', () => {
  const t: BusyThresholds = { cpuPct: 50, sessions: true };

  it('a sample at or over the threshold starts a spell; the spell keeps its start; a quiet sample ends it', () => {
    const a = nextBusySignal(undefined, { cpuPct: 60, sessions: 0 }, t, 1000);
    expect(a).toEqual({ busy: true, cpuPct: 60, sessions: 0, since: 1000 });
    const b = nextBusySignal(a, { cpuPct: 50, sessions: 0 }, t, 6000);
    expect(b.since).toBe(1000);
    const c = nextBusySignal(b, { cpuPct: 49.9, sessions: 0 }, t, 11_000);
    expect(c).toEqual({ busy: false, cpuPct: 49.9, sessions: 0 });
    expect(nextBusySignal(c, { cpuPct: 99, sessions: 0 }, t, 16_000).since).toBe(16_000);
  });

  it('an active local session makes the host busy unless sessions are not counted', () => {
    expect(nextBusySignal(undefined, { cpuPct: 1, sessions: 1 }, t, 5).busy).toBe(true);
    expect(nextBusySignal(undefined, { cpuPct: 1, sessions: 1 }, { ...t, sessions: false }, 5)).toEqual({ busy: false, cpuPct: 1, sessions: 0 });
  });

  it('CPU percent is of all CPUs, clamped to 0..100', () => {
    expect(cpuPercent(1e9, 1e9, 2)).toBe(50);
    expect(cpuPercent(3e9, 1e9, 2)).toBe(100);
    expect(cpuPercent(-5, 1e9, 2)).toBe(0);
    expect(cpuPercent(1e9, 0, 2)).toBe(0);
  });
});

describe('busy move rule', () => {
  it('moves to the first fit standby once busy for sustainMs, with the figures in the reason', () => {
    const d = decideBusyMove(input());
    expect(d).toEqual({ move: true, to: 'w2', peerId: 'peer-w2', reason: 'host busy: w1 user CPU 87 % (threshold 50 %) for 130 s; to w2 (user CPU 3 %)' });
  });

  it('waits while the spell is shorter than sustainMs, and says when to ask again', () => {
    const d = decideBusyMove(input({ now: T0 + 119_999 }));
    expect(d).toMatchObject({ move: false, retryAt: T0 + 120_000 });
    expect(decideBusyMove(input({ now: T0 + 120_000 })).move).toBe(true);
  });

  it('never moves a host that is not busy, does not measure, or when disabled', () => {
    expect(decideBusyMove(input({ own: idle })).move).toBe(false);
    expect(decideBusyMove(input({ own: undefined }))).toMatchObject({ move: false, why: expect.stringContaining('does not measure') });
    expect(decideBusyMove(input({ settings: { ...SETTINGS, enabled: false } }))).toMatchObject({ move: false, why: expect.stringContaining('busy.enabled') });
  });

  it('never moves onto a busy host or one without a busy signal; skips to the next fit standby', () => {
    const busyW2 = standby('w2', { busy: { busy: true, cpuPct: 70, sessions: 1, since: T0 } });
    const d = decideBusyMove(input({ standbys: [busyW2, standby('w3', { busy: undefined })] }));
    expect(d).toEqual({ move: false, why: 'no standby to move to (w2: busy itself (user CPU 70 %, 1 local sessions); w3: no busy signal)' });
    expect(decideBusyMove(input({ standbys: [busyW2, standby('w4')] }))).toMatchObject({ move: true, to: 'w4' });
  });

  it('needs a standby that is up and in sync', () => {
    const d = decideBusyMove(input({ standbys: [standby('w2', { up: false }), standby('w3', { inSync: false })] }));
    expect(d).toEqual({ move: false, why: 'no standby to move to (w2: not running; w3: not in sync)' });
    expect(decideBusyMove(input({ standbys: [] }))).toMatchObject({ move: false, why: 'zabbix has no standby to move to' });
  });

  it('hysteresis: no second busy move within minIntervalMs of the last, whichever depot made it', () => {
    const last = T0 + 100_000;
    const d = decideBusyMove(input({ lastBusyMoveAt: last, now: last + 1_799_999 }));
    expect(d).toMatchObject({ move: false, retryAt: last + 1_800_000 });
    expect(decideBusyMove(input({ lastBusyMoveAt: last, now: last + 1_800_000 })).move).toBe(true);
  });

  it('quiet hours of the policy: no busy move inside them', () => {
    const d = decideBusyMove(input({ quietHours: ['09:00-12:00'] }));
    expect(d).toEqual({ move: false, why: 'quiet hours "09:00-12:00": no planned moves' });
    expect(decideBusyMove(input({ quietHours: ['sat,sun 00:00-24:00'] })).move).toBe(true);
  });

  it('the last busy move is read from the movement records (switchovers that name a busy host)', () => {
    const rec = (time: number, reason: string, event: 'switchover' | 'failover' = 'switchover', service = 'zabbix') =>
      MovementRecord.parse({ id: `r${time}`, time, service, role: 'primary', host: 'w2', address: '10.0.0.100/24', event, failover: event === 'failover', reason, term: 3 });
    const records = [
      rec(1000, `planned switchover: ${BUSY_REASON}: w1 user CPU 80 % (threshold 50 %) for 130 s; to w2 (user CPU 1 %)`),
      rec(5000, 'planned switchover'),
      rec(6000, 'host busy: nothing', 'failover'),
      rec(7000, `planned switchover: ${BUSY_REASON}: w9`, 'switchover', 'other'),
      rec(3000, `planned switchover: ${BUSY_REASON}: w2 1 local session for 200 s; to w1 (user CPU 0 %)`),
    ];
    expect(lastBusyMoveAt(records, 'zabbix')).toBe(3000);
    expect(lastBusyMoveAt([], 'zabbix')).toBeUndefined();
  });

  it("the new primary's movement record carries the reason the switchover was asked for", () => {
    const w = watchCampaign({ ...newCopyWatch({ bootstrapping: false }), lastPrimaryHost: 'w1' }, 10, 'switchover', busyReason('w1', busySince(0), 130_000, 50, 'w2', idle));
    const { record, watch } = takeoverRecord(w, 20, 'w2');
    expect(record).toMatchObject({ event: 'switchover', failover: false, fromHost: 'w1', reason: 'planned switchover: host busy: w1 user CPU 87 % (threshold 50 %) for 130 s; to w2 (user CPU 3 %)' });
    expect(watch.campaignWhy).toBeUndefined();
    // Losing the lease under load and winning it back with no other primary between: not a failover from w1.
    const again = takeoverRecord(watchCampaign({ ...watch, missingSince: 30 }, 40, undefined), 50, 'w2');
    expect(again.record).toMatchObject({ event: 'promoted', failover: false, fromHost: undefined, reason: 'primary missing; elected' });
    // A plain switchover says only that.
    expect(takeoverRecord(watchCampaign(newCopyWatch({ bootstrapping: false }), 10, 'switchover'), 20, 'w2').record.reason).toBe('planned switchover');
  });

  it('a switchover announced to the target: its own campaign before the call comes is that switchover, until the announcement runs out', () => {
    const base = { ...newCopyWatch({ bootstrapping: false }), lastPrimaryHost: 'w2', missingSince: 5 };
    const why = 'host busy: w2 user CPU 60 % (threshold 50 %) for 130 s; to w1 (user CPU 0 %)';
    const announced = watchSwitchoverExpected(base, 10, 30_000, why);
    // It saw the primary go and stood by itself (reason undefined) within the window.
    const won = takeoverRecord(watchCampaign(announced, 1000, undefined), 1200, 'w1');
    expect(won.record).toMatchObject({ event: 'switchover', failover: false, fromHost: 'w2', reason: `planned switchover: ${why}` });
    expect(won.watch.expected).toBeUndefined();
    // After the window, a campaign of its own is what it looks like (here a failover).
    const late = takeoverRecord(watchCampaign(announced, 30_011, undefined), 30_100, 'w1');
    expect(late.record).toMatchObject({ event: 'failover', failover: true, reason: 'primary on w2 missing' });
  });

  it('a seeded random history: a move only after sustainMs of busy samples, never onto a busy host, never twice within minIntervalMs', () => {
    let seed = 20261207;
    const rand = () => ((seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31);
    const settings: BusyMoveSettings = { enabled: true, cpuPct: 50, sustainMs: 60_000, minIntervalMs: 600_000 };
    const thresholds = { cpuPct: 50, sessions: true };
    const hosts = ['w1', 'w2', 'w3'];
    const signals = new Map<string, BusySignal | undefined>(hosts.map((h) => [h, undefined]));
    let primary = 'w1';
    const moves: Array<{ at: number; from: string; to: string }> = [];
    // Each host alternates long quiet and busy stretches, with noise.
    const busyUntil = new Map<string, number>(hosts.map((h) => [h, 0]));
    for (let now = T0; now < T0 + 6 * 3_600_000; now += 5000) {
      for (const h of hosts) {
        if (rand() < 0.01) busyUntil.set(h, now + Math.floor(rand() * 900_000));
        const busy = now < busyUntil.get(h)!;
        const cpuPct = busy ? 40 + rand() * 60 : rand() * 55;
        signals.set(h, nextBusySignal(signals.get(h), { cpuPct, sessions: 0 }, thresholds, now));
      }
      const d = decideBusyMove({
        service: 'zabbix',
        host: primary,
        own: signals.get(primary),
        standbys: hosts.filter((h) => h !== primary).map((h) => standby(h, { busy: signals.get(h) })),
        lastBusyMoveAt: moves.at(-1)?.at,
        quietHours: [],
        utcOffsetMin: 0,
        now,
        settings,
      });
      if (d.move) {
        const own = signals.get(primary)!;
        expect(own.busy && now - own.since! >= settings.sustainMs).toBe(true);
        expect(signals.get(d.to)?.busy).toBe(false);
        if (moves.length) expect(now - moves.at(-1)!.at).toBeGreaterThanOrEqual(settings.minIntervalMs);
        moves.push({ at: now, from: primary, to: d.to });
        primary = d.to;
      }
    }
    // The history is busy enough that the rule had something to do (the check can fail).
    expect(moves.length).toBeGreaterThan(2);
  });
});

describe('a standby as the busy rule sees it', () => {
  const members = { view: () => [{ peerId: 'peer-w2', heartbeat: { busy: idle } }, { peerId: 'peer-w3', heartbeat: {} }] } as never;
  const copy = (over: Partial<ContainerReport>, host = 'w2', depotState: CopyView['depotState'] = 'alive'): CopyView => ({
    peerId: `peer-${host}`,
    host,
    depotState,
    incarnation: 1,
    address: undefined,
    report: ContainerReport.parse({ id: 'c', service: 'zabbix', driver: 'process', state: 'running', role: 'standby', lastSyncAt: 5, replState: 'replicating', ...over }),
  });

  it('up when its depot is alive and its copy runs; in sync when replicating or synced and not failing; its busy signal from its heartbeat', () => {
    expect(busyCandidate(copy({}), members)).toEqual({ host: 'w2', peerId: 'peer-w2', up: true, inSync: true, busy: idle });
    expect(busyCandidate(copy({}, 'w2', 'suspect'), members).up).toBe(false);
    expect(busyCandidate(copy({ state: 'starting' }), members).up).toBe(false);
    for (const replState of ['broken', 'stopped', 'seeding', 'connecting'] as const) expect(busyCandidate(copy({ replState }), members).inSync, replState).toBe(false);
    expect(busyCandidate(copy({ syncFailing: true }), members).inSync).toBe(false);
    expect(busyCandidate(copy({ lastSyncAt: undefined, replState: undefined }), members).inSync).toBe(false);
    // dump mode: no replication state, a good sync.
    expect(busyCandidate(copy({ replState: undefined }), members).inSync).toBe(true);
    expect(busyCandidate(copy({}, 'w3'), members).busy).toBeUndefined();
  });
});

describe('busy config', () => {
  it('defaults, and a clear error naming a bad field', () => {
    const d = BusySection.parse({});
    expect(d).toMatchObject({ enabled: true, cpuPct: 50, sessions: true, sustainMs: 120_000, minIntervalMs: 1_800_000, cgroup: '' });
    expect(d.excludeCgroups).toContain('navigator');
    expect(() => parseConfig({ busy: { cpuPct: 0 } })).toThrow(/busy\.cpuPct/);
    expect(() => parseConfig({ busy: { sustain: 5 } })).toThrow(/busy/);
  });
});
