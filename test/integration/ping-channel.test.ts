import { describe, it, expect, afterEach } from 'vitest';
import { createNode, type NavigatorNode } from '../../depot/libp2p.ts';
import { makeSwarmKey } from '../../depot/swarm-key.ts';
import { PING_PROTOCOL, PingChannels, answerPings } from '../../depot/membership/ping-channel.ts';

// Probes ping over one long-lived stream per peer (depot/ping-channel.ts), between real libp2p
// nodes on loopback: the stream is reused, a stream the other side closed is replaced without a
// failed ping, and an unanswered ping fails within its deadline.

const nodes: NavigatorNode[] = [];
afterEach(async () => {
  await Promise.all(nodes.splice(0).map((n) => n.stop()));
});

async function pair(idleMs?: number): Promise<{ a: NavigatorNode; b: NavigatorNode; served: { streams: number } }> {
  const key = makeSwarmKey();
  const [a, b] = await Promise.all([createNode({ swarmKey: key, listen: ['/ip4/127.0.0.1/tcp/0'] }), createNode({ swarmKey: key, listen: ['/ip4/127.0.0.1/tcp/0'] })]);
  nodes.push(a, b);
  const served = { streams: 0 };
  await b.handle(
    PING_PROTOCOL,
    ({ stream }) => {
      served.streams++;
      void answerPings(stream, idleMs);
    },
    { maxInboundStreams: 2 },
  );
  await a.dial(b.getMultiaddrs()[0]!);
  return { a, b, served };
}

const outboundPingStreams = (a: NavigatorNode, b: NavigatorNode) =>
  a.getConnections(b.peerId).flatMap((c) => c.streams).filter((s) => s.protocol === PING_PROTOCOL && s.direction === 'outbound' && s.status === 'open').length;

describe('ping channels', () => {
  it('answers many pings on one stream', async () => {
    const { a, b, served } = await pair();
    const channels = new PingChannels({ node: a });
    const peer = b.peerId.toString();
    for (let i = 0; i < 20; i++) {
      const rtt = await channels.ping(peer, AbortSignal.timeout(2000));
      expect(rtt).toBeGreaterThanOrEqual(0);
      expect(rtt).toBeLessThan(2000);
    }
    // Concurrent pings queue on the same stream instead of opening a second one.
    await Promise.all(Array.from({ length: 5 }, () => channels.ping(peer, AbortSignal.timeout(2000))));
    expect(served.streams).toBe(1);
    expect(outboundPingStreams(a, b)).toBe(1);
    channels.stop();
  });

  it('replaces a stream the other side closed without failing a ping', async () => {
    const { a, b, served } = await pair(300);
    const channels = new PingChannels({ node: a });
    const peer = b.peerId.toString();
    await channels.ping(peer, AbortSignal.timeout(2000));
    // The answering side closes streams idle for 300 ms.
    await new Promise((r) => setTimeout(r, 600));
    await expect(channels.ping(peer, AbortSignal.timeout(2000))).resolves.toBeGreaterThanOrEqual(0);
    expect(served.streams).toBe(2);
    channels.stop();
  });

  it('fails a ping that gets no answer, and the next ping uses a new stream', async () => {
    const { a, b, served } = await pair();
    const peer = b.peerId.toString();
    const channels = new PingChannels({ node: a });
    await channels.ping(peer, AbortSignal.timeout(2000));
    // Now the other side reads pings but never answers.
    await b.unhandle(PING_PROTOCOL);
    await b.handle(PING_PROTOCOL, ({ stream }) => {
      served.streams++;
      void (async () => {
        for await (const _ of stream.source) void _;
      })().catch(() => {}); // reset when the pinger gives up
    });
    channels.forget(peer);
    const started = Date.now();
    await expect(channels.ping(peer, AbortSignal.timeout(300))).rejects.toThrow();
    expect(Date.now() - started).toBeLessThan(1500);
    expect(channels.size).toBe(0);
    // Answering again: the next ping opens a new stream and succeeds.
    await b.unhandle(PING_PROTOCOL);
    await b.handle(PING_PROTOCOL, ({ stream }) => {
      served.streams++;
      void answerPings(stream);
    });
    const before = served.streams;
    await expect(channels.ping(peer, AbortSignal.timeout(2000))).resolves.toBeGreaterThanOrEqual(0);
    expect(served.streams).toBe(before + 1);
    channels.stop();
  });
});
