import { EventEmitter } from 'node:events';
import { join } from 'node:path';
import { peerIdFromString } from '@libp2p/peer-id';
import { errorMessage } from '../shared/errors.ts';
import { TOPICS } from '../shared/wire.ts';
import { depotRow } from '../web/depot-api.ts';
import { buildServiceViews, registerTrackingMetrics, registerTrackingRoutes, type DepotView, type ServiceView, type TrackingMetrics, type TrackingRoutes } from '../web/tracking.ts';
import type { Depot, DepotPart } from '../depot/depot.ts';
import { Journal } from '../depot/journal/journal.ts';
import { JournalSync, movementGossipHandler } from '../depot/journal/gap-fill.ts';

/** Gap fills after a peer came back are spread over this long. */
const REFILL_SPREAD_MS = 5000;
/** ...and asked of one peer at most this often. */
const REFILL_MIN_INTERVAL_MS = 60_000;

// The movement journal and the tracking page as a depot part: journal file in the data folder,
// movement gossip through the depot's inbox, /navigator/journal/1 for gap filling (at start and
// whenever a depot we had lost comes back: we may have been the one cut off), the page, API and
// metrics on the depot's HTTP server.
// Use: new Depot({ ..., parts: [trackingPart({ switchover, drain })] }).

export interface TrackingPartOptions {
  /** Default: DATADIR/journal.jsonl. */
  journalPath?: string;
  switchover?: (args: { service: string; to?: string | undefined }) => Promise<unknown>;
  drain?: (args: { host: string }) => Promise<unknown>;
  /** How long to wait at start for a peer to fill gaps from. */
  initialFillWindowMs?: number;
}

export interface TrackingPart extends DepotPart {
  readonly journal: Journal;
  readonly sync: JournalSync;
  readonly metrics: TrackingMetrics;
  /** Resolves when the first gap filling after start finished (or found no peer in time). */
  readonly initialFill: Promise<void>;
  services(): ServiceView[];
  depots(): DepotView[];
}

export function trackingPart(opts: TrackingPartOptions = {}): (depot: Depot) => TrackingPart {
  return (depot: Depot) => new TrackingPartImpl(depot, opts);
}

class TrackingPartImpl implements TrackingPart {
  readonly name = 'tracking';
  readonly journal: Journal;
  private _sync: JournalSync | undefined;
  private _metrics: TrackingMetrics | undefined;
  private routes: TrackingRoutes | undefined;
  private readonly changes = new EventEmitter();
  private stopped = false;
  private resolveInitial!: () => void;
  readonly initialFill = new Promise<void>((r) => (this.resolveInitial = r));
  private readonly log;
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

  /**
   * Every depot sees a depot come back at the same moment: spread their requests over a few
   * seconds, and ask one peer at most once a minute (a flapping depot must not be a storm).
   */
  private scheduleFill(peer: string): void {
    const now = Date.now();
    if (now - (this.lastFillAt.get(peer) ?? -Infinity) < REFILL_MIN_INTERVAL_MS) return;
    this.lastFillAt.set(peer, now);
    const t = setTimeout(() => void this.fillFrom([peer]), Math.floor(Math.random() * REFILL_SPREAD_MS));
    t.unref();
  }

  constructor(
    private readonly depot: Depot,
    private readonly opts: TrackingPartOptions,
  ) {
    this.log = depot.log.child({ component: 'tracking' });
    this.journal = new Journal({ path: opts.journalPath ?? join(depot.config.node.dataDir, 'journal.jsonl'), logger: depot.log });
  }

  get sync(): JournalSync {
    if (!this._sync) throw new Error('tracking part not started');
    return this._sync;
  }
  get metrics(): TrackingMetrics {
    if (!this._metrics) throw new Error('tracking part not started');
    return this._metrics;
  }

  depots(): DepotView[] {
    return this.depot.membership.view().map((v) => ({ ...depotRow(v), transfers: v.heartbeat?.staging ?? [] }));
  }

  services(): ServiceView[] {
    const rows = this.depot.membership.view().map((v) => ({ name: v.name, state: v.state, containers: v.heartbeat?.containers ?? [] }));
    return buildServiceViews(rows, this.journal.all());
  }

  async start(): Promise<void> {
    const depot = this.depot;
    await this.journal.open();
    this._metrics = registerTrackingMetrics(depot.metrics.registry, { journal: this.journal, services: () => this.services() });
    depot.inbox.subscribe(
      TOPICS.events,
      movementGossipHandler(this.journal, {
        logger: depot.log,
        maxBytes: depot.config.membership.maxMessageBytes,
        count: (r) => this._metrics?.movementGossip.inc({ result: r }),
        drop: (reason, detail, from, topic) => depot.inbox.drop(reason, detail, from, topic),
      }),
    );
    this._sync = new JournalSync({ node: depot.node, journal: this.journal, logger: depot.log });
    await this._sync.start();
    if (depot.http) {
      this.routes = registerTrackingRoutes(depot.http, {
        journal: this.journal,
        services: () => this.services(),
        depots: () => this.depots(),
        events: this.changes,
        switchover: this.opts.switchover,
        drain: this.opts.drain,
        admin: { token: depot.config.http.adminToken, host: depot.config.http.adminHost },
        logger: depot.log,
      });
    }
    this.journal.on('movement', this.onHeartbeat);
    depot.events.on('heartbeat', this.onHeartbeat);
    depot.events.on('transition', this.onTransition);
    void this.initialGapFill();
  }

  /** At start: as soon as a peer is connected, fetch what this depot missed while it was down. */
  private async initialGapFill(): Promise<void> {
    const deadline = Date.now() + (this.opts.initialFillWindowMs ?? 30_000);
    try {
      while (!this.stopped && Date.now() < deadline) {
        const peers = this.depot.node.getPeers().map((p) => p.toString());
        if (peers.length > 0 && (await this.fillFrom(peers))) return;
        await new Promise((r) => setTimeout(r, 250));
      }
      if (!this.stopped) this.log.info({ event: 'journal-no-peer-to-fill' }, 'no peer answered for journal gap filling at start');
    } finally {
      this.resolveInitial();
    }
  }

  private async fillFrom(peers: string[]): Promise<boolean> {
    if (this.stopped || !this._sync) return false;
    try {
      const res = await this._sync.fillFromPeers(peers.map((p) => peerIdFromString(p)));
      if (res.added > 0) this.log.info({ event: 'journal-filled', peer: res.peer, added: res.added }, `fetched ${res.added} missed movements`);
      return true;
    } catch (err) {
      this.log.debug({ event: 'journal-fill-failed', err: errorMessage(err) }, 'journal gap filling failed');
      return false;
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.depot.events.off('heartbeat', this.onHeartbeat);
    this.depot.events.off('transition', this.onTransition);
    this.journal.off('movement', this.onHeartbeat);
    this.routes?.close();
    this._metrics?.close();
    await this._sync?.stop();
    await this.journal.close();
  }
}
