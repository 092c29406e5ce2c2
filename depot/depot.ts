import { EventEmitter } from 'node:events';
import type { PrivateKey } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import type { GossipsubOpts } from '@chainsafe/libp2p-gossipsub';
import type { Config } from '../shared/config.ts';
import { SystemClock, type Clock, type TimerHandle } from '../shared/clock.ts';
import { createLogger, type Logger } from '../shared/logger.ts';
import { NavigatorError, errorMessage, type ErrorCode } from '../shared/errors.ts';
import { TOPICS, encodeMessage, type DeadMessage, type HeartbeatMessage, type LeftMessage, type MembershipMessage } from '../shared/wire.ts';
import { HttpServer } from '../web/server.ts';
import { registerDepotApi } from '../web/depot-api.ts';
import { createNode, type NavigatorNode } from './libp2p.ts';
import { readSwarmKey } from './swarm-key.ts';
import { loadOrCreateIdentity } from './identity.ts';
import { Membership, membershipTiming, type MembershipAction } from './membership/membership.ts';
import { MemberProber } from './membership/member-prober.ts';
import { DepotMetrics } from './metrics.ts';
import { GossipInbox } from './gossip/inbox.ts';
import { HeartbeatPublisher, type HeartbeatContentProvider } from './heartbeat/publisher.ts';
import { ControlServer } from './control/server.ts';
import { ControlClient } from './control/client.ts';
import { ControlGuard } from './control/guard.ts';
import { ConnectionManager } from './connections.ts';
import type { DepotComponents, DepotPlugin, DepotPluginFactory, MemberEvents } from './components.ts';
import { depotsResponse } from './depots-response.ts';
import { NoticeBus } from './notices.ts';
import type { DepotRowExtras } from '../shared/api/depots.ts';

// The depot daemon's lifecycle: builds the core — libp2p node, gossip inbox, heartbeat,
// membership with its prober, connection manager, control server, HTTP server — wires the pure
// membership state machine to real time and the network, then starts the plugins (containers,
// images, journal and tracking page, pilots) in order with the components they ask for, and
// stops everything in reverse.

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
  plugins?: DepotPluginFactory[];
  /** Gossipsub tuning (benchmarks). */
  gossip?: Partial<GossipsubOpts>;
  /**
   * Dial every depot heard of (from the addresses in its heartbeat) so that connectivity is
   * full even where mDNS does not reach, and heartbeats arrive in one hop. Default true.
   */
  dialDiscovered?: boolean;
}

type DepotState = 'new' | 'starting' | 'running' | 'stopping' | 'stopped';

export class Depot {
  readonly config: Config;
  readonly log: Logger;
  readonly clock: Clock;
  readonly events = new EventEmitter<MemberEvents>();
  readonly metrics: DepotMetrics;
  readonly notices: NoticeBus;
  /** Start time of this process: a restart is a new incarnation. */
  readonly incarnation: number;
  private _node: NavigatorNode | undefined;
  private _membership: Membership | undefined;
  private _inbox: GossipInbox | undefined;
  private _heartbeat: HeartbeatPublisher | undefined;
  private _prober: MemberProber | undefined;
  private _connections: ConnectionManager | undefined;
  private _control: ControlServer | undefined;
  private _http: HttpServer | undefined;
  private _components: DepotComponents | undefined;
  private readonly plugins: DepotPlugin[] = [];
  private readonly rowExtras: Array<(peerId: string) => DepotRowExtras> = [];
  private readonly serviceAddressProviders: Array<() => string[]> = [];
  private tickTimer: TimerHandle | undefined;
  private addressCache: { at: number; list: string[] } | undefined;
  private state: DepotState = 'new';

  constructor(private readonly opts: DepotOptions) {
    this.config = opts.config;
    this.clock = opts.clock ?? new SystemClock();
    this.log = (opts.log ?? createLogger({ level: opts.config.log.level })).child({ depot: opts.config.node.name });
    this.incarnation = this.clock.now();
    this.notices = new NoticeBus({ host: () => ({ name: opts.config.node.name, peerId: this._node?.peerId.toString() ?? '' }), now: () => this.clock.now() });
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
  get heartbeat(): HeartbeatPublisher {
    return required(this._heartbeat, 'heartbeat');
  }
  get prober(): MemberProber {
    return required(this._prober, 'prober');
  }
  /** What plugins are given (available once start() has built the core). */
  get components(): DepotComponents {
    return required(this._components, 'components');
  }
  get peerId(): string {
    return this.node.peerId.toString();
  }
  /** Port the HTTP server listens on (undefined without HTTP or before start). */
  get httpPort(): number | undefined {
    return this._http?.port;
  }
  get running(): boolean {
    return this.state === 'running';
  }

  async start(): Promise<void> {
    if (this.state !== 'new') throw new Error(`depot already ${this.state}`);
    this.state = 'starting';
    const started = this.clock.now();
    try {
      await this.buildCore();
      const node = this.node;
      await node.start();
      await this.prober.start();
      this._inbox!.start();
      await this._control!.start();
      await this._http?.start();
      for (const factory of this.opts.plugins ?? []) {
        const plugin = factory(this.components);
        await plugin.start();
        this.plugins.push(plugin);
        this.log.info({ event: 'plugin-started', plugin: plugin.name }, `started ${plugin.name}`);
      }
      this.heartbeat.start();
      const t = this.config.membership;
      const tickMs = Math.max(10, Math.min(100, Math.floor(t.heartbeatMs / 4), t.probeIntervalMs > 0 ? Math.floor(t.probeIntervalMs / 4) : Infinity));
      this.tickTimer = this.clock.setInterval(() => this.tick(), tickMs);
      this.state = 'running';
      this._connections!.start();
      this.log.info(
        {
          event: 'depot-started',
          peerId: this.peerId,
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

  private async buildCore(): Promise<void> {
    const cfg = this.config;
    const t = cfg.membership;
    const swarmKey = this.opts.swarmKey ?? (await readSwarmKey(cfg.network.swarmKeyFile));
    const privateKey = this.opts.privateKey ?? (await loadOrCreateIdentity(cfg.network.identityFile));
    const node = (this._node = await createNode({
      swarmKey,
      privateKey,
      listen: cfg.network.listen,
      announce: cfg.network.announce,
      bootstrap: cfg.network.bootstrap,
      mdns: cfg.network.mdns,
      mdnsIntervalMs: cfg.network.mdnsIntervalMs,
      maxConnections: cfg.network.maxConnections,
      hiddenAddresses: () => this.serviceAddresses(),
      transport: this.opts.transport ?? 'tcp',
      gossip: {
        metricsRegister: this.metrics.gossipWire,
        metricsTopicStrToLabel: new Map(Object.values(TOPICS).map((topic) => [topic, topic])),
        ...this.opts.gossip,
      },
    }));
    const selfId = node.peerId.toString();
    const membership = (this._membership = new Membership({
      selfId,
      timing: membershipTiming(t),
    }));
    const inbox = (this._inbox = new GossipInbox({
      pubsub: node.services.pubsub,
      metrics: this.metrics,
      maxMessageBytes: t.maxMessageBytes,
      log: this.log.child({ component: 'gossip' }),
      // A peer holding the swarm key that signs messages claiming to be another: a security event.
      onSpoofed: (from, detail, topic) => this.notices.report({ kind: 'peer-refused', subject: from, summary: `gossip from ${from} refused: ${detail}`, details: { topic, what: 'gossip' } }),
      handlers: {
        heartbeat: (hb) => this.onHeartbeat(hb),
        membership: (msg) => this.onMembershipMessage(msg),
      },
    }));
    const prober = (this._prober = new MemberProber({
      node,
      log: this.log.child({ component: 'probe' }),
      clock: this.clock,
      probeTimeoutMs: t.probeTimeoutMs,
      lagWindowMs: t.lagWindowMs,
      maxLagAllowanceMs: t.maxLagAllowanceMs,
      members: () => this.knownMembers(),
      ownHeartbeat: () => this._heartbeat?.latest(),
      maxHeartbeatBytes: t.maxMessageBytes,
    }));
    const connections = (this._connections = new ConnectionManager({
      node,
      membership,
      prober,
      metrics: this.metrics,
      clock: this.clock,
      log: this.log,
      timing: cfg.connections,
      bootstrap: cfg.network.bootstrap,
      dialDiscovered: this.opts.dialDiscovered !== false,
      onHeartbeat: (hb) => this.onHeartbeat(hb),
    }));
    node.addEventListener('self:peer:update', () => (this.addressCache = undefined));
    node.addEventListener('peer:connect', (evt) => connections.connected(evt.detail.toString()));
    node.addEventListener('peer:discovery', (evt) => connections.discovered(evt.detail.id.toString(), evt.detail.multiaddrs.map((a) => a.toString())));
    node.addEventListener('peer:disconnect', (evt) => {
      const peer = evt.detail.toString();
      prober.connectionClosed(peer);
      connections.disconnected(peer);
      if (this.state === 'running') this.apply(membership.connectionLost(peer, this.clock.now()));
    });
    const { readTimeoutMs, maxRequestMs, maxInboundStreams } = cfg.control;
    const control = (this._control = new ControlServer({ node, logger: this.log, readTimeoutMs, maxRequestMs, maxInboundStreams }));
    const controlClient = new ControlClient({ node, timeoutMs: cfg.control.callTimeoutMs });
    const guard = new ControlGuard({ logger: this.log, registry: this.metrics.registry, notices: this.notices });
    if (this.opts.http !== false) {
      this._http = new HttpServer({ host: cfg.http.host, port: cfg.http.port, log: this.log.child({ component: 'http' }) });
      registerDepotApi(this._http, {
        health: () => ({ ok: this.running, name: cfg.node.name, peerId: selfId }),
        depots: () => depotsResponse({ self: this.components.self, membership, dropped: this.metrics.dropped, extras: (peer) => this.extrasOf(peer) }),
        metrics: this.metrics.registry,
      });
    }
    const heartbeat = (this._heartbeat = new HeartbeatPublisher({
      pubsub: node.services.pubsub,
      clock: this.clock,
      log: this.log.child({ component: 'heartbeat' }),
      metrics: this.metrics,
      peerId: selfId,
      name: cfg.node.name,
      incarnation: this.incarnation,
      heartbeatMs: t.heartbeatMs,
      refreshMs: t.heartbeatRefreshMs,
      figuresMinIntervalMs: t.figuresMinIntervalMs,
      hostAddressesTtlMs: t.hostAddressesTtlMs,
      maxMessageBytes: t.maxMessageBytes,
      storeDir: cfg.store.dir,
      httpPort: () => this._http?.port,
      addresses: () => this.ownAddresses(node),
      onLocal: (hb) => membership.observeHeartbeat(hb, this.clock.now()),
      hiddenAddresses: () => this.serviceAddresses(),
    }));
    this._components = {
      config: cfg,
      logger: this.log,
      clock: this.clock,
      self: { peerId: selfId, name: cfg.node.name, incarnation: this.incarnation },
      node,
      members: {
        view: () => membership.view(),
        get: (peer) => membership.get(peer),
        countByState: () => membership.countByState(),
        events: this.events,
      },
      gossip: {
        publish: (topic, bytes) => this.publish(topic, bytes),
        subscribe: (topic, handler) => inbox.subscribe(topic, handler),
        drop: (reason, detail, from, topic) => inbox.drop(reason, detail, from, topic),
      },
      control: {
        register: (method, handler) => control.register(method, handler),
        call: (peer, method, params, opts) => this.callControl(control, controlClient, peer, method, params, opts),
        guard,
      },
      routes: this._http,
      heartbeat: {
        contribute: (provider: HeartbeatContentProvider) => heartbeat.addContentProvider(provider),
        beat: () => void heartbeat.beat().catch(() => undefined),
      },
      serviceAddresses: { provide: (list) => void this.serviceAddressProviders.push(list) },
      depotInfo: {
        add: (provider) => void this.rowExtras.push(provider),
        of: (peer) => this.extrasOf(peer),
      },
      metrics: this.metrics.registry,
      reach: { ping: async (peer, timeoutMs) => (await prober.ping(peer, timeoutMs)) !== undefined },
      notices: this.notices,
    };
  }

  /** Addresses pilots here may hold for a service (never announced as this depot's own). */
  private serviceAddresses(): Set<string> {
    return new Set(this.serviceAddressProviders.flatMap((p) => p()));
  }

  private extrasOf(peerId: string): DepotRowExtras {
    return Object.assign({}, ...this.rowExtras.map((p) => p(peerId))) as DepotRowExtras;
  }

  /** A control call; this depot's own methods are dispatched in process (libp2p cannot dial itself). */
  private async callControl<T>(server: ControlServer, client: ControlClient, peerId: string, method: string, params: unknown, opts: { timeoutMs?: number } = {}): Promise<T> {
    if (peerId === this.peerId) {
      const res = await server.dispatch({ id: `local-${method}`, method, params }, { kind: 'local' });
      if (res.ok) return res.result as T;
      throw new NavigatorError(res.error.code as ErrorCode, res.error.message);
    }
    return client.call<T>(peerIdFromString(peerId), method, params, opts);
  }

  /** Clean stop: plugins first (the depot keeps heartbeating meanwhile), then announce `left`. */
  async stop(): Promise<void> {
    if (this.state === 'stopping' || this.state === 'stopped') return;
    await this.shutdown(this.state === 'running');
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
    for (const plugin of [...this.plugins].reverse()) {
      try {
        await plugin.stop();
      } catch (err) {
        this.log.warn({ event: 'plugin-stop-failed', plugin: plugin.name, err: errorMessage(err) }, `stopping ${plugin.name} failed`);
      }
    }
    this.plugins.length = 0;
    this.clock.clear(this.tickTimer);
    this.tickTimer = undefined;
    this._connections?.stop();
    await this._heartbeat?.stop();
    if (announce && this._node) {
      const msg: LeftMessage = { type: 'left', v: 1, peerId: this.peerId, name: this.config.node.name, incarnation: this.incarnation, sentAt: this.clock.now() };
      try {
        await this.publish(TOPICS.membership, encodeMessage(msg));
        await this.clock.sleep(this.config.membership.leftFlushMs);
      } catch (err) {
        this.log.warn({ event: 'left-not-published', err: errorMessage(err) }, 'could not announce left');
      }
    }
    this._inbox?.stop();
    await this._control?.stop();
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
   * change of its own addresses, or for membership.addressesTtlMs.
   */
  private ownAddresses(node: NavigatorNode): string[] {
    const now = this.clock.now();
    if (!this.addressCache || now - this.addressCache.at >= this.config.membership.addressesTtlMs) {
      this.addressCache = { at: now, list: announceable(node.getMultiaddrs().map((a) => a.toString())) };
    }
    return this.addressCache.list;
  }

  private tick(): void {
    if (this.state !== 'running') return;
    this.apply(this.membership.tick(this.clock.now(), this._prober?.lagAllowanceMs() ?? 0));
  }

  /**
   * Heartbeats and membership messages are taken while running and while the plugins stop: a
   * primary handing over at a clean stop waits to hear of the new primary (pilot/hand-over.ts).
   */
  private get listening(): boolean {
    return this.state === 'running' || this.state === 'stopping';
  }

  private onHeartbeat(hb: HeartbeatMessage): void {
    if (!this.listening) return;
    this.apply(this.membership.observeHeartbeat(hb, this.clock.now()));
    this.events.emit('heartbeat', hb);
    this._connections?.heard(hb);
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
    if (!this.listening) return;
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
          if (a.to === 'dead') this._connections?.hangUpIfStillDead(a.peer);
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
function announceable(addrs: string[]): string[] {
  const remote = addrs.filter((a) => !a.startsWith('/ip4/127.') && !a.startsWith('/ip6/::1/'));
  return remote.length > 0 ? remote : addrs;
}

function required<T>(v: T | undefined, what: string): T {
  if (v === undefined) throw new Error(`depot ${what} not started`);
  return v;
}
