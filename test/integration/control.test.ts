import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { access, chmod, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as lp from 'it-length-prefixed';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { stringify as toYaml } from 'yaml';
import { silentLogger } from '../../shared/logger.ts';
import { NavigatorError } from '../../shared/errors.ts';
import { ContainerReport } from '../../shared/wire.ts';
import { createNode, type NavigatorNode } from '../../depot/libp2p.ts';
import { makeSwarmKey } from '../../depot/swarm-key.ts';
import { ImageStore } from '../../depot/images/catalog.ts';
import { ContainerManager, type ContainerStatus } from '../../depot/containers/manager.ts';
import { ControlServer } from '../../depot/control/server.ts';
import { ControlClient } from '../../depot/control/client.ts';
import { registerContainerControl } from '../../depot/containers/control-methods.ts';
import { registerImageQueries } from '../../depot/images/status-methods.ts';
import { ControlGuard } from '../../depot/control/guard.ts';
import { Registry } from 'prom-client';
import { tcpOpen } from '../../shared/tcp-probe.ts';
import { freePort } from '../../lab/loopback/ports.ts';

// Two real libp2p nodes with the same swarm key on 127.0.0.1. Depot A asks depot B, over
// /navigator/control/1, to start and stop a process container cloned from an image in B's
// store; then the protocol is fed garbage, unknown methods and paths outside the store.

let root: string;
let a: NavigatorNode;
let b: NavigatorNode;
/** A third depot with the swarm key that holds no lease: every changing call from it is refused. */
let c: NavigatorNode;
let guard: ControlGuard;
const registry = new Registry();
let store: ImageStore;
let containers: ContainerManager;
let server: ControlServer;
let client: ControlClient;
let imageId: string;
let slowImageId: string;
let port: number;

async function caught(p: Promise<unknown>): Promise<NavigatorError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(NavigatorError);
    return err as NavigatorError;
  }
  throw new Error('expected a rejection');
}

async function makeImage(name: string, manifest: unknown): Promise<string> {
  const src = join(root, `src-${name}`);
  await mkdir(join(src, 'app'), { recursive: true });
  await writeFile(join(src, 'container.yaml'), toYaml(manifest));
  await writeFile(
    join(src, 'app', 'server.cjs'),
    "const port = Number(process.argv[2]);\nrequire('net').createServer((s) => { s.on('error', () => {}); s.end('hello'); }).listen(port, '127.0.0.1');\n",
  );
  return store.import(src, name);
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'nav-control-'));
  await chmod(root, 0o755);
  port = await freePort();
  store = new ImageStore({ dir: join(root, 'store'), keepVersions: 3, logger: silentLogger(), pinned: () => containers?.imagesInUse() ?? [] });
  await store.start();
  imageId = await makeImage('web', {
    name: 'web',
    start: [{ argv: [process.execPath, '${dir}/app/server.cjs', String(port)] }],
    health: { tcp: { host: '127.0.0.1', port } },
    startTimeoutMs: 20_000,
  });
  slowImageId = await makeImage('slow', {
    name: 'slow',
    start: [{ argv: ['sleep', '600'] }],
    health: { command: ['false'] },
    startTimeoutMs: 3000,
  });

  const swarmKey = makeSwarmKey();
  [a, b, c] = await Promise.all([
    createNode({ swarmKey, listen: ['/ip4/127.0.0.1/tcp/0'] }),
    createNode({ swarmKey, listen: ['/ip4/127.0.0.1/tcp/0'] }),
    createNode({ swarmKey, listen: ['/ip4/127.0.0.1/tcp/0'] }),
  ]);
  containers = new ContainerManager({ root: join(root, 'store', 'containers'), images: store, logger: silentLogger(), statusIntervalMs: 60_000 });
  await containers.start();
  server = new ControlServer({ node: b, logger: silentLogger() });
  registerImageQueries(server, store);
  // A holds the lease of every service here, in term 4 (as B's voter would say).
  guard = new ControlGuard({ logger: silentLogger(), registry });
  guard.setAuthority({ holder: async () => ({ peer: a.peerId.toString(), term: 4 }) });
  registerContainerControl(server, containers, guard);
  await server.start();
  client = new ControlClient({ node: a, timeoutMs: 30_000 });
  await a.dial(b.getMultiaddrs()[0]!);
  await c.dial(b.getMultiaddrs()[0]!);
}, 60_000);

afterAll(async () => {
  await containers?.stopAll({ timeoutMs: 0 });
  await containers?.stop();
  await server?.stop();
  await Promise.allSettled([a?.stop(), b?.stop(), c?.stop()]);
  await rm(root, { recursive: true, force: true });
});

describe('control protocol', () => {
  it('starts, inspects and stops a process container on another depot; nothing runs a program a peer names', async () => {
    const started = await client.call<ContainerStatus>(b.peerId, 'container.start', {
      id: 'web-1',
      service: 'web',
      image: imageId,
      spec: { driver: 'process' },
      role: 'standby',
      term: 4,
    });
    expect(started).toMatchObject({ id: 'web-1', service: 'web', driver: 'process', state: 'running', image: imageId, role: 'standby', term: 4 });
    expect(await tcpOpen('127.0.0.1', port, 1000)).toBe(true);

    // It runs from a clone: the data folder is in the container folder, the stored image is untouched.
    const cdir = join(root, 'store', 'containers', 'web-1');
    await access(join(cdir, 'data'));
    expect((await readdir(join(root, 'store', 'images', imageId, 'files'))).sort()).toEqual(['app', 'container.yaml']);

    const st = await client.call<ContainerStatus>(b.peerId, 'container.status', { id: 'web-1' });
    expect(st.state).toBe('running');
    const all = await client.call<ContainerStatus[]>(b.peerId, 'container.status', {});
    expect(all.map((c) => c.id)).toEqual(['web-1']);

    // There is no exec over the network, not even for the lease holder.
    const ex = await caught(client.call(b.peerId, 'container.exec', { id: 'web-1', cmd: 'cat', args: ['container.yaml'] }));
    expect(ex.code).toBe('UNKNOWN_METHOD');

    // The heartbeat view: schema-valid reports with the state.
    const reports = containers.reports();
    expect(reports).toHaveLength(1);
    expect(ContainerReport.parse(reports[0])).toMatchObject({ id: 'web-1', driver: 'process', state: 'running', image: imageId, role: 'standby', term: 4 });

    // The image is pinned while a container uses it.
    expect(containers.imagesInUse()).toEqual([imageId]);

    const stopped = await client.call<ContainerStatus & { forced: boolean }>(b.peerId, 'container.stop', { id: 'web-1', timeoutMs: 5000 });
    expect(stopped).toMatchObject({ id: 'web-1', state: 'stopped', forced: false });
    expect(await tcpOpen('127.0.0.1', port, 500)).toBe(false);
    expect(containers.reports()[0]!.state).toBe('stopped');

    // Started again from the same folder (no second clone).
    const again = await client.call<ContainerStatus>(b.peerId, 'container.start', { id: 'web-1', service: 'web', image: imageId, spec: { driver: 'process' }, term: 4 });
    expect(again.state).toBe('running');
  });

  it('serves container.start/stop only to the lease holder in its term; refusals are counted and never crash', async () => {
    const attacker = new ControlClient({ node: c, timeoutMs: 10_000 });
    const start = { id: 'web-2', service: 'web', image: imageId, spec: { driver: 'process' }, role: 'primary', term: 4 };
    const e1 = await caught(attacker.call(b.peerId, 'container.start', start));
    expect(e1.code).toBe('UNAUTHORIZED');
    expect(e1.message).toContain('only to the depot holding its lease');
    expect((await caught(attacker.call(b.peerId, 'container.stop', { id: 'web-1', timeoutMs: 0 }))).code).toBe('UNAUTHORIZED');
    // The holder itself, with a stale or a missing term, is refused too.
    const stale = await caught(client.call(b.peerId, 'container.start', { ...start, term: 3 }));
    expect(stale.message).toContain('names term 3, but the lease is in term 4');
    const { term: _t, ...noTerm } = start;
    expect((await caught(client.call(b.peerId, 'container.start', noTerm))).message).toContain("must name the lease's term");
    // A holder of one service cannot take over another service's container by its id.
    const hijack = await caught(client.call(b.peerId, 'container.start', { ...start, id: 'web-1', service: 'other' }));
    expect(hijack.code).toBe('CONFLICT');
    expect(guard.counts()).toMatchObject({ 'container.start': 3, 'container.stop': 1 });
    expect(await registry.getSingleMetricAsString('navigator_peer_refused_total')).toContain('navigator_peer_refused_total{kind="container.start"} 3');
    // Nothing was created or stopped; the server still answers.
    expect((await readdir(join(root, 'store', 'containers'))).sort()).toEqual(['web-1']);
    expect((await client.call<ContainerStatus>(b.peerId, 'container.status', { id: 'web-1' })).state).toBe('running');
  });

  it('reports a container that dies on its own as failed', async () => {
    const groups = JSON.parse(await readFile(join(root, 'store', 'containers', 'web-1', '.navigator-pgids.json'), 'utf8')) as number[];
    process.kill(-groups[0]!, 'SIGKILL');
    await new Promise((r) => setTimeout(r, 200));
    await containers.refresh();
    expect(containers.reports()[0]!.state).toBe('failed');
    const st = await client.call<ContainerStatus>(b.peerId, 'container.status', { id: 'web-1' });
    expect(st.state).toBe('failed');
    expect(st.lastError).toMatch(/stopped without being asked/);
    await client.call(b.peerId, 'container.stop', { id: 'web-1', timeoutMs: 0 });
  });

  it('serves image.status and image.verify from the store', async () => {
    expect(await client.call(b.peerId, 'image.status', { image: imageId })).toMatchObject({ id: imageId, state: 'ready', name: 'web' });
    expect(await client.call(b.peerId, 'image.verify', { image: imageId })).toEqual({ ok: true, id: imageId });
    const absent = 'a'.repeat(64);
    expect(await client.call(b.peerId, 'image.status', { image: absent })).toEqual({ id: absent, state: 'absent' });
    const err = await caught(client.call(b.peerId, 'image.verify', { image: absent }));
    expect(err.code).toBe('NOT_FOUND');
  });

  it('answers malformed requests with an error and keeps serving', async () => {
    const frame = (text: string) => lp.encode.single(new TextEncoder().encode(text)).subarray();

    const notJson = await client.exchange(b.peerId, frame('{"id": "1", "method": '), 5000);
    expect(notJson).toMatchObject({ id: null, ok: false, error: { code: 'BAD_REQUEST' } });

    const wrongShape = await client.exchange(b.peerId, frame(JSON.stringify({ hello: 'world' })), 5000);
    expect(wrongShape).toMatchObject({ id: null, ok: false, error: { code: 'BAD_REQUEST' } });

    // A length prefix that promises more than MAX_CONTROL_BYTES.
    const huge = await client.exchange(b.peerId, Uint8Array.from([0xff, 0xff, 0xff, 0x7f, 1, 2, 3]), 5000);
    expect(huge).toMatchObject({ id: null, ok: false, error: { code: 'MESSAGE_TOO_LARGE' } });

    // A frame cut short: the writer closes before the promised bytes.
    const cut = await client.exchange(b.peerId, Uint8Array.from([50, 1, 2, 3]), 5000);
    expect(cut).toMatchObject({ id: null, ok: false, error: { code: 'BAD_REQUEST' } });

    const empty = await client.exchange(b.peerId, new Uint8Array(0), 5000);
    expect(empty).toMatchObject({ id: null, ok: false, error: { code: 'BAD_REQUEST', message: expect.stringMatching(/ended before a complete frame/) } });

    const badParams = await caught(client.call(b.peerId, 'container.stop', { timeoutMs: 5 }));
    expect(badParams.code).toBe('BAD_REQUEST');
    expect(badParams.message).toMatch(/container.stop: id/);

    const badSpec = await caught(client.call(b.peerId, 'container.start', { id: 'x', service: 's', spec: { driver: 'hyperv' } }));
    expect(badSpec.code).toBe('BAD_REQUEST');

    expect(server.counters.malformed).toBeGreaterThanOrEqual(4);
    // Still serving.
    expect(await client.call(b.peerId, 'image.status', { image: imageId })).toMatchObject({ state: 'ready' });
  });

  it('a call to a depot it cannot reach fails with PEER_UNREACHABLE', async () => {
    const stranger = peerIdFromPrivateKey(await generateKeyPair('Ed25519'));
    const err = await caught(client.call(stranger, 'container.status', {}, { timeoutMs: 3000 }));
    expect(err.code).toBe('PEER_UNREACHABLE');
  });

  it('answers unknown methods with UNKNOWN_METHOD', async () => {
    for (const method of ['container.destroy', 'constructor', '__proto__', 'toString']) {
      const err = await caught(client.call(b.peerId, method, {}));
      expect(err.code).toBe('UNKNOWN_METHOD');
      expect(err.message).toContain('known: image.status');
    }
  });

  it('refuses a request naming a path outside the store', async () => {
    for (const manifest of ['../../../etc/passwd', '/etc/passwd', 'app/../../x.yaml']) {
      const err = await caught(
        client.call(b.peerId, 'container.start', { id: 'evil', service: 'x', image: imageId, spec: { driver: 'process', manifest }, term: 4 }),
      );
      expect(err.code).toBe('PATH_OUTSIDE_STORE');
    }
    const vmx = await caught(client.call(b.peerId, 'container.start', { id: 'evil', service: 'x', image: imageId, spec: { driver: 'vmrun', vmx: '../../../vm.vmx' }, term: 4 }));
    expect(vmx.code).toBe('PATH_OUTSIDE_STORE');
    for (const image of ['../../../etc', '/etc/passwd']) {
      const err = await caught(client.call(b.peerId, 'image.verify', { image }));
      expect(err.code).toBe('PATH_OUTSIDE_STORE');
    }
    const id = await caught(client.call(b.peerId, 'container.start', { id: '../evil', service: 'x', image: imageId, spec: { driver: 'process' } }));
    expect(id.code).toBe('BAD_REQUEST');
    // Nothing was created for the refused requests.
    expect(await readdir(join(root, 'store', 'containers'))).toEqual(['web-1']);
  });

  it('times out a call that takes longer than the caller allows, and the depot stays usable', async () => {
    const err = await caught(
      client.call(b.peerId, 'container.start', { id: 'slow-1', service: 'slow', image: slowImageId, spec: { driver: 'process' }, term: 4 }, { timeoutMs: 500 }),
    );
    expect(err.code).toBe('TIMEOUT');
    // The start goes on at the depot and fails its health deadline there; the container is then failed, not running.
    let st = await client.call<ContainerStatus>(b.peerId, 'container.status', { id: 'slow-1' });
    for (let i = 0; i < 100 && st.state === 'starting'; i++) {
      await new Promise((r) => setTimeout(r, 100));
      st = await client.call<ContainerStatus>(b.peerId, 'container.status', { id: 'slow-1' });
    }
    expect(st.state).toBe('failed');
    expect(st.lastError).toMatch(/not healthy within 3000 ms/);
  });
});
