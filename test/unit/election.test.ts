import { describe, it, expect } from 'vitest';
import { WITNESS_ID, initialView } from '../../pilot/election/views.ts';
import { createVoter, voterObserveSync, voterReceive, type VoterState } from '../../pilot/election/voter-role.ts';
import { createPilot, leaseValid, nextWakeAt, pilotCampaign, pilotObserveMembership, pilotObserveTerm, pilotProbe, pilotReceive, pilotResign, pilotTick, type PilotDecision, type PilotState } from '../../pilot/election/pilot-role.ts';
import { DEFAULT_ELECTION_CONFIG, electionConfigFrom, minSafetyMarginMs, validateElectionConfig, type ElectionConfig } from '../../pilot/election/settings.ts';
import { parseConfig } from '../../shared/config.ts';
import { isNavigatorError } from '../../shared/errors.ts';
import { ElectionMessage, decodeMessage, encodeMessage, type LeaseAck, type LeaseRenew, type VoteReply, type VoteRequest } from '../../shared/wire.ts';

const cfg: ElectionConfig = { ...DEFAULT_ELECTION_CONFIG };
const V = ['a', 'b', 'c'];
const view = initialView(V);

function voter(id: string, now = 0): VoterState {
  // Start past the restart quarantine.
  return createVoter({ id, service: 's', now: now - cfg.leaseMs, cfg });
}

function voteReq(over: Partial<VoteRequest> = {}): VoteRequest {
  return { type: 'vote-request', v: 1, service: 's', term: 1, candidate: 'p1', syncTime: 100, seq: 1, view, ...over };
}

function sends(decisions: PilotDecision[]) {
  return decisions.filter((d): d is Extract<PilotDecision, { kind: 'send' | 'probe-witness' }> => d.kind === 'send' || d.kind === 'probe-witness');
}

/** Run a request through a voter and return its reply. */
function ask(v: VoterState, msg: VoteRequest | LeaseRenew, now: number): { v: VoterState; reply: VoteReply | LeaseAck; persisted: boolean } {
  const out = voterReceive(v, msg, now, cfg);
  const reply = out.decisions.find((d) => d.kind === 'reply');
  if (!reply || reply.kind !== 'reply') throw new Error('no reply');
  const persistIdx = out.decisions.findIndex((d) => d.kind === 'persist');
  if (persistIdx >= 0) expect(persistIdx).toBeLessThan(out.decisions.indexOf(reply)); // durable before answering
  return { v: out.state, reply: reply.message, persisted: persistIdx >= 0 };
}

/** Make pilot `p` primary at time `now` with grants from `granters` (replies arrive at `now + delay`). */
function elect(p: PilotState, now: number, granters: string[], delay = 10): PilotState {
  const c = pilotCampaign(p, now, cfg);
  let s = c.state;
  const req = sends(c.decisions)[0]!.message as VoteRequest;
  for (const g of granters) {
    const r = ask(voter(g, now), req, now + delay / 2);
    s = pilotReceive(s, r.reply as VoteReply, now + delay, cfg).state;
  }
  return s;
}

describe('election timing validation', () => {
  it('derives the minimum safety margin from lease, drift and fence latency', () => {
    expect(minSafetyMarginMs(1500, 0, 0)).toBeCloseTo(0, 9);
    expect(minSafetyMarginMs(1500, 0.01, 0)).toBeCloseTo((1500 * 2 * 0.01) / 1.01, 6);
    expect(minSafetyMarginMs(1500, 0.01, 100)).toBeCloseTo(128.7, 1);
  });

  it('accepts the defaults and refuses a margin below the bound, naming the numbers', () => {
    expect(() => validateElectionConfig(cfg)).not.toThrow();
    const bad = () => validateElectionConfig({ ...cfg, leaseSafetyMarginMs: 50 });
    expect(bad).toThrow(/leaseSafetyMarginMs 50 is below the safe minimum 129 ms/);
    try {
      bad();
    } catch (err) {
      expect(isNavigatorError(err, 'CONFIG_INVALID')).toBe(true);
    }
    expect(() => validateElectionConfig({ ...cfg, maxClockDriftRate: 0.1 })).toThrow(/safe minimum/);
    expect(() => validateElectionConfig({ ...cfg, leaseSafetyMarginMs: 600 })).toThrow(/two renewals/);
  });

  it('reads the pilot section of the configuration (witness set ⇒ witness voter)', () => {
    const witness = '/ip4/10.0.0.9/tcp/7490/p2p/12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo';
    const c = electionConfigFrom(parseConfig({ pilot: { witness } }).pilot);
    // Not the multiaddr `navigator witness` prints (a bare host, no peer id): refused by name.
    expect(() => parseConfig({ pilot: { witness: '10.0.0.1:7490' } })).toThrow(/pilot\.witness: must be the multiaddr/);
    expect(c.leaseMs).toBe(1500);
    expect(c.witness).toBe(true);
    expect(electionConfigFrom(parseConfig({}).pilot).witness).toBe(false);
    // The lease rule is checked where the election's settings are made (pilot/election/settings.ts), once.
    expect(() => electionConfigFrom(parseConfig({ pilot: { leaseSafetyMarginMs: 10 } }).pilot)).toThrow(/leaseSafetyMarginMs/);
  });

  it("a renewing primary counts as a lease behind its renewal; in dump mode also a sync interval behind (standbys there always are)", () => {
    const replicate = parseConfig({});
    expect(electionConfigFrom(replicate.pilot, {}, replicate.election, replicate.dbsync).writerLagMs).toBe(1500);
    const dump = parseConfig({ dbsync: { mode: 'dump', syncIntervalMs: 20_000 } });
    const cfgDump = electionConfigFrom(dump.pilot, {}, dump.election, dump.dbsync);
    expect(cfgDump.writerLagMs).toBe(21_500);
    // A dump-mode standby synced 15 s ago still wins right after its primary's last renewal.
    const renew: LeaseRenew = { type: 'lease-renew', v: 1, service: 's', term: 1, holder: 'p1', seq: 2, view };
    const wall = 1_000_000;
    let v = voterReceive(createVoter({ id: 'a', service: 's', now: -cfgDump.leaseMs, cfg: cfgDump }), voteReq({ term: 1, candidate: 'p1' }), 0, cfgDump).state;
    v = voterReceive(v, renew, 100, cfgDump, wall).state;
    const late = 100 + cfgDump.leaseMs;
    const req = voteReq({ term: 2, candidate: 'p2', syncTime: wall - 15_000 });
    expect(voterReceive(v, req, late, cfgDump).decisions.find((d) => d.kind === 'reply')).toMatchObject({ message: { granted: true } });
    // With the replicate lag the same copy is refused as stale until the renewal ages out.
    const vr = voterReceive(voterReceive(createVoter({ id: 'a', service: 's', now: -cfg.leaseMs, cfg }), voteReq({ term: 1, candidate: 'p1' }), 0, cfg).state, renew, 100, cfg, wall).state;
    expect(voterReceive(vr, req, late, cfg).decisions.find((d) => d.kind === 'reply')).toMatchObject({ message: { granted: false, reason: 'stale-sync' } });
    expect(voterReceive(vr, req, 100 + cfg.syncInfoTtlMs + 1, cfg).decisions.find((d) => d.kind === 'reply')).toMatchObject({ message: { granted: true } });
  });
});

describe('voter', () => {
  it('grants a first vote, then promises: no other candidate until leaseMs without renewal', () => {
    const t0 = 10_000;
    let { v, reply, persisted } = ask(voter('a', t0), voteReq(), t0);
    expect(reply).toMatchObject({ type: 'vote-reply', granted: true, voter: 'a', votedTerm: 1 });
    expect(persisted).toBe(true);
    // Another candidate, higher term, inside the promise.
    ({ reply } = ask(v, voteReq({ candidate: 'p2', term: 2 }), t0 + cfg.leaseMs - 1));
    expect(reply).toMatchObject({ granted: false, reason: 'promised' });
    // A renewal by the holder extends the promise.
    const renew: LeaseRenew = { type: 'lease-renew', v: 1, service: 's', term: 1, holder: 'p1', seq: 2, view };
    ({ v, reply } = ask(v, renew, t0 + 1000));
    expect(reply).toMatchObject({ type: 'lease-ack', granted: true });
    ({ reply } = ask(v, voteReq({ candidate: 'p2', term: 2 }), t0 + cfg.leaseMs + 10));
    expect(reply.granted).toBe(false);
    // Expired: leaseMs after the last renewal.
    ({ v, reply } = ask(v, voteReq({ candidate: 'p2', term: 2 }), t0 + 1000 + cfg.leaseMs));
    expect(reply).toMatchObject({ granted: true, votedTerm: 2 });
    // The old holder's renewal now learns the higher term.
    ({ reply } = ask(v, renew, t0 + 3000));
    expect(reply).toMatchObject({ granted: false, reason: 'stale-term', votedTerm: 2 });
  });

  it('votes at most once per term and never for an older term', () => {
    let { v } = ask(voter('a'), voteReq({ term: 5 }), 0);
    let { reply } = ask(v, voteReq({ term: 5, candidate: 'p2' }), 5000);
    expect(reply).toMatchObject({ granted: false, reason: 'voted-other' });
    ({ reply } = ask(v, voteReq({ term: 4, candidate: 'p2' }), 5000));
    expect(reply).toMatchObject({ granted: false, reason: 'stale-term' });
    ({ v, reply } = ask(v, voteReq({ term: 5, seq: 9 }), 100)); // the same candidate may ask again
    expect(reply).toMatchObject({ granted: true, seq: 9 });
  });

  it('refuses a candidate whose DB sync is older than the freshest it heard recently', () => {
    let v = voterObserveSync(voter('a'), 'p2', 500, 0);
    let { reply } = ask(v, voteReq({ syncTime: 400 }), 10);
    expect(reply).toMatchObject({ granted: false, reason: 'stale-sync' });
    ({ reply } = ask(v, voteReq({ syncTime: 500 }), 10));
    expect(reply.granted).toBe(true);
    // The sync information of a copy that stopped reporting ages out.
    v = voterObserveSync(voter('a', 0), 'p2', 500, -cfg.syncInfoTtlMs - 1);
    ({ reply } = ask(v, voteReq({ syncTime: 400 }), 0));
    expect(reply.granted).toBe(true);
  });

  it('refuses requests carrying an older view and reports its own', () => {
    const newer = { epoch: [3, 1] as [number, number], voters: ['a', 'b'] };
    let { v } = ask(voter('a'), voteReq({ view: newer, term: 3 }), 0);
    v = { ...v, promiseUntil: -1 };
    const { reply } = ask(v, voteReq({ term: 9, candidate: 'p2' }), 10_000);
    expect(reply).toMatchObject({ granted: false, reason: 'stale-view', view: newer });
  });

  it('keeps silent for leaseMs after a restart, but honours its durable promise holder', () => {
    const restarted = createVoter({ id: 'a', service: 's', now: 1000, cfg, durable: { votedTerm: 4, promisedTo: 'p1', view } });
    expect(ask(restarted, voteReq({ term: 5, candidate: 'p2' }), 1000 + cfg.leaseMs - 1).reply).toMatchObject({ granted: false, reason: 'promised' });
    const renew: LeaseRenew = { type: 'lease-renew', v: 1, service: 's', term: 4, holder: 'p1', seq: 1, view };
    expect(ask(restarted, renew, 1001).reply.granted).toBe(true);
    expect(ask(restarted, voteReq({ term: 5, candidate: 'p2' }), 1000 + cfg.leaseMs).reply.granted).toBe(true);
  });

  it('a renewing primary makes a candidate whose data predates its term stale (the nemesis case); its followers and a planned hand-over are not', () => {
    // p2 won term 10 and renews at wall time 60_000 (local time 1000): it writes. p1, an earlier
    // primary back from a partition, holds data up to wall time 48_000 and asks for term 12 once
    // p2's lease lapsed (p2 under load): refused while p2's renewal is fresh (syncInfoTtlMs).
    const renew: LeaseRenew = { type: 'lease-renew', v: 1, service: 's', term: 10, holder: 'p2', seq: 1, view };
    let v = ask(voter('a'), voteReq({ term: 10, candidate: 'p2', syncTime: 46_000 }), 0).v;
    v = voterReceive(v, renew, 1000, cfg, 60_000).state;
    const lapsed = 1000 + cfg.leaseMs + 1;
    expect(ask(v, voteReq({ term: 12, candidate: 'p1', syncTime: 48_000 }), lapsed).reply).toMatchObject({ granted: false, reason: 'stale-sync' });
    // p2 itself may stand again; a standby that followed p2 (data within a lease of its last renewal) may win.
    expect(ask(v, voteReq({ term: 11, candidate: 'p2', syncTime: 46_000 }), lapsed).reply.granted).toBe(true);
    expect(ask(v, voteReq({ term: 11, candidate: 'p3', syncTime: 60_000 - cfg.leaseMs + 200 }), lapsed).reply.granted).toBe(true);
    // After syncInfoTtlMs without renewal the entry no longer counts (a dead primary blocks no one for long).
    expect(ask(v, voteReq({ term: 12, candidate: 'p1', syncTime: 48_000 }), 1000 + cfg.syncInfoTtlMs + 1).reply.granted).toBe(true);
    // A planned hand-over (lease-release) removes it at once. Without a wall clock (the witness), nothing is recorded.
    const released = voterReceive(v, { type: 'lease-release', v: 1, service: 's', term: 10, holder: 'p2' }, 1001, cfg).state;
    expect(ask(released, voteReq({ term: 12, candidate: 'p1', syncTime: 48_000 }), lapsed).reply.granted).toBe(true);
    const noClock = voterReceive(ask(voter('a'), voteReq({ term: 10, candidate: 'p2' }), 0).v, renew, 1000, cfg).state;
    expect(noClock.writers).toEqual({});
    // A service without a database (candidates report no sync time) is not held up by its primary's renewals.
    expect(ask(v, voteReq({ term: 12, candidate: 'p1', syncTime: 0 }), lapsed).reply.granted).toBe(true);
  });

  it('lets the holder release its promise early', () => {
    const { v } = ask(voter('a'), voteReq(), 0);
    const later = 4 * cfg.electionRetryMs + 1; // past the candidate tie-break window
    const freed = voterReceive(v, { type: 'lease-release', v: 1, service: 's', term: 1, holder: 'p1' }, 100, cfg).state;
    expect(ask(freed, voteReq({ term: 2, candidate: 'p2' }), later).reply.granted).toBe(true);
    // A release by someone else changes nothing.
    const kept = voterReceive(v, { type: 'lease-release', v: 1, service: 's', term: 1, holder: 'p2' }, 100, cfg).state;
    expect(ask(kept, voteReq({ term: 2, candidate: 'p2' }), later).reply.granted).toBe(false);
  });

  it('between candidates asking at the same time, prefers the fresher sync, then the lower id', () => {
    // p2 asks first but p1 (same sync, lower id) asked too: the voter waits for p1.
    let v = ask(voter('a'), voteReq({ candidate: 'p1', term: 3 }), 0).v;
    v = { ...v, promiseUntil: 0, promisedTo: null, votedTerm: 0 }; // as if p1's grant had been released
    expect(ask(v, voteReq({ candidate: 'p2', term: 4 }), 10).reply).toMatchObject({ granted: false, reason: 'prefer-other' });
    // A fresher candidate wins the tie break whatever its id.
    expect(ask(v, voteReq({ candidate: 'p2', term: 4, syncTime: 101 }), 10).reply.granted).toBe(true);
    // A candidate that stopped asking no longer counts.
    expect(ask(v, voteReq({ candidate: 'p2', term: 4 }), 4 * cfg.electionRetryMs + 1).reply.granted).toBe(true);
  });
});

describe('pilot', () => {
  it('campaigns for term+1 at every voter and wins with a majority; the lease counts from the SEND time', () => {
    const p = createPilot({ id: 'p1', service: 's', view, syncTime: 100 });
    const c = pilotCampaign(p, 1000, cfg);
    expect(c.state.role).toBe('candidate');
    expect(sends(c.decisions).map((d) => (d.kind === 'send' ? d.to : WITNESS_ID))).toEqual(V);
    const req = sends(c.decisions)[0]!.message as VoteRequest;
    expect(req).toMatchObject({ term: 1, candidate: 'p1', syncTime: 100 });
    let s = c.state;
    // Replies arrive 400 ms later: the lease still counts from 1000.
    s = pilotReceive(s, ask(voter('a'), req, 1100).reply as VoteReply, 1400, cfg).state;
    expect(s.role).toBe('candidate');
    const won = pilotReceive(s, ask(voter('b'), req, 1100).reply as VoteReply, 1400, cfg);
    expect(won.state.role).toBe('primary');
    expect(won.decisions[0]).toEqual({ kind: 'become-primary', term: 1, leaseExpiry: 1000 + cfg.leaseMs - cfg.leaseSafetyMarginMs });
    expect(leaseValid(won.state, 1000 + cfg.leaseMs - cfg.leaseSafetyMarginMs - 1)).toBe(true);
    expect(leaseValid(won.state, 1000 + cfg.leaseMs - cfg.leaseSafetyMarginMs)).toBe(false);
    // It renews at once, to every voter.
    expect(sends(won.decisions).map((d) => d.message.type)).toEqual(['lease-renew', 'lease-renew', 'lease-renew']);
  });

  it('ignores grants for another term, another candidate or an unknown round', () => {
    const c = pilotCampaign(createPilot({ id: 'p1', service: 's', view }), 0, cfg);
    const req = sends(c.decisions)[0]!.message as VoteRequest;
    let s = c.state;
    for (const g of ['a', 'b']) {
      const r = ask(voter(g), { ...req, term: 7 }, 1).reply as VoteReply;
      s = pilotReceive(s, r, 2, cfg).state;
      s = pilotReceive(s, { ...(ask(voter(g), req, 1).reply as VoteReply), seq: 99 }, 2, cfg).state;
    }
    expect(s.role).toBe('candidate');
  });

  it('renews every leaseMs/3 and fences itself when renewals stop being acknowledged', () => {
    let s = elect(createPilot({ id: 'p1', service: 's', view }), 0, ['a', 'b']);
    expect(s.role).toBe('primary');
    const expiry = s.leaseExpiry;
    expect(nextWakeAt(s)).toBe(Math.min(s.nextRenewAt, expiry));
    const r1 = pilotTick(s, s.nextRenewAt, cfg);
    expect(sends(r1.decisions)).toHaveLength(3);
    s = r1.state;
    // Nobody answers: fenced exactly at expiry.
    expect(pilotTick(s, expiry - 1, cfg).decisions.some((d) => d.kind === 'fence')).toBe(false);
    const f = pilotTick(s, expiry, cfg);
    expect(f.decisions).toContainEqual({ kind: 'fence', term: 1, reason: 'lease-expired' });
    expect(f.state.role).toBe('standby');
    expect(leaseValid(f.state, expiry)).toBe(false);
  });

  it('extends the lease from the send time of the acknowledged renewal', () => {
    let s = elect(createPilot({ id: 'p1', service: 's', view }), 0, ['a', 'b']);
    const at = s.nextRenewAt;
    expect(at).toBe(10 + cfg.leaseMs / 3); // renewed once on winning (at 10), next one a third of a lease later
    const r = pilotTick(s, at, cfg);
    s = r.state;
    const renew = sends(r.decisions)[0]!.message as LeaseRenew;
    let va = ask(voter('a'), { ...renew }, at + 1).reply as LeaseAck;
    s = pilotReceive(s, va, at + 400, cfg).state;
    expect(s.leaseExpiry).toBe(0 + cfg.leaseMs - cfg.leaseSafetyMarginMs); // one ack is not a majority
    va = ask(voter('b'), { ...renew }, at + 1).reply as LeaseAck;
    const out = pilotReceive(s, va, at + 400, cfg);
    expect(out.state.leaseExpiry).toBe(at + cfg.leaseMs - cfg.leaseSafetyMarginMs);
    expect(out.decisions).toContainEqual({ kind: 'lease-extended', term: 1, leaseExpiry: at + cfg.leaseMs - cfg.leaseSafetyMarginMs });
  });

  it('demotes at once on a higher term, from a voter or from a heartbeat', () => {
    let s = elect(createPilot({ id: 'p1', service: 's', view }), 0, ['a', 'b']);
    const r = pilotTick(s, s.nextRenewAt, cfg);
    s = r.state;
    const renew = sends(r.decisions)[0]!.message as LeaseRenew;
    const moved = ask(voter('a'), voteReq({ term: 3, candidate: 'p9' }), 0).v;
    const nack = ask(moved, renew, 600).reply as LeaseAck;
    expect(nack).toMatchObject({ granted: false, reason: 'stale-term', votedTerm: 3 });
    const out = pilotReceive(s, nack, 601, cfg);
    expect(out.decisions).toEqual([{ kind: 'fence', term: 1, reason: 'higher-term' }]);
    expect(out.state).toMatchObject({ role: 'standby', term: 3 });
    const hb = pilotObserveTerm(s, 2, 700, cfg);
    expect(hb.decisions).toEqual([{ kind: 'fence', term: 1, reason: 'higher-term' }]);
    expect(pilotObserveTerm(s, 1, 700, cfg).decisions).toEqual([]);
  });

  it('a standby campaigns only when both the service and the primary host probes fail', () => {
    const p = createPilot({ id: 'p2', service: 's', view });
    expect(pilotProbe(p, { serviceOk: true, hostOk: true }, 0, cfg).state.role).toBe('standby');
    expect(pilotProbe(p, { serviceOk: false, hostOk: true }, 0, cfg).state.role).toBe('standby');
    expect(pilotProbe(p, { serviceOk: true, hostOk: false }, 0, cfg).state.role).toBe('standby');
    const c = pilotProbe(p, { serviceOk: false, hostOk: false }, 0, cfg);
    expect(c.state.role).toBe('candidate');
    expect(sends(c.decisions)).toHaveLength(3);
    // Service down on a healthy host: the primary restarts it in place first; the standby waits.
    let s = pilotProbe(p, { serviceOk: false, hostOk: true }, 0, cfg).state;
    s = pilotProbe(s, { serviceOk: false, hostOk: true }, cfg.serviceDownFailoverMs - 1, cfg).state;
    expect(s.role).toBe('standby');
    expect(pilotProbe(s, { serviceOk: false, hostOk: true }, cfg.serviceDownFailoverMs, cfg).state.role).toBe('candidate');
    // A candidate that sees the service back stands down and gives back its grants.
    const back = pilotProbe(c.state, { serviceOk: true, hostOk: true }, 10, cfg);
    expect(back.state.role).toBe('standby');
  });

  it('the primary restarts a failed service in place once, then fails over', () => {
    let s = elect(createPilot({ id: 'p1', service: 's', view }), 0, ['a', 'b']);
    let out = pilotProbe(s, { serviceOk: false, hostOk: true }, 100, cfg);
    expect(out.decisions).toEqual([{ kind: 'restart-service', term: 1 }]);
    s = out.state;
    out = pilotProbe(s, { serviceOk: false, hostOk: true }, 100 + cfg.restartGraceMs - 1, cfg);
    expect(out.decisions).toEqual([]);
    out = pilotProbe(out.state, { serviceOk: false, hostOk: true }, 100 + cfg.restartGraceMs, cfg);
    expect(out.decisions[0]).toEqual({ kind: 'fence', term: 1, reason: 'service-failed' });
    // ...and releases the voters' promises so a standby can win at once.
    expect(sends(out.decisions).map((d) => d.message.type)).toEqual(['lease-release', 'lease-release']);
    // With restartInPlace off it fails over at the first failure.
    const noRestart = pilotProbe(elect(createPilot({ id: 'p1', service: 's', view }), 0, ['a', 'b']), { serviceOk: false, hostOk: true }, 100, { ...cfg, restartInPlace: false });
    expect(noRestart.decisions[0]).toMatchObject({ kind: 'fence', reason: 'service-failed' });
  });

  it('resigning (switchover) fences and releases', () => {
    const s = elect(createPilot({ id: 'p1', service: 's', view }), 0, ['a', 'b']);
    const out = pilotResign(s, 50, cfg);
    expect(out.state.role).toBe('standby');
    expect(out.decisions[0]).toEqual({ kind: 'fence', term: 1, reason: 'resigned' });
  });

  it('with two voters asks the witness as a third vote and wins with one voter plus the witness', () => {
    const two = initialView(['a', 'b']);
    const wcfg = { ...cfg, witness: true };
    const c = pilotCampaign(createPilot({ id: 'p1', service: 's', view: two }), 0, wcfg);
    const witness = c.decisions.filter((d) => d.kind === 'probe-witness');
    expect(witness).toHaveLength(1);
    const req = witness[0]!.message as VoteRequest;
    let s = pilotReceive(c.state, ask(voter('a'), req, 1).reply as VoteReply, 2, wcfg).state;
    expect(s.role).toBe('candidate');
    const w = createVoter({ id: WITNESS_ID, service: 's', now: -cfg.leaseMs, cfg });
    s = pilotReceive(s, ask(w, req, 1).reply as VoteReply, 2, wcfg).state;
    expect(s.role).toBe('primary');
    // Without a witness, two voters need each other.
    const c2 = pilotCampaign(createPilot({ id: 'p1', service: 's', view: two }), 0, cfg);
    expect(c2.decisions.some((d) => d.kind === 'probe-witness')).toBe(false);
    const s2 = pilotReceive(c2.state, ask(voter('a'), sends(c2.decisions)[0]!.message as VoteRequest, 1).reply as VoteReply, 2, cfg).state;
    expect(s2.role).toBe('candidate');
  });

  it('a voter refusing for its promise says when it runs out; the candidate asks again just then (never sooner than a fifth of a round)', () => {
    // Voter a promised p1 at t=1000 (a renewal): free at 1000 + leaseMs.
    const t0 = 1000;
    const renew: LeaseRenew = { type: 'lease-renew', v: 1, service: 's', term: 1, holder: 'p1', seq: 1, view };
    let a = ask(ask(voter('a', t0), voteReq(), t0).v, renew, t0).v;
    const c = pilotCampaign(createPilot({ id: 'p2', service: 's', view, term: 1 }), t0 + 200, cfg);
    const req = sends(c.decisions)[0]!.message as VoteRequest;
    const r = ask(a, req, t0 + 210);
    a = r.v;
    expect(r.reply).toMatchObject({ granted: false, reason: 'promised', freeInMs: cfg.leaseMs - 210 });
    const s = pilotReceive(c.state, r.reply as VoteReply, t0 + 220, cfg).state;
    const expected = t0 + 220 + (cfg.leaseMs - 210) * (1 + cfg.maxClockDriftRate) + 5;
    // Later than a normal round here (the promise runs ~1.3 s): the round deadline stays the bound.
    expect(s.roundDeadline).toBe(Math.min(c.state.roundDeadline, expected));
    // Close to the end of the promise: the retry comes at its end, before the round's deadline.
    const late = ask(a, { ...req, seq: 2 }, t0 + cfg.leaseMs - 40).reply as VoteReply;
    expect(late.freeInMs).toBe(40);
    const c2 = { ...c.state, sent: { ...c.state.sent, 2: t0 + cfg.leaseMs - 50 }, seq: 2, roundDeadline: t0 + cfg.leaseMs + 250 };
    const s2 = pilotReceive(c2, late, t0 + cfg.leaseMs - 30, cfg).state;
    expect(s2.roundDeadline).toBeCloseTo(t0 + cfg.leaseMs - 30 + 40 * (1 + cfg.maxClockDriftRate) + 5, 6);
    expect(nextWakeAt(s2)).toBe(s2.roundDeadline);
    // The retry at that time is granted.
    const again = pilotTick(s2, s2.roundDeadline, cfg);
    const req3 = sends(again.decisions)[0]!.message as VoteRequest;
    expect(ask(a, req3, s2.roundDeadline).reply).toMatchObject({ granted: true });
    // A voter cannot make a candidate spin: freeInMs 0 still waits a fifth of a round.
    const zero = pilotReceive(c2, { ...late, freeInMs: 0 }, 5000, cfg).state;
    expect(zero.roundDeadline).toBe(Math.min(c2.roundDeadline, 5000 + cfg.electionRetryMs / 5));
    // Other refusals carry no hint and leave the round as it was.
    expect(pilotReceive(c2, { ...late, reason: 'stale-sync', freeInMs: undefined }, 5000, cfg).state.roundDeadline).toBe(c2.roundDeadline);
  });

  it('a split vote is given back and retried in a higher term after a pilot-specific backoff', () => {
    const p1 = pilotCampaign(createPilot({ id: 'p1', service: 's', view }), 0, cfg);
    const p2 = pilotCampaign(createPilot({ id: 'p2', service: 's', view }), 0, cfg);
    const r1 = sends(p1.decisions)[0]!.message as VoteRequest;
    const r2 = sends(p2.decisions)[0]!.message as VoteRequest;
    const a = ask(voter('a'), r1, 1);
    const b = ask(voter('b'), r2, 1);
    let s1 = pilotReceive(p1.state, a.reply as VoteReply, 2, cfg).state;
    s1 = pilotReceive(s1, ask(b.v, r1, 3).reply as VoteReply, 4, cfg).state; // b voted p2 in term 1
    expect(s1.split).toBe(true);
    const t = pilotTick(s1, s1.roundDeadline, cfg);
    expect(sends(t.decisions).map((d) => d.message.type)).toEqual(['lease-release']);
    expect(t.state.electionTerm).toBe(2);
    expect(t.state.roundDeadline).toBeGreaterThan(s1.roundDeadline);
    const retry = pilotTick(t.state, t.state.roundDeadline, cfg);
    expect((sends(retry.decisions)[0]!.message as VoteRequest).term).toBe(2);
  });
});

describe('views', () => {
  it('the primary changes the view through a joint view committed by majorities of both sets', () => {
    let s = elect(createPilot({ id: 'p1', service: 's', view }), 0, ['a', 'b', 'c']);
    // First the current view must be known to a majority.
    expect(pilotObserveMembership(s, [{ peer: 'c', state: 'left' }], 10, cfg).decisions).toEqual([]);
    let r = pilotTick(s, s.nextRenewAt, cfg);
    s = r.state;
    const vs: Record<string, VoterState> = { a: voter('a'), b: voter('b'), c: voter('c') };
    for (const g of ['a', 'b']) {
      const out = ask(vs[g]!, sends(r.decisions)[0]!.message as LeaseRenew, 1);
      vs[g] = out.v;
      s = pilotReceive(s, out.reply as LeaseAck, 2, cfg).state;
    }
    expect(s.viewSettled).toBe(true);
    const change = pilotObserveMembership(s, [{ peer: 'c', state: 'left' }], 10, cfg);
    expect(change.decisions).toMatchObject([{ kind: 'view-changed', committed: false, view: { epoch: [1, 1], voters: ['a', 'b'], prev: ['a', 'b', 'c'] }, change: { kind: 'remove-left', peer: 'c' } }]);
    s = change.state;
    r = pilotTick(s, s.nextRenewAt, cfg);
    s = r.state;
    let committed: PilotDecision | undefined;
    for (const g of ['a', 'b']) {
      const out = ask(vs[g]!, sends(r.decisions)[0]!.message as LeaseRenew, 501);
      vs[g] = out.v;
      const step = pilotReceive(s, out.reply as LeaseAck, 502, cfg);
      s = step.state;
      committed ??= step.decisions.find((d) => d.kind === 'view-changed');
    }
    expect(committed).toEqual({ kind: 'view-changed', committed: true, view: { epoch: [1, 2], voters: ['a', 'b'] } });
    expect(s.view.voters).toEqual(['a', 'b']);
    // A candidate still holding the old view is refused by the voters that moved on.
    expect(ask(vs.a!, voteReq({ term: 9, candidate: 'p2' }), 10_000).reply).toMatchObject({ granted: false, reason: 'stale-view' });
  });
});

describe('election wire messages', () => {
  it('round-trip through the codec and reject malformed ones', () => {
    const msgs = [
      voteReq(),
      ask(voter('a'), voteReq(), 0).reply,
      { type: 'lease-renew', v: 1, service: 's', term: 1, holder: 'p1', seq: 1, view: { epoch: [1, 0], voters: ['a', 'b'], prev: ['a'] } },
      { type: 'lease-release', v: 1, service: 's', term: 1, holder: 'p1' },
    ];
    for (const m of msgs) expect(decodeMessage(ElectionMessage, encodeMessage(m))).toEqual({ ok: true, value: m });
    const bad = new TextEncoder().encode(JSON.stringify({ ...voteReq(), term: -1 }));
    expect(decodeMessage(ElectionMessage, bad)).toMatchObject({ ok: false, reason: 'schema' });
    const noVoters = new TextEncoder().encode(JSON.stringify({ ...voteReq(), view: { epoch: [0, 0], voters: [] } }));
    expect(decodeMessage(ElectionMessage, noVoters)).toMatchObject({ ok: false, reason: 'schema' });
  });
});
