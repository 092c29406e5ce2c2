import { describe, it, expect } from 'vitest';
import { AlertsSection } from '../../shared/config-alerts.ts';
import { AlertEngine, joinAlerts, type AlertEvent, type EngineSettings, type Send } from '../../depot/alerts/engine.ts';
import { currentConditions, protectedServices, trackConditions, type ServiceState } from '../../depot/alerts/conditions.ts';
import { chooseSender } from '../../depot/alerts/sender.ts';
import type { AlertRecord } from '../../shared/alert.ts';

// The alert engine under a fake clock: thresholds, resolve hold, events joined or not, retries
// with backoff, the rate limit, and a sender that changes: the table merged from gossip makes the
// next sender neither repeat nor lose a notification.

const cfg = AlertsSection.parse({});
const settings = (over: Partial<EngineSettings> = {}): EngineSettings => ({ ...cfg, channels: ['webhook', 'mail'], resolveAfterMs: 10_000, ...over });
const T0 = 1_700_000_000_000;

const copy = (host: string, role: 'primary' | 'standby', state = 'running', extra: object = {}) => ({ host, role, state, term: 3, ...extra });
const svc = (...copies: ReturnType<typeof copy>[]): ServiceState[] => [{ service: 'zabbix', copies }];

/** One engine with its condition tracker: what the plugin does each second. */
function runner(s = settings()) {
  const engine = new AlertEngine(s);
  const since = new Map<string, number>();
  return {
    engine,
    step(now: number, services: ServiceState[], sending = true) {
      const conditions = trackConditions(since, currentConditions(services, [], now, { ...cfg, unprotectedAfterMs: 5000, downAfterMs: 2000 }), now);
      return engine.step({ now, sending, self: 'a', conditions, protectedServices: protectedServices(services) });
    },
  };
}

const ok = (engine: AlertEngine, sends: Send[], now: number) => sends.flatMap((s) => engine.delivered(s, { ok: true }, now));
const phases = (sends: Send[]) => sends.flatMap((s) => s.notifications.map((n) => `${s.channel}:${n.alert.type}:${n.phase}`)).sort();

describe('alert engine', () => {
  it('opens a condition after its threshold, sends once per channel, resolves after the hold', () => {
    const r = runner();
    const unprotected = svc(copy('ws1', 'primary'));
    expect(r.step(T0, unprotected).sends).toEqual([]);
    expect(r.step(T0 + 4000, unprotected).sends).toEqual([]);
    const open = r.step(T0 + 5000, unprotected);
    expect(phases(open.sends)).toEqual(['mail:unprotected:open', 'webhook:unprotected:open']);
    expect(open.changed).toHaveLength(1);
    const alert = open.changed[0]!;
    expect(alert.id).toBe(`unprotected/zabbix@${T0 + 5000}`);
    expect(alert.details.since).toBe(new Date(T0).toISOString());
    ok(r.engine, open.sends, T0 + 5100);
    expect(r.step(T0 + 6000, unprotected).sends).toEqual([]);
    // Protected again, but only for 5 s: no resolve (flap damping); then 10 s: resolved, once.
    const fine = svc(copy('ws1', 'primary'), copy('ws2', 'standby'));
    r.step(T0 + 7000, fine);
    r.step(T0 + 12_000, fine);
    r.step(T0 + 13_000, unprotected);
    expect(r.engine.openAlerts()).toHaveLength(1);
    r.step(T0 + 14_000, fine);
    expect(r.step(T0 + 23_000, fine).sends).toEqual([]);
    const resolved = r.step(T0 + 24_000, fine);
    expect(phases(resolved.sends)).toEqual(['mail:unprotected:resolved', 'webhook:unprotected:resolved']);
    expect(resolved.changed[0]!.resolveSummary).toMatch(/unprotected cleared after/);
    ok(r.engine, resolved.sends, T0 + 24_100);
    expect(r.step(T0 + 30_000, fine).sends).toEqual([]);
    expect(r.engine.openAlerts()).toEqual([]);
  });

  it('a depot that is not the sender opens nothing and sends nothing', () => {
    const r = runner();
    for (let t = 0; t <= 60_000; t += 1000) expect(r.step(T0 + t, svc(copy('ws1', 'primary')), false)).toEqual({ changed: [], sends: [] });
    expect(r.engine.table()).toEqual([]);
  });

  it('a failover is one alert, resolved when the service is protected again', () => {
    const r = runner();
    const ev: AlertEvent = { id: 'm-1', key: 'failover/zabbix/m-1', type: 'failover', severity: 'critical', service: 'zabbix', host: 'ws2', summary: 'zabbix failed over', details: {}, at: T0 };
    expect(r.engine.addEvent(ev, T0 + 100)).toBe(true);
    const out = r.step(T0 + 1000, svc(copy('ws2', 'primary')));
    expect(phases(out.sends)).toEqual(['mail:failover:open', 'webhook:failover:open']);
    ok(r.engine, out.sends, T0 + 1100);
    // The same record again (gap filling, gossip twice): nothing new.
    expect(r.engine.addEvent(ev, T0 + 2000)).toBe(false);
    const fine = svc(copy('ws2', 'primary'), copy('ws3', 'standby'));
    r.step(T0 + 3000, fine);
    const done = r.step(T0 + 13_000, fine);
    expect(phases(done.sends)).toEqual(['mail:failover:resolved', 'webhook:failover:resolved']);
    expect(done.changed[0]!.resolveSummary).toMatch(/protected again/);
    // Too old when first seen (a journal filled after a restart): no alert.
    expect(r.engine.addEvent({ ...ev, id: 'm-0', key: 'failover/zabbix/m-0', at: T0 - cfg.eventMaxAgeMs - 1 }, T0)).toBe(false);
  });

  it('repeated events of one subject join one alert, resolved after a quiet time', () => {
    const r = runner(settings({ eventQuietMs: 60_000 }));
    const refused = (n: number): AlertEvent => ({ id: `n-${n}`, key: 'peer-refused/12D3Koo', type: 'peer-refused', severity: 'warning', service: '', host: 'ws1', summary: `refusal ${n}`, details: {}, at: T0 + n * 1000 });
    r.engine.addEvent(refused(0), T0);
    const first = r.step(T0 + 500, []);
    expect(phases(first.sends)).toEqual(['mail:peer-refused:open', 'webhook:peer-refused:open']);
    ok(r.engine, first.sends, T0 + 600);
    for (let n = 1; n <= 3; n++) {
      r.engine.addEvent(refused(n), T0 + n * 1000);
      expect(r.step(T0 + n * 1000 + 500, []).sends).toEqual([]);
    }
    expect(r.engine.openAlerts()[0]).toMatchObject({ count: 4, summary: 'refusal 3' });
    expect(r.step(T0 + 62_000, []).sends).toEqual([]);
    const done = r.step(T0 + 63_000, []);
    expect(phases(done.sends)).toEqual(['mail:peer-refused:resolved', 'webhook:peer-refused:resolved']);
    expect(done.changed[0]!.resolveSummary).toMatch(/4 in all/);
  });

  it('retries a failed channel with backoff; the other channel is not held up', () => {
    const r = runner(settings({ retryBaseMs: 1000, retryMaxMs: 4000 }));
    r.engine.addEvent({ id: 'e', key: 'failover/zabbix/e', type: 'failover', severity: 'critical', service: 'zabbix', host: 'ws2', summary: 's', details: {}, at: T0 }, T0);
    let out = r.step(T0, []);
    const hook = out.sends.find((s) => s.channel === 'webhook')!;
    r.engine.delivered(hook, { ok: false, error: 'POST http://x/: ECONNREFUSED' }, T0 + 10);
    ok(r.engine, out.sends.filter((s) => s.channel === 'mail'), T0 + 10);
    const attempts: number[] = [];
    for (let t = 100; t <= 20_000; t += 100) {
      out = r.step(T0 + t, []);
      for (const s of out.sends) {
        expect(s.channel).toBe('webhook');
        attempts.push(t);
        if (attempts.length < 4) r.engine.delivered(s, { ok: false, error: 'HTTP 503' }, T0 + t);
        else ok(r.engine, [s], T0 + t);
      }
    }
    // 1 s, then 2 s, 4 s, 4 s (capped) after each failure.
    expect(attempts).toEqual([1100, 3100, 7100, 11100]);
    expect(r.engine.channelStatus(T0 + 20_000).find((c) => c.channel === 'webhook')).toMatchObject({ failures: 0, pending: 0, sent: 1 });
    expect(r.engine.table()[0]!.sentOpen).toEqual(['mail', 'webhook']);
  });

  it('rate-limits each channel; what waits goes out together', () => {
    const r = runner(settings({ maxPerHour: 2, channels: ['webhook'] }));
    const ev = (n: number): AlertEvent => ({ id: `e${n}`, key: `failover/zabbix/e${n}`, type: 'failover', severity: 'critical', service: 'zabbix', host: 'h', summary: `#${n}`, details: {}, at: T0 + n });
    const sent: string[][] = [];
    for (let n = 0; n < 5; n++) {
      r.engine.addEvent(ev(n), T0 + n * 1000);
      const out = r.step(T0 + n * 1000 + 1, []);
      for (const s of out.sends) {
        sent.push(s.notifications.map((x) => x.alert.summary));
        ok(r.engine, [s], T0 + n * 1000 + 2);
      }
    }
    expect(sent).toEqual([['#0'], ['#1']]);
    // One token back after half an hour: the three that waited go in one message.
    const later = r.step(T0 + 1_800_000 + 5000, []);
    expect(later.sends.map((s) => s.notifications.map((x) => x.alert.summary))).toEqual([['#2', '#3', '#4']]);
  });

  it('gives up a notification after giveUpAfterMs and skips what is below minSeverity', () => {
    const r = runner(settings({ giveUpAfterMs: 10_000, channels: ['webhook'], minSeverity: 'critical' }));
    r.engine.addEvent({ id: 'w', key: 'peer-refused/p', type: 'peer-refused', severity: 'warning', service: '', host: 'h', summary: 'w', details: {}, at: T0 }, T0);
    r.engine.addEvent({ id: 'c', key: 'failover/zabbix/c', type: 'failover', severity: 'critical', service: 'zabbix', host: 'h', summary: 'c', details: {}, at: T0 }, T0);
    const out = r.step(T0, []);
    expect(phases(out.sends)).toEqual(['webhook:failover:open']);
    r.engine.delivered(out.sends[0]!, { ok: false, error: 'down' }, T0);
    for (let t = 1000; t <= 12_000; t += 1000) for (const s of r.step(T0 + t, []).sends) r.engine.delivered(s, { ok: false, error: 'down' }, T0 + t);
    expect(r.engine.channelStatus(T0 + 12_000)[0]!.pending).toBe(0);
    expect(r.engine.givenUp('webhook')).toBe(1);
    expect(r.engine.table().every((a) => a.skipped.includes('webhook'))).toBe(true);
  });

  it('a new sender neither repeats nor loses a notification (table merged from gossip)', () => {
    const a = runner();
    const b = runner();
    const gossip = (from: AlertEngine, to: AlertEngine, records: AlertRecord[]) => to.merge(records);
    const unprotected = svc(copy('ws1', 'primary'));
    // Both see the condition; a sends.
    let t = T0;
    for (; t <= T0 + 5000; t += 1000) {
      b.step(t, unprotected, false);
      const out = a.step(t, unprotected);
      gossip(a.engine, b.engine, out.changed);
      gossip(a.engine, b.engine, ok(a.engine, out.sends, t + 10));
    }
    expect(a.engine.openAlerts()[0]!.sentOpen).toEqual(['mail', 'webhook']);
    expect(b.engine.openAlerts()[0]!.sentOpen).toEqual(['mail', 'webhook']);
    // a dies; b becomes the sender: nothing to send while the condition holds.
    for (; t <= T0 + 20_000; t += 1000) expect(b.step(t, unprotected).sends).toEqual([]);
    // b dies too; a third depot that has only the gossiped table takes over: the unprotected alert
    // clears (resolved once), a new condition opens (sent once), and nothing is repeated.
    const both = svc(copy('ws1', 'primary'), copy('ws2', 'standby', 'running', { syncFailing: true }));
    const c = runner(settings());
    c.engine.merge(b.engine.table());
    const events: string[] = [];
    for (let s = 0; s < 3; s++, t += 60_000) {
      const out = c.step(t, both);
      events.push(...phases(out.sends));
      ok(c.engine, out.sends, t + 10);
    }
    expect(events.sort()).toEqual(['mail:sync-failing:open', 'mail:unprotected:resolved', 'webhook:sync-failing:open', 'webhook:unprotected:resolved']);
  });

  it('events seen by a depot that is not the sender are alerted by the next sender, once', () => {
    const b = runner();
    const ev: AlertEvent = { id: 'n1', key: 'image-verify-failed/ws3/abc', type: 'image-verify-failed', severity: 'warning', service: '', host: 'ws3', summary: 'bad image', details: {}, at: T0 };
    b.engine.addEvent(ev, T0);
    expect(b.step(T0 + 1000, [], false).sends).toEqual([]);
    const out = b.step(T0 + 2000, []);
    expect(phases(out.sends)).toEqual(['mail:image-verify-failed:open', 'webhook:image-verify-failed:open']);
    // Another depot heard the same notice; the sender's record covers it.
    const c = runner();
    c.engine.addEvent(ev, T0 + 500);
    c.engine.merge(out.changed);
    const ids = c.step(T0 + 3000, []).sends.flatMap((s) => s.notifications).map((n) => n.alert.id);
    expect(new Set(ids).size).toBe(1);
    expect(c.engine.table()).toHaveLength(1);
  });

  it('two open alerts of one key (two senders for a moment) keep the older one', () => {
    const r = runner();
    const base = { key: 'service-down/zabbix', type: 'service-down', severity: 'critical', service: 'zabbix', host: '', summary: 'down', details: {}, count: 1, superseded: false, openedBy: 'x' } as const;
    const lists = { events: [], sentOpen: [], sentResolve: [], skipped: [] };
    r.engine.merge([
      { ...base, ...lists, id: `service-down/zabbix@${T0}`, openedAt: T0, lastAt: T0 },
      { ...base, ...lists, id: `service-down/zabbix@${T0 + 5}`, openedAt: T0 + 5, lastAt: T0 + 5 },
    ]);
    const out = r.step(T0 + 100, svc(copy('ws1', 'standby')));
    expect(out.changed.map((a) => [a.id, a.superseded])).toEqual([[`service-down/zabbix@${T0 + 5}`, true]]);
    expect(out.sends.flatMap((s) => s.notifications.map((n) => n.alert.id))).toEqual([`service-down/zabbix@${T0}`, `service-down/zabbix@${T0}`]);
  });

  it('joins copies of one alert in any order', () => {
    const a: AlertRecord = { id: 'k@1', key: 'k', type: 'unprotected', severity: 'warning', service: 's', host: '', summary: 'x', details: {}, openedAt: 1, count: 1, lastAt: 1, events: [], sentOpen: ['mail'], sentResolve: [], skipped: [], superseded: false, openedBy: 'a' };
    const b: AlertRecord = { ...a, sentOpen: ['webhook'], resolvedAt: 50, resolveSummary: 'done' };
    const c: AlertRecord = { ...a, count: 3, lastAt: 9, summary: 'y' };
    const abc = joinAlerts(joinAlerts(a, b), c);
    expect(joinAlerts(c, joinAlerts(b, a))).toEqual(abc);
    expect(joinAlerts(abc, abc)).toEqual(abc);
    expect(abc).toMatchObject({ sentOpen: ['mail', 'webhook'], resolvedAt: 50, count: 3, summary: 'y' });
  });
});

describe('alert conditions and the sender', () => {
  it('names what is wrong with each service', () => {
    const t = { ...cfg, syncLagMs: 60_000 };
    const conds = currentConditions(
      [
        { service: 'a', copies: [copy('ws1', 'standby')] },
        { service: 'b', copies: [copy('ws1', 'primary'), copy('ws2', 'standby', 'failed')] },
        { service: 'c', copies: [copy('ws1', 'primary'), copy('ws2', 'standby', 'running', { syncFailing: true, lastSyncAt: T0 - 120_000 })] },
      ],
      [{ service: 'c', reporter: 'ws1', lost: true, summary: '1 of 3 voters' }],
      T0,
      t,
    );
    expect(conds.map((c) => c.key)).toEqual(['service-down/a', 'unprotected/b', 'sync-failing/c/ws2', 'sync-lagging/c/ws2', 'quorum-lost/c']);
  });

  it('a standby still being seeded does not protect the service; with no primary, the alert says why it does not take over', () => {
    const seeding = copy('ws2', 'standby', 'running', { seeded: false });
    const [unprotected] = currentConditions([{ service: 'z', copies: [copy('ws1', 'primary'), seeding] }], [], T0, cfg);
    expect(unprotected).toMatchObject({ key: 'unprotected/z', summary: 'z runs on ws1 with no running standby that could take over; the standby on ws2 is not seeded yet (its database is not a complete copy) and cannot take over: the next failure of ws1 is an outage' });
    expect(protectedServices([{ service: 'z', copies: [copy('ws1', 'primary'), seeding] }]).has('z')).toBe(false);
    expect(protectedServices([{ service: 'z', copies: [copy('ws1', 'primary'), copy('ws2', 'standby', 'running', { seeded: true })] }]).has('z')).toBe(true);
    const [down] = currentConditions([{ service: 'z', copies: [seeding] }], [], T0, cfg);
    expect(down).toMatchObject({ key: 'service-down/z', summary: 'z has no running primary; the standby on ws2 is not seeded yet (its database is not a complete copy) and cannot take over' });
  });

  it('replication: a broken replica names its reason; a semisync fallback is a warning of its own', () => {
    const conds = currentConditions(
      [
        {
          service: 'z',
          copies: [
            copy('ws1', 'primary', 'running', { semisyncFallback: true }),
            copy('ws2', 'standby', 'running', { syncFailing: true, replReason: 'source cannot send what the replica needs (error 1236)', lastSyncAt: T0 - 1000 }),
          ],
        },
      ],
      [],
      T0,
      cfg,
    );
    expect(conds.map((c) => [c.key, c.severity])).toEqual([
      ['sync-failing/z/ws2', 'warning'],
      ['semisync-fallback/z/ws1', 'warning'],
    ]);
    expect(conds[0]!.summary).toMatch(/replication: source cannot send .*1236.*reseeded automatically/);
    expect(conds[0]!.details.reason).toMatch(/1236/);
  });

  it('the primary\'s depot sends; with no primary, the live depot with the lowest peer id', () => {
    const m = (peerId: string, state: 'alive' | 'dead', containers: Array<{ service: string; role: string; term: number }> = []) => ({ peerId, name: `n-${peerId}`, state, containers });
    expect(chooseSender([m('a', 'alive'), m('b', 'alive', [{ service: 'z', role: 'primary', term: 2 }]), m('c', 'alive', [{ service: 'z', role: 'standby', term: 2 }])])?.peerId).toBe('b');
    expect(chooseSender([m('b', 'dead', [{ service: 'z', role: 'primary', term: 2 }]), m('d', 'alive'), m('c', 'alive')])).toMatchObject({ peerId: 'c', why: 'lowest live depot (no primary)' });
    expect(chooseSender([m('b', 'alive', [{ service: 'z', role: 'primary', term: 2 }]), m('c', 'alive', [{ service: 'z', role: 'primary', term: 3 }])])?.peerId).toBe('c');
  });
});
