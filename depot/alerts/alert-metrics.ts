import { Counter, Gauge, type Registry } from 'prom-client';
import type { AlertRecord, Channel, ChannelStatus } from '../../shared/alert.ts';
import type { ActiveCondition, ServiceState } from './conditions.ts';

// /metrics of the alerts: the alert table, the channels' delivery, and the per-service figures the
// alert conditions are made of (what the Zabbix template in deploy/zabbix reads).

export interface AlertMetricsSource {
  alerts(): readonly AlertRecord[];
  channels(): readonly ChannelStatus[];
  sending(): boolean;
  services(): readonly ServiceState[];
  conditions(): readonly ActiveCondition[];
  now(): number;
}

export interface AlertMetrics {
  messages: Counter<'channel' | 'result'>;
  notices: Counter<'kind'>;
}

export function registerAlertMetrics(registry: Registry, src: AlertMetricsSource): AlertMetrics {
  const registers = [registry];
  new Gauge({
    name: 'navigator_alerts_open',
    help: 'Open alerts, by type and severity',
    labelNames: ['type', 'severity'] as const,
    registers,
    collect() {
      this.reset();
      for (const a of src.alerts()) if (a.resolvedAt === undefined && !a.superseded) this.inc({ type: a.type, severity: a.severity });
    },
  });
  new Gauge({
    name: 'navigator_alert_sender',
    help: '1 on the depot that sends the cluster\'s alerts',
    registers,
    collect() {
      this.set(src.sending() ? 1 : 0);
    },
  });
  const perChannel = (name: string, help: string, value: (c: ChannelStatus) => number) =>
    new Gauge({
      name,
      help,
      labelNames: ['channel'] as const,
      registers,
      collect() {
        this.reset();
        for (const c of src.channels()) this.set({ channel: c.channel as Channel }, value(c));
      },
    });
  perChannel('navigator_alert_delivery_failures', 'Failed deliveries in a row, by channel (0: the last one worked)', (c) => c.failures);
  perChannel('navigator_alert_pending', 'Notifications waiting for delivery, by channel', (c) => c.pending);
  const messages = new Counter({ name: 'navigator_alert_messages_total', help: 'Alert messages this depot sent, by channel and result', labelNames: ['channel', 'result'] as const, registers });
  const notices = new Counter({ name: 'navigator_notices_total', help: 'Notices heard from any depot (refused peers, bad images, quorum reports, recoveries), by kind', labelNames: ['kind'] as const, registers });
  for (const kind of ['peer-refused', 'image-verify-failed', 'quorum', 'last-resort-recovery']) notices.inc({ kind }, 0);
  const perService = (name: string, help: string, value: (s: ServiceState, now: number) => number) =>
    new Gauge({
      name,
      help,
      labelNames: ['service'] as const,
      registers,
      collect() {
        this.reset();
        const now = src.now();
        for (const s of src.services()) this.set({ service: s.service }, value(s, now));
      },
    });
  const since = (type: string, s: ServiceState, now: number) => {
    const c = src.conditions().find((x) => x.type === type && x.service === s.service);
    return c ? Math.max(0, (now - c.since) / 1000) : 0;
  };
  perService('navigator_service_primary', '1 when the service has a running primary', (s) => (s.copies.some((c) => c.role === 'primary' && c.state === 'running') ? 1 : 0));
  perService('navigator_service_standbys', 'Running standbys of the service', (s) => s.copies.filter((c) => c.role === 'standby' && c.state === 'running').length);
  perService('navigator_service_term', 'Election term of the service (highest seen)', (s) => Math.max(0, ...s.copies.map((c) => c.term)));
  perService('navigator_service_down_seconds', 'How long the service has had no running primary (0: it has one)', (s, now) => since('service-down', s, now));
  perService('navigator_service_unprotected_seconds', 'How long the service has had a primary but no running standby that could take over (one still being seeded cannot; 0: protected or down)', (s, now) => since('unprotected', s, now));
  perService('navigator_quorum_lost', '1 while a depot reports that the service\'s voters lack a majority', (s) => (src.conditions().some((c) => c.type === 'quorum-lost' && c.service === s.service) ? 1 : 0));
  new Gauge({
    name: 'navigator_sync_failing',
    help: '1 while the database copy into a standby is failing',
    labelNames: ['service', 'host'] as const,
    registers,
    collect() {
      this.reset();
      for (const s of src.services()) for (const c of s.copies) if (c.role === 'standby') this.set({ service: s.service, host: c.host }, c.syncFailing ? 1 : 0);
    },
  });
  return { messages, notices };
}
