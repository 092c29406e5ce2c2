import type { z } from 'zod';
import type { Clock, TimerHandle } from '../shared/clock.ts';
import type { BusySection } from '../shared/config.ts';
import { errorMessage } from '../shared/errors.ts';
import type { Logger } from '../shared/logger.ts';
import type { MovementRecord } from '../shared/movement.ts';
import type { DepotComponents } from '../depot/components.ts';
import { byFreshness } from './admin-operations.ts';
import { copiesOf } from './cluster-view.ts';
import { decideBusyMove, lastBusyMoveAt, type BusyMoveCandidate, type BusyMoveDecision } from './busy-move.ts';
import type { CopyView } from './pilot.ts';

// On the primary's depot: every busy.sampleMs, for each service whose primary runs here, ask the
// pure rule (busy-move.ts) whether to leave this busy host, with the busy signals from the
// heartbeats (this host's own included) and the last busy move from the movement journal; a
// "move" is the planned switchover (AdminOperations.switchover) to the chosen standby, its
// movement record saying why. One move at a time per service; a failed one is retried no
// sooner than the next sample. What the rule waits for is logged when it changes.

export interface BusyWatchOptions {
  config: z.infer<typeof BusySection>;
  quietHours: () => string[];
  members: DepotComponents['members'];
  selfId: string;
  /** Services whose primary runs on this depot now. */
  primaries: () => string[];
  /** Movement records held (the journal). */
  records: () => Iterable<MovementRecord>;
  switchover: (args: { service: string; to: string; why: string }) => Promise<{ from: string; to: string }>;
  clock: Clock;
  logger: Logger;
}

const NOT_IN_SYNC = new Set(['broken', 'stopped', 'seeding', 'connecting']);

/** A standby as the busy rule sees it. */
export function busyCandidate(c: CopyView, members: DepotComponents['members']): BusyMoveCandidate {
  const hb = members.view().find((m) => m.peerId === c.peerId)?.heartbeat;
  const r = c.report;
  return {
    host: c.host,
    peerId: c.peerId,
    up: c.depotState === 'alive' && r.state === 'running',
    inSync: !r.syncFailing && r.lastSyncAt !== undefined && !(r.replState !== undefined && NOT_IN_SYNC.has(r.replState)),
    busy: hb?.busy,
  };
}

export class BusyWatch {
  private timer: TimerHandle | undefined;
  private readonly moving = new Set<string>();
  /** Busy moves made from here (ms since the epoch), before the journal may show them. */
  private readonly movedAt = new Map<string, number>();
  private readonly lastWhy = new Map<string, string>();
  /** After a failed move, not before this (local ms): a hand-over that cannot finish must not be tried every sample. */
  private readonly retryAt = new Map<string, number>();
  private readonly log: Logger;

  constructor(private readonly o: BusyWatchOptions) {
    this.log = o.logger.child({ component: 'pilots' });
  }

  start(): void {
    this.timer = this.o.clock.setInterval(() => this.check(), this.o.config.sampleMs);
  }

  stop(): void {
    this.o.clock.clear(this.timer);
    this.timer = undefined;
  }

  /** The rule's answer for `service` now (also what `check` acts on). */
  decide(service: string, now = this.o.clock.now()): BusyMoveDecision {
    const o = this.o;
    const self = o.members.view().find((m) => m.peerId === o.selfId);
    const standbys = copiesOf(o.members, service)
      .filter((c) => c.report.role === 'standby' && c.peerId !== o.selfId)
      .sort(byFreshness)
      .map((c) => busyCandidate(c, o.members));
    const fromJournal = lastBusyMoveAt(o.records(), service);
    const local = this.movedAt.get(service);
    const last = fromJournal === undefined ? local : local === undefined ? fromJournal : Math.max(fromJournal, local);
    return decideBusyMove({
      service,
      host: self?.name ?? '?',
      own: self?.heartbeat?.busy,
      standbys,
      lastBusyMoveAt: last,
      quietHours: o.quietHours(),
      now,
      settings: o.config,
    });
  }

  /** One round: move the primaries here whose host has been busy long enough. */
  check(): void {
    if (!this.o.config.enabled) return;
    for (const service of this.o.primaries()) {
      if (this.moving.has(service) || (this.retryAt.get(service) ?? 0) > performance.now()) continue;
      let d: BusyMoveDecision;
      try {
        d = this.decide(service);
      } catch (err) {
        this.log.warn({ event: 'busy-move-check-failed', service, err: errorMessage(err) }, `busy check of ${service} failed`);
        continue;
      }
      if (!d.move) {
        // Logged when the kind of answer changes, not every time its seconds do.
        const kind = d.why.replace(/[\d.]+/g, '#');
        if (this.lastWhy.get(service) !== kind) {
          this.lastWhy.set(service, kind);
          // "Not busy" is the usual state: only the other answers are worth an info line.
          const usual = / is not busy /.test(d.why);
          this.log[usual ? 'debug' : 'info']({ event: 'busy-move-waiting', service, why: d.why }, `${service} stays: ${d.why}`);
        }
        continue;
      }
      this.lastWhy.delete(service);
      void this.move(service, d);
    }
  }

  private async move(service: string, d: Extract<BusyMoveDecision, { move: true }>): Promise<void> {
    this.moving.add(service);
    const t0 = performance.now();
    this.log.info({ event: 'busy-move', service, to: d.to, reason: d.reason }, `moving ${service} off this busy host: ${d.reason}`);
    try {
      const r = await this.o.switchover({ service, to: d.to, why: d.reason });
      this.movedAt.set(service, this.o.clock.now());
      this.log.info({ event: 'busy-moved', service, from: r.from, to: r.to, durationMs: Math.round(performance.now() - t0) }, `${service} moved ${r.from} -> ${r.to} (host busy)`);
    } catch (err) {
      this.retryAt.set(service, performance.now() + Math.max(30_000, 6 * this.o.config.sampleMs));
      this.log.warn({ event: 'busy-move-failed', service, to: d.to, err: errorMessage(err), durationMs: Math.round(performance.now() - t0) }, `could not move ${service} off this busy host: ${errorMessage(err)}`);
    } finally {
      this.moving.delete(service);
    }
  }
}
