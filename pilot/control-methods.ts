import { z } from 'zod';
import { NavigatorError } from '../shared/errors.ts';
import { parseParams } from '../shared/params.ts';
import { SafeName } from '../shared/names.ts';
import type { ControlRegistrar } from '../depot/control/server.ts';
import type { ControlAuthorizer } from '../depot/control/guard.ts';
import type { ContainerManager } from '../depot/containers/manager.ts';
import { PilotAssignment, ServiceSpec } from './service-spec.ts';
import type { PilotSupervisor } from './supervisor.ts';

// The pilot methods of the control protocol, through which the primary's depot hands this depot a
// copy (`pilot.assign`), removes a surplus one (`pilot.retire`), and moves the primary in a
// switchover (`pilot.resign` on the primary, then `pilot.campaign` on the chosen standby).
//
// Each is served only to the depot holding the service's lease (depot/control/guard.ts,
// pilot/lease-authority.ts) or to this depot itself: assign and campaign must name the lease's
// term, an assignment from a peer never campaigns (only a local bootstrap does) and names a copy
// this depot already runs for that service, and the service of a retire is the one this depot
// knows the copy by, never one the request names.

const ServiceParams = z.object({ service: ServiceSpec.shape.name }).strict();
const CampaignParams = z
  .object({
    service: ServiceSpec.shape.name,
    term: z.number().int().nonnegative().optional().describe('Term of the primary that resigned for this switchover (required from a peer)'),
    why: z.string().max(512).optional().describe("What the switchover was made for (a busy host, with its figures): the new primary's movement record says it"),
  })
  .strict();
const ExpectParams = z
  .object({
    service: ServiceSpec.shape.name,
    term: z.number().int().nonnegative().describe('Term of the primary announcing the switchover'),
    withinMs: z.number().int().positive().max(600_000).describe('The switchover happens within this long'),
    why: z.string().max(512).optional().describe('What the switchover is made for, for the movement record'),
  })
  .strict();
const RetireParams = z.object({ container: SafeName.describe('Copy to remove') }).strict();

export function registerPilotControl(
  control: ControlRegistrar,
  opts: { supervisor: PilotSupervisor; containers: ContainerManager; selfName: string; guard: ControlAuthorizer },
): void {
  const { supervisor, containers, guard } = opts;
  const pilotFor = (service: string) => {
    const pilot = supervisor.pilotFor(service);
    if (!pilot) throw new NavigatorError('NOT_FOUND', `no copy of ${service} on ${opts.selfName}`);
    return pilot;
  };
  control.register('pilot.assign', async (params, caller) => {
    const a = parseParams('pilot.assign', PilotAssignment, params);
    await guard.requireHolder(caller, 'pilot.assign', a.spec.name, { term: a.term, termRequired: true });
    if (caller.kind === 'peer') {
      if (a.campaign) throw guard.refuse(caller.peer, 'pilot.assign', 'an assignment from a peer cannot campaign (only a bootstrap on this depot does)');
      const copy = containers.list().find((c) => c.id === a.container);
      if (!copy || copy.service !== a.spec.name) {
        throw new NavigatorError('NOT_FOUND', `pilot.assign: ${opts.selfName} runs no copy ${a.container} of ${a.spec.name} (container.start first)`);
      }
    }
    await supervisor.assign(a);
    return { ok: true };
  });
  control.register('pilot.retire', async (params, caller) => {
    const { container } = parseParams('pilot.retire', RetireParams, params);
    const service = supervisor.pilotOf(container)?.spec.name ?? containers.list().find((c) => c.id === container)?.service;
    if (!service) throw new NavigatorError('NOT_FOUND', `pilot.retire: no copy ${container} on ${opts.selfName}`);
    await guard.requireHolder(caller, 'pilot.retire', service);
    if (supervisor.pilotOf(container)?.role === 'primary') throw new NavigatorError('CONFLICT', `copy ${container} is the primary; it cannot be retired`);
    await supervisor.forget(container);
    await containers.removeContainer(container, { timeoutMs: 30_000 });
    return { ok: true };
  });
  control.register('pilot.campaign', async (params, caller) => {
    const { service, term, why } = parseParams('pilot.campaign', CampaignParams, params);
    await guard.requireHolder(caller, 'pilot.campaign', service, { term, termRequired: true });
    pilotFor(service).campaign('switchover', why);
    return { ok: true };
  });
  // Before it resigns, the primary tells the target a switchover is coming: the target may see the
  // primary go and stand for election before pilot.campaign reaches it, and its win is then still
  // recorded as the switchover (with its reason), not as a failover.
  control.register('pilot.expect', async (params, caller) => {
    const { service, term, withinMs, why } = parseParams('pilot.expect', ExpectParams, params);
    await guard.requireHolder(caller, 'pilot.expect', service, { term, termRequired: true });
    pilotFor(service).expectSwitchover(withinMs, why);
    return { ok: true };
  });
  control.register('pilot.resign', async (params, caller) => {
    const { service } = parseParams('pilot.resign', ServiceParams, params);
    // The holder is this depot's own pilot: in effect only this depot (its admin API) may ask.
    await guard.requireHolder(caller, 'pilot.resign', service);
    await pilotFor(service).resign('switchover requested');
    return { ok: true };
  });
}
