import type { DepotRow, DepotRowExtras, DepotsResponse } from '../shared/api/depots.ts';
import { VERSION } from '../shared/version.ts';
import { sessionsFromSummary } from './sessions/session-history.ts';
import type { DepotSelf } from './components.ts';
import type { MemberView, Membership } from './membership/membership.ts';

// The membership view as GET /api/depots shows it.

export function depotRow(v: MemberView, extras: DepotRowExtras = {}): DepotRow {
  const hb = v.heartbeat;
  return {
    name: v.name,
    peerId: v.peerId,
    self: v.self,
    state: v.state,
    reason: v.reason,
    incarnation: v.incarnation,
    since: v.since,
    lastSeen: v.lastHeardAt,
    version: hb?.version ?? null,
    uptimeS: hb?.uptimeS ?? null,
    load: hb?.load ?? null,
    cpus: hb?.cpus ?? null,
    memFreeBytes: hb?.memFreeBytes ?? null,
    memTotalBytes: hb?.memTotalBytes ?? null,
    diskFreeBytes: hb?.diskFreeBytes ?? null,
    images: hb?.images ?? [],
    staging: hb?.staging ?? [],
    containers: hb?.containers ?? [],
    addresses: hb?.addresses ?? [],
    hostAddresses: hb?.hostAddresses ?? [],
    httpPort: hb?.httpPort ?? null,
    sshPort: hb?.sshPort ?? null,
    sshHostKey: hb?.sshHostKey ?? null,
    hostKeyTrust: extras.hostKeyTrust ?? null,
    sessions: sessionsFromSummary(hb?.sessions ?? []),
    busy: hb?.busy ?? null,
  };
}

export function depotsResponse(opts: {
  self: DepotSelf;
  membership: Pick<Membership, 'view' | 'countByState'>;
  dropped: Record<string, number>;
  extras?: (peerId: string) => DepotRowExtras;
}): DepotsResponse {
  return {
    self: { name: opts.self.name, peerId: opts.self.peerId, version: VERSION, incarnation: opts.self.incarnation },
    counts: opts.membership.countByState(),
    dropped: { ...opts.dropped },
    depots: opts.membership.view().map((v) => depotRow(v, opts.extras?.(v.peerId))),
  };
}
