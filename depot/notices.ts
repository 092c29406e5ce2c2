import { randomUUID } from 'node:crypto';
import type { Notice, NoticeInput } from '../shared/alert.ts';

// Notices: events one depot sees that an admin should hear of (shared/alert.ts): a refused peer
// (a security event), an image that failed verification, a voter quorum lost or back, a
// last-resort recovery. Any part of the depot reports one here; the alerts plugin gossips it so
// the sending depot can alert. A storm of the same notice (a peer sending forged messages many
// times a second) is passed on once per subject per `repeatMs`, with the count of what was held.

export type NoticeListener = (notice: Notice) => void;

/** The depot component: report a notice, or listen to those reported here. */
export interface Notices {
  report(input: NoticeInput): void;
  /** Returns the function that removes the listener. */
  listen(listener: NoticeListener): () => void;
}

export interface NoticeBusOptions {
  host: () => { name: string; peerId: string };
  now: () => number;
  /** One notice per kind, service and subject at most this often (condition reports always pass). */
  repeatMs?: number;
}

export class NoticeBus implements Notices {
  private readonly listeners = new Set<NoticeListener>();
  private readonly last = new Map<string, { at: number; held: number }>();

  constructor(private readonly opts: NoticeBusOptions) {}

  report(input: NoticeInput): void {
    const now = this.opts.now();
    const key = `${input.kind}\u0000${input.service ?? ''}\u0000${input.subject ?? ''}`;
    const repeatMs = this.opts.repeatMs ?? 10_000;
    let held = 0;
    if (input.active === undefined) {
      const prev = this.last.get(key);
      if (prev && now - prev.at < repeatMs) {
        prev.held += 1;
        return;
      }
      held = prev?.held ?? 0;
      this.last.set(key, { at: now, held: 0 });
      if (this.last.size > 1000) this.last.delete(this.last.keys().next().value!);
    }
    const self = this.opts.host();
    const notice: Notice = {
      service: '',
      subject: '',
      ...input,
      details: { ...(input.details ?? {}), ...(held > 0 ? { heldBefore: held } : {}) },
      id: randomUUID(),
      at: now,
      host: self.name,
      peerId: self.peerId,
    };
    for (const l of this.listeners) {
      try {
        l(notice);
      } catch {
        // a listener's failure is its own
      }
    }
  }

  listen(listener: NoticeListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}
