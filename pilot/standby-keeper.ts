import { randomBytes } from 'node:crypto';
import { containerStartTimeoutMs } from './guest-mode.ts';
import type { Logger } from '../shared/logger.ts';
import type { Config } from '../shared/config.ts';
import { NavigatorError, errorMessage, isNavigatorError } from '../shared/errors.ts';
import type { DepotComponents } from '../depot/components.ts';
import type { ImageShipping } from '../ship/image-shipping.ts';
import type { PrestageCandidate } from '../ship/prestage-plan.ts';
import { rankHosts, type PlacementResult } from './placement.ts';
import { candidatesOf, copiesOf } from './cluster-view.ts';
import { planStandbys, type RecentPlacement } from './standby-plan.ts';
import type { CopyView, Pilot } from './pilot.ts';
import type { PilotAssignment, ServiceSpec } from './service-spec.ts';
import type { RecordMovement } from './movement-recorder.ts';
import { quietWindowAt, servicePolicy } from './policy.ts';

// Carries out what pilot/standby-plan.ts decides, on the depot whose pilot is primary: places a
// standby (shipping the image first when the host lacks it), retires a surplus one, or keeps the
// image pre-staged on the next likely hosts. One step per service at a time.

export interface StandbyKeeperOptions {
  self: DepotComponents['self'];
  members: DepotComponents['members'];
  control: DepotComponents['control'];
  pilot: Pick<Config['pilot'], 'placedGraceMs' | 'placementRetryMs'>;
  /** The admin's policy (config section policy): placement rules, standbys, quiet hours. */
  policy?: Config['policy'];
  shipping: ImageShipping | undefined;
  record: RecordMovement;
  logger: Logger;
}

export class StandbyKeeper {
  private readonly log: Logger;
  private readonly placing = new Map<string, Promise<void>>();
  private readonly failedHosts = new Map<string, number>();
  private recentlyPlaced: RecentPlacement[] = [];
  /**
   * The copies each primary counts, by service: those heard of in heartbeats before it took over
   * (its term) or held in the view when it did, plus those it placed since. A copy a peer first claims in its heartbeat after the
   * takeover was assigned by no primary: it is neither counted (so no real standby is retired for
   * it, and its host is no reason to skip a placement) nor synced to.
   */
  private readonly known = new Map<string, { term: number; since: number; atTakeover: Set<string>; placed: Set<string> }>();
  /** When each copy was first heard of in a heartbeat, by service, then `peer/container`. */
  private readonly firstSeen = new Map<string, Map<string, number>>();

  constructor(private readonly opts: StandbyKeeperOptions) {
    this.log = opts.logger.child({ component: 'pilots' });
  }

  /** Primary only: one step towards the configured number of standbys. */
  async keep(pilot: Pilot): Promise<void> {
    const spec = pilot.spec;
    if (pilot.role !== 'primary' || this.placing.has(spec.name)) return;
    const o = this.opts;
    const now = Date.now();
    const policy = o.policy ? servicePolicy(o.policy, spec.name) : undefined;
    const quiet = o.policy ? quietWindowAt(o.policy, now) : undefined;
    this.knownFor(pilot);
    const plan = planStandbys({
      service: { ...spec, standbys: this.standbysOf(spec) },
      copies: copiesOf(o.members, spec.name).filter((c) => this.trusts(pilot, c)),
      candidates: candidatesOf(o.members),
      recentlyPlaced: this.recentlyPlaced,
      failedHosts: this.failedHosts,
      now,
      placedGraceMs: o.pilot.placedGraceMs,
      placementRetryMs: o.pilot.placementRetryMs,
      ...(policy ? { policy } : {}),
      ...(quiet ? { quiet: quiet.text } : {}),
    });
    this.recentlyPlaced = plan.recentlyPlaced;
    const d = plan.decision;
    switch (d.kind) {
      case 'wait':
        return;
      case 'prestage':
        this.prestage(spec);
        return;
      case 'retire':
        this.run(spec.name, this.retire(pilot, d.copy));
        return;
      case 'place': {
        const target = d.target;
        const retryMs = o.pilot.placementRetryMs;
        const job = this.createStandby(pilot, target.peerId, target.name, d.replacing, d.ranking, d.why).catch((err: unknown) => {
          this.failedHosts.set(target.peerId, Date.now());
          this.log.error(
            { event: 'standby-failed', service: spec.name, host: target.name, err: errorMessage(err), code: (err as NavigatorError).code, retryInMs: retryMs },
            `could not place a standby on ${target.name}: ${errorMessage(err)}`,
          );
        });
        this.run(spec.name, job);
        return;
      }
    }
  }

  /** What this primary knows of its copies in its current term (made at its first look). */
  private knownFor(pilot: Pilot): { term: number; since: number; atTakeover: Set<string>; placed: Set<string> } {
    let k = this.known.get(pilot.spec.name);
    if (!k || k.term !== pilot.term) {
      const atTakeover = new Set(copiesOf(this.opts.members, pilot.spec.name).map((c) => copyKey(c.peerId, c.report.id)));
      k = { term: pilot.term, since: Date.now(), atTakeover, placed: new Set() };
      this.known.set(pilot.spec.name, k);
    }
    return k;
  }

  /** A heartbeat from `peerId` reports these copies (every depot keeps this, primary or not). */
  observeCopies(peerId: string, containers: ReadonlyArray<{ id: string; service: string }>, now = Date.now()): void {
    for (const c of containers) {
      let m = this.firstSeen.get(c.service);
      if (!m) {
        if (this.firstSeen.size >= 1024) continue;
        this.firstSeen.set(c.service, (m = new Map()));
      }
      const key = copyKey(peerId, c.id);
      if (!m.has(key) && m.size < 1024) m.set(key, now);
    }
  }

  /** Is `copy` one this primary knows (heard of before it took over, or placed by it since)? */
  trusts(pilot: Pilot, copy: CopyView): boolean {
    if (copy.peerId === this.opts.self.peerId) return true;
    const k = this.knownFor(pilot);
    const key = copyKey(copy.peerId, copy.report.id);
    if (k.placed.has(key) || k.atTakeover.has(key)) return true;
    const seen = this.firstSeen.get(pilot.spec.name)?.get(key);
    return seen !== undefined && seen <= k.since;
  }

  /** Standbys kept: the policy's number for the service, else the one given at bootstrap. */
  private standbysOf(spec: ServiceSpec): number {
    return this.opts.policy?.services[spec.name]?.standbys ?? spec.standbys;
  }

  private run(service: string, job: Promise<void>): void {
    this.placing.set(
      service,
      job.finally(() => this.placing.delete(service)),
    );
  }

  /** Pre-staging round: the top K of the placement ranking (hosts without a copy) keep the image. */
  private prestage(spec: ServiceSpec): void {
    const o = this.opts;
    o.shipping?.prestage(spec.image, () => {
      const candidates = candidatesOf(o.members);
      const policy = o.policy ? servicePolicy(o.policy, spec.name) : undefined;
      const ranking = rankHosts(candidates, { service: spec.name, memBytes: spec.memoryBytes, diskBytes: spec.diskBytes, image: spec.image }, Date.now(), policy ? { policy } : {});
      const byPeer = new Map(candidates.map((c) => [c.peerId, c]));
      const ranked: PrestageCandidate[] = ranking.ranking
        .filter((r) => r.peerId && r.peerId !== o.self.peerId)
        .map((r) => ({ host: r.peerId!, alive: byPeer.get(r.peerId)?.state === 'alive', images: byPeer.get(r.peerId)?.images ?? [] }));
      // Depots receiving this image from another sender (an earlier primary) are left to it.
      const busy = o.members
        .view()
        .filter((m) => m.heartbeat?.staging.some((s) => s.image === spec.image))
        .map((m) => m.peerId);
      return { ranked, busy };
    });
  }

  /** Remove one surplus standby copy: its pilot stops, its container stops and goes. */
  private async retire(pilot: Pilot, copy: CopyView): Promise<void> {
    try {
      await this.opts.control.call(copy.peerId, 'pilot.retire', { container: copy.report.id }, { timeoutMs: 60_000 });
      this.log.info({ event: 'standby-retired', service: pilot.spec.name, host: copy.host, container: copy.report.id }, `surplus standby on ${copy.host} retired`);
      await this.opts.record(pilot.spec, {
        event: 'drained',
        role: 'standby',
        host: copy.host,
        failover: false,
        reason: `surplus standby on ${copy.host} removed (${this.standbysOf(pilot.spec)} wanted)`,
        term: pilot.term,
        timings: {},
      });
    } catch (err) {
      this.log.warn({ event: 'retire-failed', host: copy.host, err: errorMessage(err) }, `could not retire the standby on ${copy.host}`);
    }
  }

  /** Best effort, a few tries: `pilot.retire` of a copy whose placement failed (NOT_FOUND: none was made). */
  private async removeHalfPlaced(peerId: string, host: string, container: string): Promise<void> {
    for (let attempt = 1; attempt <= 3; attempt++) {
      try {
        await this.opts.control.call(peerId, 'pilot.retire', { container }, { timeoutMs: 30_000 });
        this.log.info({ event: 'half-placed-removed', host, container }, `removed the copy ${container} of a failed placement on ${host}`);
        return;
      } catch (err) {
        if (isNavigatorError(err, 'NOT_FOUND')) return;
        if (attempt === 3) {
          this.log.warn({ event: 'half-placed-remove-failed', host, container, err: errorMessage(err) }, `could not remove the copy ${container} of a failed placement on ${host}`);
          return;
        }
        await new Promise((r) => setTimeout(r, 1000 * attempt));
      }
    }
  }

  private async createStandby(pilot: Pilot, peerId: string, host: string, replacing: boolean, ranking: PlacementResult, why: 'missing' | 'anti-affinity'): Promise<void> {
    const spec = pilot.spec;
    const control = this.opts.control;
    const t0 = Date.now();
    this.log.info(
      { event: 'placing-standby', service: spec.name, host, why, ranking: ranking.ranking.slice(0, 3).map((r) => ({ host: r.name, score: Number(r.total.toFixed(3)), rule: r.rule })) },
      `placing a standby on ${host}`,
    );
    const status = await control.call<{ state?: string }>(peerId, 'image.status', { image: spec.image }, { timeoutMs: 10_000 });
    let shipped = '';
    if (status.state !== 'ready') {
      // Not pre-staged there: ship it now. The target verifies every block before the image
      // exists in its store, so a failed transfer leaves nothing a container could start from.
      if (!this.opts.shipping) throw new NavigatorError('INTERNAL', 'image shipping not started');
      const r = await this.opts.shipping.ensureImage(peerId, spec.image);
      shipped = `; image shipped (${r.kind}, ${r.bytesSent} bytes in ${r.durationMs} ms)`;
    }
    const ship = Date.now() - t0;
    const container = `${spec.name}-${randomBytes(3).toString('hex')}`;
    const b0 = Date.now();
    try {
      await control.call(peerId, 'container.start', { id: container, service: spec.name, image: spec.image, spec: spec.container, role: 'standby', term: pilot.term }, { timeoutMs: containerStartTimeoutMs(spec.container) });
      // Its database is the image's initial one until this primary has seeded it.
      const assignment: PilotAssignment = { spec, container, view: pilot.view, term: pilot.term, campaign: false, seeded: spec.database === undefined };
      await control.call(peerId, 'pilot.assign', assignment, { timeoutMs: 10_000 });
    } catch (err) {
      // A call can fail after the target acted on it (the stream broke before the reply): the
      // copy may run there with no pilot, a copy no one syncs or retires. Remove it.
      await this.removeHalfPlaced(peerId, host, container);
      throw err;
    }
    this.knownFor(pilot).placed.add(copyKey(peerId, container));
    this.recentlyPlaced.push({ service: spec.name, peerId, container, at: Date.now() });
    const boot = Date.now() - b0;
    this.log.info({ event: 'standby-placed', service: spec.name, host, container, shipMs: ship, bootMs: boot, durationMs: Date.now() - t0 }, `standby running on ${host}`);
    await this.opts.record(spec, {
      event: replacing ? 'replaced' : 'placed',
      role: 'standby',
      host,
      failover: false,
      reason: `${why === 'anti-affinity' ? 'moves a standby out of the primary\'s anti-affinity group:' : replacing ? 'replaces a lost standby' : 'new standby'} on ${host} (${ranking.ranking.find((r) => r.peerId === peerId)?.rule ?? 'placement'})${shipped}`,
      term: pilot.term,
      timings: { ship, boot },
    });
  }
}

function copyKey(peerId: string, container: string): string {
  return `${peerId}/${container}`;
}
