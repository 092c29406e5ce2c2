import type { Logger } from '../shared/logger.ts';
import type { ContainerManager } from '../depot/containers/manager.ts';
import type { ServiceSpec } from './service-spec.ts';

// The primary's service stopped answering while the primary holds the lease: restart it in place
// once (the election decides this: pilot-role.ts 'restart-service'), before giving the term up.

export async function restartInPlace(o: { containers: ContainerManager; container: string; spec: ServiceSpec; term: number; log: Logger; now: () => number }): Promise<void> {
  const { containers, container, term, log } = o;
  const t0 = o.now();
  log.warn({ event: 'restart-in-place', term }, 'service probe failed: restarting it in place once');
  const status = await containers.status(container);
  if (status.state === 'running') {
    // The container itself is healthy (e.g. its database): restart only what runs on the
    // primary (e.g. zabbix_server), so a sync in flight and the data stay untouched.
    await containers.setRole(container, 'standby', term);
    await containers.setRole(container, 'primary', term);
  } else {
    await containers.stopContainer(container, { timeoutMs: 5000 });
    await containers.startContainer({ id: container, service: o.spec.name, spec: o.spec.container, role: 'primary', term });
    await containers.setRole(container, 'primary', term);
  }
  log.info({ event: 'restarted-in-place', term, previousState: status.state, durationMs: Math.round(o.now() - t0) }, 'service restarted in place');
}
