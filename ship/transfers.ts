import { EventEmitter } from 'node:events';
import type { TransferInfo } from '../shared/api/transfers.ts';

// Image transfers in progress and lately finished, for logs, the HTTP API (GET /api/transfers)
// and `navigator status`.

export interface TransferTrackerEvents {
  progress: [TransferInfo];
  done: [TransferInfo];
}

export class TransferTracker extends EventEmitter<TransferTrackerEvents> {
  private readonly active = new Map<string, TransferInfo>();
  private readonly recent: TransferInfo[] = [];
  private seq = 0;

  constructor(private readonly now: () => number = Date.now, private readonly keepRecent = 20) {
    super();
  }

  begin(p: { imageId: string; imageName: string; target: string; imageBytes: number }): TransferInfo {
    const t: TransferInfo = {
      key: `${p.imageId.slice(0, 12)}-${++this.seq}`,
      ...p,
      kind: 'pending',
      state: 'preparing',
      startedAt: this.now(),
      bytesToSend: 0,
      bytesSent: 0,
      rateBps: 0,
      etaMs: undefined,
    };
    this.active.set(t.key, t);
    this.emit('progress', { ...t });
    return t;
  }

  /** Update fields; rate and ETA are derived from bytesSent and sendStartedAt. */
  update(key: string, patch: Partial<TransferInfo>, sendStartedAt?: number): void {
    const t = this.active.get(key);
    if (!t) return;
    Object.assign(t, patch);
    if (sendStartedAt !== undefined) {
      const elapsed = (this.now() - sendStartedAt) / 1000;
      t.rateBps = elapsed > 0 ? t.bytesSent / elapsed : 0;
      const left = Math.max(0, t.bytesToSend - t.bytesSent);
      t.etaMs = t.rateBps > 0 ? Math.round((left / t.rateBps) * 1000) : undefined;
    }
    this.emit('progress', { ...t });
  }

  end(key: string, state: 'done' | 'failed', error?: string): void {
    const t = this.active.get(key);
    if (!t) return;
    t.state = state;
    t.etaMs = state === 'done' ? 0 : undefined;
    if (error) t.error = error;
    this.active.delete(key);
    this.recent.unshift({ ...t });
    this.recent.length = Math.min(this.recent.length, this.keepRecent);
    this.emit('done', { ...t });
  }

  /** Transfers in progress (copies). */
  list(): TransferInfo[] {
    return [...this.active.values()].map((t) => ({ ...t }));
  }

  /** Finished transfers, newest first (copies). */
  history(): TransferInfo[] {
    return this.recent.map((t) => ({ ...t }));
  }
}
