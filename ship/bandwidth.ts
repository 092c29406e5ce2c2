import type { Clock } from '../shared/clock.ts';

// Token bucket for bandwidth limits (pre-staging must leave most of the link to the service).
// reserve() is pure arithmetic on (now, bytes) so it is testable with a fake clock; take()
// waits on the given clock.

export interface TokenBucketOptions {
  /** Sustained rate in bytes per second. */
  bytesPerSec: number;
  /** Largest burst in bytes (default: 1/4 s worth of rate, at least 256 KiB). */
  burstBytes?: number;
}

export class TokenBucket {
  readonly bytesPerSec: number;
  readonly burstBytes: number;
  private tokens: number;
  private last: number | undefined;

  constructor(opts: TokenBucketOptions) {
    if (!(opts.bytesPerSec > 0)) throw new RangeError(`bytesPerSec must be > 0, got ${opts.bytesPerSec}`);
    this.bytesPerSec = opts.bytesPerSec;
    this.burstBytes = Math.max(opts.burstBytes ?? opts.bytesPerSec / 4, 256 * 1024);
    this.tokens = this.burstBytes;
  }

  /**
   * Take `bytes` at time `nowMs`; returns how long the caller must wait before sending them
   * (0 when tokens were available). Debt is allowed, so large requests are never starved.
   */
  reserve(bytes: number, nowMs: number): number {
    if (this.last !== undefined) {
      this.tokens = Math.min(this.burstBytes, this.tokens + ((nowMs - this.last) / 1000) * this.bytesPerSec);
    }
    this.last = nowMs;
    this.tokens -= bytes;
    return this.tokens >= 0 ? 0 : Math.ceil((-this.tokens / this.bytesPerSec) * 1000);
  }

  async take(bytes: number, clock: Pick<Clock, 'now' | 'sleep'>): Promise<void> {
    const wait = this.reserve(bytes, clock.now());
    if (wait > 0) await clock.sleep(wait);
  }
}

/** Pre-staging limit in bytes/s from the link speed in Mb/s and a percentage. */
export function prestageBytesPerSec(linkMbps: number, pct: number): number {
  return (linkMbps * 1_000_000 * (pct / 100)) / 8;
}
