import { peerIdFromString } from '@libp2p/peer-id';
import type { Config } from '../shared/config.ts';
import type { Logger } from '../shared/logger.ts';
import { SystemClock, type Clock } from '../shared/clock.ts';
import { NavigatorError } from '../shared/errors.ts';
import type { HeartbeatMessage } from '../shared/wire.ts';
import type { ImageStore } from '../depot/images/catalog.ts';
import type { MemberView } from '../depot/membership/membership.ts';
import { controlShipTarget, type ControlCaller } from '../depot/images/control-methods.ts';
import type { ShipTarget } from '../depot/images/ship-target.ts';
import { hostAddressOf } from '../depot/host-address.ts';
import type { TransferInfo } from '../shared/api/transfers.ts';
import type { ShipResult, Shipper } from './shipper.ts';
import { Prestager } from './prestager.ts';
import type { PrestageCandidate, PrestagePlan } from './prestage-plan.ts';
import { prestageBytesPerSec } from './bandwidth.ts';
import { TransferTracker } from './transfers.ts';

// Image shipping on the sending depot, as the pilots use it: one Shipper (config.ship) with one
// TransferTracker for every transfer this depot makes; shipping on demand when a standby is
// placed on a host without the image; pre-staging in the background while a pilot here is
// primary; progress in the logs (`transfer-progress`, `transfer-done`) and as data for the HTTP
// API (transfers(): the caller serves it as GET /api/transfers). Where a depot's sshd is comes
// from its heartbeat.

export interface SshEndpoint {
  host: string;
  port: number;
}

/**
 * Where to reach a depot's sshd: the address others reach its libp2p node at (as for its
 * database) or else its first host address, and the port it advertises (older depots do not:
 * then this depot's own ship.sshPort).
 */
export function sshEndpointOf(hb: Pick<HeartbeatMessage, 'addresses' | 'hostAddresses' | 'sshPort'>, defaultPort: number): SshEndpoint | undefined {
  const host = hostAddressOf(hb) ?? hb.hostAddresses[0];
  return host ? { host, port: hb.sshPort ?? defaultPort } : undefined;
}

export interface ImageShippingOptions {
  ship: Config['ship'];
  /** This depot's store: where shipped images come from. */
  store: ImageStore;
  /** Control calls to the receiving depots (the depot's control component). */
  client: () => ControlCaller;
  /** The membership view: heartbeats say where each depot's sshd is. */
  members: () => readonly MemberView[];
  /**
   * The host key fingerprint each depot's sshd must present, pinned from its heartbeats
   * (depot/ssh-trust/trust.ts); used unless ship.knownHostsFile is set.
   */
  hostKeys?: { expectedHostKey(peerId: string, name: string): Promise<string> };
  logger: Logger;
  /** Decides when a pre-staging round is due and when queued pre-stages are no longer wanted. */
  clock?: Clock;
  /** Least time between two `transfer-progress` lines of one transfer (default 2 s). */
  progressLogMs?: number;
}

export class ImageShipping {
  readonly tracker = new TransferTracker();
  /**
   * Ships through a Shipper made at the first transfer: shipper.ts loads ssh2 (~20 modules and a
   * WebAssembly Poly1305 reserving 16 MB), and most depots never send an image.
   */
  readonly shipper: Pick<Shipper, 'ship'> = { ship: async (...args) => (await this.realShipper()).ship(...args) };
  private loading: Promise<Shipper> | undefined;
  readonly prestager: Prestager | undefined;
  private readonly log: Logger;
  private readonly onDemand = new Map<string, Promise<ShipResult>>();
  /** Image id -> last time a primary round asked to pre-stage it. */
  private readonly wanted = new Map<string, number>();
  private readonly lastRound = new Map<string, number>();
  private readonly lastLogged = new Map<string, { at: number; state: string }>();
  private readonly abort = new AbortController();
  private readonly clock: Clock;

  constructor(private readonly opts: ImageShippingOptions) {
    this.log = opts.logger.child({ component: 'shipping' });
    const clock = (this.clock = opts.clock ?? new SystemClock());
    if (opts.ship.prestageCandidates > 0) {
      this.prestager = new Prestager({
        shipper: this.shipper,
        targetFor: (peerId) => this.targetFor(peerId),
        k: opts.ship.prestageCandidates,
        bytesPerSec: prestageBytesPerSec(opts.ship.linkMbps, opts.ship.prestageBandwidthPct),
        retryAfterMs: opts.ship.prestageRetryMs,
        wanted: (job) => clock.now() - (this.wanted.get(job.imageId) ?? -Infinity) < opts.ship.prestageWantedMs,
        now: () => clock.now(),
        describe: (peerId) => this.opts.members().find((m) => m.peerId === peerId)?.name ?? peerId,
        logger: opts.logger,
      });
    }
    const every = opts.progressLogMs ?? 2000;
    this.tracker.on('progress', (t) => {
      const last = this.lastLogged.get(t.key);
      const now = Date.now();
      // Every state change, and while sending at most one line per `every`.
      if (last && last.state === t.state && now - last.at < every) return;
      this.lastLogged.set(t.key, { at: now, state: t.state });
      this.log.info({ event: 'transfer-progress', ...progressFields(t) }, `${t.state} ${t.imageName} to ${t.target}: ${t.bytesSent}/${t.bytesToSend} bytes`);
    });
    this.tracker.on('done', (t) => {
      this.lastLogged.delete(t.key);
      const level = t.state === 'done' ? 'info' : 'warn';
      this.log[level]({ event: 'transfer-done', ...progressFields(t), durationMs: Date.now() - t.startedAt, ...(t.error ? { err: t.error } : {}) }, `transfer of ${t.imageName} to ${t.target} ${t.state}`);
    });
  }

  private realShipper(): Promise<Shipper> {
    this.loading ??= import('./shipper.ts')
      .then(({ createShipper }) => createShipper(this.opts.ship, this.opts.store, this.opts.logger, this.tracker))
      .catch((err: unknown) => {
        this.loading = undefined; // try again at the next transfer
        throw err;
      });
    return this.loading;
  }

  /** The receiving depot `peerId` as a ShipTarget: its sshd from its heartbeat, its control methods. */
  targetFor(peerId: string): ShipTarget {
    const m = this.opts.members().find((x) => x.peerId === peerId);
    if (!m?.heartbeat) throw new NavigatorError('PEER_UNREACHABLE', `depot ${m?.name ?? peerId} has sent no heartbeat: cannot tell where its sshd is`);
    const ep = sshEndpointOf(m.heartbeat, this.opts.ship.sshPort);
    if (!ep) throw new NavigatorError('PEER_UNREACHABLE', `depot ${m.name} advertises no address to reach its sshd at`);
    const target = controlShipTarget(this.opts.client(), peerIdFromString(peerId), ep.host, ep.port);
    const keys = this.opts.hostKeys;
    if (this.opts.ship.knownHostsFile || !keys) return target;
    return { ...target, hostKey: async () => ({ fingerprint: await keys.expectedHostKey(peerId, m.name), depot: m.name }) };
  }

  /**
   * Ship `imageId` to depot `peerId` now, at full speed (a standby is waiting for it). A
   * pre-stage to the same depot is cancelled first; this transfer resumes from what it left.
   * Concurrent calls for the same depot and image share one transfer.
   */
  ensureImage(peerId: string, imageId: string): Promise<ShipResult> {
    const key = `${peerId}/${imageId}`;
    const running = this.onDemand.get(key);
    if (running) return running;
    const job = (async () => {
      await this.prestager?.cancel(peerId);
      return this.shipper.ship(imageId, this.targetFor(peerId), { signal: this.abort.signal });
    })().finally(() => this.onDemand.delete(key));
    this.onDemand.set(key, job);
    return job;
  }

  /**
   * One pre-staging round for `imageId` (the primary calls this while its standbys are in
   * place): keep the image on the top K of `ranked` (the placement ranking, best first; keys
   * are peer ids). `busy` are depots receiving the image from elsewhere. Rounds closer than
   * ship.prestageRoundMs are skipped (undefined) without calling `candidates`.
   */
  prestage(imageId: string, candidates: () => { ranked: readonly PrestageCandidate[]; busy: Iterable<string> }): PrestagePlan | undefined {
    if (!this.prestager) return undefined;
    const now = this.clock.now();
    this.wanted.set(imageId, now);
    if (now - (this.lastRound.get(imageId) ?? -Infinity) < this.opts.ship.prestageRoundMs) return undefined;
    this.lastRound.set(imageId, now);
    const { ranked, busy } = candidates();
    const onDemand = [...this.onDemand.keys()].filter((k) => k.endsWith(`/${imageId}`)).map((k) => k.slice(0, k.indexOf('/')));
    return this.prestager.reconcile(ranked, imageId, { busy: [...busy, ...onDemand] });
  }

  /** Transfers in progress first, then recent ones, newest first (GET /api/transfers). */
  transfers(): TransferInfo[] {
    return [...this.tracker.list(), ...this.tracker.history()];
  }

  async stop(): Promise<void> {
    this.abort.abort();
    await this.prestager?.stop();
    await Promise.allSettled([...this.onDemand.values()]);
  }
}

function progressFields(t: TransferInfo) {
  return {
    key: t.key,
    imageId: t.imageId,
    image: t.imageName,
    target: t.target,
    kind: t.kind,
    state: t.state,
    bytesSent: t.bytesSent,
    bytesToSend: t.bytesToSend,
    imageBytes: t.imageBytes,
    rateBps: Math.round(t.rateBps),
    ...(t.etaMs !== undefined ? { etaMs: t.etaMs } : {}),
  };
}
