import type { DepotComponents, DepotPlugin } from '../depot/components.ts';
import type { ContainerManager } from '../depot/containers/manager.ts';
import { registerContainerControl } from '../depot/containers/control-methods.ts';

// The containers this depot hosts: their manager is started and stopped here, their control
// methods are served, and every heartbeat reports them with their role and term.

export interface ContainersInit {
  manager: ContainerManager;
}

export type ContainersComponents = Pick<DepotComponents, 'control' | 'heartbeat'>;

export function containersPlugin(init: ContainersInit): (components: ContainersComponents) => DepotPlugin {
  const { manager } = init;
  return (c) => ({
    name: 'containers',
    async start() {
      await manager.start();
      registerContainerControl(c.control, manager, c.control.guard);
      c.heartbeat.contribute(() => ({ containers: manager.reports() }));
    },
    // Containers keep running: a restarted depot finds them again (ContainerManager.start).
    stop: () => manager.stop(),
  });
}
