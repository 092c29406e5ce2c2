import type { Clock, TimerHandle } from '../../shared/clock.ts';

// When to run the next sync: every intervalMs after the start of the last good one, sooner on
// request (runNow), and after a failure with exponential backoff so a standby that is down is not
// hammered, yet is caught up soon after it comes back. One run at a time; runs never overlap.

/** Wait before retry number `failures` (1 = first retry): base·2^(failures−1), capped at max. */
export function retryDelayMs(failures: number, baseMs: number, maxMs: number): number {
  if (failures <= 0) return 0;
  return Math.min(maxMs, baseMs * 2 ** Math.min(failures - 1, 40));
}

export interface SyncLoopOptions<T, A = void> {
  clock: Clock;
  intervalMs: number;
  retryBaseMs: number;
  retryMaxMs: number;
  /** One run; must stop promptly when the signal aborts. `arg` is what runNow() passed (none for scheduled runs). */
  run: (signal: AbortSignal, arg: A | undefined) => Promise<T>;
}

export interface SyncLoopState {
  started: boolean;
  inFlight: boolean;
  consecutiveFailures: number;
  nextAt: number | undefined;
}

export class SyncLoop<T, A = void> {
  private readonly opts: SyncLoopOptions<T, A>;
  private timer: TimerHandle | undefined;
  private started = false;
  private current: Promise<T> | undefined;
  private abort: AbortController | undefined;
  private failures = 0;
  private nextAt: number | undefined;

  constructor(opts: SyncLoopOptions<T, A>) {
    this.opts = opts;
  }

  /** Start the loop; the first run starts at once. */
  start(): void {
    if (this.started) return;
    this.started = true;
    this.schedule(0);
  }

  /** Stop scheduling, abort a run in progress and wait for it to end. */
  async stop(): Promise<void> {
    this.started = false;
    this.opts.clock.clear(this.timer);
    this.timer = undefined;
    this.nextAt = undefined;
    this.abort?.abort(new Error('sync stopped'));
    await this.current?.catch(() => undefined);
  }

  /** Run now (after a run in progress, whose snapshot may be older than the caller needs). */
  async runNow(arg?: A): Promise<T> {
    return this.execute(arg);
  }

  get state(): SyncLoopState {
    return { started: this.started, inFlight: this.current !== undefined, consecutiveFailures: this.failures, nextAt: this.nextAt };
  }

  private schedule(delayMs: number): void {
    this.opts.clock.clear(this.timer);
    this.timer = undefined;
    if (!this.started) {
      this.nextAt = undefined;
      return;
    }
    this.nextAt = this.opts.clock.now() + delayMs;
    this.timer = this.opts.clock.setTimeout(() => {
      this.timer = undefined;
      // A run in progress reschedules when it ends.
      if (this.current) return;
      this.execute(undefined).catch(() => undefined);
    }, delayMs);
  }

  private async execute(arg: A | undefined): Promise<T> {
    while (this.current) await this.current.catch(() => undefined);
    this.opts.clock.clear(this.timer);
    this.timer = undefined;
    this.nextAt = undefined;
    const ctrl = new AbortController();
    this.abort = ctrl;
    const startedAt = this.opts.clock.now();
    const run = this.opts.run(ctrl.signal, arg);
    this.current = run;
    try {
      const result = await run;
      this.failures = 0;
      this.current = undefined;
      this.schedule(Math.max(0, startedAt + this.opts.intervalMs - this.opts.clock.now()));
      return result;
    } catch (err) {
      this.failures++;
      this.current = undefined;
      this.schedule(retryDelayMs(this.failures, this.opts.retryBaseMs, this.opts.retryMaxMs));
      throw err;
    } finally {
      if (this.abort === ctrl) this.abort = undefined;
    }
  }
}
