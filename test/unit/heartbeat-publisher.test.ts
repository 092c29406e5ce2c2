import { describe, expect, it } from 'vitest';
import type { PubSub } from '@libp2p/interface';
import { HeartbeatPublisher } from '../../depot/heartbeat/publisher.ts';
import { DepotMetrics } from '../../depot/metrics.ts';
import { FakeClock } from '../../shared/clock.ts';
import { silentLogger } from '../../shared/logger.ts';
import { HeartbeatMessage } from '../../shared/wire.ts';
import type { ResourceSample } from '../../depot/heartbeat/resources.ts';

// The heartbeat goes out when what others act on changes (at once), when host figures moved
// enough (at most every 10 s), when forced, and at least every refreshMs — never every second
// just because uptime ticked.

async function flush(): Promise<void> {
  for (let i = 0; i < 10; i++) await new Promise((r) => setImmediate(r));
}

function setup() {
  const clock = new FakeClock();
  const sent: HeartbeatMessage[] = [];
  const pubsub = { publish: async (_t: string, data: Uint8Array) => void sent.push(JSON.parse(Buffer.from(data).toString('utf8')) as HeartbeatMessage) } as unknown as PubSub;
  const sample: ResourceSample = { hostName: 'h', hostAddresses: ['10.0.0.1'], bootTime: 1, uptimeS: 1, load: [1, 1, 1], cpus: 2, memFreeBytes: 4e9, memTotalBytes: 8e9, diskFreeBytes: 1e11 };
  let images: string[] = [];
  const hb = new HeartbeatPublisher({
    pubsub, clock, log: silentLogger(), metrics: new DepotMetrics(), peerId: '12D3KooWAaaa', name: 'a', incarnation: 7, heartbeatMs: 1000, refreshMs: 60_000,
    maxMessageBytes: 65_536, storeDir: '/tmp', httpPort: () => 7480, addresses: () => [],
    sample: async () => ({ ...sample, uptimeS: Math.floor(clock.now() / 1000) }),
  });
  hb.addContentProvider(() => ({ images }));
  // A container report as a part builds it: defaulted fields left out, keys in its own order.
  let containers: HeartbeatMessage['containers'] = [];
  hb.addContentProvider(() => ({ containers }));
  const tick = async (ms: number) => {
    for (let t = 0; t < ms; t += 1000) {
      clock.advance(1000);
      await flush();
    }
  };
  return { hb, sent, sample, tick, setImages: (i: string[]) => (images = i), setContainers: (c: unknown[]) => (containers = c as HeartbeatMessage['containers']) };
}

describe('HeartbeatPublisher', () => {
  it('publishes on start, then only on changes, figures at most every 30 s, and a refresh every minute', async () => {
    const { hb, sent, sample, tick, setImages } = setup();
    hb.start();
    await flush();
    expect(sent.map((h) => h.seq)).toEqual([0]);
    await tick(5000);
    expect(sent).toHaveLength(1); // uptime moved, nothing else
    setImages(['img1']);
    await tick(1000);
    expect(sent).toHaveLength(2); // content: at once
    expect(sent[1]!.images).toEqual(['img1']);
    sample.load = [3, 1, 1];
    await tick(28_000);
    expect(sent).toHaveLength(2); // figures: not before 30 s since the last one
    await tick(2000);
    expect(sent).toHaveLength(3);
    expect(sent[2]!.load[0]).toBe(3);
    await tick(59_000);
    expect(sent).toHaveLength(3);
    await tick(2000);
    expect(sent).toHaveLength(4); // refresh
    await hb.beat(true);
    expect(sent).toHaveLength(5); // forced (refute, a depot joined)
    expect(sent.map((h) => h.seq)).toEqual([0, 1, 2, 3, 4]);
    await hb.stop();
  });

  it('a sample whose content did not change is not published again, however a part shaped it', async () => {
    const { hb, sent, tick, setContainers } = setup();
    hb.start();
    await flush();
    setContainers([{ state: 'running', service: 'zabbix', driver: 'process', id: 'c1' }]);
    await tick(1000);
    expect(sent).toHaveLength(2);
    // The published copy went through the schema (defaults added, schema key order).
    expect(sent[1]!.containers[0]).toMatchObject({ id: 'c1', role: 'none', term: 0 });
    await tick(20_000);
    expect(sent).toHaveLength(2);
    await hb.stop();
  });
});
