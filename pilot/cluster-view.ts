import type { DepotComponents } from '../depot/components.ts';
import type { MemberObservation } from './election/views.ts';
import { expectedRemainingMs, type PlacementCandidate } from './placement.ts';
import type { HeartbeatMessage } from '../shared/wire.ts';
import { hostAddressOf } from '../depot/host-address.ts';
import { sessionsFromSummary } from '../depot/sessions/session-history.ts';
import type { ClusterView, CopyView } from './pilot.ts';

// The cluster as the pilots see it, read from the membership view: every copy of a service that
// a depot's heartbeat reports, the hosts a standby could be placed on, and the observations the
// primary's voter-set changes are made from.

export type ClusterComponents = Pick<DepotComponents, 'self' | 'members' | 'reach' | 'heartbeat'>;

/** Every copy of `service` reported in heartbeats (this depot's included). */
export function copiesOf(members: DepotComponents['members'], service: string): CopyView[] {
  const out: CopyView[] = [];
  for (const m of members.view()) {
    for (const report of m.heartbeat?.containers ?? []) {
      if (report.service === service) {
        out.push({ peerId: m.peerId, host: m.name, depotState: m.state, incarnation: m.incarnation, address: m.heartbeat ? hostAddressOf(m.heartbeat) : undefined, report });
      }
    }
  }
  return out;
}

/** Every depot with a heartbeat, as the placement ranks it. */
export function candidatesOf(members: DepotComponents['members']): PlacementCandidate[] {
  return members
    .view()
    .filter((m) => m.heartbeat)
    .map((m) => {
      const hb = m.heartbeat!;
      return {
        name: m.name,
        peerId: m.peerId,
        state: m.state,
        uptimeS: hb.uptimeS,
        load: hb.load,
        cpus: hb.cpus,
        memFreeBytes: hb.memFreeBytes,
        memTotalBytes: hb.memTotalBytes,
        diskFreeBytes: hb.diskFreeBytes,
        images: hb.images,
        copies: hb.containers.map((c) => c.service),
        history: sessionsFromSummary(hb.sessions ?? []),
      };
    });
}

/** Restarts seen per depot (new incarnations after the first), for the voter ranking's stability. */
export class RestartHistory {
  private readonly seen = new Map<string, { incarnation: number; restarts: number[] }>();
  constructor(private readonly windowMs = 3_600_000) {}

  /** Record the depot's incarnation seen at local time `now`; returns its restarts within the window. */
  observe(peer: string, incarnation: number, now: number): number {
    let h = this.seen.get(peer);
    if (!h) this.seen.set(peer, (h = { incarnation, restarts: [] }));
    if (incarnation > h.incarnation) {
      h.incarnation = incarnation;
      h.restarts.push(now);
    }
    h.restarts = h.restarts.filter((t) => now - t < this.windowMs);
    return h.restarts.length;
  }
}

/**
 * Every known depot as the voter ranking sees it (pilot/election/voter-group.ts): its state, how
 * long its session has run (the shorter of depot process age and host uptime, both from its own
 * heartbeat), restarts seen lately, and whether it holds a copy of `service`.
 */
export function voterObservations(members: DepotComponents['members'], service: string, history: RestartHistory, now: number): MemberObservation[] {
  const view = members.view();
  const alive = view.filter((o) => o.state === 'alive').map((o) => o.peerId);
  return view.map((m): MemberObservation => {
    const hb = m.heartbeat;
    const sessionS = hb ? Math.max(0, Math.min(hb.uptimeS, (hb.sentAt - hb.incarnation) / 1000)) : 0;
    return {
      peer: m.peerId,
      state: m.state,
      host: m.name,
      sessionS,
      restarts: history.observe(m.peerId, m.incarnation, now),
      holdsCopy: (hb?.containers ?? []).some((c) => c.service === service),
      ...remainingOf(hb, now),
      // Crash removal needs a majority of the view to judge the depot dead; each depot
      // judges for itself from the same heartbeats and probes, so a dead verdict here
      // stands for all alive voters (view changes stay safe through joint consensus).
      ...(m.state === 'dead' ? { deadReportedBy: alive } : {}),
    };
  });
}

/** The host's expected remaining time on, from the sessions in its heartbeat (`now`: wall clock). */
function remainingOf(hb: HeartbeatMessage | undefined, now: number): { remainingS?: number } {
  const ms = expectedRemainingMs(sessionsFromSummary(hb?.sessions ?? []), now);
  return ms === undefined ? {} : { remainingS: Math.round(ms / 1000) };
}

/** What a Pilot needs to know about the cluster. */
export function clusterView(c: ClusterComponents): ClusterView {
  const history = new RestartHistory();
  return {
    selfId: c.self.peerId,
    selfName: c.self.name,
    copies: (service) => copiesOf(c.members, service),
    observations: (service) => voterObservations(c.members, service, history, Date.now()),
    ping: (peerId, timeoutMs) => c.reach.ping(peerId, timeoutMs),
    beat: () => c.heartbeat.beat(),
  };
}
