import { z } from 'zod';
import { parseParams } from '../../shared/params.ts';
import type { ControlRegistrar } from '../control/server.ts';
import type { ControlAuthorizer } from '../control/guard.ts';
import { ContainerId, StartContainerParams, type ContainerManager } from './manager.ts';

// The container methods of the control protocol: start, stop and status of the copies this
// depot hosts, for the primary's pilot on another depot. start and stop are served only to the
// depot holding the service's lease (start must name the lease's term) or to this depot itself;
// status is read-only and open to the swarm. Nothing here runs a program a peer names: there is
// no exec over the network (the drivers' own health checks are declared in the container's
// manifest and run by this depot alone).

const StopParams = z
  .object({
    id: ContainerId,
    timeoutMs: z.number().int().min(0).max(600_000).optional().describe('Graceful stop deadline; 0 forces at once'),
  })
  .strict();
const StatusParams = z.object({ id: ContainerId.optional().describe('One container; all when absent') }).strict();

export function registerContainerControl(control: ControlRegistrar, containers: ContainerManager, guard: ControlAuthorizer): void {
  control.register('container.start', async (params, caller) => {
    const p = parseParams('container.start', StartContainerParams, params);
    await guard.requireHolder(caller, 'container.start', p.service, { term: p.term, termRequired: true });
    return containers.startContainer(p);
  });
  control.register('container.stop', async (params, caller) => {
    const p = parseParams('container.stop', StopParams, params);
    // The service comes from what this depot knows of the container, never from the request.
    const status = await containers.status(p.id);
    await guard.requireHolder(caller, 'container.stop', status.service);
    return containers.stopContainer(p.id, { timeoutMs: p.timeoutMs });
  });
  control.register('container.status', async (params) => {
    const p = parseParams('container.status', StatusParams, params);
    return p.id ? containers.status(p.id) : containers.list();
  });
}
