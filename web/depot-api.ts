import type { Depot } from '../depot/depot.ts';
import type { MemberView } from '../depot/membership/membership.ts';
import { VERSION } from '../shared/version.ts';
import { sendText, type HttpServer } from './server.ts';

// The depot's own read-only endpoints: liveness, the membership view as JSON, Prometheus metrics.

/** One depot as /api/depots shows it (and `navigator status` prints it). */
export interface DepotRow {
  name: string;
  peerId: string;
  self: boolean;
  state: MemberView['state'];
  reason: string;
  incarnation: number;
  since: number;
  /** Local time the last heartbeat (or probe answer) was observed, ms since the epoch. */
  lastSeen: number;
  version: string | null;
  uptimeS: number | null;
  load: [number, number, number] | null;
  cpus: number | null;
  memFreeBytes: number | null;
  memTotalBytes: number | null;
  diskFreeBytes: number | null;
  images: string[];
  /** Images being received (the heartbeat's `staging`): bytes on disk so far of total. */
  staging: Array<{ image: string; bytes: number; total: number }>;
  containers: unknown[];
  addresses: string[];
  hostAddresses: string[];
  httpPort: number | null;
  /** Port of the sshd that receives images shipped to this depot. */
  sshPort: number | null;
}

export interface DepotsResponse {
  self: { name: string; peerId: string; version: string; incarnation: number };
  counts: Record<MemberView['state'], number>;
  /** Gossip messages this depot dropped, by reason. */
  dropped: Record<string, number>;
  depots: DepotRow[];
}

export function depotRow(v: MemberView): DepotRow {
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
  };
}

export function depotsResponse(depot: Depot): DepotsResponse {
  return {
    self: { name: depot.config.node.name, peerId: depot.peerId, version: VERSION, incarnation: depot.incarnation },
    counts: depot.membership.countByState(),
    dropped: { ...depot.metrics.dropped },
    depots: depot.membership.view().map(depotRow),
  };
}

export function registerDepotApi(server: HttpServer, depot: Depot): void {
  server.route('GET', '/healthz', () => ({ ok: depot.running, name: depot.config.node.name, peerId: depot.peerId, version: VERSION }));
  server.route('GET', '/api/depots', () => depotsResponse(depot));
  server.route('GET', '/metrics', async (_req, res) => {
    sendText(res, 200, await depot.metrics.registry.metrics(), depot.metrics.registry.contentType);
  });
}
