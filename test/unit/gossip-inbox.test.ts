import { describe, expect, it } from 'vitest';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import type { Message, PeerId, PubSub } from '@libp2p/interface';
import { GossipInbox } from '../../depot/gossip/inbox.ts';
import { DepotMetrics } from '../../depot/metrics.ts';
import { silentLogger } from '../../shared/logger.ts';
import { TOPICS, type HeartbeatMessage, type MembershipMessage } from '../../shared/wire.ts';

// The inbox in isolation: every kind of bad message is dropped with its reason and counted;
// good ones reach the handlers. (The integration test sends the same over real gossipsub.)

async function peer(): Promise<PeerId> {
  return peerIdFromPrivateKey(await generateKeyPair('Ed25519'));
}

function setup() {
  const metrics = new DepotMetrics();
  const got: { hb: HeartbeatMessage[]; mem: MembershipMessage[] } = { hb: [], mem: [] };
  const subscribed: string[] = [];
  const pubsub = {
    addEventListener() {},
    removeEventListener() {},
    subscribe(t: string) {
      subscribed.push(t);
    },
    unsubscribe() {},
  } as unknown as PubSub;
  const inbox = new GossipInbox({
    pubsub,
    metrics,
    maxMessageBytes: 4096,
    log: silentLogger(),
    handlers: { heartbeat: (hb) => got.hb.push(hb), membership: (m) => got.mem.push(m) },
  });
  inbox.start();
  return { inbox, metrics, got, subscribed };
}

const enc = (o: unknown) => new TextEncoder().encode(typeof o === 'string' ? o : JSON.stringify(o));

function signed(from: PeerId, topic: string, data: Uint8Array): Message {
  return { type: 'signed', from, topic, data, sequenceNumber: 1n, signature: new Uint8Array(64), key: from.publicKey! } as Message;
}

function heartbeat(peerId: string): HeartbeatMessage {
  return {
    type: 'heartbeat', v: 1, peerId, name: 'a', seq: 1, incarnation: 1, sentAt: 1, addresses: [], hostAddresses: [], bootTime: 0, uptimeS: 1,
    load: [0, 0, 0], cpus: 1, memFreeBytes: 1, memTotalBytes: 1, diskFreeBytes: 1, images: [], staging: [], containers: [], version: '0.1.0',
  };
}

describe('GossipInbox', () => {
  it('subscribes to the heartbeat and membership topics', () => {
    expect(setup().subscribed).toEqual([TOPICS.heartbeat, TOPICS.membership]);
  });

  it('passes good heartbeats and membership messages to the handlers', async () => {
    const { inbox, got, metrics } = setup();
    const a = await peer();
    inbox.receive(signed(a, TOPICS.heartbeat, enc(heartbeat(a.toString()))));
    inbox.receive(signed(a, TOPICS.membership, enc({ type: 'left', v: 1, peerId: a.toString(), name: 'a', incarnation: 1, sentAt: 1 })));
    inbox.receive(signed(a, TOPICS.membership, enc({ type: 'dead', v: 1, peerId: (await peer()).toString(), incarnation: 1, by: a.toString(), sentAt: 1 })));
    expect(got.hb).toHaveLength(1);
    expect(got.mem.map((m) => m.type)).toEqual(['left', 'dead']);
    expect(Object.values(metrics.dropped).every((n) => n === 0)).toBe(true);
  });

  it('drops and counts by reason: too large, not JSON, schema, spoofed, unsigned, unknown topic', async () => {
    const { inbox, got, metrics } = setup();
    const a = await peer();
    const b = await peer();
    inbox.receive(signed(a, TOPICS.heartbeat, enc({ pad: 'x'.repeat(5000) })));
    inbox.receive(signed(a, TOPICS.heartbeat, enc('{oops')));
    inbox.receive(signed(a, TOPICS.heartbeat, new Uint8Array([0xff, 0xfe, 0x00])));
    inbox.receive(signed(a, TOPICS.heartbeat, enc({ type: 'heartbeat', v: 2 })));
    inbox.receive(signed(a, TOPICS.heartbeat, enc(heartbeat(b.toString())))); // signed by a, claims b
    inbox.receive(signed(a, TOPICS.membership, enc({ type: 'left', v: 1, peerId: b.toString(), name: 'b', incarnation: 1, sentAt: 1 })));
    inbox.receive(signed(a, TOPICS.membership, enc({ type: 'dead', v: 1, peerId: a.toString(), incarnation: 1, by: b.toString(), sentAt: 1 })));
    inbox.receive({ type: 'unsigned', topic: TOPICS.heartbeat, data: enc(heartbeat(a.toString())) } as Message);
    inbox.receive(signed(a, 'navigator/v1/other', enc({})));
    expect(got.hb).toEqual([]);
    expect(got.mem).toEqual([]);
    expect(metrics.dropped).toEqual({ 'too-large': 1, 'not-json': 2, schema: 1, spoofed: 3, unsigned: 1, 'unknown-topic': 1 });
    const text = await metrics.registry.metrics();
    expect(text).toContain('navigator_gossip_dropped_total{reason="spoofed"} 3');
  });

  it('counts messages gossipsub rejected for their signature as unsigned', () => {
    const { metrics } = setup();
    const g = metrics.gossipWire.gauge({ name: 'gossipsub_msg_received_invalid_total' });
    g.inc({ error: 'invalid_signature' }, 1);
    g.inc({ error: 'invalid_seqno' }, 2);
    expect(metrics.dropped.unsigned).toBe(3);
  });

  it('hands other topics to parts that subscribed through it', async () => {
    const { inbox } = setup();
    const a = await peer();
    const seen: string[] = [];
    inbox.subscribe(TOPICS.events, (data, from) => seen.push(`${new TextDecoder().decode(data)}@${from === a.toString()}`));
    inbox.receive(signed(a, TOPICS.events, enc({ x: 1 })));
    expect(seen).toEqual(['{"x":1}@true']);
  });
});
