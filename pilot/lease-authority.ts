import type { LeaseAuthority, LeaseHolder } from '../depot/control/guard.ts';
import { isSafeName } from '../shared/names.ts';

// Who holds a service's lease, as this depot knows it: what the control guard
// (depot/control/guard.ts) checks a caller against. Two sources, the stronger first:
//
// 1. This depot's own voter, while its promise for the service runs: a primary renews its lease
//    with every voter of its view every leaseMs/3, so an active promise names the current holder
//    and its term, and nothing a peer claims can change it.
// 2. Otherwise (this depot does not vote for the service, or the promise ran out: the primary
//    resigned for a switchover, or died), whichever names the later term: the voter's last
//    promise, or the highest-term primary claimed in the depots' signed heartbeats (a claim
//    outlives the primary's resignation, so a switchover target still knows whom to obey).
//
// Either way, a holder whose term is below the term this depot's own copy is primary in is stale:
// no one is served (fail closed).

/** The pilot ids of candidates and holders are `<peer id>/<container>/<incarnation>`. */
export function peerOfPilot(pilotId: string): string {
  const slash = pilotId.indexOf('/');
  return slash < 0 ? pilotId : pilotId.slice(0, slash);
}

export interface LeaseEvidence {
  /** This depot's voter for the service: whom it promised, in which term, and how long the promise still runs. */
  voter?: { term: number; promisedTo: string | null; promiseLeftMs: number } | undefined;
  /** The highest-term primary claimed in a heartbeat. */
  claimed?: LeaseHolder | undefined;
  /** The term this depot's own copy of the service is primary in, if it is. */
  localTerm?: number | undefined;
}

/** Pure: the holder the evidence names, or undefined when it names none (or a stale one). */
export function leaseHolderFrom(e: LeaseEvidence): LeaseHolder | undefined {
  const voter = e.voter && e.voter.promisedTo ? { peer: peerOfPilot(e.voter.promisedTo), term: e.voter.term } : undefined;
  // A running promise decides alone; a past one still names the holder of its term (a primary
  // that resigned for a switchover), unless a heartbeat claims a later term.
  const running = voter !== undefined && (e.voter?.promiseLeftMs ?? 0) > 0;
  const holder = running ? voter : voter && (!e.claimed || e.claimed.term <= voter.term) ? voter : e.claimed;
  if (!holder || !holder.peer) return undefined;
  if (e.localTerm !== undefined && e.localTerm > holder.term) return undefined;
  return holder;
}

export interface LeaseAuthorityOptions {
  voters: () => Array<{ service: string; votedTerm: number; promisedTo: string | null; promiseLeftMs: number }>;
  /** The term this depot's copy of `service` is primary in, if it is. */
  localTerm: (service: string) => number | undefined;
  /** Primary copies of `service` in the heartbeats held now (a heartbeat may predate the pilots' start). */
  current?: (service: string) => LeaseHolder[];
}

/** The LeaseAuthority of a depot: its voters, its own pilots, and the primaries heard in heartbeats. */
export class DepotLeaseAuthority implements LeaseAuthority {
  private readonly claims = new Map<string, LeaseHolder>();

  constructor(private readonly opts: LeaseAuthorityOptions) {}

  /** A heartbeat (signed by `peer`) reports a primary copy of `service` in `term`. */
  observePrimary(service: string, peer: string, term: number): void {
    if (!isSafeName(service)) return;
    const have = this.claims.get(service);
    // Two primaries never share a term: the first claim of a term stands.
    if (have && (have.term > term || (have.term === term && have.peer !== peer))) return;
    if (!have && this.claims.size >= 4096) return;
    this.claims.set(service, { peer, term });
  }

  async holder(service: string): Promise<LeaseHolder | undefined> {
    for (const c of this.opts.current?.(service) ?? []) this.observePrimary(service, c.peer, c.term);
    const voter = this.opts.voters().find((v) => v.service === service);
    return leaseHolderFrom({
      voter: voter ? { term: voter.votedTerm, promisedTo: voter.promisedTo, promiseLeftMs: voter.promiseLeftMs } : undefined,
      claimed: this.claims.get(service),
      localTerm: this.opts.localTerm(service),
    });
  }
}
