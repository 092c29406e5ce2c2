import type { Logger } from '../shared/logger.ts';
import { ShipSection } from '../shared/config.ts';
import { silentLogger } from '../shared/logger.ts';
import { errorMessage } from '../shared/errors.ts';
import type { ShipTarget } from '../depot/images/ship-target.ts';
import { TokenBucket } from './bandwidth.ts';
import type { ShipResult, Shipper } from './shipper.ts';
import { planPrestage, type PrestageCandidate, type PrestagePlan } from './prestage-plan.ts';

// Pre-staging, the runner: the transfers planPrestage() (prestage-plan.ts) asks for, one at a
// time under one shared bandwidth limit, cancelled when a placement needs the host at once.

export interface PrestagerOptions {
  /** Anything with Shipper's ship() (shipper.ts). */
  shipper: Pick<Shipper, 'ship'>;
  /** How to reach a depot's store (control protocol client in production). */
  targetFor: (host: string) => ShipTarget;
  /** config.ship.prestageCandidates */
  k: number;
  /** Bandwidth for all pre-staging transfers together (see prestageBytesPerSec). */
  bytesPerSec: number;
  /** After a failed pre-stage, the host is passed over for this long (config.ship.prestageRetryMs; default: its default). */
  retryAfterMs?: number;
  /** Checked before a queued transfer starts; false drops it (e.g. this depot is no longer primary). */
  wanted?: (job: { host: string; imageId: string }) => boolean;
  now?: () => number;
  /** How a host key reads in the logs (e.g. peer id -> depot name). */
  describe?: (host: string) => string;
  logger?: Logger;
}

type Job = { host: string; imageId: string };

/** Runs pre-staging transfers one at a time under one shared token bucket. */
export class Prestager {
  private readonly log: Logger;
  private readonly bucket: TokenBucket;
  private readonly queue: Job[] = [];
  private readonly busy = new Set<string>();
  /** Host -> time of its last failed pre-stage. */
  private readonly failedAt = new Map<string, number>();
  private current: (Job & { abort: AbortController; cancelled: boolean; done: Promise<void> }) | undefined;
  private running: Promise<void> | undefined;
  private abort = new AbortController();
  private stopped = false;
  private readonly now: () => number;
  private readonly retryAfterMs: number;
  /** Results of finished transfers, newest last (bounded). */
  readonly results: (Job & ({ ok: true; result: ShipResult } | { ok: false; error: string; cancelled?: boolean }))[] = [];

  constructor(private readonly opts: PrestagerOptions) {
    this.log = (opts.logger ?? silentLogger()).child({ component: 'prestage' });
    this.bucket = new TokenBucket({ bytesPerSec: opts.bytesPerSec });
    this.now = opts.now ?? Date.now;
    this.retryAfterMs = opts.retryAfterMs ?? ShipSection.parse({}).prestageRetryMs;
  }

  private readonly name = (host: string): string => this.opts.describe?.(host) ?? host;

  /**
   * Re-plan with the current ranking and queue the transfers that are needed. `busy` adds hosts
   * known to be receiving the image from elsewhere (their heartbeat's staging).
   */
  reconcile(ranked: readonly PrestageCandidate[], imageId: string, opts: { busy?: Iterable<string> } = {}): PrestagePlan {
    const queued = new Set(this.queue.filter((q) => q.imageId === imageId).map((q) => q.host));
    const retryAfter = this.retryAfterMs;
    const now = this.now();
    const backoff = new Set([...this.failedAt].filter(([, at]) => now - at < retryAfter).map(([h]) => h));
    const plan = planPrestage({ ranked, imageId, k: this.opts.k, busy: new Set([...this.busy, ...queued, ...(opts.busy ?? [])]), backoff });
    if (this.stopped) return plan;
    for (const host of plan.ship) this.queue.push({ host, imageId });
    if (plan.ship.length > 0) this.log.info({ event: 'prestage-plan', imageId, ship: plan.ship.map(this.name), staged: plan.staged.map(this.name) }, 'pre-staging image');
    this.running ??= this.drain().finally(() => {
      this.running = undefined;
    });
    return plan;
  }

  /** Hosts with a transfer running or queued. */
  inProgress(): string[] {
    return [...new Set([...this.busy, ...this.queue.map((q) => q.host)])];
  }

  /**
   * Drop what is queued for `host` and abort its running transfer, if any; resolves once that
   * transfer has stopped. A placement that needs the image there now ships it at full speed
   * instead, resuming from what this transfer left in the target's staging folder.
   */
  async cancel(host: string): Promise<void> {
    for (let i = this.queue.length - 1; i >= 0; i--) if (this.queue[i]!.host === host) this.queue.splice(i, 1);
    const cur = this.current;
    if (cur?.host === host) {
      cur.cancelled = true;
      cur.abort.abort();
      await cur.done;
    }
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
      if (this.opts.wanted && !this.opts.wanted(job)) {
        this.log.info({ event: 'prestage-dropped', host: this.name(job.host), imageId: job.imageId }, 'pre-staging no longer wanted');
        continue;
      }
      this.busy.add(job.host);
      const abort = new AbortController();
      let finish!: () => void;
      const cur = { ...job, abort, cancelled: false, done: new Promise<void>((r) => (finish = r)) };
      this.current = cur;
      try {
        const signal = AbortSignal.any([this.abort.signal, abort.signal]);
        const result = await this.opts.shipper.ship(job.imageId, this.opts.targetFor(job.host), { bandwidth: this.bucket, signal });
        this.results.push({ ...job, ok: true, result });
        this.failedAt.delete(job.host);
      } catch (err) {
        if (cur.cancelled || this.stopped) {
          // Not a failure of the host: a placement took the transfer over, or we are stopping.
          this.results.push({ ...job, ok: false, error: errorMessage(err), cancelled: true });
          this.log.info({ event: 'prestage-cancelled', host: this.name(job.host), imageId: job.imageId }, 'pre-staging cancelled');
        } else {
          // A failed pre-stage is retried after retryAfterMs; it never blocks anything else.
          this.failedAt.set(job.host, this.now());
          this.results.push({ ...job, ok: false, error: errorMessage(err) });
          this.log.warn({ event: 'prestage-failed', host: this.name(job.host), imageId: job.imageId, err: errorMessage(err) }, 'pre-staging failed');
        }
      } finally {
        this.busy.delete(job.host);
        this.current = undefined;
        finish();
        if (this.results.length > 50) this.results.splice(0, this.results.length - 50);
      }
    }
  }
}
