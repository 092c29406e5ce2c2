import { EventEmitter } from 'node:events';
import { peerIdFromString } from '@libp2p/peer-id';
import { errorMessage } from '../shared/errors.ts';
import { TOPICS } from '../shared/wire.ts';
import type { DepotView, ServiceView } from '../shared/api/tracking.ts';
import { buildServiceViews } from '../web/service-views.ts';
import { registerTrackingRoutes, type TrackingRoutes } from '../web/tracking-routes.ts';
import { registerTrackingMetrics, type TrackingMetrics } from '../web/tracking-metrics.ts';
import type { DepotComponents, DepotPlugin } from '../depot/components.ts';
import { depotRow } from '../depot/depots-response.ts';
import type { Journal } from '../depot/journal/journal.ts';
import { JournalGapFill } from '../depot/journal/gap-fill.ts';
import { movementGossipHandler } from '../depot/journal/movement-gossip.ts';

// The movement journal and the tracking page: the journal is opened and closed here; movement
// gossip goes into it; /navigator/journal/1 serves gap filling and fetches what this depot missed
// (at start, and whenever a depot we had lost comes back: we may have been the one cut off); the
// page, its API and its metrics go on the depot's HTTP server.

export interface TrackingInit {
  journal: Journal;
}

export type TrackingComponents = Pick<DepotComponents, 'config' | 'logger' | 'clock' | 'node' | 'members' | 'gossip' | 'routes' | 'metrics' | 'depotInfo'>;

export interface TrackingPlugin extends DepotPlugin {
  readonly journal: Journal;
  readonly metrics: TrackingMetrics;
  /** Resolves when the first gap filling after start finished (or found no peer in time). */
  readonly initialFill: Promise<void>;
  services(): ServiceView[];
  depots(): DepotView[];
}

export function trackingPlugin(init: TrackingInit): (components: TrackingComponents) => TrackingPlugin {
  return (components) => new Tracking(init, components);
}

class Tracking implements TrackingPlugin {
  readonly name = 'tracking';
  readonly journal: Journal;
  private gapFill: JournalGapFill | undefined;
  private _metrics: TrackingMetrics | undefined;
  private routes: TrackingRoutes | undefined;
  private readonly changes = new EventEmitter();
  private stopped = false;
  private resolveInitial!: () => void;
  readonly initialFill = new Promise<void>((r) => (this.resolveInitial = r));
  private readonly log;
  private readonly timing;
  private readonly onHeartbeat = () => {
    this.changes.emit('depots');
    this.changes.emit('services');
  };
  private readonly onTransition = (a: { peer: string; from: string; to: string }) => {
    this.onHeartbeat();
    // A depot we had given up on is back: maybe it was us who was cut off. Ask it. (Not after a
    // mere suspicion: nothing was missed, and on a starved host that would be a request storm.)
    if (a.to === 'alive' && (a.from === 'dead' || a.from === 'left')) this.scheduleFill(a.peer);
  };
  /** Last gap fill asked of each peer after it came back. */
  private readonly lastFillAt = new Map<string, number>();

  constructor(
    init: TrackingInit,
    private readonly c: TrackingComponents,
  ) {
    this.log = c.logger.child({ component: 'tracking' });
    this.journal = init.journal;
    this.timing = c.config.journal;
  }

  get metrics(): TrackingMetrics {
    if (!this._metrics) throw new Error('tracking plugin not started');
    return this._metrics;
  }

  depots(): DepotView[] {
    return this.c.members.view().map((v) => ({ ...depotRow(v, this.c.depotInfo.of(v.peerId)), transfers: v.heartbeat?.staging ?? [] }));
  }

  services(): ServiceView[] {
    const rows = this.c.members.view().map((v) => ({ name: v.name, peerId: v.peerId, state: v.state, containers: v.heartbeat?.containers ?? [] }));
    return buildServiceViews(rows, this.journal.all());
  }

  /**
   * Every depot sees a depot come back at the same moment: spread their requests over a few
   * seconds, and ask one peer at most once per journal.refillMinIntervalMs (a flapping depot must not be a storm).
   */
  private scheduleFill(peer: string): void {
    const now = this.c.clock.now();
    if (now - (this.lastFillAt.get(peer) ?? -Infinity) < this.timing.refillMinIntervalMs) return;
    this.lastFillAt.set(peer, now);
    this.c.clock.setTimeout(() => void this.fillFrom([peer]), Math.floor(Math.random() * this.timing.refillSpreadMs));
  }

  async start(): Promise<void> {
    const c = this.c;
    await this.journal.open();
    this._metrics = registerTrackingMetrics(c.metrics, { journal: this.journal, services: () => this.services() });
    c.gossip.subscribe(
      TOPICS.events,
      movementGossipHandler(this.journal, {
        logger: c.logger,
        maxBytes: c.config.membership.maxMessageBytes,
        count: (r) => this._metrics?.movementGossip.inc({ result: r }),
        drop: (reason, detail, from, topic) => c.gossip.drop(reason, detail, from, topic),
      }),
    );
    this.gapFill = new JournalGapFill({ node: c.node, journal: this.journal, logger: c.logger, timeoutMs: this.timing.fetchTimeoutMs });
    await this.gapFill.start();
    if (c.routes) {
      this.routes = registerTrackingRoutes(c.routes, {
        journal: this.journal,
        services: () => this.services(),
        depots: () => this.depots(),
        events: this.changes,
        admin: { token: c.config.http.adminToken, host: c.config.http.adminHost },
        logger: c.logger,
      });
    }
    this.journal.on('movement', this.onHeartbeat);
    c.members.events.on('heartbeat', this.onHeartbeat);
    c.members.events.on('transition', this.onTransition);
    void this.initialGapFill();
  }

  /** At start: as soon as a peer is connected, fetch what this depot missed while it was down. */
  private async initialGapFill(): Promise<void> {
    const deadline = this.c.clock.now() + this.timing.initialFillWindowMs;
    try {
      while (!this.stopped && this.c.clock.now() < deadline) {
        const peers = this.c.node.getPeers().map((p) => p.toString());
        if (peers.length > 0 && (await this.fillFrom(peers))) return;
        await this.c.clock.sleep(250);
      }
      if (!this.stopped) this.log.info({ event: 'journal-no-peer-to-fill' }, 'no peer answered for journal gap filling at start');
    } finally {
      this.resolveInitial();
    }
  }

  private async fillFrom(peers: string[]): Promise<boolean> {
    if (this.stopped || !this.gapFill) return false;
    try {
      const res = await this.gapFill.fillFromPeers(peers.map((p) => peerIdFromString(p)));
      if (res.added > 0) this.log.info({ event: 'journal-filled', peer: res.peer, added: res.added }, `fetched ${res.added} missed movements`);
      return true;
    } catch (err) {
      this.log.debug({ event: 'journal-fill-failed', err: errorMessage(err) }, 'journal gap filling failed');
      return false;
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.c.members.events.off('heartbeat', this.onHeartbeat);
    this.c.members.events.off('transition', this.onTransition);
    this.journal.off('movement', this.onHeartbeat);
    this.routes?.close();
    this._metrics?.close();
    await this.gapFill?.stop();
    await this.journal.close();
  }
}
