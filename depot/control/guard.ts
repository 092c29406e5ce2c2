import { Counter, type Registry } from 'prom-client';
import type { Logger } from '../../shared/logger.ts';
import { NavigatorError } from '../../shared/errors.ts';
import { isSafeName } from '../../shared/names.ts';
import type { Notices } from '../notices.ts';
import type { ControlOrigin } from './server.ts';

// Who may call what. The swarm key only keeps strangers out; inside the swarm a method that
// changes something (starts or stops a copy, hands one over, receives an image, moves the
// primary) is served only to the depot that holds the service's lease in the current term, or
// to this depot itself (its admin API, its own pilots). Who holds a lease is the pilots' business
// (pilot/lease-authority.ts); until they provide an authority, no peer is served (fail closed).
//
// Every refusal — here, and the election messages a peer forged (pilot/election/transport.ts) —
// is counted in /metrics (navigator_peer_refused_total{kind}), logged once per peer and kind,
// and reported as a `peer-refused` notice (rate-limited by the notice bus). A refusal is an
// error reply, never a crash.

/** The depot holding a service's lease, and its term, as this depot knows it. */
export interface LeaseHolder {
  peer: string;
  term: number;
}

/** Answers who holds a service's lease now (the pilots plugin provides it). */
export interface LeaseAuthority {
  holder(service: string): Promise<LeaseHolder | undefined>;
}

export interface ControlGuardOptions {
  logger: Logger;
  /** /metrics registry (absent in some tests: counts stay readable through counts()). */
  registry?: Registry;
  notices?: Notices;
}

/** What a caller must show besides being the lease holder. */
export interface HolderCheck {
  /** The term the request names (its `term` param); checked against the lease's. */
  term?: number | undefined;
  /** The request must name a term (a peer's request without one is refused). */
  termRequired?: boolean;
}

/** Refusals counted here; also what plugins call to check a caller. */
export interface ControlAuthorizer {
  /**
   * Throws UNAUTHORIZED (counted, logged once per peer and method) unless `caller` is this depot
   * or the peer holding `service`'s lease; with `term`, the caller's term must be the lease's.
   */
  requireHolder(caller: ControlOrigin, method: string, service: string, opts?: HolderCheck): Promise<void>;
  /** Throws UNAUTHORIZED (counted) unless `caller` is this depot. */
  requireLocal(caller: ControlOrigin, method: string): void;
  /** Count and log a refusal seen elsewhere (a forged election message); returns the error to throw or drop. */
  refuse(peer: string, kind: string, reason: string): NavigatorError;
}

export class ControlGuard implements ControlAuthorizer {
  private authority: LeaseAuthority | undefined;
  private readonly log: Logger;
  private readonly counter: Counter<'kind'> | undefined;
  private readonly logged = new Set<string>();
  private readonly byKind = new Map<string, number>();

  constructor(private readonly opts: ControlGuardOptions) {
    this.log = opts.logger.child({ component: 'control-guard' });
    if (opts.registry) {
      this.counter = new Counter({
        name: 'navigator_peer_refused_total',
        help: 'Requests from peers refused by role and term (control methods, forged election messages), by method or message kind',
        labelNames: ['kind'],
        registers: [opts.registry],
      });
    }
  }

  /** The pilots plugin says who holds each lease; before it does, only this depot is served. */
  setAuthority(authority: LeaseAuthority | undefined): void {
    this.authority = authority;
  }

  /** Refusals so far, by method or message kind. */
  counts(): Record<string, number> {
    return Object.fromEntries(this.byKind);
  }

  requireLocal(caller: ControlOrigin, method: string): void {
    if (caller.kind === 'local') return;
    throw this.refuse(caller.peer, method, `${method} is served only to this depot's own admin API`);
  }

  async requireHolder(caller: ControlOrigin, method: string, service: string, opts: HolderCheck = {}): Promise<void> {
    if (caller.kind === 'local') return;
    if (!isSafeName(service)) throw this.refuse(caller.peer, method, `service name ${JSON.stringify(service.slice(0, 80))} is not a valid name`);
    const holder = this.authority ? await this.authority.holder(service).catch(() => undefined) : undefined;
    if (!holder) throw this.refuse(caller.peer, method, `no known lease holder of ${service} on this depot: ${method} is served only to the primary's depot`);
    if (holder.peer !== caller.peer) throw this.refuse(caller.peer, method, `${method} for ${service} is served only to the depot holding its lease (term ${holder.term})`);
    if (opts.term === undefined && opts.termRequired) throw this.refuse(caller.peer, method, `${method} from a peer must name the lease's term`);
    if (opts.term !== undefined && opts.term !== holder.term) {
      throw this.refuse(caller.peer, method, `${method} for ${service} names term ${opts.term}, but the lease is in term ${holder.term}`);
    }
  }

  refuse(peer: string, kind: string, reason: string): NavigatorError {
    this.byKind.set(kind, (this.byKind.get(kind) ?? 0) + 1);
    this.counter?.inc({ kind });
    const key = `${peer}\u0000${kind}`;
    if (!this.logged.has(key)) {
      if (this.logged.size >= 10_000) this.logged.clear();
      this.logged.add(key);
      this.log.warn({ event: 'peer-refused', peer, kind, reason }, `refused ${kind} from ${peer}: ${reason} (logged once per peer and kind)`);
    }
    this.opts.notices?.report({ kind: 'peer-refused', subject: peer, summary: `${kind} from ${peer} refused: ${reason}`, details: { method: kind } });
    return new NavigatorError('UNAUTHORIZED', `refused: ${reason}`, { refused: true });
  }
}
