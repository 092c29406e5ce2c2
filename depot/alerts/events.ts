import type { Notice } from '../../shared/alert.ts';
import { outageOf, type MovementRecord } from '../../shared/movement.ts';
import type { MemberView } from '../membership/membership.ts';
import { SEVERITY_OF, type QuorumReport, type ServiceState } from './conditions.ts';
import type { SenderMember } from './sender.ts';
import type { AlertEvent } from './engine.ts';

// What the alerts take from the rest of the depot, as pure mappings: a failover movement record
// and a notice become alert events; the membership view becomes the services' copies (for the
// conditions) and the members the sender is chosen from.

/** A failover in the journal: one alert, resolved when the service is protected again. */
export function failoverEvent(r: MovementRecord): AlertEvent | undefined {
  if (r.event !== 'failover') return undefined;
  const outage = outageOf(r);
  return {
    id: r.id,
    key: `failover/${r.service}/${r.id}`,
    type: 'failover',
    severity: SEVERITY_OF.failover,
    service: r.service,
    host: r.host,
    summary: `${r.service} failed over${r.fromHost ? ` from ${r.fromHost}` : ''} to ${r.host} (term ${r.term}): ${r.reason}`,
    details: { from: r.fromHost, to: r.host, term: r.term, outageMs: outage, ...(r.address ? { address: r.address } : {}) },
    at: r.time,
  };
}

/** A notice as an alert event; quorum reports are conditions, not events (undefined). */
export function noticeEvent(n: Notice): AlertEvent | undefined {
  const base = { id: n.id, service: n.service, summary: n.summary, details: { reportedBy: n.host, ...n.details }, at: n.at };
  switch (n.kind) {
    case 'peer-refused':
      return { ...base, key: `peer-refused/${n.subject}`, type: 'peer-refused', severity: SEVERITY_OF['peer-refused'], host: n.host };
    case 'image-verify-failed':
      return { ...base, key: `image-verify-failed/${n.host}/${n.subject}`, type: 'image-verify-failed', severity: SEVERITY_OF['image-verify-failed'], host: n.host };
    case 'last-resort-recovery':
      return { ...base, key: `last-resort-recovery/${n.service}/${n.id}`, type: 'last-resort-recovery', severity: SEVERITY_OF['last-resort-recovery'], host: n.host };
    case 'quorum':
      return undefined;
  }
}

/** The latest quorum report of each (service, reporter), kept while the reporter is alive. */
export class QuorumReports {
  private readonly reports = new Map<string, QuorumReport & { at: number; receivedAt: number }>();

  constructor(private readonly ttlMs: number) {}

  add(n: Notice, now: number): void {
    if (n.kind !== 'quorum' || !n.service || n.active === undefined) return;
    const key = `${n.service}\u0000${n.peerId}`;
    const prev = this.reports.get(key);
    if (prev && prev.at > n.at) return;
    this.reports.set(key, { service: n.service, reporter: n.host, lost: n.active, summary: n.summary, at: n.at, receivedAt: now });
  }

  /** Reports from depots alive now and refreshed within the TTL. */
  current(alivePeers: ReadonlySet<string>, now: number): QuorumReport[] {
    const out: QuorumReport[] = [];
    for (const [key, r] of this.reports) {
      const peer = key.split('\u0000')[1]!;
      if (!alivePeers.has(peer) || now - r.receivedAt > this.ttlMs) this.reports.delete(key);
      else out.push(r);
    }
    return out;
  }
}

/** Copies of every service on live depots, plus services known only from the journal (no copies). */
export function servicesFrom(view: readonly MemberView[], journalServices: Iterable<string>): ServiceState[] {
  const byService = new Map<string, ServiceState & { copies: ServiceState['copies'][number][] }>();
  for (const s of journalServices) byService.set(s, { service: s, copies: [] });
  for (const m of view) {
    if (m.state !== 'alive' && m.state !== 'suspect') continue;
    for (const c of m.heartbeat?.containers ?? []) {
      let s = byService.get(c.service);
      if (!s) byService.set(c.service, (s = { service: c.service, copies: [] }));
      s.copies.push({
        host: m.name,
        role: c.role,
        state: c.state,
        term: c.term,
        lastSyncAt: c.lastSyncAt,
        syncFailing: c.syncFailing,
        ...(c.replReason !== undefined ? { replReason: c.replReason } : {}),
        ...(c.semisyncFallback !== undefined ? { semisyncFallback: c.semisyncFallback } : {}),
        ...(c.seeded === false ? { seeded: false } : {}),
      });
    }
  }
  return [...byService.values()].sort((a, b) => (a.service < b.service ? -1 : 1));
}

export function senderMembers(view: readonly MemberView[]): SenderMember[] {
  return view.map((m) => ({ peerId: m.peerId, name: m.name, state: m.state, containers: m.heartbeat?.containers ?? [] }));
}
