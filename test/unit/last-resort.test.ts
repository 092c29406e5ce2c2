import { describe, expect, it } from 'vitest';
import { decideLastResort, describeWindow, kitTargets, type KitHolder, type LastResortInput, type LostCopy } from '../../pilot/last-resort.ts';
import { newCopyWatch, takeoverRecord } from '../../pilot/copy-watch.ts';

// The last-resort decision (pilot/last-resort.ts), pure, on a fake clock: when every copy is lost,
// who recovers, from which database copy, and which window of data is lost; and when nobody may.

const T = 1_800_000_000_000;
const GRACE = 3000;
const LEASE = 1500;

function copy(host: string, over: Partial<LostCopy> = {}): LostCopy {
  return { peerId: `p-${host}`, host, state: 'dead', role: 'standby', term: 4, lastHeardAt: T, since: T + 2500, ...over };
}
function holder(host: string, over: Partial<KitHolder> = {}): KitHolder {
  return { peerId: `p-${host}`, host, alive: true, hasImage: true, dbAt: undefined, ...over };
}
function input(over: Partial<LastResortInput> = {}): LastResortInput {
  return {
    service: 'zabbix',
    now: T + 10_000,
    copies: [copy('w1', { role: 'primary', term: 5 }), copy('w2', { lastHeardAt: T - 300, since: T + 2200 })],
    holders: [holder('w3', { dbAt: T - 4000 }), holder('w4', { dbAt: T - 1000 }), holder('w5')],
    hasDatabase: true,
    startWithoutData: false,
    graceMs: GRACE,
    leaseMs: LEASE,
    ...over,
  };
}

describe('last-resort recovery: the decision', () => {
  it('recovers on the holder of the freshest database copy, with the window from that copy to the last word heard from a copy', () => {
    const d = decideLastResort(input());
    expect(d).toMatchObject({ kind: 'recover', host: 'w4', dbAt: T - 1000, withoutData: false, lostAt: T, window: { from: T - 1000, to: T }, fromHost: 'w1', term: 5 });
    if (d.kind !== 'recover') throw new Error('unreachable');
    expect(describeWindow(d.window, false)).toBe(`data written from ${new Date(T - 1000).toISOString()} to ${new Date(T).toISOString()} lost (1.0 s; database copy of ${new Date(T - 1000).toISOString()})`);
  });

  it('does nothing while a copy is alive, nothing for a service with no copy known, and only gets ready while one is suspect', () => {
    expect(decideLastResort(input({ copies: [copy('w1', { state: 'alive' }), copy('w2')] })).kind).toBe('none');
    // Suspect: not lost yet. The likely recoverer may boot its copy and load the data meanwhile.
    expect(decideLastResort(input({ copies: [copy('w1', { state: 'suspect' }), copy('w2')] }))).toMatchObject({ kind: 'wait', prepare: { host: 'w4', dbAt: T - 1000 } });
    expect(decideLastResort(input({ copies: [copy('w1', { state: 'suspect' })], holders: [holder('w5')] }))).toEqual({ kind: 'wait', reason: 'no copy alive; w1 suspect' });
    expect(decideLastResort(input({ copies: [] })).kind).toBe('none');
  });

  it('waits out the grace after the last copy was judged lost, and the lease of the last primary', () => {
    // The grace runs from the latest verdict (w1, at T + 2500).
    expect(decideLastResort(input({ now: T + 2500 + GRACE - 1 }))).toMatchObject({ kind: 'wait', until: T + 2500 + GRACE, prepare: { host: 'w4' } });
    expect(decideLastResort(input({ now: T + 2500 + GRACE })).kind).toBe('recover');
    // A verdict reached quickly still waits a lease after the last word heard.
    const quick = input({ graceMs: 0, copies: [copy('w1', { role: 'primary', lastHeardAt: T, since: T + 100 })] });
    expect(decideLastResort({ ...quick, now: T + LEASE - 1 }).kind).toBe('wait');
    expect(decideLastResort({ ...quick, now: T + LEASE }).kind).toBe('recover');
  });

  it('a clean stop (left) counts as lost like a death', () => {
    expect(decideLastResort(input({ copies: [copy('w1', { state: 'left', role: 'primary' })] })).kind).toBe('recover');
  });

  it('only live holders of the image count; a copy host is never a holder; among equal copies the best placement rank wins', () => {
    expect(decideLastResort(input({ holders: [holder('w3', { dbAt: T - 4000 }), holder('w4', { dbAt: T - 1000, alive: false })] }))).toMatchObject({ host: 'w3' });
    expect(decideLastResort(input({ holders: [holder('w3', { dbAt: T - 4000 }), holder('w4', { dbAt: T - 1000, hasImage: false })] }))).toMatchObject({ host: 'w3' });
    expect(decideLastResort(input({ holders: [holder('w2', { dbAt: T }), holder('w3', { dbAt: T - 4000 })] }))).toMatchObject({ host: 'w3' });
    expect(decideLastResort(input({ holders: [holder('w5', { dbAt: T - 1000 }), holder('w4', { dbAt: T - 1000 })] }))).toMatchObject({ host: 'w5' });
    expect(decideLastResort(input({ holders: [holder('w4', { alive: false })] }))).toMatchObject({ kind: 'wait' });
    expect(decideLastResort(input({ holders: [] }))).toMatchObject({ kind: 'wait' });
  });

  it('with no database copy anywhere: refuses by default, and names the holder that says so', () => {
    const d = decideLastResort(input({ holders: [holder('w5'), holder('w6')] }));
    expect(d).toMatchObject({ kind: 'refuse', host: 'w5', lostAt: T });
    if (d.kind !== 'refuse') throw new Error('unreachable');
    expect(d.reason).toContain('recovery.startWithoutData is false');
  });

  it('with no database copy anywhere and the policy allowing it: starts empty, and says so', () => {
    const d = decideLastResort(input({ holders: [holder('w5'), holder('w6')], startWithoutData: true }));
    expect(d).toMatchObject({ kind: 'recover', host: 'w5', withoutData: true, dbAt: undefined, window: { from: undefined, to: T } });
    if (d.kind !== 'recover') throw new Error('unreachable');
    expect(describeWindow(d.window, d.withoutData)).toContain('WITHOUT its data');
  });

  it('a service without a database recovers from its image alone', () => {
    expect(decideLastResort(input({ hasDatabase: false, holders: [holder('w5'), holder('w6')] }))).toMatchObject({ kind: 'recover', host: 'w5', withoutData: false });
  });

  it('every live holder that sees the same state names the same host (seeded random histories)', () => {
    let seed = 7;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (let i = 0; i < 500; i++) {
      const n = 2 + Math.floor(rnd() * 5);
      const holders = Array.from({ length: n }, (_, k) => holder(`h${k}`, { alive: rnd() > 0.2, hasImage: rnd() > 0.1, dbAt: rnd() > 0.3 ? T - Math.floor(rnd() * 5) * 1000 : undefined }));
      const copies = [copy('c1', { state: rnd() > 0.1 ? 'dead' : 'suspect', since: T + Math.floor(rnd() * 3000) }), copy('c2', { state: rnd() > 0.5 ? 'dead' : 'left' })];
      const now = T + Math.floor(rnd() * 10_000);
      const a = decideLastResort(input({ holders, copies, now }));
      const b = decideLastResort(input({ holders: holders.map((h) => ({ ...h })), copies: [...copies].reverse(), now }));
      expect(b).toEqual(a);
      if (a.kind === 'recover') {
        const chosen = holders.find((h) => h.peerId === a.peerId)!;
        expect(chosen.alive && chosen.hasImage).toBe(true);
        // Never a stale copy when a fresher one is held by a live holder with the image.
        const best = Math.max(...holders.filter((h) => h.alive && h.hasImage).map((h) => h.dbAt ?? -1));
        expect(a.dbAt ?? -1).toBe(best);
        expect(now).toBeGreaterThanOrEqual(Math.max(...copies.map((c) => c.since)) + GRACE);
      }
      if (copies.some((c) => c.state === 'suspect')) expect(a.kind).toBe('wait');
      if (a.kind === 'wait' && a.prepare) expect(holders.find((h) => h.peerId === a.prepare!.peerId)!.alive).toBe(true);
    }
  });

  it('kit targets: the staged pre-staging targets, never this depot or a copy host', () => {
    expect(kitTargets(['a', 'b', 'c', 'self'], new Set(['b']), 'self')).toEqual(['a', 'c']);
  });

  it('the pilot records its first win after a recovery as last-resort, with the window', () => {
    const w = newCopyWatch({ bootstrapping: true, lastResort: { reason: 'last-resort recovery: every copy lost; data written from A to B lost', fromHost: 'w1' } });
    const r = takeoverRecord({ ...w, campaignStartedAt: 100 }, 350, 'w4');
    expect(r.record).toMatchObject({ event: 'last-resort', failover: true, fromHost: 'w1', elect: 250 });
    expect(r.record.reason).toContain('data written from A to B lost');
    // Later wins are ordinary again.
    expect(takeoverRecord(r.watch, 400, 'w4').record.event).toBe('promoted');
  });
});
