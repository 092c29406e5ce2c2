import type { Clock } from '../../shared/clock.ts';

// What the image store is doing now: imports, verifies and clones running ("busy"), the per-image
// locks of receives and commits, and when the last of them ended. Spare copies are made only
// while the store is quiet (spare-copies.ts), and prune() leaves a locked image alone.

export class StoreActivity {
  /** Imports, verifies and clones running. */
  private busy = 0;
  /** Per-id chains so prepare/commit/receive of the same image in this process run one at a time. */
  private readonly locks = new Map<string, Promise<unknown>>();
  /** When the last import, verify, clone, receive or commit ended. */
  lastActive = 0;

  constructor(private readonly clock: Clock) {}

  async busyWhile<T>(fn: () => Promise<T>): Promise<T> {
    this.busy++;
    try {
      return await fn();
    } finally {
      this.busy--;
      this.lastActive = this.clock.now();
    }
  }

  async withLock<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(id) ?? Promise.resolve();
    const run = prev.then(fn, fn);
    const tail = run.catch(() => undefined);
    this.locks.set(id, tail);
    try {
      return await run;
    } finally {
      if (this.locks.get(id) === tail) this.locks.delete(id);
      this.lastActive = this.clock.now();
    }
  }

  isLocked(id: string): boolean {
    return this.locks.has(id);
  }

  /** Nothing busy and no image locked. */
  idle(): boolean {
    return this.busy === 0 && this.locks.size === 0;
  }

  /** The locked operations, to wait for at stop. */
  running(): Promise<unknown>[] {
    return [...this.locks.values()];
  }
}
