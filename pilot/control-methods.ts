import { z } from 'zod';
import { NavigatorError } from '../shared/errors.ts';
import { parseParams } from '../shared/params.ts';
import type { ControlRegistrar } from '../depot/control/server.ts';
import type { ContainerManager } from '../depot/containers/manager.ts';
import { PilotAssignment, ServiceSpec } from './service-spec.ts';
import type { PilotSupervisor } from './supervisor.ts';

// The pilot methods of the control protocol, through which the primary's depot hands this depot a
// copy (`pilot.assign`), removes a surplus one (`pilot.retire`), and moves the primary in a
// switchover (`pilot.resign` on the primary, then `pilot.campaign` on the chosen standby).

const ServiceParams = z.object({ service: ServiceSpec.shape.name }).strict();
const RetireParams = z.object({ container: z.string().min(1).max(64) }).strict();

export function registerPilotControl(control: ControlRegistrar, opts: { supervisor: PilotSupervisor; containers: ContainerManager; selfName: string }): void {
  const { supervisor, containers } = opts;
  const pilotFor = (service: string) => {
    const pilot = supervisor.pilotFor(service);
    if (!pilot) throw new NavigatorError('NOT_FOUND', `no copy of ${service} on ${opts.selfName}`);
    return pilot;
  };
  control.register('pilot.assign', async (params) => {
    await supervisor.assign(PilotAssignment.parse(params));
    return { ok: true };
  });
  control.register('pilot.retire', async (params) => {
    const { container } = parseParams('pilot.retire', RetireParams, params);
    if (supervisor.pilotOf(container)?.role === 'primary') throw new NavigatorError('CONFLICT', `copy ${container} is the primary; it cannot be retired`);
    await supervisor.forget(container);
    await containers.removeContainer(container, { timeoutMs: 30_000 });
    return { ok: true };
  });
  control.register('pilot.campaign', async (params) => {
    const { service } = parseParams('pilot.campaign', ServiceParams, params);
    pilotFor(service).campaign('switchover');
    return { ok: true };
  });
  control.register('pilot.resign', async (params) => {
    const { service } = parseParams('pilot.resign', ServiceParams, params);
    await pilotFor(service).resign('switchover requested');
    return { ok: true };
  });
}
