import { describe, it, expect } from 'vitest';
import {
  holdOffMs,
  mayCampaign,
  newCopyWatch,
  takeoverRecord,
  watchCampaign,
  watchOwnCopy,
  watchPrimarySeen,
  watchResigned,
  watchServiceProbe,
} from '../../pilot/copy-watch.ts';
import { mulberry32 } from '../helpers/election-sim.ts';

// The pilot's rules around the election, with a fake clock: the hold-off after a planned
// hand-over, restarting a standby's own copy (also when it flaps), and how a won election is
// recorded.

const LEASE = 1500;

describe('hold-off after a planned hand-over', () => {
  it('keeps the resigned copy out of the election for three leases, unless another primary shows up first', () => {
    let w = watchResigned(newCopyWatch({ bootstrapping: false }), 10_000, LEASE);
    expect(holdOffMs(LEASE)).toBe(4500);
    expect(mayCampaign(w, false, 10_000)).toBe(false);
    expect(mayCampaign(w, false, 14_499)).toBe(false);
    expect(mayCampaign(w, false, 14_500)).toBe(true);
    // The service answering is never a reason to hold off (nothing to campaign for anyway).
    expect(mayCampaign(w, true, 10_000)).toBe(true);
    // The chosen standby won: from now on this copy is a standby like any other.
    w = watchPrimarySeen(w, 'w2');
    expect(mayCampaign(w, false, 10_001)).toBe(true);
    expect(w.lastPrimaryHost).toBe('w2');
  });
});

describe("a standby's own copy", () => {
  it('is started again when failed or stopped, at most every copyRestartMs, also when it flaps', () => {
    let w = newCopyWatch({ bootstrapping: false });
    let r = watchOwnCopy(w, 'running', 0, 30_000);
    expect(r.restart).toBe(false);
    r = watchOwnCopy(r.watch, 'failed', 1000, 30_000);
    expect(r.restart).toBe(true);
    w = r.watch;
    // It fails again at once: no restart storm.
    for (const t of [2000, 10_000, 31_000]) {
      r = watchOwnCopy(w, 'failed', t, 30_000);
      expect(r.restart, `t=${t}`).toBe(false);
      w = r.watch;
    }
    r = watchOwnCopy(w, 'stopped', 31_001, 30_000);
    expect(r.restart).toBe(true);
    // Unknown (no report yet) or starting: leave it alone.
    expect(watchOwnCopy(newCopyWatch({ bootstrapping: false }), undefined, 99_999, 30_000).restart).toBe(false);
    expect(watchOwnCopy(newCopyWatch({ bootstrapping: false }), 'starting', 99_999, 30_000).restart).toBe(false);
  });

  it('random flapping: restarts are never closer than copyRestartMs and a down copy is restarted within it', () => {
    const rnd = mulberry32(7);
    let w = newCopyWatch({ bootstrapping: false });
    let last = Number.NEGATIVE_INFINITY;
    let downSince: number | undefined;
    for (let t = 0; t < 600_000; t += 250) {
      const state = rnd() < 0.3 ? 'failed' : 'running';
      const r = watchOwnCopy(w, state, t, 30_000);
      w = r.watch;
      if (state === 'failed') downSince ??= t;
      else downSince = undefined;
      if (r.restart) {
        expect(t - last).toBeGreaterThan(30_000);
        last = t;
        downSince = undefined;
      }
      if (downSince !== undefined && t - downSince > 30_250) expect(t - last).toBeLessThanOrEqual(30_250);
    }
  });
});

describe('recording a won election', () => {
  it('a bootstrap, a failover with its detect and elect timings, a switchover, a promotion', () => {
    const boot = takeoverRecord(watchCampaign(newCopyWatch({ bootstrapping: true }), 100, 'bootstrap'), 400, 'w1');
    expect(boot.record).toMatchObject({ event: 'bootstrap', failover: false, reason: 'service bootstrapped', elect: 300 });
    expect(boot.watch.bootstrapping).toBe(false);

    let w = watchPrimarySeen(newCopyWatch({ bootstrapping: false }), 'w1');
    w = watchServiceProbe(w, true, 1000);
    w = watchServiceProbe(w, false, 1250);
    w = watchServiceProbe(w, false, 1500);
    expect(w.missingSince).toBe(1250);
    w = watchCampaign(w, 1600, undefined);
    const fo = takeoverRecord(w, 2100, 'w2');
    expect(fo.record).toEqual({ event: 'failover', failover: true, fromHost: 'w1', reason: 'primary on w1 missing', detect: 600, elect: 500 });
    expect(fo.watch.missingSince).toBeUndefined();
    expect(fo.watch.campaignStartedAt).toBeUndefined();

    const so = takeoverRecord(watchCampaign(watchServiceProbe(watchPrimarySeen(newCopyWatch({ bootstrapping: false }), 'w1'), false, 10), 20, 'switchover'), 50, 'w2');
    expect(so.record).toMatchObject({ event: 'switchover', failover: false, reason: 'planned switchover' });

    // Winning back our own lease (the last primary was this host): a promotion, not a failover.
    const own = takeoverRecord(watchCampaign(watchServiceProbe(watchPrimarySeen(newCopyWatch({ bootstrapping: false }), 'w2'), false, 10), 20, undefined), 50, 'w2');
    expect(own.record).toMatchObject({ event: 'promoted', failover: false, fromHost: undefined, reason: 'primary missing; elected' });
    expect(takeoverRecord(newCopyWatch({ bootstrapping: false }), 50, 'w2').record).toMatchObject({ event: 'promoted', reason: 'elected', detect: 0, elect: 0 });
  });
});
