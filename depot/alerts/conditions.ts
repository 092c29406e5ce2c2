import type { AlertType } from '../../shared/alert.ts';
import type { Severity } from '../../shared/config-alerts.ts';
import type { AlertsConfig } from '../../shared/config-alerts.ts';

// What is wrong right now, from what every depot sees (pure): the copies in the heartbeats and
// the voter-quorum reports gossiped by the depots that host pilots. A condition names its
// threshold; the tracker remembers since when each has held, so the engine opens an alert only
// once a condition has lasted its threshold, and every depot (the next sender too) knows how long.

export interface CopyState {
  host: string;
  role: 'primary' | 'standby' | 'none';
  state: string;
  term: number;
  lastSyncAt?: number | undefined;
  syncFailing?: boolean | undefined;
  /** replicate/semisync: why a standby's replication is broken or stopped. */
  replReason?: string | undefined;
  /** semisync, primary: fell back to async. */
  semisyncFallback?: boolean | undefined;
  /** A standby whose database never completed a seed (false): it cannot take over (pilot/data-completeness.ts). */
  seeded?: boolean | undefined;
}

/** A service and its copies on live (alive or suspect) depots. */
export interface ServiceState {
  service: string;
  copies: readonly CopyState[];
}

/** A depot's latest word on a service's voter quorum (notice kind `quorum`). */
export interface QuorumReport {
  service: string;
  reporter: string;
  lost: boolean;
  summary: string;
}

/** What an alert is about: a lasting condition and a one-shot event alike. */
export interface AlertSubject {
  key: string;
  type: AlertType;
  severity: Severity;
  service: string;
  host: string;
  summary: string;
  details: Record<string, string | number | boolean>;
}

export interface Condition extends AlertSubject {
  /** The condition must hold this long before it is an alert. */
  afterMs: number;
}

export interface ActiveCondition extends Condition {
  since: number;
}

export const SEVERITY_OF: Record<AlertType, Severity> = {
  failover: 'critical',
  'service-down': 'critical',
  'quorum-lost': 'critical',
  'last-resort-recovery': 'critical',
  unprotected: 'warning',
  'sync-failing': 'warning',
  'sync-lagging': 'warning',
  'semisync-fallback': 'warning',
  'peer-refused': 'warning',
  'image-verify-failed': 'warning',
};

export type ConditionThresholds = Pick<AlertsConfig, 'downAfterMs' | 'unprotectedAfterMs' | 'syncFailingAfterMs' | 'syncLagMs' | 'quorumLostAfterMs'>;

const running = (c: CopyState) => c.state === 'running';
/** A standby that could take over: running, and its database a complete copy (a standby still being seeded cannot). */
const protecting = (c: CopyState) => c.role === 'standby' && running(c) && c.seeded !== false;

/** Services with a running primary and at least one running standby that could take over. */
export function protectedServices(services: readonly ServiceState[]): Set<string> {
  const out = new Set<string>();
  for (const s of services) {
    if (s.copies.some((c) => c.role === 'primary' && running(c)) && s.copies.some(protecting)) out.add(s.service);
  }
  return out;
}

/** ", its standby on X is not seeded ...": why a running standby does not count. */
function unseededNote(standbys: readonly CopyState[]): string {
  const hosts = standbys.filter((c) => running(c) && c.seeded === false).map((c) => c.host);
  if (hosts.length === 0) return '';
  return `; the standby on ${hosts.join(', ')} is not seeded yet (its database is not a complete copy) and cannot take over`;
}

export function currentConditions(services: readonly ServiceState[], quorum: readonly QuorumReport[], now: number, t: ConditionThresholds): Condition[] {
  const out: Condition[] = [];
  const add = (c: Omit<Condition, 'severity'>) => out.push({ ...c, severity: SEVERITY_OF[c.type] });
  for (const s of services) {
    const primary = s.copies.find((c) => c.role === 'primary' && running(c));
    const standbys = s.copies.filter((c) => c.role === 'standby');
    if (!primary) {
      add({
        key: `service-down/${s.service}`,
        type: 'service-down',
        service: s.service,
        host: '',
        summary: `${s.service} has no running primary${unseededNote(standbys)}`,
        details: { copies: s.copies.length },
        afterMs: t.downAfterMs,
      });
    } else if (!standbys.some(protecting)) {
      add({
        key: `unprotected/${s.service}`,
        type: 'unprotected',
        service: s.service,
        host: primary.host,
        summary: `${s.service} runs on ${primary.host} with no running standby that could take over${unseededNote(standbys)}: the next failure of ${primary.host} is an outage`,
        details: { primary: primary.host, standbys: standbys.length },
        afterMs: t.unprotectedAfterMs,
      });
    }
    for (const c of standbys) {
      if (c.syncFailing) {
        add({
          key: `sync-failing/${s.service}/${c.host}`,
          type: 'sync-failing',
          service: s.service,
          host: c.host,
          summary: `database copy of ${s.service} into the standby on ${c.host} is failing${c.replReason ? ` (replication: ${c.replReason}; it is reseeded automatically)` : ''}`,
          details: { ...(c.lastSyncAt !== undefined ? { lastGoodSync: new Date(c.lastSyncAt).toISOString() } : {}), ...(c.replReason ? { reason: c.replReason.slice(0, 500) } : {}) },
          afterMs: t.syncFailingAfterMs,
        });
      }
      if (running(c) && c.lastSyncAt !== undefined && now - c.lastSyncAt > t.syncLagMs) {
        add({
          key: `sync-lagging/${s.service}/${c.host}`,
          type: 'sync-lagging',
          service: s.service,
          host: c.host,
          summary: `the standby of ${s.service} on ${c.host} holds a database copy ${Math.round((now - c.lastSyncAt) / 1000)} s old (limit ${Math.round(t.syncLagMs / 1000)} s)`,
          details: { lastGoodSync: new Date(c.lastSyncAt).toISOString(), lagS: Math.round((now - c.lastSyncAt) / 1000) },
          afterMs: 0,
        });
      }
    }
  }
  for (const s of services) {
    for (const c of s.copies) {
      if (c.role !== 'primary' || !c.semisyncFallback) continue;
      add({
        key: `semisync-fallback/${s.service}/${c.host}`,
        type: 'semisync-fallback',
        service: s.service,
        host: c.host,
        summary: `semi-synchronous replication of ${s.service} on ${c.host} fell back to async: no standby acknowledged a commit within dbsync.semisyncTimeoutMs, so a crash of ${c.host} now may lose acknowledged writes`,
        details: { primary: c.host },
        afterMs: 0,
      });
    }
  }
  const lost = new Map<string, QuorumReport>();
  for (const r of quorum) if (r.lost && !lost.has(r.service)) lost.set(r.service, r);
  for (const r of lost.values()) {
    add({ key: `quorum-lost/${r.service}`, type: 'quorum-lost', service: r.service, host: '', summary: r.summary, details: { reportedBy: r.reporter }, afterMs: t.quorumLostAfterMs });
  }
  return out;
}

/** Since when each current condition has held (continuously); a cleared one is forgotten. */
export function trackConditions(since: Map<string, number>, conditions: readonly Condition[], now: number): ActiveCondition[] {
  const keys = new Set(conditions.map((c) => c.key));
  for (const k of [...since.keys()]) if (!keys.has(k)) since.delete(k);
  return conditions.map((c) => {
    let s = since.get(c.key);
    if (s === undefined) since.set(c.key, (s = now));
    return { ...c, since: s };
  });
}
