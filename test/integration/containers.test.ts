import { describe, it, expect, beforeAll, afterAll, vi } from 'vitest';
import { mkdir, mkdtemp, rm, writeFile, access } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify as toYaml } from 'yaml';
import { silentLogger } from '../../shared/logger.ts';
import { FakeClock } from '../../shared/clock.ts';
import { ContainerManager, type ContainerStatus, type ImageSource } from '../../depot/containers/manager.ts';
import { tcpOpen } from '../../shared/tcp-probe.ts';
import { freePort } from '../../lab/loopback/ports.ts';

// The container manager with real process containers: state transitions, errors before anything
// starts, and a restarted depot (a new manager on the same folder) finding its running container.

let root: string;
const managers: ContainerManager[] = [];

async function prepared(id: string, port: number, containers = join(root, 'containers')): Promise<void> {
  const dir = join(containers, id);
  await mkdir(dir, { recursive: true });
  const script = `require('net').createServer((s) => { s.on('error', () => {}); s.end('x'); }).listen(${port}, '127.0.0.1');`;
  await writeFile(join(dir, 'container.yaml'), toYaml({ name: id, start: [{ argv: [process.execPath, '-e', script] }], health: { tcp: { port } } }));
}

function manager(onChange?: (s: ContainerStatus) => void, images?: ImageSource): ContainerManager {
  const m = new ContainerManager({ root: join(root, 'containers'), logger: silentLogger(), statusIntervalMs: 60_000, onChange, images });
  managers.push(m);
  return m;
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'nav-containers-'));
});

afterAll(async () => {
  for (const m of managers.reverse()) {
    await m.stopAll({ timeoutMs: 0 }).catch(() => undefined);
    await m.stop();
  }
  await rm(root, { recursive: true, force: true });
});

describe('container manager', () => {
  it('walks starting → running → stopping → stopped and tells onChange', async () => {
    const port = await freePort();
    await prepared('c1', port);
    const changes: string[] = [];
    const m = manager((s) => changes.push(`${s.id}:${s.state}`));
    await m.start();
    const st = await m.startContainer({ id: 'c1', service: 'svc', spec: { driver: 'process' } });
    expect(st.state).toBe('running');
    expect(await tcpOpen('127.0.0.1', port, 1000)).toBe(true);
    const stopped = await m.stopContainer('c1', { timeoutMs: 5000 });
    expect(stopped).toMatchObject({ state: 'stopped', forced: false });
    expect(changes).toEqual(['c1:starting', 'c1:running', 'c1:stopping', 'c1:stopped']);
    expect(m.reports()).toEqual([
      { id: 'c1', service: 'svc', driver: 'process', state: 'stopped', role: 'none', term: 0, image: '', syncFailing: false },
    ]);
  });

  it('refuses bad requests before doing anything', async () => {
    const m = manager();
    await m.start();
    await expect(m.startContainer({ id: 'nope', service: 's', spec: { driver: 'process' } })).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(m.startContainer({ id: 'nope', service: 's', image: 'b'.repeat(64), spec: { driver: 'process' } })).rejects.toThrow(/no image store/);
    const images: ImageSource = { has: async () => false, clone: async () => undefined };
    await expect(manager(undefined, images).startContainer({ id: 'nope', service: 's', image: 'b'.repeat(64), spec: { driver: 'process' } })).rejects.toThrow(
      /not in this depot's store/,
    );
    await expect(m.startContainer({ id: 'c1', service: 's', spec: { driver: 'process', extra: 1 } })).rejects.toMatchObject({ code: 'BAD_REQUEST' });
    await expect(m.startContainer({ id: 'c1', service: 's', spec: { driver: 'qemu', disk: '../x' } })).rejects.toMatchObject({ code: 'PATH_OUTSIDE_STORE' });
    await expect(m.stopContainer('ghost')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(access(join(root, 'containers', 'nope'))).rejects.toThrow();
  });

  it('a restarted depot finds its running container again and can stop it', async () => {
    const port = await freePort();
    await prepared('c2', port);
    const first = manager();
    await first.start();
    await first.startContainer({ id: 'c2', service: 'svc', spec: { driver: 'process' }, role: 'primary', term: 7 });
    await first.stop(); // the depot goes away; the container keeps running

    const second = manager();
    await second.start();
    const found = second.list().find((c) => c.id === 'c2');
    expect(found).toMatchObject({ id: 'c2', service: 'svc', driver: 'process', state: 'running', role: 'primary', term: 7 });
    expect(await tcpOpen('127.0.0.1', port, 1000)).toBe(true);
    expect(await second.stopContainer('c2', { timeoutMs: 5000 })).toMatchObject({ state: 'stopped' });
    expect(await tcpOpen('127.0.0.1', port, 500)).toBe(false);
  });

  it('checks container states on a timer only while it hosts containers (an idle depot sleeps)', async () => {
    const clock = new FakeClock();
    const setTimer = vi.spyOn(clock, 'setInterval');
    const clear = vi.spyOn(clock, 'clear');
    const folder = join(root, 'timer-containers');
    const m = new ContainerManager({ root: folder, logger: silentLogger(), clock, statusIntervalMs: 1000 });
    managers.push(m);
    await m.start();
    expect(setTimer).not.toHaveBeenCalled();

    const port = await freePort();
    await prepared('t1', port, folder);
    await m.startContainer({ id: 't1', service: 'svc', spec: { driver: 'process' } });
    expect(setTimer).toHaveBeenCalledTimes(1);
    const timer = setTimer.mock.results[0]!.value;
    const refresh = vi.spyOn(m, 'refresh');
    clock.advance(1000);
    expect(refresh).toHaveBeenCalledTimes(1);
    await m.removeContainer('t1', { timeoutMs: 5000 });
    expect(clear).toHaveBeenCalledWith(timer);
    clock.advance(5000);
    expect(refresh).toHaveBeenCalledTimes(1);
    expect(setTimer).toHaveBeenCalledTimes(1);
    await m.stop();
  });
});
