import { describe, it, expect, afterAll } from 'vitest';
import { mkdtemp, readFile, rm, writeFile, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sessionAlive, sessionStarted, sessionStopped, sessionsFromSummary, summarizeSessions, type SessionRecord } from '../../depot/sessions/session-history.ts';
import { SessionLog } from '../../depot/sessions/session-log.ts';
import { rankHosts, type PlacementCandidate } from '../../pilot/placement.ts';
import { SessionsSection } from '../../shared/config.ts';
import { FakeClock } from '../../shared/clock.ts';
import { silentLogger } from '../../shared/logger.ts';
import { mulberry32 } from '../helpers/election-sim.ts';

const MIN = 60_000;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;
const rules = { rejoinMs: 5 * MIN, keep: 500 };
// Monday 2026-11-02 00:00 UTC.
const MONDAY = Date.UTC(2026, 10, 2);

describe('session history (pure)', () => {
  it('a clean stop ends the session; a restart soon after on the same boot continues it', () => {
    let r: SessionRecord[] = sessionStarted([], { now: MONDAY + 8 * HOUR, bootTime: MONDAY + 8 * HOUR - MIN }, rules);
    r = sessionAlive(r, MONDAY + 9 * HOUR);
    r = sessionStopped(r, MONDAY + 9 * HOUR + 10);
    expect(r).toEqual([{ bootTime: MONDAY + 8 * HOUR - MIN, startMs: MONDAY + 8 * HOUR, lastSeenMs: MONDAY + 9 * HOUR + 10, endMs: MONDAY + 9 * HOUR + 10, end: 'clean' }]);
    // An upgrade: the depot is back 20 s later on the same boot.
    r = sessionStarted(r, { now: MONDAY + 9 * HOUR + 20_000, bootTime: MONDAY + 8 * HOUR - MIN }, rules);
    expect(r).toHaveLength(1);
    expect(r[0]!.endMs).toBeUndefined();
    expect(r[0]!.startMs).toBe(MONDAY + 8 * HOUR);
  });

  it('a power cut ends the session at the last sign of life, as lost; a new boot always starts a new session', () => {
    let r = sessionStarted([], { now: MONDAY + 8 * HOUR, bootTime: MONDAY + 8 * HOUR }, rules);
    r = sessionAlive(r, MONDAY + 12 * HOUR);
    // Power back a minute later: a new boot, although within rejoinMs.
    r = sessionStarted(r, { now: MONDAY + 12 * HOUR + MIN, bootTime: MONDAY + 12 * HOUR + 30_000 }, rules);
    expect(r).toHaveLength(2);
    expect(r[0]).toMatchObject({ endMs: MONDAY + 12 * HOUR, end: 'lost' });
    expect(r[1]).toEqual({ bootTime: MONDAY + 12 * HOUR + 30_000, startMs: MONDAY + 12 * HOUR + MIN, lastSeenMs: MONDAY + 12 * HOUR + MIN });
    // The depot was stopped by hand on the same boot and started an hour later: a gap, a new session.
    r = sessionStopped(r, MONDAY + 13 * HOUR);
    r = sessionStarted(r, { now: MONDAY + 14 * HOUR, bootTime: MONDAY + 12 * HOUR + 30_000 }, rules);
    expect(r.map((s) => s.end)).toEqual(['lost', 'clean', undefined]);
  });

  it('keeps at most `keep` records; marks never move time backwards', () => {
    let r: SessionRecord[] = [];
    for (let d = 0; d < 20; d++) {
      r = sessionStarted(r, { now: MONDAY + d * DAY, bootTime: MONDAY + d * DAY }, { ...rules, keep: 7 });
      r = sessionStopped(r, MONDAY + d * DAY + HOUR);
    }
    expect(r).toHaveLength(7);
    expect(r[0]!.startMs).toBe(MONDAY + 13 * DAY);
    const open = sessionStarted([], { now: MONDAY + HOUR, bootTime: MONDAY }, rules);
    expect(sessionAlive(open, MONDAY)[0]!.lastSeenMs).toBe(MONDAY + HOUR);
  });

  it('seeded random histories: records stay ordered, at most one open, every summary round-trips within a minute', () => {
    const rand = mulberry32(20261207);
    for (let run = 0; run < 200; run++) {
      let now = MONDAY;
      let boot = now;
      let r: SessionRecord[] = [];
      let running = false;
      for (let step = 0; step < 60; step++) {
        now += Math.floor(rand() * 6 * HOUR);
        const x = rand();
        if (!running) {
          if (x < 0.7) boot = now - Math.floor(rand() * MIN);
          r = sessionStarted(r, { now, bootTime: boot }, rules);
          running = true;
        } else if (x < 0.4) r = sessionAlive(r, now);
        else if (x < 0.7) {
          r = sessionStopped(r, now);
          running = false;
        } else running = false; // power cut: nothing recorded
        expect(r.filter((s) => s.endMs === undefined).length).toBeLessThanOrEqual(1);
        for (let i = 1; i < r.length; i++) expect(r[i]!.startMs).toBeGreaterThanOrEqual(r[i - 1]!.endMs ?? r[i - 1]!.lastSeenMs);
        for (const s of r) if (s.endMs !== undefined) expect(s.endMs).toBeGreaterThanOrEqual(s.startMs);
      }
      const summary = summarizeSessions(r, now, { max: 32, maxAgeMs: 365 * DAY });
      const back = sessionsFromSummary(summary);
      const ended = r.filter((s) => s.endMs !== undefined && s.endMs > s.startMs).slice(-32);
      expect(back).toHaveLength(ended.length);
      back.forEach((b, i) => {
        expect(Math.abs(b.startMs - ended[i]!.startMs)).toBeLessThan(MIN);
        expect(Math.abs(b.endMs - ended[i]!.endMs!)).toBeLessThan(MIN);
      });
    }
  });

  it('the summary is the newest sessions within the age limit', () => {
    let r: SessionRecord[] = [];
    for (let d = 0; d < 40; d++) {
      r = sessionStarted(r, { now: MONDAY + d * DAY + 8 * HOUR, bootTime: MONDAY + d * DAY + 8 * HOUR }, rules);
      r = sessionStopped(r, MONDAY + d * DAY + 18 * HOUR);
    }
    const s = summarizeSessions(r, MONDAY + 40 * DAY, { max: 21, maxAgeMs: 28 * DAY });
    expect(s).toHaveLength(21);
    expect(s.at(-1)).toEqual([(MONDAY + 39 * DAY + 8 * HOUR) / MIN, 600]);
    expect(summarizeSessions(r, MONDAY + 40 * DAY, { max: 21, maxAgeMs: 3 * DAY })).toHaveLength(3);
  });
});

describe('placement with recorded sessions', () => {
  const GiB = 1024 ** 3;
  const candidate = (name: string, history: Array<{ startMs: number; endMs: number }>): PlacementCandidate => ({
    name,
    state: 'alive',
    uptimeS: 9 * 3600,
    load: [0.2, 0.2, 0.2],
    cpus: 4,
    memFreeBytes: 8 * GiB,
    memTotalBytes: 16 * GiB,
    diskFreeBytes: 100 * GiB,
    images: [],
    copies: [],
    history,
  });
  // Two weeks of a teaching lab: the lab PC is on 8:00–18:00 on weekdays; the office PC stays on.
  function labDays(): SessionRecord[] {
    let r: SessionRecord[] = [];
    for (let d = 0; d < 14; d++) {
      if (new Date(MONDAY + d * DAY).getUTCDay() % 6 === 0) continue;
      r = sessionStarted(r, { now: MONDAY + d * DAY + 8 * HOUR, bootTime: MONDAY + d * DAY + 8 * HOUR }, rules);
      r = sessionAlive(r, MONDAY + d * DAY + 17 * HOUR);
      r = sessionStopped(r, MONDAY + d * DAY + 18 * HOUR);
    }
    return r;
  }
  const office = sessionStarted([], { now: MONDAY - DAY, bootTime: MONDAY - DAY }, rules);
  const officeDone = sessionStopped(office, MONDAY + 13 * DAY + 20 * HOUR);

  it('an evening host ranks low at 17:30, a host that stays on ranks high; at 10:00 both are fine', () => {
    const at1730 = MONDAY + 14 * DAY + 17.5 * HOUR;
    const lab = sessionsFromSummary(summarizeSessions(labDays(), at1730, { max: 21, maxAgeMs: 28 * DAY }));
    const on = sessionsFromSummary(summarizeSessions(officeDone, at1730, { max: 21, maxAgeMs: 28 * DAY }));
    const req = { service: 'zabbix', memBytes: GiB, diskBytes: GiB };
    const late = rankHosts([candidate('lab-pc', lab), candidate('office-pc', on)], req, at1730);
    expect(late.ranking.map((x) => x.name)).toEqual(['office-pc', 'lab-pc']);
    const labSession = late.ranking.find((x) => x.name === 'lab-pc')!.factors.find((f) => f.name === 'session')!;
    expect(labSession.value).toBeLessThan(0.25);
    expect(labSession.detail).toMatch(/^expect 30m more \(10 past sessions\)$/);
    const at10 = MONDAY + 14 * DAY + 10 * HOUR;
    const morning = rankHosts([candidate('lab-pc', lab)], req, at10).ranking[0]!.factors.find((f) => f.name === 'session')!;
    expect(morning.value).toBeGreaterThan(0.7);
  });
});

describe('the session log on disk', () => {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });
  const config = (dir: string) => SessionsSection.parse({ file: join(dir, 'sessions.json'), markMs: 30 * MIN });

  it('survives a restart, marks alive, records a clean stop, and finds a power cut at the next start', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'nav-sessions-'));
    dirs.push(dir);
    const clock = new FakeClock(MONDAY + 8 * HOUR);
    const a = new SessionLog({ config: config(dir), clock, logger: silentLogger(), bootTime: () => MONDAY + 8 * HOUR });
    await a.start();
    clock.advance(3 * HOUR);
    await a.flushed();
    const marked = JSON.parse(await readFile(join(dir, 'sessions.json'), 'utf8')) as { sessions: SessionRecord[] };
    expect(marked.sessions[0]!.lastSeenMs).toBe(MONDAY + 11 * HOUR);
    await a.stop();
    expect(a.all()).toEqual([expect.objectContaining({ end: 'clean', endMs: MONDAY + 11 * HOUR })]);

    // Next morning, a new boot; this session then dies with the power (no stop()).
    const clockB = new FakeClock(MONDAY + DAY + 8 * HOUR);
    const b = new SessionLog({ config: config(dir), clock: clockB, logger: silentLogger(), bootTime: () => MONDAY + DAY + 8 * HOUR });
    await b.start();
    clockB.advance(2 * HOUR);
    await b.flushed();
    // The afternoon, after the cut: the lost session ends at its last mark.
    const clockC = new FakeClock(MONDAY + DAY + 14 * HOUR);
    const c = new SessionLog({ config: config(dir), clock: clockC, logger: silentLogger(), bootTime: () => MONDAY + DAY + 14 * HOUR });
    await c.start();
    const all = c.all();
    expect(all.map((s) => s.end)).toEqual(['clean', 'lost', undefined]);
    expect(all[1]!.endMs).toBe(MONDAY + DAY + 10 * HOUR);
    expect(c.summary()).toHaveLength(2);
    await c.stop();
  });

  it('a corrupt file is set aside with a new history started, not a reason to fail', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'nav-sessions-'));
    dirs.push(dir);
    await writeFile(join(dir, 'sessions.json'), '{"v":1,"sessions":[{"bootTime":"x"}');
    const clock = new FakeClock(MONDAY);
    const log = new SessionLog({ config: config(dir), clock, logger: silentLogger(), bootTime: () => MONDAY });
    await log.start();
    expect(log.all()).toHaveLength(1);
    expect((await readdir(dir)).some((f) => f.startsWith('sessions.json.corrupt-'))).toBe(true);
    await log.stop();
  });
});
