import { describe, it, expect } from 'vitest';
import { rankHosts, formatRanking, type PlacementCandidate, type PlacementRequirements } from '../../pilot/placement.ts';
import { explainPolicy, policyWarnings, quietWindowAt, servicePolicy } from '../../pilot/policy.ts';
import { planStandbys, type StandbyPlanInput } from '../../pilot/standby-plan.ts';
import type { CopyView } from '../../pilot/pilot.ts';
import type { ContainerReport } from '../../shared/wire.ts';
import { PolicySection, parseQuietWindow } from '../../shared/config-policy.ts';
import { AlertsSection } from '../../shared/config-alerts.ts';
import { parseConfig } from '../../shared/config.ts';
import { isNavigatorError } from '../../shared/errors.ts';
import { explainConfig } from '../../cli/commands/config.ts';

// The admin's policy, pure: each placement rule (weights, excluded, pinned, anti-affinity groups)
// and which rule decided each ranking; standby keeping with groups and quiet hours; the quiet
// window parser; what `navigator config check` says and refuses.

const GiB = 1024 ** 3;
const IMAGE = 'a'.repeat(64);
const NOW = Date.UTC(2026, 10, 20, 17, 0, 0); // a Friday, 17:00 UTC

function host(name: string, over: Partial<PlacementCandidate> = {}): PlacementCandidate {
  return { name, peerId: `peer-${name}`, state: 'alive', uptimeS: 86_400, load: [0.5, 0.5, 0.5], cpus: 4, memFreeBytes: 8 * GiB, memTotalBytes: 16 * GiB, diskFreeBytes: 100 * GiB, images: [], copies: [], ...over };
}
const req: PlacementRequirements = { service: 'zabbix', memBytes: GiB, diskBytes: GiB, image: IMAGE };
const policy = (p: object) => servicePolicy(PolicySection.parse(p), 'zabbix');
const order = (r: ReturnType<typeof rankHosts>) => r.ranking.map((h) => h.name);

describe('placement policy', () => {
  it('weights from the policy change the ranking', () => {
    const hosts = [host('staged', { images: [IMAGE], uptimeS: 600 }), host('old', { uptimeS: 30 * 86_400 })];
    expect(order(rankHosts(hosts, req, NOW, { policy: policy({ weights: { image: 0, uptime: 1 } }) }))).toEqual(['old', 'staged']);
    expect(order(rankHosts(hosts, req, NOW, { policy: policy({ weights: { image: 5 } }) }))).toEqual(['staged', 'old']);
    expect(rankHosts(hosts, req, NOW, { policy: policy({ weights: { image: 5 } }) }).weights.image).toBe(5);
    expect(() => rankHosts(hosts, req, NOW, { policy: policy({ weights: { uptime: 0, memory: 0, cpu: 0, session: 0, image: 0 } }) })).toThrow(/all 0/);
  });

  it('excluded hosts (for all services or for one) are never ranked, with the field that excluded them', () => {
    const r = rankHosts([host('a'), host('b'), host('teacher')], req, NOW, { policy: policy({ excludedHosts: ['teacher'], services: { zabbix: { excluded: ['b'] } } }) });
    expect(order(r)).toEqual(['a']);
    expect(r.excluded).toEqual([
      { name: 'b', reasons: ['excluded by policy.services.zabbix.excluded'] },
      { name: 'teacher', reasons: ['excluded by policy.excludedHosts'] },
    ]);
    // Another service is not concerned by zabbix's exclusions.
    expect(order(rankHosts([host('a'), host('b')], { ...req, service: 'other' }, NOW, { policy: servicePolicy(PolicySection.parse({ services: { zabbix: { excluded: ['b'] } } }), 'other') })).sort()).toEqual(['a', 'b']);
  });

  it('pinned hosts rank first whenever eligible, and say so', () => {
    const weak = host('pinned-pc', { load: [3.9, 3.9, 3.9], uptimeS: 60 });
    const r = rankHosts([host('strong'), weak], req, NOW, { policy: policy({ services: { zabbix: { pinned: ['pinned-pc'] } } }) });
    expect(order(r)).toEqual(['pinned-pc', 'strong']);
    expect(r.ranking[0]).toMatchObject({ tier: 0, rule: 'pinned for zabbix: ranked before unpinned hosts' });
    expect(r.ranking[1]!.rule).toMatch(/^score 0\.\d{3} \(largest share: \w+ 0\.\d{3}\)$/);
    // Not eligible (too little memory): a pin does not override an exclusion.
    const full = rankHosts([host('strong'), host('pinned-pc', { memFreeBytes: 0 })], req, NOW, { policy: policy({ services: { zabbix: { pinned: ['pinned-pc'] } } }) });
    expect(order(full)).toEqual(['strong']);
  });

  it('anti-affinity: never in the primary\'s group; a standby\'s group only after every other host', () => {
    const groups = { w1: 'strip-a', w2: 'strip-a', w3: 'strip-b', w4: 'strip-c' };
    const p = policy({ groups, services: { zabbix: { pinned: ['w2'] } } });
    const r = rankHosts([host('w2'), host('w3'), host('w4', { load: [0, 0, 0] })], { ...req, primaryGroup: 'strip-a', standbyGroups: ['strip-c'] }, NOW, { policy: p });
    expect(order(r)).toEqual(['w3', 'w4']);
    expect(r.excluded).toEqual([{ name: 'w2', reasons: ['group strip-a holds the primary (anti-affinity: never primary and standby in one group)'] }]);
    expect(r.ranking[1]).toMatchObject({ name: 'w4', tier: 2, group: 'strip-c', rule: 'group strip-c already holds a standby: ranked after hosts in other groups' });
    const text = formatRanking(r);
    expect(text).toContain('decided by');
    expect(text).toContain('policy in force:');
    expect(text).toContain('groups: w1=strip-a, w2=strip-a, w3=strip-b, w4=strip-c');
  });
});

function copy(hostName: string, role: 'primary' | 'standby', over: Partial<ContainerReport> = {}): CopyView {
  return {
    peerId: `peer-${hostName}`,
    host: hostName,
    depotState: 'alive',
    incarnation: 1,
    address: '10.0.0.1',
    report: { id: `zabbix-${hostName}`, service: 'zabbix', image: IMAGE, driver: 'process', state: 'running', role, term: 3, syncFailing: false, ...over },
  };
}

function plan(copies: CopyView[], p: object, over: Partial<StandbyPlanInput> = {}) {
  return planStandbys({
    service: { name: 'zabbix', standbys: 1, memoryBytes: GiB, diskBytes: GiB, image: IMAGE },
    copies,
    candidates: ['w1', 'w2', 'w3', 'w4'].map((n) => host(n, { copies: copies.some((c) => c.host === n) ? ['zabbix'] : [] })),
    recentlyPlaced: [],
    failedHosts: new Map(),
    now: NOW,
    placedGraceMs: 10_000,
    placementRetryMs: 30_000,
    policy: policy(p),
    ...over,
  }).decision;
}

describe('standby keeping with the policy', () => {
  const groups = { w1: 'strip-a', w2: 'strip-a', w3: 'strip-b', w4: 'strip-b' };

  it('places the standby outside the primary\'s group', () => {
    const d = plan([copy('w1', 'primary')], { groups, services: { zabbix: { pinned: ['w2'] } } });
    expect(d).toMatchObject({ kind: 'place', why: 'missing' });
    expect(d.kind === 'place' && ['w3', 'w4'].includes(d.target.name)).toBe(true);
  });

  it('a standby in the primary\'s group (after a failover) is replaced, then retired; not in quiet hours', () => {
    const misplaced = [copy('w1', 'primary'), copy('w2', 'standby')];
    const d = plan(misplaced, { groups });
    expect(d).toMatchObject({ kind: 'place', why: 'anti-affinity', replacing: false });
    // Once the new one runs, the one in the primary's group goes (not the freshest-synced other).
    const after = plan([...misplaced, copy('w3', 'standby', { lastSyncAt: 1 })], { groups });
    expect(after).toMatchObject({ kind: 'retire', copy: { host: 'w2' } });
    // Quiet hours: neither the repair nor the retirement; pre-staging goes on.
    const quiet = { groups, quietHours: ['16:00-18:00'] };
    expect(plan(misplaced, quiet, { quiet: '16:00-18:00' })).toEqual({ kind: 'prestage' });
    expect(plan([...misplaced, copy('w3', 'standby')], quiet, { quiet: '16:00-18:00' })).toMatchObject({ kind: 'wait', reason: expect.stringMatching(/quiet hours/) });
    // A lost standby is replaced even in quiet hours (recovery is not a planned move).
    expect(plan([copy('w1', 'primary')], quiet, { quiet: '16:00-18:00' })).toMatchObject({ kind: 'place', why: 'missing' });
  });

  it('the policy\'s standbys per service win over the bootstrap\'s', () => {
    expect(servicePolicy(PolicySection.parse({ services: { zabbix: { standbys: 2 } } }), 'zabbix').standbys).toBe(2);
    expect(servicePolicy(PolicySection.parse({}), 'zabbix').standbys).toBeUndefined();
  });
});

describe('quiet hours', () => {
  it('parses windows with days and past midnight', () => {
    expect(parseQuietWindow('22:00-06:00')).toMatchObject({ fromMin: 1320, toMin: 360, days: [0, 1, 2, 3, 4, 5, 6] });
    expect(parseQuietWindow('mon-fri 12:00-13:30')).toMatchObject({ days: [1, 2, 3, 4, 5], fromMin: 720, toMin: 810 });
    expect(parseQuietWindow('fri-mon 00:00-24:00').days).toEqual([0, 1, 5, 6]);
    expect(() => parseQuietWindow('25:00-26:00')).toThrow(/not a quiet window/);
    expect(() => parseQuietWindow('12:00-12:00')).toThrow(/empty/);
  });

  it('knows whether now is inside, in local time', () => {
    const p = { quietHours: ['22:00-06:00', 'sat,sun 00:00-24:00'] };
    const at = (day: number, h: number, m = 0) => Date.UTC(2026, 10, 15 + day, h, m); // 2026-11-15 is a Sunday
    expect(quietWindowAt(p, at(1, 23), 0)?.text).toBe('22:00-06:00');
    expect(quietWindowAt(p, at(2, 5, 59), 0)?.text).toBe('22:00-06:00');
    expect(quietWindowAt(p, at(2, 6), 0)).toBeUndefined();
    expect(quietWindowAt(p, at(6, 12), 0)?.text).toBe('sat,sun 00:00-24:00');
    // 21:30 UTC is 22:30 one hour east of UTC.
    expect(quietWindowAt(p, at(2, 21, 30), 60)?.text).toBe('22:00-06:00');
  });
});

describe('navigator config check', () => {
  it('refuses a wrong policy, naming the field', () => {
    const err = (() => {
      try {
        parseConfig({ policy: { quietHours: ['late'], services: { Zabbix: {} }, weights: { speed: 1 } } });
      } catch (e) {
        return e;
      }
    })();
    expect(isNavigatorError(err, 'CONFIG_INVALID')).toBe(true);
    const msg = (err as Error).message;
    expect(msg).toContain('policy.quietHours.0: "late" is not a quiet window');
    expect(msg).toContain('policy.services');
    expect(msg).toContain('policy.weights');
  });

  it('explains the policy and the alerts and warns of likely mistakes, never printing a secret', () => {
    const cfg = parseConfig({
      policy: {
        excludedHosts: ['teacher'],
        groups: { ws1: 'strip-a', ws2: 'strip-a', ws3: 'strip-b' },
        quietHours: ['22:00-06:00'],
        services: { zabbix: { standbys: 2, pinned: ['ws1', 'ws2', 'teacher'] } },
      },
      alerts: { webhookUrl: 'http://hooks.lab:8080/navigator', webhookSecret: 's3cret-key', mailTo: ['admin@lab.example'], smtpUser: 'nav', smtpPassword: 'p4ssword' },
    });
    const text = explainConfig(cfg, NOW);
    expect(text).toContain('never a copy on: teacher (policy.excludedHosts)');
    expect(text).toContain('anti-affinity groups (never primary and standby in one): strip-a: ws1, ws2; strip-b: ws3');
    expect(text).toContain('service zabbix: 2 standbys; pinned ws1, ws2, teacher');
    expect(text).toMatch(/quiet hours \(local time; no planned moves\): 22:00-06:00; now (inside|outside)/);
    expect(text).toContain('webhook: POST http://hooks.lab:8080/navigator; HMAC key set inline in the configuration');
    expect(text).toContain('policy.services.zabbix.pinned names teacher, which policy.excludedHosts excludes');
    expect(text).toContain('ws1 and ws2 are both in group strip-a');
    expect(text).toContain('alerts.smtpPassword is set inline');
    expect(text).toContain('set alerts.smtpRequireTls');
    expect(text).not.toContain('s3cret-key');
    expect(text).not.toContain('p4ssword');
    expect(explainPolicy({ policy: PolicySection.parse({}) }, NOW)).toContain('no quiet hours: planned moves may happen at any time');
    expect(policyWarnings({ policy: PolicySection.parse({}), pilot: cfg.pilot })).toEqual([]);
    expect(AlertsSection.safeParse({ webhookUrl: 'ftp://x' }).success).toBe(false);
  });
});
