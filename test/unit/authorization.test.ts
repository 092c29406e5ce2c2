import { describe, expect, it } from 'vitest';
import { Registry } from 'prom-client';
import { ControlGuard, type LeaseHolder } from '../../depot/control/guard.ts';
import type { ControlHandler, ControlOrigin } from '../../depot/control/server.ts';
import { registerContainerControl } from '../../depot/containers/control-methods.ts';
import type { ContainerManager, ContainerStatus } from '../../depot/containers/manager.ts';
import { registerImageControl } from '../../depot/images/control-methods.ts';
import type { ImageStore } from '../../depot/images/catalog.ts';
import { registerPilotControl } from '../../pilot/control-methods.ts';
import type { PilotSupervisor } from '../../pilot/supervisor.ts';
import { DepotLeaseAuthority, leaseHolderFrom, peerOfPilot } from '../../pilot/lease-authority.ts';
import { initialView } from '../../pilot/election/views.ts';
import { senderOf } from '../../pilot/election/transport.ts';
import { SafeName } from '../../shared/names.ts';
import { StandbyKeeper } from '../../pilot/standby-keeper.ts';
import type { CopyView, Pilot } from '../../pilot/pilot.ts';
import { silentLogger } from '../../shared/logger.ts';
import { PilotAssignment } from '../../pilot/service-spec.ts';
import { NavigatorError } from '../../shared/errors.ts';
import { createLogger } from '../../shared/logger.ts';
import { Writable } from 'node:stream';

// Authorization of every remote method by role and term, against fakes of the store, the
// containers and the pilots: a peer that does not hold the service's lease (or names another
// term) is refused and counted, this depot's own calls always pass, and names that become paths
// are checked by one pattern.

const HOLDER = '12D3KooWHolderHolderHolderHolderHolderHolderHold';
const ATTACKER = '12D3KooWAttackerAttackerAttackerAttackerAttacker';
const peer = (p: string): ControlOrigin => ({ kind: 'peer', peer: p });
const local: ControlOrigin = { kind: 'local' };

function capturingLogger() {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { logger: createLogger({ level: 'info', destination: sink }), lines };
}

function registrar() {
  const handlers = new Map<string, ControlHandler>();
  return {
    register: (m: string, h: ControlHandler) => void handlers.set(m, h),
    call: (m: string, params: unknown, caller: ControlOrigin) => {
      const h = handlers.get(m);
      if (!h) throw new NavigatorError('UNKNOWN_METHOD', m);
      return h(params, caller);
    },
    methods: () => [...handlers.keys()].sort(),
  };
}

async function refusal(p: Promise<unknown>): Promise<NavigatorError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(NavigatorError);
    return err as NavigatorError;
  }
  throw new Error('expected a refusal');
}

function guardWith(holder: LeaseHolder | undefined) {
  const registry = new Registry();
  const { logger, lines } = capturingLogger();
  const guard = new ControlGuard({ logger, registry });
  guard.setAuthority({ holder: async () => holder });
  return { guard, registry, lines };
}

const spec = {
  name: 'zabbix',
  image: 'a'.repeat(64),
  container: { driver: 'process' as const },
  address: '10.0.0.50/24',
  iface: 'eth0',
  port: 10051,
};

describe('lease authority (who holds a lease, as this depot knows it)', () => {
  it('an active promise of this depot\'s voter decides; otherwise the highest-term heartbeat claim; a stale holder is none', () => {
    expect(peerOfPilot(`${HOLDER}/zabbix-1/17.0`)).toBe(HOLDER);
    const voter = { term: 5, promisedTo: `${HOLDER}/zabbix-1/1.0`, promiseLeftMs: 800 };
    expect(leaseHolderFrom({ voter, claimed: { peer: ATTACKER, term: 9 } })).toEqual({ peer: HOLDER, term: 5 });
    // The promise ran out (the holder resigned or died): the heartbeat claim counts.
    expect(leaseHolderFrom({ voter: { ...voter, promiseLeftMs: 0 }, claimed: { peer: HOLDER, term: 5 } })).toEqual({ peer: HOLDER, term: 5 });
    // A released promise still names the holder of its term (switchover), unless a later term is claimed.
    expect(leaseHolderFrom({ voter: { ...voter, promiseLeftMs: 0 } })).toEqual({ peer: HOLDER, term: 5 });
    expect(leaseHolderFrom({ voter: { ...voter, promiseLeftMs: 0 }, claimed: { peer: ATTACKER, term: 4 } })).toEqual({ peer: HOLDER, term: 5 });
    expect(leaseHolderFrom({ voter: { ...voter, promiseLeftMs: 0 }, claimed: { peer: ATTACKER, term: 6 } })).toEqual({ peer: ATTACKER, term: 6 });
    // This depot's own copy knows a later term: the holder is stale, nobody is served.
    expect(leaseHolderFrom({ voter, localTerm: 6 })).toBeUndefined();
    expect(leaseHolderFrom({})).toBeUndefined();
    expect(leaseHolderFrom({ voter: { term: 3, promisedTo: null, promiseLeftMs: 500 } })).toBeUndefined();
  });

  it('keeps the highest-term primary claim; the first claim of a term stands; path names are ignored', async () => {
    let voters: Array<{ service: string; votedTerm: number; promisedTo: string | null; promiseLeftMs: number }> = [];
    const auth = new DepotLeaseAuthority({ voters: () => voters, localTerm: () => undefined });
    auth.observePrimary('zabbix', HOLDER, 4);
    auth.observePrimary('zabbix', ATTACKER, 4);
    auth.observePrimary('zabbix', ATTACKER, 3);
    expect(await auth.holder('zabbix')).toEqual({ peer: HOLDER, term: 4 });
    auth.observePrimary('../../x', ATTACKER, 9);
    expect(await auth.holder('../../x')).toBeUndefined();
    voters = [{ service: 'zabbix', votedTerm: 4, promisedTo: `${HOLDER}/z/1`, promiseLeftMs: 100 }];
    auth.observePrimary('zabbix', ATTACKER, 50);
    // The voter's running promise outranks any claim.
    expect(await auth.holder('zabbix')).toEqual({ peer: HOLDER, term: 4 });
  });

  it('counts primaries in the heartbeats held now, and remembers them after the primary resigned', async () => {
    let current = [{ peer: HOLDER, term: 2 }];
    const auth = new DepotLeaseAuthority({ voters: () => [], localTerm: () => 1, current: () => current });
    expect(await auth.holder('zabbix')).toEqual({ peer: HOLDER, term: 2 });
    current = [];
    expect(await auth.holder('zabbix')).toEqual({ peer: HOLDER, term: 2 });
  });

  it('an election message speaks for the depot its pilot id names', () => {
    const view = initialView(['v']);
    expect(senderOf({ type: 'vote-request', v: 1, service: 's', term: 1, candidate: `${HOLDER}/c/1`, syncTime: 0, seq: 1, view })).toBe(HOLDER);
    expect(senderOf({ type: 'lease-release', v: 1, service: 's', term: 1, holder: `${ATTACKER}/c/1` })).toBe(ATTACKER);
  });

  it('one strict pattern for every name that becomes a path', () => {
    for (const ok of ['zabbix', 'zabbix-1a2b3c', 'web_1', 'A1']) expect(SafeName.safeParse(ok).success).toBe(true);
    for (const bad of ['', '..', '../x', 'a/b', '.hidden', '-x', 'a.json', 'x'.repeat(65), 'a\u0000b', 'é']) expect(SafeName.safeParse(bad).success).toBe(false);
    const a = { spec, container: '../../etc/cron.d/x', view: initialView(['v']), term: 1 };
    expect(PilotAssignment.safeParse(a).success).toBe(false);
  });
});

describe('control guard', () => {
  it('serves this depot always, the holder in its term, and refuses everyone else with a count, one log line per peer and method, no crash', async () => {
    const { guard, registry, lines } = guardWith({ peer: HOLDER, term: 7 });
    await guard.requireHolder(local, 'pilot.assign', 'zabbix');
    await guard.requireHolder(peer(HOLDER), 'pilot.assign', 'zabbix', { term: 7, termRequired: true });
    for (let i = 0; i < 3; i++) expect((await refusal(guard.requireHolder(peer(ATTACKER), 'pilot.assign', 'zabbix'))).code).toBe('UNAUTHORIZED');
    expect((await refusal(guard.requireHolder(peer(HOLDER), 'pilot.assign', 'zabbix', { term: 6 }))).message).toContain('names term 6');
    expect((await refusal(guard.requireHolder(peer(HOLDER), 'pilot.assign', 'zabbix', { termRequired: true }))).message).toContain("must name the lease's term");
    expect((await refusal(guard.requireHolder(peer(HOLDER), 'pilot.assign', '../etc'))).message).toContain('not a valid name');
    expect(() => guard.requireLocal(peer(HOLDER), 'x.y')).toThrow(/served only to this depot/);
    expect(guard.counts()).toEqual({ 'pilot.assign': 6, 'x.y': 1 });
    expect(await registry.getSingleMetricAsString('navigator_peer_refused_total')).toContain('navigator_peer_refused_total{kind="pilot.assign"} 6');
    const logged = lines.filter((l) => l.event === 'peer-refused');
    // (attacker, pilot.assign), (holder, pilot.assign), (holder, x.y): once each.
    expect(logged.map((l) => `${String(l.peer).slice(8, 12)} ${String(l.kind)}`)).toEqual(['Atta pilot.assign', 'Hold pilot.assign', 'Hold x.y']);
  });

  it('fails closed before the pilots say who holds what', async () => {
    const guard = new ControlGuard({ logger: capturingLogger().logger });
    expect((await refusal(guard.requireHolder(peer(HOLDER), 'container.start', 'zabbix'))).message).toContain('no known lease holder');
    await guard.requireHolder(local, 'container.start', 'zabbix');
  });
});

describe('pilot methods', () => {
  function setup(holder: LeaseHolder | undefined = { peer: HOLDER, term: 3 }) {
    const { guard } = guardWith(holder);
    const assigned: unknown[] = [];
    const campaigns: string[] = [];
    const resigned: string[] = [];
    const removed: string[] = [];
    const pilot = { spec: { name: 'zabbix' }, role: 'standby', term: 3, campaign: (r: string) => campaigns.push(r), resign: async (r: string) => void resigned.push(r) };
    const supervisor = {
      assign: async (a: unknown) => void assigned.push(a),
      forget: async () => undefined,
      pilotFor: (s: string) => (s === 'zabbix' ? pilot : undefined),
      pilotOf: (c: string) => (c === 'zabbix-1' ? pilot : undefined),
    } as unknown as PilotSupervisor;
    const containers = {
      list: () => [{ id: 'zabbix-2', service: 'zabbix' }, { id: 'other-1', service: 'other' }] as ContainerStatus[],
      removeContainer: async (id: string) => void removed.push(id),
    } as unknown as ContainerManager;
    const r = registrar();
    registerPilotControl(r, { supervisor, containers, selfName: 'w1', guard });
    return { r, guard, assigned, campaigns, resigned, removed };
  }
  const assignment = { spec, container: 'zabbix-2', view: initialView([HOLDER]), term: 3 };

  it('pilot.assign: only from the holder, in its term, never campaigning, for a copy this depot runs of that service', async () => {
    const { r, guard, assigned } = setup();
    expect((await refusal(r.call('pilot.assign', { ...assignment, campaign: true, spec: { ...spec, address: '10.0.0.1/24' } }, peer(ATTACKER)))).code).toBe('UNAUTHORIZED');
    expect((await refusal(r.call('pilot.assign', { ...assignment, term: 2 }, peer(HOLDER)))).code).toBe('UNAUTHORIZED');
    expect((await refusal(r.call('pilot.assign', { ...assignment, campaign: true }, peer(HOLDER)))).message).toContain('cannot campaign');
    expect((await refusal(r.call('pilot.assign', { ...assignment, container: 'other-1' }, peer(HOLDER)))).code).toBe('NOT_FOUND');
    expect((await refusal(r.call('pilot.assign', { ...assignment, container: '../x' }, peer(HOLDER)))).code).toBe('BAD_REQUEST');
    expect(assigned).toEqual([]);
    await r.call('pilot.assign', assignment, peer(HOLDER));
    await r.call('pilot.assign', { ...assignment, campaign: true, term: 0 }, local);
    expect(assigned).toHaveLength(2);
    expect(guard.counts()['pilot.assign']).toBe(3);
  });

  it('pilot.retire: the service is the one this depot knows the copy by', async () => {
    const { r, removed } = setup({ peer: HOLDER, term: 3 });
    expect((await refusal(r.call('pilot.retire', { container: 'zabbix-2' }, peer(ATTACKER)))).code).toBe('UNAUTHORIZED');
    expect((await refusal(r.call('pilot.retire', { container: '../../voters/zabbix' }, peer(HOLDER)))).code).toBe('BAD_REQUEST');
    expect((await refusal(r.call('pilot.retire', { container: 'nope' }, peer(HOLDER)))).code).toBe('NOT_FOUND');
    await r.call('pilot.retire', { container: 'zabbix-2' }, peer(HOLDER));
    expect(removed).toEqual(['zabbix-2']);
  });

  it('pilot.campaign from the holder in its term; pilot.resign only from this depot', async () => {
    const { r, campaigns, resigned } = setup();
    expect((await refusal(r.call('pilot.campaign', { service: 'zabbix', term: 3 }, peer(ATTACKER)))).code).toBe('UNAUTHORIZED');
    expect((await refusal(r.call('pilot.campaign', { service: 'zabbix' }, peer(HOLDER)))).code).toBe('UNAUTHORIZED');
    await r.call('pilot.campaign', { service: 'zabbix', term: 3 }, peer(HOLDER));
    expect(campaigns).toEqual(['switchover']);
    // On the primary, the holder is this depot itself: no peer is.
    const own = setup({ peer: 'self', term: 3 });
    expect((await refusal(own.r.call('pilot.resign', { service: 'zabbix' }, peer(HOLDER)))).code).toBe('UNAUTHORIZED');
    await own.r.call('pilot.resign', { service: 'zabbix' }, local);
    expect(own.resigned).toEqual(['switchover requested']);
    expect(resigned).toEqual([]);
  });
});

describe('container and image methods', () => {
  it('container.exec is not served; start and stop need the holder', async () => {
    const { guard } = guardWith({ peer: HOLDER, term: 2 });
    const started: unknown[] = [];
    const containers = {
      startContainer: async (p: unknown) => void started.push(p),
      stopContainer: async () => ({ forced: false }),
      status: async (id: string) => ({ id, service: 'zabbix' }),
      list: () => [],
    } as unknown as ContainerManager;
    const r = registrar();
    registerContainerControl(r, containers, guard);
    expect(r.methods()).toEqual(['container.start', 'container.status', 'container.stop']);
    const start = { id: 'zabbix-9', service: 'zabbix', spec: { driver: 'process' }, term: 2 };
    expect((await refusal(r.call('container.start', start, peer(ATTACKER)))).code).toBe('UNAUTHORIZED');
    expect((await refusal(r.call('container.stop', { id: 'zabbix-9' }, peer(ATTACKER)))).code).toBe('UNAUTHORIZED');
    await r.call('container.start', start, peer(HOLDER));
    await r.call('container.stop', { id: 'zabbix-9' }, peer(HOLDER));
    expect(started).toHaveLength(1);
  });

  it('image.prepare from the holder of the image\'s service; commit and abort only from the depot that prepared', async () => {
    const { guard } = guardWith({ peer: HOLDER, term: 2 });
    const calls: string[] = [];
    const id = 'b'.repeat(64);
    const store = {
      prepareReceive: async () => ({ state: 'staging', id, filesDir: '/srv/staging/x/files', resumed: false, missing: [], missingBytes: 0, totalBytes: 0 }),
      commitStaged: async () => (calls.push('commit'), { ok: true, id, verifiedBytes: 0 }),
      abortStaged: async () => void calls.push('abort'),
    } as unknown as ImageStore;
    const r = registrar();
    registerImageControl(r, store, { guard });
    const manifest = { format: 1, name: 'zabbix', version: '1', created: new Date(0).toISOString(), blockSize: 1 << 20, files: [] };
    expect((await refusal(r.call('image.prepare', { manifest }, peer(ATTACKER)))).code).toBe('UNAUTHORIZED');
    expect((await refusal(r.call('image.commit', { image: id }, peer(HOLDER)))).code).toBe('UNAUTHORIZED');
    await r.call('image.prepare', { manifest }, peer(HOLDER));
    expect((await refusal(r.call('image.commit', { image: id }, peer(ATTACKER)))).code).toBe('UNAUTHORIZED');
    expect((await refusal(r.call('image.abort', { image: id }, peer(ATTACKER)))).code).toBe('UNAUTHORIZED');
    await r.call('image.commit', { image: id }, peer(HOLDER));
    await r.call('image.abort', { image: id }, local);
    expect(calls).toEqual(['commit', 'abort']);
  });
});

describe('heartbeat claims about copies', () => {
  it('a primary counts only copies heard of before it took over, or placed by it; later claims are ignored', () => {
    let now = 1000;
    const keeper = new StandbyKeeper({ self: { peerId: 'self', name: 'w1', incarnation: 1 }, members: { view: () => [] }, logger: silentLogger() } as unknown as ConstructorParameters<typeof StandbyKeeper>[0]);
    const copy = (peerId: string, id: string) => ({ peerId, report: { id } }) as unknown as CopyView;
    keeper.observeCopies('w2', [{ id: 'zabbix-2', service: 'zabbix' }], now);
    const pilot = { spec: { name: 'zabbix' }, term: 4 } as unknown as Pilot;
    // The takeover: the first look of term 4.
    expect(keeper.trusts(pilot, copy('w2', 'zabbix-2'))).toBe(true);
    now = Date.now() + 1000;
    keeper.observeCopies('attacker', [{ id: 'evil-s', service: 'zabbix' }], now);
    expect(keeper.trusts(pilot, copy('attacker', 'evil-s'))).toBe(false);
    expect(keeper.trusts(pilot, copy('self', 'zabbix-1'))).toBe(true);
  });
});
