import { rankHosts, type PlacementCandidate, type PlacementResult, type RankedHost } from './placement.ts';
import type { CopyView } from './pilot.ts';

// Standby keeping, as a pure decision (Pacemaker's policy engine; pilot/standby-keeper.ts carries
// it out). The primary asks it after every probe round: given the copies the heartbeats show,
// the standbys it placed lately (heartbeats lag behind), the hosts where a placement failed, and
// the placement ranking, what is the ONE next step — place a standby, retire a surplus one,
// pre-stage the image on likely next hosts, or nothing.

/** A standby this primary placed, counted until its depot's heartbeat reports it. */
export interface RecentPlacement {
  service: string;
  peerId: string;
  container: string;
  at: number;
}

export interface StandbyPlanInput {
  service: { name: string; standbys: number; memoryBytes: number; diskBytes: number; image: string };
  /** Every copy of the service in the heartbeats (this depot's included). */
  copies: readonly CopyView[];
  /** Every depot with a heartbeat, for the placement ranking. */
  candidates: readonly PlacementCandidate[];
  recentlyPlaced: readonly RecentPlacement[];
  /** Hosts (peer id) where a placement failed lately, with when. */
  failedHosts: ReadonlyMap<string, number>;
  now: number;
  /** config pilot.placedGraceMs */
  placedGraceMs: number;
  /** config pilot.placementRetryMs */
  placementRetryMs: number;
}

export type StandbyDecision =
  /** Fewer standbys than wanted: place one on `target` (`replacing`: a standby was lost). */
  | { kind: 'place'; target: RankedHost & { peerId: string }; replacing: boolean; ranking: PlacementResult }
  /** More than wanted (a rebooted host brought its copy back): retire this one, the stalest. */
  | { kind: 'retire'; copy: CopyView }
  /** Protected: use the quiet time to put the image on the next likely hosts. */
  | { kind: 'prestage' }
  /** Nothing to do now; `reason` says why (logged at debug level). */
  | { kind: 'wait'; reason: string };

export interface StandbyPlan {
  decision: StandbyDecision;
  /** recentlyPlaced without the entries now seen in a heartbeat or past their grace. */
  recentlyPlaced: RecentPlacement[];
}

/** A standby that counts: on a live depot, in role standby, running or starting. */
export function healthyStandbys(copies: readonly CopyView[]): CopyView[] {
  return copies.filter((c) => c.depotState === 'alive' && c.report.role === 'standby' && (c.report.state === 'running' || c.report.state === 'starting'));
}

export function planStandbys(input: StandbyPlanInput): StandbyPlan {
  const { service, copies, now } = input;
  const healthy = healthyStandbys(copies);
  const recentlyPlaced = input.recentlyPlaced.filter((r) => {
    const seen = copies.some((c) => c.peerId === r.peerId && c.report.id === r.container);
    return !seen && now - r.at <= input.placedGraceMs;
  });
  const pending = recentlyPlaced.filter((r) => r.service === service.name).length;
  const have = healthy.length + pending;
  if (have > service.standbys && pending === 0) {
    // Retire the one with the oldest DB sync, so the freshest copies stay.
    const extra = healthy.filter((c) => c.report.state === 'running').sort((a, b) => (a.report.lastSyncAt ?? 0) - (b.report.lastSyncAt ?? 0))[0];
    return { recentlyPlaced, decision: extra ? { kind: 'retire', copy: extra } : { kind: 'wait', reason: 'surplus standby still starting' } };
  }
  if (have >= service.standbys) return { recentlyPlaced, decision: { kind: 'prestage' } };
  // A host with a placement still on its way holds a copy already, though its heartbeat does not
  // say so yet: never place a second copy there.
  const pendingHosts = new Set(recentlyPlaced.filter((r) => r.service === service.name).map((r) => r.peerId));
  const candidates = input.candidates.map((c) => (c.peerId !== undefined && pendingHosts.has(c.peerId) && !c.copies.includes(service.name) ? { ...c, copies: [...c.copies, service.name] } : c));
  const ranking = rankHosts(candidates, { service: service.name, memBytes: service.memoryBytes, diskBytes: service.diskBytes, image: service.image }, now);
  const target = ranking.ranking.find((r): r is RankedHost & { peerId: string } => r.peerId !== undefined && now - (input.failedHosts.get(r.peerId) ?? -Infinity) > input.placementRetryMs);
  if (!target) return { recentlyPlaced, decision: { kind: 'wait', reason: ranking.ranking.length === 0 ? 'no eligible host' : 'every eligible host failed lately' } };
  const replacing = copies.some((c) => c.depotState !== 'alive' && c.report.role === 'standby');
  return { recentlyPlaced, decision: { kind: 'place', target, replacing, ranking } };
}
