import { compareNames } from '../shared/order.ts';
import type { MovementRecord } from '../shared/movement.ts';
import type { DepotContainers, ServiceView } from '../shared/api/tracking.ts';
import type { UncheckedContainerRow } from '../shared/api/depots.ts';

/**
 * Where each copy of each service is now, from the depots' heartbeats (containers with role,
 * term, state, last DB sync) and the journal (since when, service address). Copies on dead or
 * left depots are not shown: their last heartbeat is stale. A service known only from the
 * journal is listed with no copies (the page then says it has no primary).
 */
export function buildServiceViews(depots: readonly DepotContainers[], records: readonly MovementRecord[]): ServiceView[] {
  const byService = new Map<string, ServiceView>();
  const get = (service: string) => {
    let v = byService.get(service);
    if (!v) byService.set(service, (v = { service, address: '', term: 0, copies: [] }));
    return v;
  };
  // Latest record per (service, host, role) and the latest primary record per service.
  const lastRole = new Map<string, MovementRecord>();
  const lastPrimary = new Map<string, MovementRecord>();
  for (const r of records) {
    lastRole.set(`${r.service}\u0000${r.host}\u0000${r.role}`, r);
    if (r.role === 'primary') lastPrimary.set(r.service, r);
    const v = get(r.service);
    v.term = Math.max(v.term, r.term);
  }
  const gtids = new Map<ServiceView['copies'][number], string>();
  for (const d of depots) {
    if (d.state === 'dead' || d.state === 'left') continue;
    for (const raw of d.containers) {
      const c = raw as UncheckedContainerRow;
      if (typeof c.service !== 'string') continue;
      const role = c.role === 'primary' || c.role === 'standby' ? c.role : 'none';
      const term = typeof c.term === 'number' ? c.term : 0;
      const v = get(c.service);
      v.term = Math.max(v.term, term);
      v.copies.push({
        host: d.name,
        role,
        term,
        state: typeof c.state === 'string' ? c.state : 'unknown',
        since: lastRole.get(`${c.service}\u0000${d.name}\u0000${role}`)?.time ?? null,
        lastSyncAt: role === 'standby' && typeof c.lastSyncAt === 'number' ? c.lastSyncAt : null,
        syncFailing: c.syncFailing === true,
        ...(typeof c.replState === 'string' ? { replState: c.replState } : {}),
        ...(typeof c.replReason === 'string' ? { replReason: c.replReason } : {}),
        ...(c.semisyncFallback === true ? { semisyncFallback: true } : {}),
        ...(role === 'standby' && c.seeded === false ? { notSeeded: true } : {}),
      });
      if (typeof c.gtid === 'string') gtids.set(v.copies[v.copies.length - 1]!, c.gtid);
    }
  }
  // Transactions each standby is behind: the primary's GTID position minus its own.
  for (const v of byService.values()) {
    const primary = v.copies.filter((c) => c.role === 'primary').sort((a, b) => b.term - a.term)[0];
    const pg = primary ? gtids.get(primary) : undefined;
    for (const c of v.copies) {
      const g = gtids.get(c);
      if (c.role === 'standby' && g !== undefined) c.lagTx = pg !== undefined ? Math.max(0, gtidTransactions(pg) - gtidTransactions(g)) : null;
    }
  }
  // The voter group: the newest view any copy reports, peer ids shown as host names.
  const names = new Map(depots.filter((d) => d.peerId).map((d) => [d.peerId!, d.name]));
  const name = (peer: string) => names.get(peer) ?? peer;
  for (const d of depots) {
    if (d.state === 'dead' || d.state === 'left') continue;
    for (const raw of d.containers) {
      const c = raw as { service?: unknown; view?: { epoch?: unknown; voters?: unknown; prev?: unknown } };
      const view = c.view;
      if (typeof c.service !== 'string' || !view || !Array.isArray(view.epoch) || !Array.isArray(view.voters)) continue;
      const epoch: [number, number] = [Number(view.epoch[0]) || 0, Number(view.epoch[1]) || 0];
      const v = get(c.service);
      if (v.voters && (v.voters.epoch[0] > epoch[0] || (v.voters.epoch[0] === epoch[0] && v.voters.epoch[1] >= epoch[1]))) continue;
      const hosts = (view.voters as unknown[]).map(String).map(name).sort(compareNames);
      v.voters = { epoch, hosts, ...(Array.isArray(view.prev) ? { prev: (view.prev as unknown[]).map(String).map(name).sort(compareNames) } : {}) };
    }
  }
  for (const v of byService.values()) {
    v.address = lastPrimary.get(v.service)?.address ?? '';
    const order = { primary: 0, standby: 1, none: 2 } as const;
    v.copies.sort((a, b) => order[a.role] - order[b.role] || compareNames(a.host, b.host));
  }
  return [...byService.values()].sort((a, b) => compareNames(a.service, b.service));
}


/** Transactions a GTID position stands for (sum of the sequence numbers over its domains). */
export function gtidTransactions(gtid: string): number {
  let n = 0;
  for (const part of gtid.split(',')) {
    const m = /^\s*\d+-\d+-(\d+)\s*$/.exec(part);
    if (m) n += Number(m[1]);
  }
  return n;
}
