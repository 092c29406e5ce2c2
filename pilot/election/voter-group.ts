import type { MemberState } from '../../shared/member-state.ts';
import { majority } from './views.ts';

// The voter group of a service: a small set of depots (config election.voters, default 5) whose
// votes and lease promises decide who is primary, so that a lease renewal costs O(group) however
// many depots the cluster has (Consul, etcd, ZooKeeper, votequorum do alike: gossip for all, a few
// voters). Pure: the ranking and the next change of the group are functions of what the membership
// layer reports; the primary applies a change through the joint views of views.ts (rule R4), one
// member at a time.
//
// THE RANKING (explainable: every voter gets the reasons of its place), lower key first:
//   1. admin-preferred host (election.preferredVoters: always-on machines);
//   2. outlook, from the host's past sessions at this time of day (depot/sessions, gossiped in
//      heartbeats): usually off within the hour < no history, or 1–8 h more < usually on 8 h or
//      more (a lab PC that goes off at 18:00 ranks low at 17:30, one left on at night high);
//   3. stability class, from the time the depot's current session has run (min of depot process
//      age and host uptime) and the restarts seen lately; classes, not seconds, so the order does
//      not churn as clocks advance;
//   4. spread: a host that holds no copy of the service before one that does (losing a copy's host
//      must not also cost a vote);
//   5. the peer id (stable tie break: every primary ranks alike).
// Only alive depots rank. The group is never reshuffled for rank alone (a healthy voter stays), with
// one exception: an alive preferred host that is not a voter displaces the lowest non-preferred
// voter.

/** What the membership layer knows about one depot. */
export interface VoterCandidate {
  peer: string;
  host: string;
  state: MemberState;
  /** How long the depot's current session has run (s): min(depot process age, host uptime). */
  sessionS: number;
  /** Restarts of this depot seen in the recent past (new incarnations after the first). */
  restarts: number;
  /** The depot hosts a copy of the service. */
  holdsCopy: boolean;
  /** How long the host is expected to stay on from now, from its past sessions at this time of day (s); absent: no history. */
  remainingS?: number | undefined;
}

export interface GroupSettings {
  /** Target size (odd). */
  voters: number;
  /** Host names an admin prefers as voters. */
  preferred: readonly string[];
}

export interface RankedVoter {
  peer: string;
  host: string;
  rank: number;
  preferred: boolean;
  outlook: number;
  stability: number;
  holdsCopy: boolean;
  reasons: string[];
}

/** Outlook class 0..2 (higher stays on longer): <1 h expected, unknown or 1–8 h, ≥8 h. */
export function outlookClass(c: Pick<VoterCandidate, 'remainingS'>): number {
  if (c.remainingS === undefined) return 1;
  return c.remainingS < 3600 ? 0 : c.remainingS < 8 * 3600 ? 1 : 2;
}

function outlookLabel(c: VoterCandidate): string | undefined {
  if (c.remainingS === undefined) return undefined;
  if (c.remainingS < 3600) return c.remainingS === 0 ? 'usually off at this hour' : 'usually off within the hour';
  return c.remainingS < 8 * 3600 ? `usually on ${Math.floor(c.remainingS / 3600)} h more` : 'usually on 8 h or more';
}

/** Stability classes: [minimum session (s), label]. The last one whose minimum is met counts. */
const STABILITY: Array<[number, string]> = [
  [0, 'up < 1 min'],
  [60, 'up ≥ 1 min'],
  [600, 'up ≥ 10 min'],
  [3600, 'up ≥ 1 h'],
  [86_400, 'up ≥ 1 day'],
];

/** Stability class 0..4 (higher is steadier); every restart seen lately costs one class. */
export function stabilityClass(c: Pick<VoterCandidate, 'sessionS' | 'restarts'>): number {
  let cls = 0;
  for (const [i, [min]] of STABILITY.entries()) if (c.sessionS >= min) cls = i;
  return Math.max(0, cls - Math.max(0, c.restarts));
}

function stabilityLabel(c: VoterCandidate): string {
  let label = STABILITY[0]![1];
  for (const [min, l] of STABILITY) if (c.sessionS >= min) label = l;
  return c.restarts > 0 ? `${label}, ${c.restarts} restart${c.restarts === 1 ? '' : 's'} lately` : label;
}

/** The alive depots in rank order, best first, each with the reasons of its place. */
export function rankVoters(candidates: readonly VoterCandidate[], settings: Pick<GroupSettings, 'preferred'>): RankedVoter[] {
  const preferred = new Set(settings.preferred);
  const rows = candidates
    .filter((c) => c.state === 'alive')
    .map((c) => ({ c, preferred: preferred.has(c.host), outlook: outlookClass(c), stability: stabilityClass(c) }));
  rows.sort(
    (a, b) =>
      Number(b.preferred) - Number(a.preferred) ||
      b.outlook - a.outlook ||
      b.stability - a.stability ||
      Number(a.c.holdsCopy) - Number(b.c.holdsCopy) ||
      (a.c.peer < b.c.peer ? -1 : a.c.peer > b.c.peer ? 1 : 0),
  );
  return rows.map((r, i) => ({
    peer: r.c.peer,
    host: r.c.host,
    rank: i + 1,
    preferred: r.preferred,
    outlook: r.outlook,
    stability: r.stability,
    holdsCopy: r.c.holdsCopy,
    reasons: [...(r.preferred ? ['preferred host'] : []), ...(outlookLabel(r.c) ? [outlookLabel(r.c)!] : []), stabilityLabel(r.c), r.c.holdsCopy ? 'holds a copy' : 'holds no copy'],
  }));
}

/**
 * Size of the group for `alive` alive (or suspect) depots: election.voters, or every depot when there are fewer;
 * always odd from 3 up (4 voters survive one loss, like 3, at a higher cost). One or two depots
 * are all voters (two need each other, or a witness as the third vote).
 */
export function groupSize(alive: number, target: number): number {
  if (alive <= 2) return Math.max(1, Math.min(alive, target));
  const n = Math.min(target, alive);
  return n % 2 === 0 ? n - 1 : n;
}

/** One step of a group change, with why. */
export interface GroupChange {
  voters: string[];
  kind: 'remove-left' | 'remove-dead' | 'add' | 'shrink' | 'prefer';
  peer: string;
  reason: string;
}

/**
 * The next change of the group (one member), or null when it is what it should be. Order:
 *   - a voter that left cleanly goes at once;
 *   - a dead voter goes once a majority of the group reports it dead (`deadReportedBy`);
 *   - a group bigger than its size loses its lowest-ranked member (not alive ones first);
 *   - an alive preferred host outside the group displaces the lowest non-preferred voter;
 *   - a group smaller than its size gains the best-ranked alive depot outside it.
 * Never removes the last voter.
 */
export function nextGroupChange(
  current: readonly string[],
  candidates: readonly VoterCandidate[],
  settings: GroupSettings,
  deadReportedBy: (peer: string) => readonly string[] = () => [],
): GroupChange | null {
  const voters = [...new Set(current)].sort();
  const inGroup = new Set(voters);
  const byPeer = new Map(candidates.map((c) => [c.peer, c]));
  const without = (peer: string) => voters.filter((v) => v !== peer);
  // A voter the membership layer no longer lists (forgotten after a long death) counts as dead,
  // reported by every alive voter that is listed.
  const aliveVoters = voters.filter((v) => byPeer.get(v)?.state === 'alive');
  const reporters = (v: string) => (byPeer.has(v) ? deadReportedBy(v) : aliveVoters);
  if (voters.length > 1) {
    for (const v of voters) {
      if (byPeer.get(v)?.state === 'left') return { voters: without(v), kind: 'remove-left', peer: v, reason: `${byPeer.get(v)!.host} left cleanly` };
    }
    const need = majority(voters.length);
    for (const v of voters) {
      const c = byPeer.get(v);
      if (c && c.state !== 'dead') continue;
      const by = new Set(reporters(v).filter((r) => inGroup.has(r) && r !== v));
      if (by.size >= need) return { voters: without(v), kind: 'remove-dead', peer: v, reason: `${c?.host ?? v} ${c ? 'dead' : 'gone'} for ${by.size} of ${voters.length} voters` };
    }
  }
  const ranked = rankVoters(candidates, settings);
  const rankOf = new Map(ranked.map((r) => [r.peer, r]));
  // A suspect depot still counts for the size (a passing suspicion must not shrink the group);
  // it ranks below every alive one, so it is the first to go when the group shrinks.
  const size = groupSize(candidates.filter((c) => c.state === 'alive' || c.state === 'suspect').length, settings.voters);
  // Lowest-ranked voter: not alive (or unknown) first, then by rank from the bottom.
  const worst = (among: string[]): string | undefined =>
    [...among].sort((a, b) => (rankOf.get(b)?.rank ?? Number.POSITIVE_INFINITY) - (rankOf.get(a)?.rank ?? Number.POSITIVE_INFINITY) || (a < b ? 1 : -1))[0];
  if (voters.length > size && voters.length > 1) {
    const v = worst(voters)!;
    return { voters: without(v), kind: 'shrink', peer: v, reason: `group of ${voters.length} above its size ${size}; ${byPeer.get(v)?.host ?? v} ranks lowest` };
  }
  const outside = ranked.filter((r) => !inGroup.has(r.peer));
  const preferredOut = outside.find((r) => r.preferred);
  if (preferredOut && voters.length >= size) {
    // A lone voter cannot make room (never an empty group): the preferred host joins first and
    // the shrink rule then drops the lower-ranked one.
    if (voters.length <= 1) return { voters: [...voters, preferredOut.peer].sort(), kind: 'prefer', peer: preferredOut.peer, reason: `preferred host ${preferredOut.host} joins a group of one` };
    const v = worst(voters.filter((p) => !rankOf.get(p)?.preferred));
    if (v) return { voters: without(v), kind: 'prefer', peer: v, reason: `preferred host ${preferredOut.host} waits for a place; ${byPeer.get(v)?.host ?? v} ranks lowest` };
  }
  if (voters.length < size && outside.length) {
    const best = outside[0]!;
    return { voters: [...voters, best.peer].sort(), kind: 'add', peer: best.peer, reason: `${best.host} ranks ${best.rank} (${best.reasons.join(', ')})` };
  }
  return null;
}

/** The first group of a service: the best-ranked alive depots (self when none is known). */
export function initialGroup(candidates: readonly VoterCandidate[], settings: GroupSettings, self: string): string[] {
  const ranked = rankVoters(candidates, settings);
  const picked = ranked.slice(0, groupSize(ranked.length, settings.voters)).map((r) => r.peer);
  return picked.length ? picked.sort() : [self];
}
