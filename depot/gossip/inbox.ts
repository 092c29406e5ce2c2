import type { Message, PubSub } from '@libp2p/interface';
import type { Logger } from '../../shared/logger.ts';
import { HeartbeatMessage, MembershipMessage, TOPICS, decodeMessage, type DecodeResult } from '../../shared/wire.ts';
import type { DepotMetrics, DropReason } from '../metrics.ts';

// The single entry point of gossip into a depot: every message is size-checked, decoded,
// schema-checked and matched against the peer that signed it before anyone sees it. Bad
// messages are counted by reason and dropped; nothing here throws into the daemon.

export interface GossipHandlers {
  heartbeat(hb: HeartbeatMessage, from: string): void;
  membership(msg: MembershipMessage, from: string): void;
}

export interface GossipInboxOptions {
  pubsub: PubSub;
  metrics: DepotMetrics;
  maxMessageBytes: number;
  log: Logger;
  handlers: GossipHandlers;
  /** A signed message that claims to come from another peer (a security event: depot notices). */
  onSpoofed?: (from: string, detail: string, topic: string) => void;
}

export class GossipInbox {
  private readonly onMessage = (evt: CustomEvent<Message>) => this.receive(evt.detail);
  /** Extra topics plugins subscribe through the inbox (decoded and checked by them). */
  private readonly extra = new Map<string, (data: Uint8Array, from: string) => void>();

  constructor(private readonly opts: GossipInboxOptions) {}

  start(): void {
    this.opts.pubsub.addEventListener('message', this.onMessage);
    this.opts.pubsub.subscribe(TOPICS.heartbeat);
    this.opts.pubsub.subscribe(TOPICS.membership);
  }

  stop(): void {
    this.opts.pubsub.removeEventListener('message', this.onMessage);
    for (const t of [TOPICS.heartbeat, TOPICS.membership, ...this.extra.keys()]) {
      try {
        this.opts.pubsub.unsubscribe(t);
      } catch {
        // already stopped
      }
    }
  }

  /**
   * Let a plugin receive a topic (e.g. TOPICS.events for the journal). The size limit and
   * the signature check are applied here; the handler decodes with its own schema and should
   * call `drop()` for what it rejects.
   */
  subscribe(topic: string, handler: (data: Uint8Array, from: string) => void): void {
    this.extra.set(topic, handler);
    this.opts.pubsub.subscribe(topic);
  }

  drop(reason: DropReason, detail: string, from?: string, topic?: string): void {
    this.opts.metrics.drop(reason);
    if (reason === 'spoofed' && from && topic) this.opts.onSpoofed?.(from, detail, topic);
    this.opts.log.debug({ event: 'gossip-dropped', reason, detail, from, topic }, 'dropped gossip message');
  }

  receive(msg: Message): void {
    const { metrics, maxMessageBytes, handlers } = this.opts;
    if (msg.type !== 'signed') {
      this.drop('unsigned', 'message without signature', undefined, msg.topic);
      return;
    }
    const from = msg.from.toString();
    if (msg.data.byteLength > maxMessageBytes) {
      this.drop('too-large', `${msg.data.byteLength} bytes > ${maxMessageBytes}`, from, msg.topic);
      return;
    }
    if (msg.topic === TOPICS.heartbeat) {
      const r = decodeMessage(HeartbeatMessage, msg.data, maxMessageBytes);
      if (!this.accept(r, from, msg.topic)) return;
      if (r.value.peerId !== from) {
        this.drop('spoofed', `heartbeat claims ${r.value.peerId}`, from, msg.topic);
        return;
      }
      metrics.gossipReceived.inc({ topic: msg.topic });
      handlers.heartbeat(r.value, from);
    } else if (msg.topic === TOPICS.membership) {
      const r = decodeMessage(MembershipMessage, msg.data, maxMessageBytes);
      if (!this.accept(r, from, msg.topic)) return;
      // A depot announces only its own departure, and its own verdicts.
      const claimed = r.value.type === 'left' ? r.value.peerId : r.value.by;
      if (claimed !== from) {
        this.drop('spoofed', `${r.value.type} message claims ${claimed}`, from, msg.topic);
        return;
      }
      metrics.gossipReceived.inc({ topic: msg.topic });
      handlers.membership(r.value, from);
    } else {
      const handler = this.extra.get(msg.topic);
      if (!handler) {
        this.drop('unknown-topic', msg.topic, from, msg.topic);
        return;
      }
      metrics.gossipReceived.inc({ topic: msg.topic });
      try {
        handler(msg.data, from);
      } catch (err) {
        this.opts.log.warn({ event: 'gossip-handler-failed', topic: msg.topic, err: (err as Error).message }, 'gossip handler failed');
      }
    }
  }

  private accept<T>(r: DecodeResult<T>, from: string, topic: string): r is { ok: true; value: T } {
    if (r.ok) return true;
    this.drop(r.reason, r.detail, from, topic);
    return false;
  }
}
