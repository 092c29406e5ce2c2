import type { Logger } from '../shared/logger.ts';
import { silentLogger } from '../shared/logger.ts';
import { errorMessage } from '../shared/errors.ts';
import { TokenBucket } from './bandwidth.ts';
import type { ShipResult, ShipTarget, Shipper } from './ship.ts';

// Pre-staging: the primary's pilot keeps the current image on the top K placement candidates,
// in the background and under a bandwidth limit, so that a new standby usually starts with no
// transfer at all. planPrestage() is the pure decision; Prestager runs the transfers.

export interface PrestageCandidate {
  host: string;
  /** Depot is alive in the membership view. */
  alive: boolean;
  /** Image ids the depot holds (from its heartbeat). */
  images: readonly string[];
  /** The depot already runs a copy of the service (it has the image and is not a candidate). */
  hostsCopy?: boolean;
}

export interface PrestagePlan {
  /** The top K eligible candidates, in placement order. */
  targets: string[];
  /** Targets that still need the image. */
  ship: string[];
  /** Targets that already hold it. */
  staged: string[];
  /** Candidates passed over, with why. */
  skipped: { host: string; reason: string }[];
}

/**
 * Decide where the image should be pre-staged. `ranked` is the placement ranking, best first;
 * `busy` are hosts with a transfer of this image already running.
 */
export function planPrestage(input: { ranked: readonly PrestageCandidate[]; imageId: string; k: number; busy?: ReadonlySet<string> }): PrestagePlan {
  const plan: PrestagePlan = { targets: [], ship: [], staged: [], skipped: [] };
  const seen = new Set<string>();
  for (const c of input.ranked) {
    if (seen.has(c.host)) {
      plan.skipped.push({ host: c.host, reason: 'listed twice' });
      continue;
    }
    seen.add(c.host);
    if (plan.targets.length >= input.k) {
      plan.skipped.push({ host: c.host, reason: `not in the top ${input.k}` });
      continue;
    }
    if (!c.alive) {
      plan.skipped.push({ host: c.host, reason: 'not alive' });
      continue;
    }
    if (c.hostsCopy) {
      plan.skipped.push({ host: c.host, reason: 'already runs a copy' });
      continue;
    }
    plan.targets.push(c.host);
    if (c.images.includes(input.imageId)) plan.staged.push(c.host);
    else if (input.busy?.has(c.host)) plan.skipped.push({ host: c.host, reason: 'transfer in progress' });
    else plan.ship.push(c.host);
  }
  return plan;
}

export interface PrestagerOptions {
  shipper: Shipper;
  /** How to reach a depot's store (control protocol client in production). */
  targetFor: (host: string) => ShipTarget;
  /** config.ship.prestageCandidates */
  k: number;
  /** Bandwidth for all pre-staging transfers together (see prestageBytesPerSec). */
  bytesPerSec: number;
  logger?: Logger;
}

/** Runs pre-staging transfers one at a time under one shared token bucket. */
export class Prestager {
  private readonly log: Logger;
  private readonly bucket: TokenBucket;
  private readonly queue: { host: string; imageId: string }[] = [];
  private readonly busy = new Set<string>();
  private running: Promise<void> | undefined;
  private abort = new AbortController();
  private stopped = false;
  /** Results of finished transfers, newest last (bounded). */
  readonly results: ({ host: string; imageId: string } & ({ ok: true; result: ShipResult } | { ok: false; error: string }))[] = [];

  constructor(private readonly opts: PrestagerOptions) {
    this.log = (opts.logger ?? silentLogger()).child({ component: 'prestage' });
    this.bucket = new TokenBucket({ bytesPerSec: opts.bytesPerSec });
  }

  /** Re-plan with the current ranking and queue the transfers that are needed. */
  reconcile(ranked: readonly PrestageCandidate[], imageId: string): PrestagePlan {
    const queued = new Set(this.queue.filter((q) => q.imageId === imageId).map((q) => q.host));
    const plan = planPrestage({ ranked, imageId, k: this.opts.k, busy: new Set([...this.busy, ...queued]) });
    if (this.stopped) return plan;
    for (const host of plan.ship) this.queue.push({ host, imageId });
    if (plan.ship.length > 0) this.log.info({ event: 'prestage-plan', imageId, ship: plan.ship, staged: plan.staged }, 'pre-staging image');
    this.running ??= this.drain().finally(() => {
      this.running = undefined;
    });
    return plan;
  }

  /** Hosts with a transfer running or queued. */
  inProgress(): string[] {
    return [...new Set([...this.busy, ...this.queue.map((q) => q.host)])];
  }

  /** Wait until the queue is empty (tests, shutdown). */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.queue.length = 0;
    this.abort.abort();
    await this.idle();
    this.abort = new AbortController();
  }

  private async drain(): Promise<void> {
    for (let job = this.queue.shift(); job; job = this.queue.shift()) {
      this.busy.add(job.host);
      try {
        const result = await this.opts.shipper.ship(job.imageId, this.opts.targetFor(job.host), { bandwidth: this.bucket, signal: this.abort.signal });
        this.results.push({ ...job, ok: true, result });
      } catch (err) {
        // A failed pre-stage is retried at the next reconcile; it never blocks anything else.
        this.results.push({ ...job, ok: false, error: errorMessage(err) });
        this.log.warn({ event: 'prestage-failed', host: job.host, imageId: job.imageId, err: errorMessage(err) }, 'pre-staging failed');
      } finally {
        this.busy.delete(job.host);
        if (this.results.length > 50) this.results.splice(0, this.results.length - 50);
      }
    }
  }
}
