import type { DepotComponents } from '../depot/components.ts';
import type { MemberObservation } from './election/views.ts';
import type { PlacementCandidate } from './placement.ts';
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

/** What a Pilot needs to know about the cluster. */
export function clusterView(c: ClusterComponents): ClusterView {
  return {
    selfId: c.self.peerId,
    selfName: c.self.name,
    copies: (service) => copiesOf(c.members, service),
    observations: () => {
      // Crash removal needs a majority of the view to judge the depot dead; each depot
      // judges for itself from the same heartbeats and probes, so a dead verdict here
      // stands for all alive voters (view changes stay safe through joint consensus).
      const view = c.members.view();
      const alive = view.filter((o) => o.state === 'alive').map((o) => o.peerId);
      return view.map((m): MemberObservation => ({ peer: m.peerId, state: m.state, ...(m.state === 'dead' ? { deadReportedBy: alive } : {}) }));
    },
    ping: (peerId, timeoutMs) => c.reach.ping(peerId, timeoutMs),
    beat: () => c.heartbeat.beat(),
  };
}
