import type { EventEmitter } from 'node:events';
import type { Registry } from 'prom-client';
import type { Config } from '../shared/config.ts';
import type { Clock } from '../shared/clock.ts';
import type { Logger } from '../shared/logger.ts';
import type { RouteTarget } from '../shared/api/routes.ts';
import type { HeartbeatMessage } from '../shared/wire.ts';
import type { DepotRowExtras } from '../shared/api/depots.ts';
import type { NavigatorNode } from './libp2p.ts';
import type { MemberState } from '../shared/member-state.ts';
import type { MemberView, MembershipAction } from './membership/membership.ts';
import type { ControlRegistrar } from './control/server.ts';
import type { ControlGuard } from './control/guard.ts';
import type { DropReason } from './metrics.ts';
import type { HeartbeatContentProvider } from './heartbeat/publisher.ts';
import type { Notices } from './notices.ts';

// What the depot core offers to the plugins that add concerns to it (containers, images, the
// journal and tracking page, the pilots). As in js-libp2p, a plugin is `(init) => (components) =>
// plugin`: it names in its type the few components it uses (`Pick<DepotComponents, ...>`) and
// touches nothing else of the depot. The core owns the libp2p node, membership, gossip, the
// control server and the HTTP router; no plugin owns something another one needs.

/** Who this depot is. */
export interface DepotSelf {
  peerId: string;
  /** node.name from the config: the name others show. */
  name: string;
  /** Start time of this process: a restart is a new incarnation. */
  incarnation: number;
}

/** Events: 'transition' (a depot changed state), 'heartbeat' (a heartbeat accepted from another depot). */
export interface MemberEvents {
  transition: [Extract<MembershipAction, { kind: 'transition' }>];
  heartbeat: [HeartbeatMessage];
}

/** The membership view (read-only) and its events. */
export interface MemberDirectory {
  view(): MemberView[];
  get(peerId: string): MemberView | undefined;
  countByState(): Record<MemberState, number>;
  readonly events: EventEmitter<MemberEvents>;
}

/** Gossip beyond heartbeats and membership, for plugins (movement records). */
export interface GossipBus {
  publish(topic: string, bytes: Uint8Array): Promise<void>;
  /** Receive a topic; size and signature are checked before the handler sees a message. */
  subscribe(topic: string, handler: (data: Uint8Array, from: string) => void): void;
  /** Count and log a message the handler rejected. */
  drop(reason: DropReason, detail: string, from?: string, topic?: string): void;
}

/** Control methods: plugins register theirs and call other depots' (this depot's own in process). */
export interface ControlMethods extends ControlRegistrar {
  call<T>(peerId: string, method: string, params: unknown, opts?: { timeoutMs?: number }): Promise<T>;
  /** Who may call which method (role and term); the pilots plugin gives it its lease authority. */
  guard: ControlGuard;
}

/** What plugins add to every heartbeat. */
export interface HeartbeatContributions {
  contribute(provider: HeartbeatContentProvider): void;
  /** Publish a heartbeat now (a role changed: others must learn it at once). */
  beat(): void;
}

/** Facts about other depots that plugins add to GET /api/depots and the tracking page. */
export interface DepotAnnotations {
  add(provider: (peerId: string) => DepotRowExtras): void;
  of(peerId: string): DepotRowExtras;
}

/** Is another depot reachable right now. */
export interface Reachability {
  /** libp2p ping over the probe channel; true when answered within timeoutMs. */
  ping(peerId: string, timeoutMs: number): Promise<boolean>;
}

export interface DepotComponents {
  config: Config;
  logger: Logger;
  clock: Clock;
  self: DepotSelf;
  /** The libp2p node, for plugins that serve a protocol of their own (journal gap fill, election). */
  node: NavigatorNode;
  members: MemberDirectory;
  gossip: GossipBus;
  control: ControlMethods;
  /** The HTTP router (undefined when the depot serves no HTTP). */
  routes: RouteTarget | undefined;
  heartbeat: HeartbeatContributions;
  depotInfo: DepotAnnotations;
  /** Service addresses this host may hold: never announced as the depot's own (libp2p, heartbeat). */
  serviceAddresses: ServiceAddresses;
  /** Prometheus registry of /metrics. */
  metrics: Registry;
  reach: Reachability;
  /**
   * Events an admin should hear of (refused peers, images that failed verification, voter quorum,
   * last-resort recovery): report them here; the alerts plugin gossips them and alerts once.
   */
  notices: Notices;
}

export interface ServiceAddresses {
  /** A list (IPs without prefix) read whenever the depot's addresses are announced. */
  provide(list: () => string[]): void;
}

/** A concern plugged into the depot: started in order after the core, stopped in reverse. */
export interface DepotPlugin {
  readonly name: string;
  start(): void | Promise<void>;
  stop(): void | Promise<void>;
}

export type DepotPluginFactory = (components: DepotComponents) => DepotPlugin;
