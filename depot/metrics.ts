import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { GossipMetricsRegister } from './gossip/metrics.ts';

// One Prometheus registry per Depot (never prom-client's global one), so several depots can
// run in one process (tests, the in-process benchmark). Plugins register their own
// metrics on `registry`.

/** Why an incoming gossip message was dropped. */
export type DropReason =
  | 'too-large' // over membership.maxMessageBytes
  | 'not-json' // not UTF-8 JSON
  | 'schema' // JSON, but not a valid message of that topic
  | 'spoofed' // signed by one peer, claiming to be from another
  | 'unsigned' // no valid signature (rejected by gossipsub under StrictSign)
  | 'unknown-topic';

const DROP_REASONS: readonly DropReason[] = ['too-large', 'not-json', 'schema', 'spoofed', 'unsigned', 'unknown-topic'];

/**
 * How often the event-loop delay histogram samples (prom-client's default is 10 ms). Each sample
 * is a timer wake-up, 100 a second by default: the largest part of an idle depot's CPU. Stalls
 * that matter to a depot (heartbeats every second) last far longer than this. Not a knob: a
 * detail of how /metrics measures, not of anything a depot decides.
 */
const EVENT_LOOP_SAMPLE_MS = 200;

export class DepotMetrics {
  readonly registry = new Registry();
  readonly gossipReceived: Counter<'topic'>;
  readonly gossipPublished: Counter<'topic'>;
  readonly gossipPublishedBytes: Counter<'topic'>;
  readonly gossipDropped: Counter<'reason'>;
  readonly members: Gauge<'state'>;
  /** Connections closed because their gossip streams were gone (gossip-links.ts). */
  readonly gossipLinkRepairs: Counter;
  readonly gossipWire: GossipMetricsRegister;
  /** Same counts as gossipDropped, readable synchronously for /api/depots. */
  readonly dropped: Record<DropReason, number> = { 'too-large': 0, 'not-json': 0, schema: 0, spoofed: 0, unsigned: 0, 'unknown-topic': 0 };

  constructor(
    opts: {
      processMetrics?: boolean;
      membersByState?: () => Record<string, number>;
      connectedPeers?: () => number;
      topicPeers?: () => Record<string, number>;
    } = {},
  ) {
    const registers = [this.registry];
    this.gossipReceived = new Counter({ name: 'navigator_gossip_received_total', help: 'Gossip messages accepted, by topic', labelNames: ['topic'], registers });
    this.gossipPublished = new Counter({ name: 'navigator_gossip_published_total', help: 'Gossip messages published, by topic', labelNames: ['topic'], registers });
    this.gossipPublishedBytes = new Counter({
      name: 'navigator_gossip_published_bytes_total',
      help: 'Payload bytes of gossip messages published, by topic',
      labelNames: ['topic'],
      registers,
    });
    this.gossipDropped = new Counter({ name: 'navigator_gossip_dropped_total', help: 'Gossip messages dropped, by reason', labelNames: ['reason'], registers });
    for (const r of DROP_REASONS) this.gossipDropped.inc({ reason: r }, 0);
    const byState = opts.membersByState;
    this.members = new Gauge({
      name: 'navigator_members',
      help: 'Depots in the membership view, by state',
      labelNames: ['state'],
      registers,
      collect() {
        if (!byState) return;
        for (const [state, n] of Object.entries(byState())) this.set({ state }, n);
      },
    });
    this.gossipLinkRepairs = new Counter({
      name: 'navigator_gossip_link_repairs_total',
      help: 'Connections closed and dialled again because gossipsub had lost its streams on them',
      registers,
    });
    const { connectedPeers, topicPeers } = opts;
    // A depot connected to fewer peers than the view holds, or with no subscribers on a topic,
    // hears of the others only second-hand (or not at all): the first thing to look at.
    new Gauge({
      name: 'navigator_peers_connected',
      help: 'libp2p peers this depot has an open connection to',
      registers,
      collect() {
        if (connectedPeers) this.set(connectedPeers());
      },
    });
    new Gauge({
      name: 'navigator_gossip_topic_peers',
      help: 'Connected peers subscribed to each gossip topic',
      labelNames: ['topic'],
      registers,
      collect() {
        if (!topicPeers) return;
        for (const [topic, n] of Object.entries(topicPeers())) this.set({ topic }, n);
      },
    });
    this.gossipWire = new GossipMetricsRegister(() => this.drop('unsigned'));
    const wire = this.gossipWire.wire;
    new Gauge({
      name: 'navigator_gossip_wire_sent_bytes_total',
      help: 'Bytes of gossipsub RPCs sent (all topics, forwarding and control included)',
      registers,
      collect() {
        this.set(wire.rpcSentBytes);
      },
    });
    new Gauge({
      name: 'navigator_gossip_wire_received_bytes_total',
      help: 'Bytes of gossipsub RPCs received (all topics, forwarding and control included)',
      registers,
      collect() {
        this.set(wire.rpcRecvBytes);
      },
    });
    if (opts.processMetrics) collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS });
  }

  drop(reason: DropReason): void {
    this.dropped[reason] += 1;
    this.gossipDropped.inc({ reason });
  }
}
