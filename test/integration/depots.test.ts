import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFile } from 'node:fs/promises';
import { peerIdFromString } from '@libp2p/peer-id';
import { createNode, type NavigatorNode } from '../../depot/libp2p.ts';
import { parseSwarmKey } from '../../depot/swarm-key.ts';
import { TOPICS, type HeartbeatMessage } from '../../shared/wire.ts';
import { DepotCluster, getDepots, sleep, transitionAt, waitFor, type DepotProc } from '../../lab/loopback/depot-procs.ts';

// Real depot processes on loopback (mDNS off, bootstrap to the first depot, one swarm key):
// discovery, kill -9 detection, clean leave, a foreign swarm key, and hostile gossip.

const DEFAULT_HEARTBEAT_MS = 1000;

describe('depots on loopback', () => {
  let cluster: DepotCluster;
  let keyPath: string;
  let depots: DepotProc[] = [];
  let stranger: DepotProc;
  const seenEver = new Set<string>(); // every peer id any depot ever listed
  let watching = true;
  let watcher: Promise<void> | undefined;
  let convergence: Promise<number>;
  const extraNodes: NavigatorNode[] = [];

  beforeAll(async () => {
    cluster = await DepotCluster.create();
    keyPath = await cluster.swarmKey();
    const otherKey = await cluster.swarmKey('other.key');
    const first = await cluster.start('depot-1', { swarmKey: keyPath });
    const rest = await Promise.all(
      ['depot-2', 'depot-3', 'depot-4', 'depot-5'].map((n) => cluster.start(n, { swarmKey: keyPath, bootstrap: [first.addr] })),
    );
    depots = [first, ...rest];
    // Time to convergence, from the depots' own logs, while the rest of the set-up goes on.
    const lastStart = Math.max(...depots.map((d) => d.startedAt));
    convergence = waitFor(
      'all depots to log the other 4 alive',
      async () => {
        const times: number[] = [];
        for (const d of depots) {
          for (const o of depots) {
            if (o === d) continue;
            const t = transitionAt(d, o.peerId, 'alive');
            if (t === undefined) return undefined;
            times.push(t);
          }
        }
        return Math.max(...times) - lastStart;
      },
      15_000,
    );
    // Same bootstrap address, different key: the private network must keep it out.
    stranger = await cluster.start('stranger', { swarmKey: otherKey, bootstrap: [first.addr] });
    watcher = (async () => {
      while (watching) {
        for (const d of [...depots, stranger]) {
          if (d.exited) continue;
          try {
            for (const row of (await getDepots(d.api, 1000)).depots) if (!row.self) seenEver.add(`${d.name}>${row.peerId}`);
          } catch {
            // a depot being stopped
          }
        }
        await sleep(200);
      }
    })();
  }, 60_000);

  afterAll(async () => {
    watching = false;
    await watcher;
    for (const n of extraNodes) await Promise.resolve(n.stop()).catch(() => {});
    await cluster?.stopAll();
  }, 30_000);

  it('each of 5 depots sees the other 4 alive within 5 s of start', async () => {
    expect(await convergence).toBeLessThanOrEqual(5000);
    // And the HTTP view agrees.
    for (const d of depots) {
      const alive = (await getDepots(d.api)).depots.filter((r) => r.state === 'alive').map((r) => r.peerId);
      expect(alive.sort()).toEqual(depots.map((x) => x.peerId).sort());
    }
    // The view carries the host figures from the heartbeat.
    const v = await getDepots(depots[0]!.api);
    const other = v.depots.find((r) => r.peerId === depots[1]!.peerId)!;
    expect(other.name).toBe('depot-2');
    expect(other.cpus).toBeGreaterThan(0);
    expect(other.memTotalBytes).toBeGreaterThan(0);
    expect(other.diskFreeBytes).toBeGreaterThan(0);
    expect(other.uptimeS).toBeGreaterThan(0);
    expect(other.version).toMatch(/^\d+\.\d+\.\d+/);
    // The image refresh endpoints are served (pilots plugin): nothing refreshed; no admin token configured, so refused.
    expect(await (await fetch(`${depots[0]!.api}/api/image-refresh`)).json()).toEqual({ refreshes: [] });
    const post = await fetch(`${depots[0]!.api}/api/image-refresh`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ service: 'zbx', imagePath: '/tmp/x' }) });
    expect(post.status).toBe(403);
  });

  it('a depot with a different swarm key never appears in anyone\'s view', async () => {
    // It has run for several heartbeats by now, dialing depot-1 all along.
    await sleep(1500);
    const mine = await getDepots(stranger.api);
    expect(mine.depots.map((r) => r.peerId)).toEqual([stranger.peerId]);
    for (const key of seenEver) expect(key.endsWith(`>${stranger.peerId}`)).toBe(false);
    for (const d of depots) expect(seenEver.has(`stranger>${d.peerId}`)).toBe(false);
    expect(seenEver.size).toBeGreaterThanOrEqual(20); // the watcher really saw the 5 depots see each other
  });

  it('drops malformed, oversized, unsigned and spoofed gossip, counts it, and keeps running', async () => {
    const swarmKey = parseSwarmKey(await readFile(keyPath), keyPath);
    const target = depots[0]!;
    const signed = await createNode({ swarmKey, listen: ['/ip4/127.0.0.1/tcp/0'], bootstrap: [target.addr] });
    const unsigned = await createNode({ swarmKey, listen: ['/ip4/127.0.0.1/tcp/0'], bootstrap: [target.addr], gossip: { globalSignaturePolicy: 'StrictNoSign' } });
    extraNodes.push(signed, unsigned);
    await Promise.all([signed.start(), unsigned.start()]);
    for (const n of [signed, unsigned]) {
      n.services.pubsub.subscribe(TOPICS.heartbeat);
      await waitFor('garbage node to see depot-1 subscribed', async () => (n.services.pubsub.getSubscribers(TOPICS.heartbeat).some((p) => p.equals(peerIdFromString(target.peerId))) ? true : undefined), 10_000);
    }
    const before = (await getDepots(target.api)).dropped;
    const enc = (o: unknown) => new TextEncoder().encode(JSON.stringify(o));
    const victim = depots[1]!;
    const spoof: HeartbeatMessage = {
      type: 'heartbeat', v: 1, peerId: victim.peerId, name: 'depot-2', seq: 999_999, incarnation: Date.now() + 1e9, sentAt: Date.now(),
      addresses: [], hostAddresses: [], bootTime: 0, uptimeS: 1, load: [0, 0, 0], cpus: 1, memFreeBytes: 1, memTotalBytes: 1,
      diskFreeBytes: 1, images: [], staging: [], containers: [], version: '6.6.6',
    };
    const pub = signed.services.pubsub;
    await pub.publish(TOPICS.heartbeat, new TextEncoder().encode('{not json'));
    await pub.publish(TOPICS.heartbeat, enc({ type: 'heartbeat', v: 1, peerId: 'x' }));
    await pub.publish(TOPICS.heartbeat, enc({ pad: 'x'.repeat(100_000) }));
    await pub.publish(TOPICS.heartbeat, enc(spoof));
    await pub.publish(TOPICS.membership, enc({ type: 'left', v: 1, peerId: victim.peerId, name: 'depot-2', incarnation: Date.now() + 1e9, sentAt: 0 }));
    await unsigned.services.pubsub.publish(TOPICS.heartbeat, enc({ ...spoof, peerId: unsigned.peerId.toString() }));

    const after = await waitFor(
      'drops to be counted',
      async () => {
        const d = (await getDepots(target.api)).dropped;
        const grew = (r: string) => (d[r] ?? 0) > (before[r] ?? 0);
        return grew('not-json') && grew('schema') && grew('too-large') && grew('unsigned') && (d.spoofed ?? 0) >= (before.spoofed ?? 0) + 2 ? d : undefined;
      },
      5000,
    );
    expect(after['not-json']! - before['not-json']!).toBe(1);
    expect(after['too-large']! - before['too-large']!).toBe(1);
    // Also on /metrics.
    const metrics = await (await fetch(`${target.api}/metrics`)).text();
    expect(metrics).toMatch(/navigator_gossip_dropped_total\{reason="unsigned"\} [1-9]/);
    expect(metrics).toMatch(/navigator_gossip_dropped_total\{reason="spoofed"\} [1-9]/);
    // Nobody believed the forgeries; everyone is still running and sees the real depot-2.
    await sleep(DEFAULT_HEARTBEAT_MS);
    for (const d of depots) {
      const health = (await (await fetch(`${d.api}/healthz`)).json()) as { ok: boolean };
      expect(health.ok).toBe(true);
      const row = (await getDepots(d.api)).depots.find((r) => r.peerId === victim.peerId)!;
      expect(row.state).toBe('alive');
      expect(row.version).not.toBe('6.6.6');
      const ids = (await getDepots(d.api)).depots.map((r) => r.peerId);
      expect(ids).not.toContain(signed.peerId.toString());
      expect(ids).not.toContain(unsigned.peerId.toString());
    }
  });

  it('kill -9 of a depot: every other marks it dead within 6 s', async () => {
    const victim = depots[3]!;
    const others = depots.filter((d) => d !== victim);
    const killedAt = Date.now();
    await cluster.signal(victim, 'SIGKILL');
    const deadAfter = await waitFor(
      `every other depot to log ${victim.name} dead`,
      async () => {
        const times = others.map((d) => transitionAt(d, victim.peerId, 'dead', killedAt));
        return times.every((t) => t !== undefined) ? (times as number[]).map((t) => t - killedAt) : undefined;
      },
      10_000,
    );
    expect(Math.max(...deadAfter)).toBeLessThanOrEqual(6000);
    for (const d of others) expect((await getDepots(d.api)).depots.find((r) => r.peerId === victim.peerId)?.state).toBe('dead');
  });

  it('a clean stop (SIGTERM): the others show it left within 2 s', async () => {
    const leaver = depots[4]!;
    const others = depots.filter((d) => d !== leaver && !d.exited);
    const stoppedAt = Date.now();
    const stopped = cluster.signal(leaver, 'SIGTERM');
    const leftAfter = await waitFor(
      `every other depot to log ${leaver.name} left`,
      async () => {
        const times = others.map((d) => transitionAt(d, leaver.peerId, 'left', stoppedAt));
        return times.every((t) => t !== undefined) ? (times as number[]).map((t) => t - stoppedAt) : undefined;
      },
      6000,
    );
    expect(Math.max(...leftAfter)).toBeLessThanOrEqual(2000);
    expect((await stopped).exitCode).toBe(0);
    // And it stays left (not dead) after the suspicion window has passed.
    await sleep(3500);
    for (const d of others) expect((await getDepots(d.api)).depots.find((r) => r.peerId === leaver.peerId)?.state).toBe('left');
  });
});
