import { peerIdFromString } from '@libp2p/peer-id';
import { multiaddr } from '@multiformats/multiaddr';
import type { Config } from '../shared/config.ts';
import type { Clock, TimerHandle } from '../shared/clock.ts';
import type { Logger } from '../shared/logger.ts';
import { errorMessage } from '../shared/errors.ts';
import type { HeartbeatMessage } from '../shared/wire.ts';
import type { NavigatorNode } from './libp2p.ts';
import type { Membership } from './membership/membership.ts';
import type { MemberProber } from './membership/member-prober.ts';
import type { DepotMetrics } from './metrics.ts';
import { gossipLinkHealth, judgeLinks, type LinkObservation } from './gossip/links.ts';

// Keeps the cluster fully connected, so that every heartbeat reaches every depot in one hop:
// - dials every depot heard of (from the addresses in its heartbeat) that it is not connected to;
// - dials every depot mDNS finds on the LAN (libp2p only records what discovery finds);
// - dials the configured bootstrap depots until connected (the first may start later);
// - on connect, asks the new peer for its heartbeat and whom it knows (memberlist's push/pull on join);
// - push-pull member exchange with a random peer, fast while starting, then slowly;
// - dials a still-alive depot again after its connection closed; hangs up on a depot still
//   dead long after the verdict (a dead socket after a partition or power loss);
// - closes and redials connections whose gossipsub streams died (gossip/links.ts).
// Timing knobs are in config `connections`.

export interface ConnectionManagerOptions {
  node: NavigatorNode;
  membership: Membership;
  prober: MemberProber;
  metrics: DepotMetrics;
  clock: Clock;
  log: Logger;
  timing: Config['connections'];
  bootstrap: string[];
  /** Dial depots heard of (default true; off in sparse in-process simulations). */
  dialDiscovered: boolean;
  /** A heartbeat obtained by asking a peer directly: handled like a gossiped one. */
  onHeartbeat: (hb: HeartbeatMessage) => void;
}

export class ConnectionManager {
  private redialTimer: TimerHandle | undefined;
  private linkTimer: TimerHandle | undefined;
  private exchangeTimer: TimerHandle | undefined;
  private unhealthyLinks = new Map<string, number>();
  private readonly lastDial = new Map<string, number>();
  /** Failed dials in a row per peer (reset when a dial or an inbound connection succeeds). */
  private readonly failedDials = new Map<string, number>();
  /** Peers with at least one open connection (libp2p peer:connect / peer:disconnect). */
  private readonly connectedPeers = new Set<string>();
  private bootstrapPeers: Array<{ peerId: string; addresses: string[] }> | undefined;
  private readonly foundBeforeStart = new Map<string, string[]>();
  private running = false;

  constructor(private readonly opts: ConnectionManagerOptions) {}

  get selfId(): string {
    return this.opts.node.peerId.toString();
  }

  /** libp2p peer:connect. */
  connected(peer: string): void {
    this.connectedPeers.add(peer);
    this.failedDials.delete(peer);
    this.onPeerConnect(peer);
  }

  /** libp2p peer:disconnect: dial a depot that is still alive again after a moment; a dead one never. */
  disconnected(peer: string): void {
    this.connectedPeers.delete(peer);
    if (!this.running) return;
    this.opts.clock.setTimeout(() => {
      const view = this.opts.membership.get(peer);
      if (view?.state === 'alive' && view.heartbeat) this.dialIfUnconnected(view.heartbeat);
    }, this.opts.timing.reconnectDelayMs);
  }

  start(): void {
    this.running = true;
    const t = this.opts.timing;
    this.linkTimer = this.opts.clock.setInterval(() => this.checkGossipLinks(), t.linkCheckMs);
    this.scheduleExchange(this.opts.clock.now());
    // The bootstrap module dials its list once; keep trying those we are not connected to.
    this.redialTimer = this.opts.clock.setInterval(() => this.redialBootstrap(), t.redialMs);
    // Peers connected while starting (bootstrap) were not asked yet.
    for (const p of this.opts.node.getPeers()) this.onPeerConnect(p.toString());
    for (const [peer, addresses] of this.foundBeforeStart) this.dialIfUnconnected({ peerId: peer, addresses });
    this.foundBeforeStart.clear();
  }

  stop(): void {
    this.running = false;
    for (const t of [this.redialTimer, this.linkTimer, this.exchangeTimer]) this.opts.clock.clear(t);
    this.redialTimer = this.linkTimer = this.exchangeTimer = undefined;
  }

  /**
   * A connection to a depot judged dead may be a dead socket (a partition, a power loss): close
   * it, so that when the depot is back its heartbeat brings a fresh dial. Not at once: a false
   * verdict on a starved host is refuted within moments, and closing would only add churn.
   */
  hangUpIfStillDead(peer: string): void {
    this.opts.clock.setTimeout(() => {
      if (!this.running || this.opts.membership.get(peer)?.state !== 'dead') return;
      void this.opts.node.hangUp(peerIdFromString(peer)).catch(() => undefined);
    }, this.opts.timing.deadHangUpMs);
  }

  /**
   * A depot found by peer discovery (mDNS on the LAN, the bootstrap list): connect. Without this a
   * cluster set up with no bootstrap list — an installed package's default config — never forms.
   */
  discovered(peer: string, addresses: string[]): void {
    // The dial names the peer it expects: the handshake proves it (mDNS itself proves nothing).
    const named = addresses.map((a) => (a.includes('/p2p/') ? a : `${a}/p2p/${peer}`));
    // libp2p announces a peer once, when it first enters the peer store, and a restarted depot's
    // first mDNS answers arrive while it is still starting: those are dialled at start().
    if (!this.running) this.foundBeforeStart.set(peer, named);
    else this.dialIfUnconnected({ peerId: peer, addresses: named });
  }

  /** A heartbeat heard (gossiped or asked for): connect to its depot if we are not (it came through a third one). */
  heard(hb: HeartbeatMessage): void {
    if (this.opts.dialDiscovered) this.dialIfUnconnected(hb);
  }

  private dialIfUnconnected(hb: { peerId: string; addresses: string[]; name?: string }): void {
    const node = this.opts.node;
    // Checked first, by string: this runs for every heartbeat heard, nearly always of a connected peer.
    if (!this.running || this.connectedPeers.has(hb.peerId) || hb.peerId === this.selfId) return;
    const now = this.opts.clock.now();
    if (hb.addresses.length === 0 || now - (this.lastDial.get(hb.peerId) ?? -Infinity) < this.redialGapMs(hb.peerId)) return;
    let peer;
    try {
      peer = peerIdFromString(hb.peerId);
    } catch {
      return;
    }
    if (node.getConnections(peer).length > 0) return;
    this.lastDial.set(hb.peerId, now);
    const addrs = [];
    for (const a of hb.addresses) {
      try {
        const ma = multiaddr(a);
        // Only addresses that name this very peer, so a lying message cannot aim us elsewhere.
        if (ma.getPeerId() === hb.peerId) addrs.push(ma);
      } catch {
        // not a multiaddr
      }
    }
    if (addrs.length === 0) return;
    const name = hb.name ?? hb.peerId;
    void node.dial(addrs, { signal: AbortSignal.timeout(this.opts.timing.dialTimeoutMs) }).then(
      () => {
        this.failedDials.delete(hb.peerId);
        this.opts.log.debug({ event: 'dialed-discovered', peer: hb.peerId, name }, `connected to ${name}`);
      },
      (err: unknown) => {
        this.failedDials.set(hb.peerId, (this.failedDials.get(hb.peerId) ?? 0) + 1);
        this.opts.log.debug({ event: 'dial-discovered-failed', peer: hb.peerId, err: errorMessage(err) }, `could not connect to ${name}`);
      },
    );
  }

  /**
   * Least time before dialling `peer` again. A depot heard alive is retried every redialMs; one
   * that is off (not started yet, powered off for the night) backs off: once after redialMs, then
   * doubling after each failed dial up to redialMaxMs (Serf's reconnect interval). In a lab where
   * every depot lists every other as bootstrap, fixed 5 s retries of the ones that are off were a
   * steady stream of dials on every depot while the room boots or empties.
   */
  private redialGapMs(peer: string): number {
    return redialGapMs(this.failedDials.get(peer) ?? 0, this.opts.membership.get(peer)?.state === 'alive', this.opts.timing);
  }

  private redialBootstrap(): void {
    if (!this.running) return;
    // Parsed once: a bootstrap list can name every other depot.
    this.bootstrapPeers ??= this.opts.bootstrap.flatMap((a) => {
      try {
        const peerId = multiaddr(a).getPeerId();
        return peerId ? [{ peerId, addresses: [a] }] : [];
      } catch {
        return []; // an invalid address was already reported by the bootstrap module
      }
    });
    for (const b of this.bootstrapPeers) this.dialIfUnconnected(b);
  }

  private scheduleExchange(startedAt: number): void {
    const t = this.opts.timing;
    const wait = this.opts.clock.now() - startedAt < t.memberExchangeFastWindowMs ? t.memberExchangeFastMs : t.memberExchangeMs;
    this.exchangeTimer = this.opts.clock.setTimeout(() => {
      this.exchangeMembers();
      if (this.running) this.scheduleExchange(startedAt);
    }, wait);
  }

  private connectedTo(peer: string): boolean {
    try {
      return this.opts.node.getConnections(peerIdFromString(peer)).length > 0;
    } catch {
      return false; // not a peer id
    }
  }

  /** Push-pull (memberlist): ask a random connected depot whom it knows; connect to the ones we are not connected to. */
  private exchangeMembers(): void {
    if (!this.running || !this.opts.dialDiscovered) return;
    const peers = this.opts.node.getPeers();
    if (peers.length === 0) return;
    const peer = peers[Math.floor(Math.random() * peers.length)]!.toString();
    void this.opts.prober.members(peer).then((members) => {
      for (const m of members ?? []) {
        // Connected but never heard of (its heartbeat request failed on a busy host): ask again.
        if (this.running && !this.opts.membership.get(m.peerId) && this.connectedTo(m.peerId)) {
          void this.opts.prober.heartbeatOf(m.peerId).then((hb) => hb && this.opts.onHeartbeat(hb));
        } else this.dialIfUnconnected(m);
      }
    });
  }

  /** Close connections whose gossip streams are gone (gossip/links.ts), then dial them again. */
  private checkGossipLinks(): void {
    const node = this.opts.node;
    if (!this.running) return;
    const now = this.opts.clock.now();
    const links = node
      .getConnections()
      .filter((c) => c.status === 'open')
      .map((c) => ({
        peer: c.remotePeer.toString(),
        healthy: gossipLinkHealth(node.services.pubsub, c.remotePeer.toString()),
        // libp2p stamps connections with wall time; convert their age to this clock.
        openedAt: now - (Date.now() - c.timeline.open),
      }));
    // Several connections to one peer: it is healthy if gossipsub's streams are (they live on one of them).
    const byPeer = new Map<string, LinkObservation>();
    for (const l of links) {
      const prev = byPeer.get(l.peer);
      byPeer.set(l.peer, prev ? { ...prev, openedAt: Math.max(prev.openedAt, l.openedAt) } : l);
    }
    const j = judgeLinks([...byPeer.values()], this.unhealthyLinks, now, this.opts.timing.linkGraceMs);
    this.unhealthyLinks = j.unhealthySince;
    for (const peer of j.close) {
      const view = this.opts.membership.get(peer);
      this.opts.metrics.gossipLinkRepairs.inc();
      this.opts.log.warn({ event: 'gossip-link-repair', peer, name: view?.name }, `gossip streams to ${view?.name ?? peer} are gone; reconnecting`);
      const peerId = peerIdFromString(peer);
      void node
        .hangUp(peerId)
        .catch(() => undefined)
        .then(() => {
          this.lastDial.delete(peer);
          if (view?.heartbeat) this.dialIfUnconnected(view.heartbeat);
          else void node.dial(peerId, { signal: AbortSignal.timeout(this.opts.timing.dialTimeoutMs) }).catch(() => undefined);
        });
    }
  }

  /**
   * On join (memberlist push/pull): ask a newly connected peer for its heartbeat (so both know
   * each other at once, with heartbeats gossiped only on change) and whom it knows, and connect to them.
   */
  private onPeerConnect(peerId: string): void {
    if (!this.running) return;
    void this.opts.prober.heartbeatOf(peerId).then((hb) => {
      if (hb) this.opts.onHeartbeat(hb);
    });
    if (!this.opts.dialDiscovered) return;
    void this.opts.prober.members(peerId).then((members) => {
      if (!members) return;
      for (const m of members) this.dialIfUnconnected(m);
    });
  }
}

/** Least time between two dials of a depot after `failures` failed ones in a row (see ConnectionManager.redialGapMs). */
export function redialGapMs(failures: number, heardAlive: boolean, t: Pick<Config['connections'], 'redialMs' | 'redialMaxMs'>): number {
  if (failures <= 0 || heardAlive) return t.redialMs;
  // The first retry comes after redialMs as before (depots that start together); then it doubles.
  return Math.min(t.redialMs * 2 ** Math.min(failures - 1, 16), Math.max(t.redialMs, t.redialMaxMs));
}
