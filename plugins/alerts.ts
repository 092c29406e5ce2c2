import { z } from 'zod';
import type { Logger } from '../shared/logger.ts';
import { errorMessage } from '../shared/errors.ts';
import { TOPICS, decodeMessage, encodeMessage } from '../shared/wire.ts';
import { AlertMessage, AlertRecord, type AlertsResponse, type Notice } from '../shared/alert.ts';
import type { MovementRecord } from '../shared/movement.ts';
import type { TimerHandle } from '../shared/clock.ts';
import { registerAdminPost } from '../web/admin-routes.ts';
import type { DepotComponents, DepotPlugin } from '../depot/components.ts';
import type { Journal } from '../depot/journal/journal.ts';
import { AlertEngine, type Send } from '../depot/alerts/engine.ts';
import { currentConditions, protectedServices, trackConditions, type ActiveCondition, type ServiceState } from '../depot/alerts/conditions.ts';
import { failoverEvent, noticeEvent, QuorumReports, senderMembers, servicesFrom } from '../depot/alerts/events.ts';
import { chooseSender, type SenderChoice } from '../depot/alerts/sender.ts';
import { ALERT_PULL_CONCURRENCY, alertPullTargets } from '../depot/alerts/pull-targets.ts';
import PQueue from 'p-queue';
import { alertChannels, sendTest, type AlertChannel, type TestResult } from '../depot/alerts/channels.ts';
import { registerAlertMetrics, type AlertMetrics } from '../depot/alerts/alert-metrics.ts';

// Alerts, cluster-wide: every depot runs the same engine on what it sees (the heartbeats' copies,
// failovers in the journal, notices from any depot) and keeps the same alert table, merged from
// gossip (TOPICS.alerts). One depot sends: the primary's, or the lowest live one when no service
// has a primary (depot/alerts/sender.ts), and only after it has been the sender in its own view
// for alerts.senderSettleMs and has pulled the others' tables (`alerts.state`): so a new sender
// neither repeats what the old one sent nor loses what it had not. GET /api/alerts shows the
// table and each channel's delivery; POST /api/alerts/test sends a test message from this depot.

export interface QuorumStatus {
  service: string;
  /** Voters in the service's current view and how many of them are alive; a majority is needed. */
  voters: number;
  alive: number;
  needed: number;
}

export interface AlertsInit {
  journal: Journal | undefined;
  /** The voter quorum of each service whose pilot runs here (for quorum-lost alerts). */
  quorum?: () => QuorumStatus[];
}

export type AlertsComponents = Pick<DepotComponents, 'config' | 'logger' | 'clock' | 'self' | 'members' | 'gossip' | 'control' | 'routes' | 'metrics' | 'notices'>;

export interface AlertsPlugin extends DepotPlugin {
  readonly engine: AlertEngine;
  response(): AlertsResponse;
  /** Send a test message through every configured channel from this depot. */
  test(): Promise<TestResult[]>;
}

export function alertsPlugin(init: AlertsInit): (components: AlertsComponents) => AlertsPlugin {
  return (components) => new Alerts(init, components);
}

const TICK_MS = 1000;
const QUORUM_REFRESH_MS = 30_000;
/** A new sender waits this long (at most half of alerts.senderSettleMs) before pulling the tables. */
const PULL_DELAY_MS = 1000;
const PULL_TIMEOUT_MS = 3000;
const StateReply = z.object({ alerts: z.array(AlertRecord).max(1000) });

class Alerts implements AlertsPlugin {
  readonly name = 'alerts';
  readonly engine: AlertEngine;
  private readonly cfg;
  private readonly log: Logger;
  private readonly channels: AlertChannel[];
  private readonly since = new Map<string, number>();
  private readonly quorumReports: QuorumReports;
  private readonly journalServices = new Set<string>();
  private readonly ownQuorum = new Map<string, { lost: boolean; at: number }>();
  private metrics: AlertMetrics | undefined;
  private timer: TimerHandle | undefined;
  private stopListening: (() => void) | undefined;
  private sender: SenderChoice | undefined;
  /** Since when this depot has been the sender in its own view (undefined: it is not). */
  private candidateSince: number | undefined;
  private pulled = false;
  private pulling = false;
  /** The last sender other than this depot: the first asked for its table. */
  private previousSender: string | undefined;
  private sending = false;
  private lastServices: ServiceState[] = [];
  private lastConditions: ActiveCondition[] = [];
  private stopped = false;
  private readonly onMovement = (r: MovementRecord) => this.movement(r);

  constructor(
    private readonly init: AlertsInit,
    private readonly c: AlertsComponents,
  ) {
    this.cfg = c.config.alerts;
    this.log = c.logger.child({ component: 'alerts' });
    this.channels = this.cfg.enabled ? alertChannels(this.cfg) : [];
    this.engine = new AlertEngine({ ...this.cfg, channels: this.channels.map((ch) => ch.channel) });
    this.quorumReports = new QuorumReports(QUORUM_REFRESH_MS * 3);
  }

  async start(): Promise<void> {
    const c = this.c;
    this.metrics = registerAlertMetrics(c.metrics, {
      alerts: () => this.engine.table(),
      channels: () => this.engine.channelStatus(c.clock.now()),
      sending: () => this.sending,
      services: () => this.lastServices,
      conditions: () => this.lastConditions,
      now: () => c.clock.now(),
    });
    c.gossip.subscribe(TOPICS.alerts, (data, from) => this.receive(data, from));
    c.control.register('alerts.state', async () => ({ alerts: this.engine.table() }));
    this.stopListening = c.notices.listen((n) => {
      this.notice(n);
      void this.publish({ type: 'alert-notice', v: 1, notice: n });
    });
    if (this.init.journal) {
      for (const r of this.init.journal.all()) {
        this.journalServices.add(r.service);
        this.movement(r);
      }
      this.init.journal.on('movement', this.onMovement);
    }
    if (c.routes) {
      c.routes.route('GET', '/api/alerts', () => this.response());
      registerAdminPost(c.routes, { admin: { token: c.config.http.adminToken, host: c.config.http.adminHost }, logger: c.logger }, '/api/alerts/test', z.object({}).strict(), () => this.test(), 'alerts-test');
    }
    this.timer = c.clock.setInterval(() => this.tick(), TICK_MS);
    this.log.info({ event: 'alerts-started', channels: this.channels.map((ch) => `${ch.channel} ${ch.target}`), enabled: this.cfg.enabled }, 'alerts ready');
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.c.clock.clear(this.timer);
    this.stopListening?.();
    this.init.journal?.off('movement', this.onMovement);
  }

  response(): AlertsResponse {
    const now = this.c.clock.now();
    const targets = Object.fromEntries(this.channels.map((ch) => [ch.channel, ch.target]));
    return {
      now,
      enabled: this.cfg.enabled,
      sender: { name: this.sender?.name ?? '', peerId: this.sender?.peerId ?? '', self: this.sender?.peerId === this.c.self.peerId, sending: this.sending },
      channels: this.engine.channelStatus(now, targets),
      alerts: this.engine.table(),
    };
  }

  async test(): Promise<TestResult[]> {
    const results = await sendTest(this.channels, { cluster: this.cfg.clusterName, sender: this.c.self.name, now: this.c.clock.now() });
    for (const r of results) this.log.info({ event: 'alert-test', channel: r.channel, ok: r.ok, ...(r.error ? { err: r.error } : {}) }, `test message ${r.ok ? 'sent' : 'failed'} (${r.channel})`);
    return results;
  }

  private movement(r: MovementRecord): void {
    this.journalServices.add(r.service);
    const ev = failoverEvent(r);
    if (ev) this.engine.addEvent(ev, this.c.clock.now());
  }

  private notice(n: Notice): void {
    this.metrics?.notices.inc({ kind: n.kind });
    const now = this.c.clock.now();
    if (n.kind === 'quorum') this.quorumReports.add(n, now);
    const ev = noticeEvent(n);
    if (ev) this.engine.addEvent(ev, now);
  }

  private receive(data: Uint8Array, from: string): void {
    const r = decodeMessage(AlertMessage, data, this.c.config.membership.maxMessageBytes);
    if (!r.ok) {
      this.c.gossip.drop(r.reason, r.detail, from, TOPICS.alerts);
      return;
    }
    if (r.value.type === 'alert-notice') {
      // A depot reports only what it saw itself.
      if (r.value.notice.peerId !== from) {
        this.c.gossip.drop('spoofed', `notice claims ${r.value.notice.peerId}`, from, TOPICS.alerts);
        return;
      }
      this.notice(r.value.notice);
    } else {
      this.engine.merge(r.value.alerts);
    }
  }

  private async publish(msg: AlertMessage): Promise<void> {
    try {
      await this.c.gossip.publish(TOPICS.alerts, encodeMessage(msg, this.c.config.membership.maxMessageBytes));
    } catch (err) {
      // No peer subscribed yet, or the message is too large: the table is pulled at sender changes.
      this.log.debug({ event: 'alert-gossip-failed', err: errorMessage(err) }, 'could not gossip alert state');
    }
  }

  private publishRecords(records: readonly AlertRecord[]): void {
    for (let i = 0; i < records.length; i += 16) void this.publish({ type: 'alert-state', v: 1, alerts: records.slice(i, i + 16) });
  }

  /** Merge a few well-informed peers' tables (a new sender must know what the old one sent; depot/alerts/pull-targets.ts). */
  private async pull(): Promise<void> {
    if (this.pulling) return;
    this.pulling = true;
    const t0 = this.c.clock.now();
    try {
      const peers = alertPullTargets(this.c.members.view(), this.previousSender);
      const queue = new PQueue({ concurrency: ALERT_PULL_CONCURRENCY });
      const replies = await Promise.allSettled(peers.map((p) => queue.add(() => this.c.control.call<unknown>(p, 'alerts.state', {}, { timeoutMs: PULL_TIMEOUT_MS }))));
      let merged = 0;
      for (const r of replies) {
        const parsed = r.status === 'fulfilled' ? StateReply.safeParse(r.value) : undefined;
        if (parsed?.success) merged += this.engine.merge(parsed.data.alerts).length;
      }
      const answered = replies.filter((r) => r.status === 'fulfilled').length;
      this.log.info({ event: 'alerts-pulled', peers: peers.length, answered, merged, durationMs: Math.round(this.c.clock.now() - t0) }, 'alert table pulled from peers');
    } finally {
      this.pulling = false;
      this.pulled = true;
    }
  }

  private reportQuorum(now: number): void {
    for (const q of this.init.quorum?.() ?? []) {
      const lost = q.alive < q.needed;
      const prev = this.ownQuorum.get(q.service);
      if (prev && prev.lost === lost && now - prev.at < QUORUM_REFRESH_MS) continue;
      this.ownQuorum.set(q.service, { lost, at: now });
      this.c.notices.report({
        kind: 'quorum',
        service: q.service,
        active: lost,
        summary: lost ? `${q.service} has ${q.alive} of ${q.voters} voters alive, ${q.needed} needed: no primary can be elected or renew its lease` : `${q.service} has ${q.alive} of ${q.voters} voters alive`,
        details: { voters: q.voters, alive: q.alive, needed: q.needed },
      });
    }
  }

  private tick(): void {
    if (this.stopped) return;
    const c = this.c;
    const now = c.clock.now();
    try {
      this.reportQuorum(now);
      const view = c.members.view();
      const choice = chooseSender(senderMembers(view));
      if (choice?.peerId !== this.sender?.peerId) {
        this.log.info({ event: 'alert-sender', sender: choice?.name, peerId: choice?.peerId, why: choice?.why }, `alert sender: ${choice?.name ?? 'none'}`);
        if (this.sender && this.sender.peerId !== c.self.peerId) this.previousSender = this.sender.peerId;
      }
      this.sender = choice;
      const candidate = this.cfg.enabled && choice?.peerId === c.self.peerId;
      if (!candidate) {
        this.candidateSince = undefined;
        this.pulled = false;
      } else {
        this.candidateSince ??= now;
        // Not at once: the sender is usually a primary that has just taken over and must renew
        // its lease first; the pull waits a round (and stays within senderSettleMs by default).
        if (!this.pulled && now - this.candidateSince >= Math.min(PULL_DELAY_MS, this.cfg.senderSettleMs / 2)) void this.pull();
      }
      const sending = candidate && this.pulled && now - (this.candidateSince ?? now) >= this.cfg.senderSettleMs;
      if (sending !== this.sending) this.log.info({ event: sending ? 'alert-sending' : 'alert-not-sending' }, sending ? 'this depot sends the alerts' : 'this depot no longer sends alerts');
      this.sending = sending;
      const services = (this.lastServices = servicesFrom(view, this.journalServices));
      const alive = new Set(view.filter((m) => m.state === 'alive').map((m) => m.peerId));
      const conditions = (this.lastConditions = trackConditions(this.since, currentConditions(services, this.quorumReports.current(alive, now), now, this.cfg), now));
      const out = this.engine.step({ now, sending, self: c.self.name, conditions, protectedServices: protectedServices(services) });
      for (const a of out.changed) {
        if (a.resolvedAt === undefined && a.sentOpen.length === 0 && a.count === 1) this.log.warn({ event: 'alert-open', alert: a.id, type: a.type, severity: a.severity, service: a.service }, a.summary);
        else if (a.resolvedAt === now) this.log.info({ event: 'alert-resolved', alert: a.id, type: a.type }, a.resolveSummary ?? 'resolved');
      }
      if (out.changed.length) this.publishRecords(out.changed);
      for (const send of out.sends) void this.deliver(send);
    } catch (err) {
      this.log.error({ event: 'alerts-tick-failed', err: errorMessage(err) }, 'alert round failed');
    }
  }

  private async deliver(send: Send): Promise<void> {
    const ch = this.channels.find((x) => x.channel === send.channel);
    if (!ch) return this.engine.abandoned(send.channel);
    const ids = send.notifications.map((n) => `${n.alert.id} ${n.phase}`);
    const t0 = this.c.clock.now();
    try {
      await ch.send(send.notifications, { cluster: this.cfg.clusterName, sender: this.c.self.name, now: t0 });
      const changed = this.engine.delivered(send, { ok: true }, this.c.clock.now());
      this.metrics?.messages.inc({ channel: send.channel, result: 'ok' });
      this.log.info({ event: 'alert-sent', channel: send.channel, notifications: ids, durationMs: this.c.clock.now() - t0 }, `alert message sent (${send.channel})`);
      this.publishRecords(changed);
    } catch (err) {
      const error = errorMessage(err);
      this.engine.delivered(send, { ok: false, error }, this.c.clock.now());
      this.metrics?.messages.inc({ channel: send.channel, result: 'failed' });
      this.log.warn({ event: 'alert-send-failed', channel: send.channel, notifications: ids, err: error }, `alert message failed (${send.channel}); retried later`);
    }
  }
}
