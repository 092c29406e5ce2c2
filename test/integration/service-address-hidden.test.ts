import { describe, it, expect, afterAll } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Depot } from '../../depot/depot.ts';
import { makeSwarmKey } from '../../depot/swarm-key.ts';
import { parseConfig } from '../../shared/config.ts';
import { silentLogger } from '../../shared/logger.ts';

// A service address moves with the primary role: a depot never announces one as its own (libp2p
// addresses, which identify hands to peers, and the heartbeat's host addresses), so no peer
// connects to it and loses the connection without a word when it moves (a hand-over's control
// call used to hang on such a connection).

const dirs: string[] = [];
const running: Depot[] = [];
afterAll(async () => {
  for (const d of running) await d.stop().catch(() => undefined);
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

describe('service addresses are never announced', () => {
  it('hides every address a plugin says it may hold, from libp2p and from the heartbeat', async () => {
    const external = Object.values(networkInterfaces()).flat().find((a) => a && !a.internal && a.family === 'IPv4');
    expect(external, 'this test needs one non-loopback IPv4 address on the machine').toBeDefined();
    const ip = external!.address;
    const dataDir = await mkdtemp(join(tmpdir(), 'nav-hide-'));
    dirs.push(dataDir);
    const config = parseConfig({ node: { name: 'hide', dataDir }, network: { listen: ['/ip4/0.0.0.0/tcp/0'], mdns: false }, http: { host: '127.0.0.1', port: 0 }, membership: { heartbeatMs: 100 }, log: { level: 'silent' } });
    let held: string[] = [];
    const depot = new Depot({
      config,
      log: silentLogger(),
      swarmKey: makeSwarmKey(),
      plugins: [(c) => ({ name: 'holder', start: () => c.serviceAddresses.provide(() => held), stop: () => undefined })],
    });
    await depot.start();
    running.push(depot);
    const hosts = () => depot.node.getMultiaddrs().map((m) => m.toOptions().host);
    const beat = async () => {
      await new Promise((r) => setTimeout(r, 300));
      return depot.heartbeat.latest()!.hostAddresses;
    };
    expect(hosts()).toContain(ip);
    expect(await beat()).toContain(ip);
    held = [ip];
    expect(hosts()).not.toContain(ip);
    expect(hosts()).toContain('127.0.0.1');
    await depot.heartbeat.beat(true);
    expect(await beat()).not.toContain(ip);
  });
});
