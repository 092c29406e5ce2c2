import { describe, it, expect, afterAll } from 'vitest';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify as toYaml } from 'yaml';
import { Depot } from '../../depot/depot.ts';
import { makeSwarmKey } from '../../depot/swarm-key.ts';
import { ImageStore } from '../../depot/images/catalog.ts';
import { containersPlugin } from '../../plugins/containers.ts';
import { ContainerManager } from '../../depot/containers/manager.ts';
import type { ContainerStatus } from '../../depot/containers/manager.ts';
import { parseConfig } from '../../shared/config.ts';
import { silentLogger } from '../../shared/logger.ts';
import type { HeartbeatMessage } from '../../shared/wire.ts';
import { freePort } from '../../lab/loopback/ports.ts';

// Two real depots with the containers plugin: depot A starts a process container on depot B over
// the control protocol, and A then sees it in B's heartbeat as running; after the stop, stopped.

const swarmKey = makeSwarmKey();
const dirs: string[] = [];
const running: Array<{ depot: Depot; manager: ContainerManager }> = [];

afterAll(async () => {
  for (const { depot, manager } of running) {
    await manager.stopAll({ timeoutMs: 0 }).catch(() => undefined);
    await depot.stop().catch(() => undefined);
  }
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function startDepot(name: string, bootstrap: string[] = []): Promise<{ depot: Depot; manager: ContainerManager; store: ImageStore; dir: string }> {
  const dir = await mkdtemp(join(tmpdir(), `nav-cpart-${name}-`));
  dirs.push(dir);
  const config = parseConfig({
    node: { name, dataDir: dir },
    network: { listen: ['/ip4/127.0.0.1/tcp/0'], mdns: false, bootstrap },
    membership: { heartbeatMs: 200 },
    log: { level: 'silent' },
  });
  const store = new ImageStore({ dir: config.store.dir, keepVersions: 3, logger: silentLogger() });
  await store.start();
  const manager = new ContainerManager({ root: join(config.store.dir, 'containers'), images: store, logger: silentLogger(), statusIntervalMs: 200 });
  const depot = new Depot({ config, log: silentLogger(), swarmKey, http: false, plugins: [containersPlugin({ manager })] });
  await depot.start();
  running.push({ depot, manager });
  return { depot, manager, store, dir };
}

function nextHeartbeat(depot: Depot, from: string, pred: (hb: HeartbeatMessage) => boolean, timeoutMs = 10_000): Promise<HeartbeatMessage> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      depot.events.off('heartbeat', on);
      reject(new Error('no matching heartbeat in time'));
    }, timeoutMs);
    const on = (hb: HeartbeatMessage) => {
      if (hb.peerId !== from || !pred(hb)) return;
      clearTimeout(timer);
      depot.events.off('heartbeat', on);
      resolve(hb);
    };
    depot.events.on('heartbeat', on);
  });
}

describe('containers plugin in a depot', () => {
  it('a depot starts a container on another one and sees it in its heartbeat', async () => {
    const b = await startDepot('depot-b');
    const a = await startDepot('depot-a', [`${b.depot.node.getMultiaddrs()[0]!.toString()}`]);
    await a.depot.node.dial(b.depot.node.getMultiaddrs()[0]!);
    // No pilots here: B is told A holds svc's lease in term 2 (what B's voter would say).
    b.depot.components.control.guard.setAuthority({ holder: async (s) => (s === 'svc' ? { peer: a.depot.peerId, term: 2 } : undefined) });

    const port = await freePort();
    const src = join(b.dir, 'src');
    await mkdir(src);
    const script = `require('net').createServer((s) => { s.on('error', () => {}); s.end('x'); }).listen(${port}, '127.0.0.1');`;
    await writeFile(join(src, 'container.yaml'), toYaml({ name: 'svc', start: [{ argv: [process.execPath, '-e', script] }], health: { tcp: { port } } }));
    const image = await b.store.import(src, 'svc');

    const st = await a.depot.components.control.call<ContainerStatus>(b.depot.peerId, 'container.start', {
      id: 'svc-1',
      service: 'svc',
      image,
      spec: { driver: 'process' },
      role: 'primary',
      term: 2,
    });
    expect(st.state).toBe('running');

    const hb = await nextHeartbeat(a.depot, b.depot.peerId, (h) => h.containers.some((c) => c.id === 'svc-1' && c.state === 'running'));
    expect(hb.containers).toEqual([
      { id: 'svc-1', service: 'svc', driver: 'process', state: 'running', role: 'primary', term: 2, image, syncFailing: false },
    ]);

    await a.depot.components.control.call(b.depot.peerId, 'container.stop', { id: 'svc-1', timeoutMs: 5000 });
    await nextHeartbeat(a.depot, b.depot.peerId, (h) => h.containers.some((c) => c.id === 'svc-1' && c.state === 'stopped'));
  }, 60_000);
});
