import { EventEmitter } from 'node:events';
import type { PrivateKey } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import { multiaddr } from '@multiformats/multiaddr';
import type { GossipsubOpts } from '@chainsafe/libp2p-gossipsub';
import type { Config } from '../shared/config.ts';
import { SystemClock, type Clock, type TimerHandle } from '../shared/clock.ts';
import { createLogger, type Logger } from '../shared/logger.ts';
import { errorMessage } from '../shared/errors.ts';
import { gossipLinkHealth, judgeLinks, type LinkObservation } from './gossip/links.ts';
import { TOPICS, encodeMessage, type DeadMessage, type HeartbeatMessage, type LeftMessage, type MembershipMessage } from '../shared/wire.ts';
import { HttpServer } from '../web/server.ts';
import { registerDepotApi } from '../web/depot-api.ts';
import { createNode, type NavigatorNode } from './libp2p.ts';
import { readSwarmKey } from './swarm-key.ts';
import { loadOrCreateIdentity } from './identity.ts';
import { Membership, type MembershipAction } from './membership/membership.ts';
import { DepotMetrics } from './metrics.ts';
import { GossipInbox } from './gossip/inbox.ts';
import { HeartbeatPublisher, type HeartbeatContentProvider } from './heartbeat/publisher.ts';
import { Prober } from './membership/member-prober.ts';

// The depot daemon: composes the libp2p node, gossip inbox, heartbeat, membership, prober and
// HTTP server, and wires the pure membership state machine to real time and the network.
// Other concerns (container drivers, control protocol, image store, journal, pilots) plug in
// as parts: factories that receive the Depot and return something with start()/stop().

/** A concern plugged into the depot; started in order after the core, stopped in reverse. */
export interface DepotPart {
  readonly name: string;
  start(): void | Promise<void>;
  stop(): void | Promise<void>;
}

export type DepotPartFactory = (depot: Depot) => DepotPart;

export interface DepotOptions {
  config: Config;
  log?: Logger;
  clock?: Clock;
  /** Private network key; default: read config.network.swarmKeyFile. */
  swarmKey?: Uint8Array;
  /** Peer identity; default: loaded or created at config.network.identityFile. */
  privateKey?: PrivateKey;
  /** 'memory' runs hundreds of depots in one process (benchmarks). */
  transport?: 'tcp' | 'memory';
  /** Serve HTTP (default true). */
  http?: boolean;
  /** Export Node.js process metrics on /metrics (only meaningful with one depot per process). */
  processMetrics?: boolean;
  parts?: DepotPartFactory[];
  /** Gossipsub tuning (benchmarks). */
  gossip?: Partial<GossipsubOpts>;
  /**
   * Dial every depot heard of (from the addresses in its heartbeat) so that connectivity is
   * full even where mDNS does not reach, and heartbeats arrive in one hop. Default true.
   */
  dialDiscovered?: boolean;
}

/** Least time between two dial attempts to the same unconnected depot. */
const REDIAL_MS = 5000;

/** Events: 'transition' (MembershipAction of kind transition), 'heartbeat' (HeartbeatMessage accepted from another depot). */
export interface DepotEvents {
  transition: [Extract<MembershipAction, { kind: 'transition' }>];
  heartbeat: [HeartbeatMessage];
}

/** How long after publishing `left` the node stays up so the message gets out. */
const LEFT_FLUSH_MS = 250;

/** How often the gossip streams of every connection are checked (gossip-links.ts). */
const LINK_CHECK_MS = 2000;
/** Longest time this depot's own address list is reused (it is also dropped when libp2p changes it). */
const ADDRESSES_TTL_MS = 10_000;
/** How long a connection may lack its gossip streams (set-up included) before it is closed. */
const LINK_GRACE_MS = 15_000;
/** A depot still dead this long after the verdict has its connections closed. */
const DEAD_HANGUP_MS = 30_000;
/**
 * Push-pull sync (memberlist): ask a random connected depot whom it knows and connect to the
 * ones this depot is not connected to. Every second for the first half minute (depots that start
 * together know only their bootstrap peer at first), then every 30 s.
 */
const SYNC_FAST_MS = 1000;
const SYNC_FAST_WINDOW_MS = 30_000;
const SYNC_MS = 30_000;
/** Wait before dialling a depot whose connection closed while it is still alive. */
const RECONNECT_DELAY_MS = 1000;

export class Depot {
  readonly config: Config;
  readonly log: Logger;
  readonly clock: Clock;
  readonly events = new EventEmitter<DepotEvents>();
  readonly metrics: DepotMetrics;
  /** Start time of this process: a restart is a new incarnation. */
  readonly incarnation: number;
  private _node: NavigatorNode | undefined;
  private _membership: Membership | undefined;
  private _inbox: GossipInbox | undefined;
  private _heartbeat: HeartbeatPublisher | undefined;
  private _prober: Prober | undefined;
  private _http: HttpServer | undefined;
  private readonly parts: DepotPart[] = [];
  private readonly pendingProviders: HeartbeatContentProvider[] = [];
  private tickTimer: TimerHandle | undefined;
  private redialTimer: TimerHandle | undefined;
  private linkTimer: TimerHandle | undefined;
  private syncTimer: TimerHandle | undefined;
  private unhealthyLinks = new Map<string, number>();
  private readonly lastDial = new Map<string, number>();
  /** Peers with at least one open connection (libp2p peer:connect / peer:disconnect). */
  private readonly connectedPeers = new Set<string>();
  private bootstrapPeers: Array<{ peerId: string; addresses: string[] }> | undefined;
  private addressCache: { at: number; list: string[] } | undefined;
  private state: 'new' | 'starting' | 'running' | 'stopping' | 'stopped' = 'new';

  constructor(private readonly opts: DepotOptions) {
    this.config = opts.config;
    this.clock = opts.clock ?? new SystemClock();
    this.log = (opts.log ?? createLogger({ level: opts.config.log.level })).child({ depot: opts.config.node.name });
    this.incarnation = this.clock.now();
    this.metrics = new DepotMetrics({
      processMetrics: opts.processMetrics ?? false,
      membersByState: () => this._membership?.countByState() ?? { alive: 0, suspect: 0, dead: 0, left: 0 },
      connectedPeers: () => this._node?.getPeers().length ?? 0,
      topicPeers: () => Object.fromEntries(Object.values(TOPICS).map((t) => [t, this._node?.services.pubsub.getSubscribers(t).length ?? 0])),
    });
  }

  get node(): NavigatorNode {
    return required(this._node, 'node');
  }
  get membership(): Membership {
    return required(this._membership, 'membership');
  }
  get inbox(): GossipInbox {
    return required(this._inbox, 'gossip inbox');
  }
  get heartbeat(): HeartbeatPublisher {
    return required(this._heartbeat, 'heartbeat');
  }
  get prober(): Prober {
    return required(this._prober, 'prober');
  }
  /** The HTTP server (undefined when started with http: false). Parts add routes in their start(). */
  get http(): HttpServer | undefined {
    return this._http;
  }
  get peerId(): string {
    return this.node.peerId.toString();
  }
  get running(): boolean {
    return this.state === 'running';
  }

  /** Add what a part contributes to every heartbeat (images, staging, containers). */
  addHeartbeatContent(provider: HeartbeatContentProvider): void {
    if (this._heartbeat) this._heartbeat.addContentProvider(provider);
    else this.pendingProviders.push(provider);
  }

  async start(): Promise<void> {
    if (this.state !== 'new') throw new Error(`depot already ${this.state}`);
    this.state = 'starting';
    const cfg = this.config;
    const t = cfg.membership;
    const started = this.clock.now();
    try {
      const swarmKey = this.opts.swarmKey ?? (await readSwarmKey(cfg.network.swarmKeyFile));
      const privateKey = this.opts.privateKey ?? (await loadOrCreateIdentity(cfg.network.identityFile));
      this._node = await createNode({
        swarmKey,
        privateKey,
        listen: cfg.network.listen,
        announce: cfg.network.announce,
        bootstrap: cfg.network.bootstrap,
        mdns: cfg.network.mdns,
        mdnsIntervalMs: cfg.network.mdnsIntervalMs,
        transport: this.opts.transport ?? 'tcp',
        gossip: {
          metricsRegister: this.metrics.gossipWire,
          metricsTopicStrToLabel: new Map(Object.values(TOPICS).map((topic) => [topic, topic])),
          ...this.opts.gossip,
        },
      });
      const node = this._node;
      const selfId = node.peerId.toString();
      this._membership = new Membership({
        selfId,
        timing: {
          heartbeatMs: t.heartbeatMs,
          heartbeatRefreshMs: t.heartbeatRefreshMs,
          probeIntervalMs: t.probeIntervalMs,
          suspectAfterMissed: t.suspectAfterMissed,
          probeTimeoutMs: t.probeTimeoutMs,
          indirectProbes: t.indirectProbes,
          suspectTimeoutMs: t.suspectTimeoutMs,
          forgetAfterMs: t.forgetAfterMs,
        },
      });
      this._inbox = new GossipInbox({
        pubsub: node.services.pubsub,
        metrics: this.metrics,
        maxMessageBytes: t.maxMessageBytes,
        log: this.log.child({ component: 'gossip' }),
        handlers: {
          heartbeat: (hb) => this.onHeartbeat(hb),
          membership: (msg) => this.onMembershipMessage(msg),
        },
      });
      this._prober = new Prober({
        node,
        log: this.log.child({ component: 'probe' }),
        probeTimeoutMs: t.probeTimeoutMs,
        members: () => this.knownMembers(),
        ownHeartbeat: () => this._heartbeat?.latest(),
        maxHeartbeatBytes: t.maxMessageBytes,
      });
      node.addEventListener('self:peer:update', () => (this.addressCache = undefined));
      node.addEventListener('peer:connect', (evt) => {
        const peer = evt.detail.toString();
        this.connectedPeers.add(peer);
        this.onPeerConnect(peer);
      });
      node.addEventListener('peer:disconnect', (evt) => {
        const peer = evt.detail.toString();
        this.connectedPeers.delete(peer);
        this._prober?.connectionClosed(peer);
        if (this.state !== 'running') return;
        this.apply(this.membership.connectionLost(peer, this.clock.now()));
        // Keep the cluster fully connected (heartbeats go out in one hop): dial a depot that is
        // still alive again after a moment; one that died is never dialled again.
        this.clock.setTimeout(() => {
          const view = this._membership?.get(peer);
          if (view?.state === 'alive' && view.heartbeat) this.dialIfUnconnected(view.heartbeat);
        }, RECONNECT_DELAY_MS);
      });

      if (this.opts.http !== false) {
        this._http = new HttpServer({ host: cfg.http.host, port: cfg.http.port, log: this.log.child({ component: 'http' }) });
        registerDepotApi(this._http, this);
      }
      this._heartbeat = new HeartbeatPublisher({
        pubsub: node.services.pubsub,
        clock: this.clock,
        log: this.log.child({ component: 'heartbeat' }),
        metrics: this.metrics,
        peerId: selfId,
        name: cfg.node.name,
        incarnation: this.incarnation,
        heartbeatMs: t.heartbeatMs,
        refreshMs: t.heartbeatRefreshMs,
        maxMessageBytes: t.maxMessageBytes,
        storeDir: cfg.store.dir,
        httpPort: () => this._http?.port,
        addresses: () => this.ownAddresses(node),
        onLocal: (hb) => this.membership.observeHeartbeat(hb, this.clock.now()),
      });
      for (const p of this.pendingProviders.splice(0)) this._heartbeat.addContentProvider(p);

      await node.start();
      await this._prober.start();
      this._inbox.start();
      await this._http?.start();
      for (const factory of this.opts.parts ?? []) {
        const part = factory(this);
        await part.start();
        this.parts.push(part);
        this.log.info({ event: 'part-started', part: part.name }, `started ${part.name}`);
      }
      this._heartbeat.start();
      const tickMs = Math.max(10, Math.min(100, Math.floor(t.heartbeatMs / 4), t.probeIntervalMs > 0 ? Math.floor(t.probeIntervalMs / 4) : Infinity));
      this.tickTimer = this.clock.setInterval(() => this.tick(), tickMs);
      this.linkTimer = this.clock.setInterval(() => this.checkGossipLinks(), LINK_CHECK_MS);
      this.scheduleSync(this.clock.now());
      // The bootstrap module dials its list once; keep trying those we are not connected to
      // (the first depot may start later, or a dial may fail on a busy host).
      this.redialTimer = this.clock.setInterval(() => this.redialBootstrap(), REDIAL_MS);
      this.state = 'running';
      // Peers connected while starting (bootstrap) were not asked yet.
      for (const p of node.getPeers()) this.onPeerConnect(p.toString());
      this.log.info(
        {
          event: 'depot-started',
          peerId: selfId,
          incarnation: this.incarnation,
          listen: node.getMultiaddrs().map((a) => a.toString()),
          httpPort: this._http?.port,
          durationMs: this.clock.now() - started,
        },
        'depot started',
      );
    } catch (err) {
      this.log.error({ event: 'depot-start-failed', err: errorMessage(err) }, 'depot failed to start');
      await this.shutdown(false);
      throw err;
    }
  }

  /** Clean stop: parts first (the depot keeps heartbeating meanwhile), then announce `left`. */
  async stop(): Promise<void> {
    if (this.state === 'stopping' || this.state === 'stopped') return;
    if (this.state !== 'running') {
      await this.shutdown(false);
      return;
    }
    await this.shutdown(true);
  }

  /**
   * Stop at once without announcing `left`, as if the process had died (in-process simulations
   * of failure detection; a real crash is kill -9).
   */
  async crash(): Promise<void> {
    if (this.state === 'stopping' || this.state === 'stopped') return;
    await this.shutdown(false);
  }

  private async shutdown(announce: boolean): Promise<void> {
    this.state = 'stopping';
    const started = this.clock.now();
    for (const part of [...this.parts].reverse()) {
      try {
        await part.stop();
      } catch (err) {
        this.log.warn({ event: 'part-stop-failed', part: part.name, err: errorMessage(err) }, `stopping ${part.name} failed`);
      }
    }
    this.parts.length = 0;
    this.clock.clear(this.tickTimer);
    this.tickTimer = undefined;
    this.clock.clear(this.redialTimer);
    this.redialTimer = undefined;
    this.clock.clear(this.linkTimer);
    this.linkTimer = undefined;
    this.clock.clear(this.syncTimer);
    this.syncTimer = undefined;
    await this._heartbeat?.stop();
    if (announce && this._node) {
      const msg: LeftMessage = { type: 'left', v: 1, peerId: this.peerId, name: this.config.node.name, incarnation: this.incarnation, sentAt: this.clock.now() };
      try {
        await this.publish(TOPICS.membership, encodeMessage(msg));
        await this.clock.sleep(LEFT_FLUSH_MS);
      } catch (err) {
        this.log.warn({ event: 'left-not-published', err: errorMessage(err) }, 'could not announce left');
      }
    }
    this._inbox?.stop();
    await this._prober?.stop();
    await this._http?.stop();
    try {
      await this._node?.stop();
    } catch (err) {
      this.log.warn({ event: 'node-stop-failed', err: errorMessage(err) }, 'libp2p stop failed');
    }
    this.state = 'stopped';
    this.log.info({ event: 'depot-stopped', announced: announce, durationMs: this.clock.now() - started }, 'depot stopped');
  }

  /** Publish on a gossip topic and count it. */
  async publish(topic: string, bytes: Uint8Array): Promise<void> {
    await this.node.services.pubsub.publish(topic, bytes);
    this.metrics.gossipPublished.inc({ topic });
    this.metrics.gossipPublishedBytes.inc({ topic }, bytes.byteLength);
  }

  /**
   * This depot's announceable libp2p addresses. libp2p recomputes them (parsing every listen
   * address) on each call, and the heartbeat asks every second: kept until libp2p reports a
   * change of its own addresses, or for ADDRESSES_TTL_MS.
   */
  private ownAddresses(node: NavigatorNode): string[] {
    const now = this.clock.now();
    if (!this.addressCache || now - this.addressCache.at >= ADDRESSES_TTL_MS) {
      this.addressCache = { at: now, list: announceable(node.getMultiaddrs().map((a) => a.toString())) };
    }
    return this.addressCache.list;
  }

  private redialBootstrap(): void {
    if (this.state !== 'running') return;
    // Parsed once: a bootstrap list can name every other depot.
    this.bootstrapPeers ??= this.config.network.bootstrap.flatMap((a) => {
      try {
        const peerId = multiaddr(a).getPeerId();
        return peerId ? [{ peerId, addresses: [a] }] : [];
      } catch {
        return []; // an invalid address was already reported by the bootstrap module
      }
    });
    for (const b of this.bootstrapPeers) this.dialIfUnconnected(b);
  }

  private tick(): void {
    if (this.state !== 'running') return;
    this.apply(this.membership.tick(this.clock.now(), this._prober?.lagAllowanceMs() ?? 0));
  }

  /**
   * A connection to a depot judged dead may be a dead socket (a partition, a power loss): close
   * it, so that when the depot is back its heartbeat brings a fresh dial. Not at once: a false
   * verdict on a starved host is refuted within moments, and closing would only add churn.
   */
  private hangUpIfStillDead(peer: string): void {
    this.clock.setTimeout(() => {
      if (this.state !== 'running' || this._membership?.get(peer)?.state !== 'dead') return;
      void this._node?.hangUp(peerIdFromString(peer)).catch(() => undefined);
    }, DEAD_HANGUP_MS);
  }

  private scheduleSync(startedAt: number): void {
    const wait = this.clock.now() - startedAt < SYNC_FAST_WINDOW_MS ? SYNC_FAST_MS : SYNC_MS;
    this.syncTimer = this.clock.setTimeout(() => {
      this.pushPullSync();
      if (this.state === 'running') this.scheduleSync(startedAt);
    }, wait);
  }

  private connectedTo(peer: string): boolean {
    try {
      return (this._node?.getConnections(peerIdFromString(peer)).length ?? 0) > 0;
    } catch {
      return false; // not a peer id
    }
  }

  private pushPullSync(): void {
    const node = this._node;
    if (!node || this.state !== 'running' || this.opts.dialDiscovered === false) return;
    const peers = node.getPeers();
    if (peers.length === 0) return;
    const peer = peers[Math.floor(Math.random() * peers.length)]!.toString();
    void this.prober.members(peer).then((members) => {
      for (const m of members ?? []) {
        // Connected but never heard of (its heartbeat request failed on a busy host): ask again.
        if (this.state === 'running' && !this._membership?.get(m.peerId) && this.connectedTo(m.peerId)) {
          void this.prober.heartbeatOf(m.peerId).then((hb) => hb && this.onHeartbeat(hb));
        } else this.dialIfUnconnected(m);
      }
    });
  }

  /** Close connections whose gossip streams are gone (gossip-links.ts), then dial them again. */
  private checkGossipLinks(): void {
    const node = this._node;
    if (!node || this.state !== 'running') return;
    const now = this.clock.now();
    const links = node.getConnections().filter((c) => c.status === 'open').map((c) => ({
      peer: c.remotePeer.toString(),
      healthy: gossipLinkHealth(node.services.pubsub, c.remotePeer.toString()),
      openedAt: now - (Date.now() - c.timeline.open),
    }));
    // Several connections to one peer: it is healthy if gossipsub's streams are (they live on one of them).
    const byPeer = new Map<string, LinkObservation>();
    for (const l of links) {
      const prev = byPeer.get(l.peer);
      byPeer.set(l.peer, prev ? { ...prev, openedAt: Math.max(prev.openedAt, l.openedAt) } : l);
    }
    const j = judgeLinks([...byPeer.values()], this.unhealthyLinks, now, LINK_GRACE_MS);
    this.unhealthyLinks = j.unhealthySince;
    for (const peer of j.close) {
      const view = this._membership?.get(peer);
      this.metrics.gossipLinkRepairs.inc();
      this.log.warn({ event: 'gossip-link-repair', peer, name: view?.name }, `gossip streams to ${view?.name ?? peer} are gone; reconnecting`);
      const peerId = peerIdFromString(peer);
      void node
        .hangUp(peerId)
        .catch(() => undefined)
        .then(() => {
          this.lastDial.delete(peer);
          if (view?.heartbeat) this.dialIfUnconnected(view.heartbeat);
          else void node.dial(peerId, { signal: AbortSignal.timeout(5000) }).catch(() => undefined);
        });
    }
  }

  private onHeartbeat(hb: HeartbeatMessage): void {
    if (this.state !== 'running') return;
    this.apply(this.membership.observeHeartbeat(hb, this.clock.now()));
    this.events.emit('heartbeat', hb);
    if (this.opts.dialDiscovered !== false) this.dialIfUnconnected(hb);
  }

  /** Heard of a depot we have no connection to (it came through a third one): connect to it. */
  private dialIfUnconnected(hb: { peerId: string; addresses: string[]; name?: string }): void {
    const node = this._node;
    // Checked first, by string: this runs for every heartbeat heard, nearly always of a connected peer.
    if (!node || this.state !== 'running' || this.connectedPeers.has(hb.peerId) || hb.peerId === node.peerId.toString()) return;
    const now = this.clock.now();
    if (hb.addresses.length === 0 || now - (this.lastDial.get(hb.peerId) ?? -Infinity) < REDIAL_MS) return;
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
    void node.dial(addrs, { signal: AbortSignal.timeout(5000) }).then(
      () => this.log.debug({ event: 'dialed-discovered', peer: hb.peerId, name }, `connected to ${name}`),
      (err: unknown) => this.log.debug({ event: 'dial-discovered-failed', peer: hb.peerId, err: errorMessage(err) }, `could not connect to ${name}`),
    );
  }

  /**
   * Join sync (memberlist push/pull): ask a newly connected peer for its heartbeat (so both know
   * each other at once, with heartbeats gossiped only on change) and whom it knows, and connect to them.
   */
  private onPeerConnect(peerId: string): void {
    if (this.state !== 'running') return;
    void this.prober.heartbeatOf(peerId).then((hb) => {
      if (hb) this.onHeartbeat(hb);
    });
    if (this.opts.dialDiscovered === false) return;
    void this.prober.members(peerId).then((members) => {
      if (!members) return;
      for (const m of members) this.dialIfUnconnected(m);
    });
  }

  /** What this depot answers to a `members` request. */
  private knownMembers(): Array<{ peerId: string; addresses: string[] }> {
    if (!this._membership) return [];
    return this._membership
      .view()
      .filter((m) => (m.state === 'alive' || m.state === 'suspect') && m.heartbeat)
      .map((m) => ({ peerId: m.peerId, addresses: m.heartbeat!.addresses.slice(0, 8) }));
  }

  private onMembershipMessage(msg: MembershipMessage): void {
    if (this.state !== 'running') return;
    const now = this.clock.now();
    this.apply(msg.type === 'left' ? this.membership.observeLeft(msg, now) : this.membership.observeDead(msg, now));
  }

  /** Carry out what the membership state machine decided. */
  private apply(actions: MembershipAction[]): void {
    for (const a of actions) {
      switch (a.kind) {
        case 'transition': {
          if (a.peer === this._node?.peerId.toString()) break;
          const level = a.to === 'dead' || a.to === 'suspect' ? 'warn' : 'info';
          this.log[level]({ event: 'member-transition', peer: a.peer, name: a.name, from: a.from, to: a.to, reason: a.reason, incarnation: a.incarnation }, `${a.name} ${a.from} -> ${a.to}`);
          this.events.emit('transition', a);
          if (a.to === 'dead') this.hangUpIfStillDead(a.peer);
          break;
        }
        case 'probe': {
          const startedAt = this.clock.now();
          const done = (ok: boolean) => {
            // Routine probes run once a second: their outcome shows in the transitions it causes.
            const level = a.routine ? 'debug' : 'info';
            this.log[level]({ event: 'probe-result', peer: a.peer, via: a.indirectVia, routine: a.routine, ok, durationMs: this.clock.now() - startedAt }, `probe ${ok ? 'answered' : 'failed'}`);
            if (this.state === 'running') this.apply(this.membership.probeResult(a.peer, ok, this.clock.now(), a.id));
          };
          if (a.routine) void this.prober.probeRoutine(a.peer, a.indirectVia).then(done);
          else void this.prober.probe(a.peer, a.indirectVia).then(done);
          break;
        }
        case 'declare-dead': {
          const msg: DeadMessage = { type: 'dead', v: 1, peerId: a.peer, incarnation: a.incarnation, by: this.peerId, sentAt: this.clock.now() };
          void this.publish(TOPICS.membership, encodeMessage(msg)).catch((err: unknown) =>
            this.log.warn({ event: 'dead-not-published', peer: a.peer, err: errorMessage(err) }, 'could not gossip death'),
          );
          break;
        }
        case 'refute':
          this.log.warn({ event: 'refute', by: a.by }, 'another depot reported this one dead; heartbeating at once');
          void this.heartbeat.beat(true);
          break;
        case 'forget':
          this.log.info({ event: 'member-forgotten', peer: a.peer, name: a.name }, `forgot ${a.name}`);
          break;
      }
    }
  }
}

/** Addresses worth telling other hosts: loopback ones only when there is nothing else (tests on one host). */
export function announceable(addrs: string[]): string[] {
  const remote = addrs.filter((a) => !a.startsWith('/ip4/127.') && !a.startsWith('/ip6/::1/'));
  return remote.length > 0 ? remote : addrs;
}

function required<T>(v: T | undefined, what: string): T {
  if (v === undefined) throw new Error(`depot ${what} not started`);
  return v;
}

/** Run a started depot until SIGTERM or SIGINT, then stop it cleanly (announcing `left`). */
export function stopOnSignals(depot: Depot, exit: (code: number) => void = (c) => process.exit(c)): void {
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) {
      depot.log.warn({ event: 'signal-again', signal }, 'second signal: exiting now');
      exit(1);
      return;
    }
    stopping = true;
    depot.log.info({ event: 'signal', signal }, `received ${signal}, stopping`);
    const force = setTimeout(() => exit(1), 15_000);
    force.unref();
    void depot.stop().then(
      () => exit(0),
      (err: unknown) => {
        depot.log.error({ event: 'stop-failed', err: errorMessage(err) }, 'stop failed');
        exit(1);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}
