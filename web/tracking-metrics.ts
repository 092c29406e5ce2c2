import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { outageOf, type MovementRecord } from '../shared/movement.ts';
import type { ServiceView } from '../shared/api/tracking.ts';
import type { MovementLog } from './tracking-routes.ts';

export interface TrackingMetrics {
  /** Bytes of image transfers; the shipper calls inc({direction}, n). */
  transferBytes: Counter<'direction'>;
  /** Movement gossip received, by result (appended, duplicate, bad, error). */
  movementGossip: Counter<'result'>;
  close(): void;
}

/**
 * Prometheus metrics of the tracking plugin on an injected registry: failovers, outage and
 * re-protection durations (from journal records as they arrive), DB sync age per standby, and
 * image transfer bytes.
 */
export function registerTrackingMetrics(registry: Registry, opts: { journal: Pick<MovementLog, 'on' | 'off'>; services: () => ServiceView[]; now?: () => number }): TrackingMetrics {
  const now = opts.now ?? Date.now;
  const failovers = new Counter({ name: 'navigator_failovers_total', help: 'Failovers seen in the movement journal', labelNames: ['service'] as const, registers: [registry] });
  const outage = new Histogram({
    name: 'navigator_failover_outage_seconds',
    help: 'Service outage of a failover: detect + elect + takeover',
    labelNames: ['service'] as const,
    buckets: [0.25, 0.5, 1, 1.5, 2, 3, 5, 10, 30, 60, 120],
    registers: [registry],
  });
  const reprotect = new Histogram({
    name: 'navigator_reprotection_seconds',
    help: 'From a failure until a new standby was in place',
    labelNames: ['service'] as const,
    buckets: [1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600],
    registers: [registry],
  });
  new Gauge({
    name: 'navigator_sync_age_seconds',
    help: "Age of each standby's data: its last good DB sync (dump), or the newest primary heartbeat it holds (replicate/semisync) — the RPO in seconds",
    labelNames: ['service', 'host'] as const,
    registers: [registry],
    collect() {
      this.reset();
      const t = now();
      for (const s of opts.services()) {
        for (const c of s.copies) {
          if (c.role === 'standby' && c.lastSyncAt !== null) this.set({ service: s.service, host: c.host }, Math.max(0, (t - c.lastSyncAt) / 1000));
        }
      }
    },
  });
  new Gauge({
    name: 'navigator_replication_lag_transactions',
    help: "Transactions each standby's database is behind the primary's (replicate/semisync; GTID positions)",
    labelNames: ['service', 'host'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const s of opts.services()) for (const c of s.copies) if (c.role === 'standby' && typeof c.lagTx === 'number') this.set({ service: s.service, host: c.host }, c.lagTx);
    },
  });
  new Gauge({
    name: 'navigator_replication_broken',
    help: "1 while a standby's replication is broken (it is reseeded automatically), else 0 (replicate/semisync)",
    labelNames: ['service', 'host'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const s of opts.services()) for (const c of s.copies) if (c.role === 'standby' && c.replState !== undefined) this.set({ service: s.service, host: c.host }, c.replState === 'broken' ? 1 : 0);
    },
  });
  new Gauge({
    name: 'navigator_semisync_fallback',
    help: 'semisync: 1 while the primary has fallen back to async replication (commits do not wait for a standby)',
    labelNames: ['service', 'host'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const s of opts.services()) for (const c of s.copies) if (c.role === 'primary' && c.semisyncFallback !== undefined) this.set({ service: s.service, host: c.host }, c.semisyncFallback ? 1 : 0);
    },
  });
  const transferBytes = new Counter({ name: 'navigator_transfer_bytes_total', help: 'Bytes of image transfers', labelNames: ['direction'] as const, registers: [registry] });
  const movementGossip = new Counter({ name: 'navigator_movement_gossip_total', help: 'Movement gossip messages received, by result', labelNames: ['result'] as const, registers: [registry] });

  // Failovers still waiting for their new standby, per service.
  const waiting = new Map<string, MovementRecord[]>();
  const onMovement = (r: MovementRecord) => {
    if (r.event === 'failover') {
      failovers.inc({ service: r.service });
      outage.observe({ service: r.service }, outageOf(r) / 1000);
      waiting.set(r.service, [...(waiting.get(r.service) ?? []), r]);
    } else if ((r.event === 'replaced' || r.event === 'placed') && r.role === 'standby') {
      for (const f of waiting.get(r.service) ?? []) {
        if (r.time >= f.time) reprotect.observe({ service: r.service }, Math.max(0, r.time - (f.time - outageOf(f))) / 1000);
      }
      waiting.delete(r.service);
    }
  };
  opts.journal.on('movement', onMovement);
  return { transferBytes, movementGossip, close: () => opts.journal.off('movement', onMovement) };
}
