import type { Logger } from '../shared/logger.ts';
import type { Config } from '../shared/config.ts';
import { errorMessage } from '../shared/errors.ts';
import type { DepotComponents } from '../depot/components.ts';
import { planPrestage, type PrestageCandidate } from '../ship/prestage-plan.ts';
import { rankHosts } from './placement.ts';
import { candidatesOf, copiesOf } from './cluster-view.ts';
import { servicePolicy } from './policy.ts';
import { kitTargets } from './last-resort.ts';
import type { Pilot } from './pilot.ts';
import type { RecoveryKit } from './recovery-kits.ts';

// The primary's side of the recovery kits (pilot/recovery-kits.ts): every recovery.kitIntervalMs
// it hands its kit (service spec, voter group, term) to the pre-staging targets that already hold
// the image (the top ship.prestageCandidates of the placement ranking without a copy,
// ship/prestage-plan.ts), through the control method recovery.stage, which those depots serve to
// the lease holder only, once the service has its standbys. The kit holders then keep their own
// database copy.

export interface RecoveryKitSenderOptions {
  self: DepotComponents['self'];
  members: DepotComponents['members'];
  control: DepotComponents['control'];
  config: Pick<Config, 'recovery' | 'ship' | 'policy'>;
  logger: Logger;
  now?: () => number;
}

export class RecoveryKitSender {
  private readonly last = new Map<string, number>();
  private readonly sending = new Set<string>();
  private readonly log: Logger;
  private readonly now: () => number;

  constructor(private readonly opts: RecoveryKitSenderOptions) {
    this.log = opts.logger.child({ component: 'recovery-kits' });
    this.now = opts.now ?? Date.now;
  }

  /** Primary only, from its probe loop: hand the kit to the targets when it is due. */
  offer(pilot: Pilot): void {
    const o = this.opts;
    const spec = pilot.spec;
    if (!o.config.recovery.enabled || pilot.role !== 'primary' || this.sending.has(spec.name)) return;
    const now = this.now();
    if (now - (this.last.get(spec.name) ?? -Infinity) < o.config.recovery.kitIntervalMs) return;
    const policy = servicePolicy(o.config.policy, spec.name);
    // Like pre-staging, only once the service has its standbys: the kit holders' database copies
    // must not compete with a standby's seed (nor with a primary just elected) for the primary's server.
    const standbys = copiesOf(o.members, spec.name).filter((c) => c.report.role === 'standby' && c.report.state === 'running' && c.depotState === 'alive').length;
    if (standbys < (policy.standbys ?? spec.standbys)) return;
    this.last.set(spec.name, now);
    const candidates = candidatesOf(o.members);
    const ranking = rankHosts(candidates, { service: spec.name, memBytes: spec.memoryBytes, diskBytes: spec.diskBytes, image: spec.image }, now, { policy });
    const byPeer = new Map(candidates.map((c) => [c.peerId, c]));
    const ranked: PrestageCandidate[] = ranking.ranking
      .filter((r) => r.peerId && r.peerId !== o.self.peerId)
      .map((r) => ({ host: r.peerId!, alive: byPeer.get(r.peerId)?.state === 'alive', images: byPeer.get(r.peerId)?.images ?? [] }));
    const plan = planPrestage({ ranked, imageId: spec.image, k: o.config.ship.prestageCandidates });
    const copyHosts = new Set(copiesOf(o.members, spec.name).map((c) => c.peerId));
    const targets = kitTargets(plan.staged, copyHosts, o.self.peerId);
    if (targets.length === 0) return;
    const kit: RecoveryKit = { spec, view: pilot.view, term: pilot.term, stagedBy: o.self.name };
    this.sending.add(spec.name);
    void Promise.allSettled(
      targets.map(async (peer) => {
        try {
          await o.control.call(peer, 'recovery.stage', kit, { timeoutMs: 10_000 });
        } catch (err) {
          this.log.warn({ event: 'kit-stage-failed', service: spec.name, host: byPeer.get(peer)?.name ?? peer, err: errorMessage(err) }, 'could not hand the recovery kit over');
        }
      }),
    ).finally(() => this.sending.delete(spec.name));
  }
}
