import type { AlertRecord, AlertType, Channel, ChannelStatus } from '../../shared/alert.ts';
import { SEVERITIES, type AlertsConfig, type Severity } from '../../shared/config-alerts.ts';
import type { ActiveCondition, AlertSubject } from './conditions.ts';

// The alert engine: conditions and events in, alerts with ids and notifications out. No I/O and
// no timers: every method takes `now`, so it runs the same under a fake clock in tests.
//
// - Conditions (service down, unprotected, sync failing or lagging, quorum lost) open an alert
//   once they have held their threshold; it is resolved once the condition has stayed clear for
//   resolveAfterMs. Events (a failover in the journal, a notice) open one: a failover or a
//   last-resort recovery is resolved when its service is protected again; a refused peer or a bad
//   image when no other of its kind and subject came for eventQuietMs (repeats join it).
// - One open alert per key; its id (key@openedAt) is the same on every depot. Only the sending
//   depot opens and resolves; every depot merges the table it hears (a join: times, counts and
//   channels delivered only ever grow), so a new sender neither repeats nor loses a notification.
// - Delivery per channel: a message carries every notification pending for it (usually one);
//   at most maxPerHour messages per channel (a token bucket; what waits goes out together); a
//   failed message is tried again after retryBaseMs, doubling up to retryMaxMs; a notification
//   not delivered for giveUpAfterMs is given up.

export type EngineSettings = Pick<
  AlertsConfig,
  'minSeverity' | 'resolveAfterMs' | 'eventQuietMs' | 'maxPerHour' | 'retryBaseMs' | 'retryMaxMs' | 'giveUpAfterMs' | 'eventMaxAgeMs' | 'keepResolvedMs'
> & {
  /** Channels configured on this depot. */
  channels: readonly Channel[];
};

/** A one-shot event: a failover record, a notice. */
export interface AlertEvent extends AlertSubject {
  /** Movement record id or notice id: the same event is never alerted twice. */
  id: string;
  at: number;
}

export interface Notification {
  alert: AlertRecord;
  phase: 'open' | 'resolved';
}

export interface Send {
  channel: Channel;
  notifications: Notification[];
}

export interface StepInput {
  now: number;
  /** This depot is the settled sender: it opens, resolves and delivers. */
  sending: boolean;
  /** This depot's name (openedBy). */
  self: string;
  conditions: readonly ActiveCondition[];
  /** Services with a running primary and a running standby. */
  protectedServices: ReadonlySet<string>;
}

export interface StepOutput {
  /** Records this step changed: gossip them. */
  changed: AlertRecord[];
  sends: Send[];
}

interface ChannelState {
  tokens: number;
  refilledAt: number;
  failures: number;
  nextAttemptAt: number;
  inFlight: boolean;
  sent: number;
  givenUp: number;
  lastError?: string;
  lastErrorAt?: number;
  lastOkAt?: number;
}

/** How an alert of each type clears. */
export function clearRule(type: AlertType): 'condition' | 'protected' | 'quiet' {
  if (type === 'failover' || type === 'last-resort-recovery') return 'protected';
  if (type === 'peer-refused' || type === 'image-verify-failed') return 'quiet';
  return 'condition';
}

const MAX_BATCH = 20;
const MAX_TABLE = 500;
const MAX_PENDING = 1000;
const rank = (s: Severity) => SEVERITIES.indexOf(s);
const union = <T>(a: readonly T[], b: readonly T[]): T[] => [...new Set([...a, ...b])];

export function formatDuration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 120) return `${s} s`;
  const m = Math.round(s / 60);
  if (m < 120) return `${m} min`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, '0')} min`;
}

/** The join of two copies of one alert (same id): commutative, associative, idempotent. */
export function joinAlerts(a: AlertRecord, b: AlertRecord): AlertRecord {
  const newer = b.lastAt > a.lastAt || (b.lastAt === a.lastAt && b.count > a.count) ? b : a;
  const resolved = a.resolvedAt === undefined ? b : b.resolvedAt === undefined ? a : a.resolvedAt <= b.resolvedAt ? a : b;
  const out: AlertRecord = {
    ...newer,
    openedAt: Math.min(a.openedAt, b.openedAt),
    count: Math.max(a.count, b.count),
    lastAt: Math.max(a.lastAt, b.lastAt),
    events: union(a.events, b.events).slice(-32),
    sentOpen: union(a.sentOpen, b.sentOpen).sort(),
    sentResolve: union(a.sentResolve, b.sentResolve).sort(),
    skipped: union(a.skipped, b.skipped).sort(),
    superseded: a.superseded || b.superseded,
    openedBy: a.openedBy || b.openedBy,
  };
  delete out.resolvedAt;
  delete out.resolveSummary;
  if (resolved.resolvedAt !== undefined) {
    out.resolvedAt = resolved.resolvedAt;
    if (resolved.resolveSummary !== undefined) out.resolveSummary = resolved.resolveSummary;
  }
  return out;
}

const same = (a: AlertRecord, b: AlertRecord) => JSON.stringify(a) === JSON.stringify(b);

export class AlertEngine {
  private readonly alerts = new Map<string, AlertRecord>();
  /** Open alert id → since when its condition (or protection) has been seen clear. */
  private readonly clearSince = new Map<string, number>();
  /** Events not yet covered by an alert (every depot keeps them, for the next sender). */
  private readonly pending = new Map<string, AlertEvent>();
  private readonly channels = new Map<Channel, ChannelState>();

  constructor(private readonly s: EngineSettings) {
    for (const ch of s.channels) this.channels.set(ch, { tokens: s.maxPerHour, refilledAt: -Infinity, failures: 0, nextAttemptAt: 0, inFlight: false, sent: 0, givenUp: 0 });
  }

  /** Every alert, open ones first, then newest first. */
  table(): AlertRecord[] {
    return [...this.alerts.values()].sort((a, b) => (a.resolvedAt === undefined) !== (b.resolvedAt === undefined) ? (a.resolvedAt === undefined ? -1 : 1) : b.openedAt - a.openedAt);
  }

  get(id: string): AlertRecord | undefined {
    return this.alerts.get(id);
  }

  openAlerts(): AlertRecord[] {
    return [...this.alerts.values()].filter((a) => a.resolvedAt === undefined && !a.superseded);
  }

  /** Keep an event until an alert covers it. False when too old or already covered. */
  addEvent(ev: AlertEvent, now: number): boolean {
    if (now - ev.at > this.s.eventMaxAgeMs || this.covered(ev) || this.pending.has(ev.id)) return false;
    if (this.pending.size >= MAX_PENDING) this.pending.delete(this.pending.keys().next().value!);
    this.pending.set(ev.id, ev);
    return true;
  }

  /** Records heard from another depot; returns those that changed here. */
  merge(records: readonly AlertRecord[]): AlertRecord[] {
    const changed: AlertRecord[] = [];
    for (const r of records) {
      const mine = this.alerts.get(r.id);
      const next = mine ? joinAlerts(mine, r) : r;
      if (!mine || !same(mine, next)) {
        this.alerts.set(r.id, next);
        changed.push(next);
      }
    }
    for (const ev of [...this.pending.values()]) if (this.covered(ev)) this.pending.delete(ev.id);
    return changed;
  }

  step(input: StepInput): StepOutput {
    const { now } = input;
    const changed = new Map<string, AlertRecord>();
    const put = (a: AlertRecord) => {
      this.alerts.set(a.id, a);
      changed.set(a.id, a);
    };
    for (const ev of [...this.pending.values()]) {
      if (this.covered(ev) || now - ev.at > this.s.eventMaxAgeMs) this.pending.delete(ev.id);
    }
    this.dedupe(now, put);
    const active = new Map(input.conditions.map((c) => [c.key, c]));
    const open = this.openAlerts();
    // Clear tracking runs on every depot, so a new sender knows how long a condition has been clear.
    for (const a of open) {
      const rule = clearRule(a.type);
      const clear = rule === 'condition' ? !active.has(a.key) : rule === 'protected' ? input.protectedServices.has(a.service) : now - a.lastAt >= this.s.eventQuietMs;
      if (!clear) this.clearSince.delete(a.id);
      else if (!this.clearSince.has(a.id)) this.clearSince.set(a.id, now);
    }
    for (const id of [...this.clearSince.keys()]) if (this.alerts.get(id)?.resolvedAt !== undefined) this.clearSince.delete(id);
    if (input.sending) {
      for (const a of open) {
        const since = this.clearSince.get(a.id);
        const rule = clearRule(a.type);
        const hold = rule === 'quiet' ? 0 : this.s.resolveAfterMs;
        if (since !== undefined && now - since >= hold) put({ ...a, resolvedAt: now, resolveSummary: this.resolveSummary(a, now) });
      }
      const openKeys = new Set(this.openAlerts().map((a) => a.key));
      for (const c of input.conditions) {
        if (openKeys.has(c.key) || now - c.since < c.afterMs) continue;
        const details = { ...c.details, since: new Date(c.since).toISOString() };
        put(this.newAlert({ ...c, details, at: now, id: '' }, input.self, []));
        openKeys.add(c.key);
      }
      for (const ev of [...this.pending.values()].sort((a, b) => a.at - b.at)) {
        this.pending.delete(ev.id);
        const joined = clearRule(ev.type) === 'quiet' ? this.openAlerts().find((a) => a.key === ev.key) : undefined;
        if (joined) {
          put({ ...joined, count: joined.count + 1, lastAt: Math.max(joined.lastAt, Math.round(ev.at)), summary: ev.summary, details: ev.details, events: [...joined.events, ev.id].slice(-32) });
        } else {
          put(this.newAlert(ev, input.self, [ev.id]));
        }
      }
    }
    this.prune(now);
    return { changed: [...changed.values()], sends: input.sending ? this.sends(now, put) : [] };
  }

  /** The outcome of a Send. */
  delivered(send: Send, result: { ok: true } | { ok: false; error: string }, now: number): AlertRecord[] {
    const ch = this.channels.get(send.channel);
    if (!ch) return [];
    ch.inFlight = false;
    if (!result.ok) {
      ch.failures += 1;
      ch.lastError = result.error;
      ch.lastErrorAt = now;
      ch.nextAttemptAt = now + Math.min(this.s.retryMaxMs, this.s.retryBaseMs * 2 ** (ch.failures - 1));
      return [];
    }
    ch.failures = 0;
    ch.lastOkAt = now;
    ch.nextAttemptAt = now;
    ch.sent += 1;
    this.refill(ch, now);
    ch.tokens -= 1;
    const changed: AlertRecord[] = [];
    for (const n of send.notifications) {
      const a = this.alerts.get(n.alert.id);
      if (!a) continue;
      const next =
        n.phase === 'open'
          ? { ...a, sentOpen: union(a.sentOpen, [send.channel]).sort() }
          : { ...a, sentOpen: union(a.sentOpen, [send.channel]).sort(), sentResolve: union(a.sentResolve, [send.channel]).sort() };
      this.alerts.set(a.id, next);
      changed.push(next);
    }
    return changed;
  }

  /** A send was never made (the depot stopped sending): it may be chosen again. */
  abandoned(channel: Channel): void {
    const ch = this.channels.get(channel);
    if (ch) ch.inFlight = false;
  }

  channelStatus(now: number, targets: Partial<Record<Channel, string>> = {}): ChannelStatus[] {
    return [...this.channels.entries()].map(([channel, ch]) => ({
      channel,
      target: targets[channel] ?? '',
      pending: this.pendingFor(channel, now).length,
      failures: ch.failures,
      sent: ch.sent,
      ...(ch.lastError !== undefined ? { lastError: ch.lastError } : {}),
      ...(ch.lastErrorAt !== undefined ? { lastErrorAt: ch.lastErrorAt } : {}),
      ...(ch.lastOkAt !== undefined ? { lastOkAt: ch.lastOkAt } : {}),
      ...(ch.failures > 0 ? { nextAttemptAt: ch.nextAttemptAt } : {}),
    }));
  }

  givenUp(channel: Channel): number {
    return this.channels.get(channel)?.givenUp ?? 0;
  }

  private covered(ev: AlertEvent): boolean {
    for (const a of this.alerts.values()) if (a.key === ev.key && a.events.includes(ev.id)) return true;
    return false;
  }

  /** A new alert opened at the event's time (a condition: when it became an alert). */
  private newAlert(ev: AlertEvent, self: string, events: string[]): AlertRecord {
    const openedAt = Math.max(Math.round(ev.at), 0);
    let id = `${ev.key}@${openedAt}`;
    for (let i = 1; this.alerts.has(id); i++) id = `${ev.key}@${openedAt}.${i}`;
    return {
      id,
      key: ev.key,
      type: ev.type,
      severity: ev.severity,
      service: ev.service,
      host: ev.host,
      summary: ev.summary,
      details: ev.details,
      openedAt,
      count: 1,
      lastAt: openedAt,
      events,
      sentOpen: [],
      sentResolve: [],
      skipped: [],
      superseded: false,
      openedBy: self,
    };
  }

  private resolveSummary(a: AlertRecord, now: number): string {
    const lasted = formatDuration(now - a.openedAt);
    switch (clearRule(a.type)) {
      case 'protected':
        return `${a.service} is protected again (a running standby) ${lasted} after the ${a.type === 'failover' ? 'failover' : 'recovery'}`;
      case 'quiet':
        return `no further ${a.type} about ${a.key.split('/').slice(1).join('/')} for ${formatDuration(this.s.eventQuietMs)}; ${a.count} in all`;
      default:
        return `${a.type} cleared after ${lasted}`;
    }
  }

  /** Two open alerts of one key (two depots opened it in the same moment): keep the older. */
  private dedupe(now: number, put: (a: AlertRecord) => void): void {
    const byKey = new Map<string, AlertRecord[]>();
    for (const a of this.openAlerts()) byKey.set(a.key, [...(byKey.get(a.key) ?? []), a]);
    for (const list of byKey.values()) {
      if (list.length < 2) continue;
      list.sort((a, b) => a.openedAt - b.openedAt || (a.id < b.id ? -1 : 1));
      for (const dup of list.slice(1)) put({ ...dup, superseded: true, resolvedAt: now, resolveSummary: `duplicate of ${list[0]!.id}` });
    }
  }

  private prune(now: number): void {
    const done = (a: AlertRecord) => this.s.channels.every((ch) => a.skipped.includes(ch) || a.sentResolve.includes(ch) || (a.superseded && !a.sentOpen.includes(ch)));
    for (const a of [...this.alerts.values()]) {
      if (a.resolvedAt !== undefined && now - a.resolvedAt > this.s.keepResolvedMs && done(a)) this.alerts.delete(a.id);
    }
    if (this.alerts.size > MAX_TABLE) {
      const resolved = [...this.alerts.values()].filter((a) => a.resolvedAt !== undefined).sort((a, b) => a.resolvedAt! - b.resolvedAt!);
      for (const a of resolved.slice(0, this.alerts.size - MAX_TABLE)) this.alerts.delete(a.id);
    }
  }

  private pendingFor(channel: Channel, now: number, put?: (a: AlertRecord) => void): Notification[] {
    const out: Notification[] = [];
    for (const a of this.alerts.values()) {
      if (a.skipped.includes(channel)) continue;
      const gaveUp = () => {
        if (!put) return;
        put({ ...a, skipped: union(a.skipped, [channel]).sort() });
        const ch = this.channels.get(channel);
        if (ch && rank(a.severity) >= rank(this.s.minSeverity)) ch.givenUp += 1;
      };
      if (rank(a.severity) < rank(this.s.minSeverity)) {
        gaveUp();
        continue;
      }
      const openSent = a.sentOpen.includes(channel);
      let phase: Notification['phase'] | undefined;
      if (a.resolvedAt === undefined) phase = !openSent && !a.superseded ? 'open' : undefined;
      else if (!a.sentResolve.includes(channel) && (openSent || !a.superseded)) phase = 'resolved';
      if (!phase) continue;
      const since = phase === 'open' ? a.lastAt : a.resolvedAt!;
      if (now - since > this.s.giveUpAfterMs) {
        gaveUp();
        continue;
      }
      out.push({ alert: a, phase });
    }
    return out.sort((x, y) => (x.phase === 'resolved' ? x.alert.resolvedAt! : x.alert.openedAt) - (y.phase === 'resolved' ? y.alert.resolvedAt! : y.alert.openedAt));
  }

  private refill(ch: ChannelState, now: number): void {
    if (ch.refilledAt === -Infinity) ch.refilledAt = now;
    ch.tokens = Math.min(this.s.maxPerHour, ch.tokens + ((now - ch.refilledAt) * this.s.maxPerHour) / 3_600_000);
    ch.refilledAt = now;
  }

  private sends(now: number, put: (a: AlertRecord) => void): Send[] {
    const out: Send[] = [];
    for (const [channel, ch] of this.channels) {
      const pending = this.pendingFor(channel, now, put);
      if (pending.length === 0 || ch.inFlight || now < ch.nextAttemptAt) continue;
      this.refill(ch, now);
      if (ch.tokens < 1) continue;
      ch.inFlight = true;
      out.push({ channel, notifications: pending.slice(0, MAX_BATCH) });
    }
    return out;
  }
}
