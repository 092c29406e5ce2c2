import type { MemberState } from '../../shared/member-state.ts';

// Which depot sends the cluster's alerts (pure): the depot of the current primary (of the first
// service by name that has one; the highest term wins while two claim it), or, when no service
// has a primary, the live depot with the lowest peer id. Every depot computes the same answer from
// the same heartbeats; the alerts plugin adds a settle time so that, while the primary changes,
// two depots never both send.

export interface SenderMember {
  peerId: string;
  name: string;
  state: MemberState;
  containers: ReadonlyArray<{ service: string; role: string; term: number }>;
}

export interface SenderChoice {
  peerId: string;
  name: string;
  why: string;
}

export function chooseSender(members: readonly SenderMember[]): SenderChoice | undefined {
  const alive = members.filter((m) => m.state === 'alive');
  let best: { service: string; term: number; m: SenderMember } | undefined;
  for (const m of alive) {
    for (const c of m.containers) {
      if (c.role !== 'primary') continue;
      const better =
        !best ||
        c.service < best.service ||
        (c.service === best.service && (c.term > best.term || (c.term === best.term && m.peerId < best.m.peerId)));
      if (better) best = { service: c.service, term: c.term, m };
    }
  }
  if (best) return { peerId: best.m.peerId, name: best.m.name, why: `primary of ${best.service}` };
  const lowest = [...alive].sort((a, b) => (a.peerId < b.peerId ? -1 : a.peerId > b.peerId ? 1 : 0))[0];
  return lowest ? { peerId: lowest.peerId, name: lowest.name, why: 'lowest live depot (no primary)' } : undefined;
}
