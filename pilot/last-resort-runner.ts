import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../shared/logger.ts';
import type { Config } from '../shared/config.ts';
import { errorMessage } from '../shared/errors.ts';
import type { ElectionView } from '../shared/wire.ts';
import type { DepotComponents } from '../depot/components.ts';
import type { ContainerManager } from '../depot/containers/manager.ts';
import { insideDir } from '../depot/containers/drivers/paths.ts';
import { compareEpoch, type Epoch } from './election/views.ts';
import { rankHosts } from './placement.ts';
import { candidatesOf } from './cluster-view.ts';
import { servicePolicy } from './policy.ts';
import { decideLastResort, describeWindow, type KitHolder, type LastResortDecision, type LostCopy } from './last-resort.ts';
import type { RecoveryKits } from './recovery-kits.ts';
import type { PilotSupervisor } from './supervisor.ts';
import { loadDatabaseGz } from './db/db-copy.ts';

// Carries out the last-resort recovery (pilot/last-resort.ts decides): every recovery.checkMs a
// depot holding recovery kits asks, for each kit's service, whether every copy is lost; when the
// decision names this depot, it starts a copy from the pristine image in its store, loads its
// database copy into the copy's own server, and hands the copy to a pilot that campaigns at once
// (with the last voter group and term heard of): it serves only once it wins a term through the
// voter group, like any candidate. The movement record of that win (event last-resort), the
// alert (notice last-resort-recovery) and the log say which window of data was lost. With no
// database copy anywhere and a policy that does not allow an empty start, the chosen depot alerts
// instead, once per loss.

export interface LastResortRunnerOptions {
  self: DepotComponents['self'];
  members: DepotComponents['members'];
  notices: DepotComponents['notices'];
  kits: RecoveryKits;
  containers: ContainerManager;
  supervisor: PilotSupervisor;
  config: Pick<Config, 'recovery' | 'pilot' | 'policy' | 'dbsync'>;
  logger: Logger;
  now?: () => number;
}

/** After a failed attempt, the next one waits this long (a container start or a load that failed). */
const RETRY_AFTER_MS = 10_000;

export class LastResortRunner {
  private readonly log: Logger;
  private readonly now: () => number;
  private timer: NodeJS.Timeout | undefined;
  private readonly busy = new Set<string>();
  /** Service -> the loss (lostAt) already acted on (recovered or refused). */
  private readonly handled = new Map<string, number>();
  private readonly failedAt = new Map<string, number>();
  private readonly lastKind = new Map<string, string>();
  private stopped = false;

  constructor(private readonly opts: LastResortRunnerOptions) {
    this.log = opts.logger.child({ component: 'last-resort' });
    this.now = opts.now ?? Date.now;
  }

  start(): void {
    if (!this.opts.config.recovery.enabled) return;
    this.timer = setInterval(() => this.check(), this.opts.config.recovery.checkMs);
    this.timer.unref();
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.timer);
  }

  /** The decision for `service` as this depot sees it now (also for tests and the log). */
  decide(service: string): LastResortDecision | undefined {
    const o = this.opts;
    const kit = o.kits.kit(service);
    if (!kit) return undefined;
    const now = this.now();
    const view = o.members.view();
    const copies: LostCopy[] = [];
    for (const m of view) {
      for (const r of m.heartbeat?.containers ?? []) {
        if (r.service === service) copies.push({ peerId: m.peerId, host: m.name, state: m.state, role: r.role, term: r.term, lastHeardAt: m.lastHeardAt, since: m.since });
      }
    }
    const spec = kit.spec;
    const policy = servicePolicy(o.config.policy, service);
    const ranking = rankHosts(candidatesOf(o.members), { service, memBytes: spec.memoryBytes, diskBytes: spec.diskBytes, image: spec.image }, now, { policy });
    const rank = new Map(ranking.ranking.map((r, i) => [r.peerId ?? r.name, i]));
    const holders: KitHolder[] = view
      .flatMap((m) => {
        const k = m.heartbeat?.recoveryKits?.find((x) => x.service === service && x.image === spec.image);
        if (!k || !m.heartbeat) return [];
        return [{ peerId: m.peerId, host: m.name, alive: m.state === 'alive', hasImage: m.heartbeat.images.includes(spec.image), dbAt: k.dbAt }];
      })
      .sort((a, b) => (rank.get(a.peerId) ?? Infinity) - (rank.get(b.peerId) ?? Infinity) || (a.peerId < b.peerId ? -1 : 1));
    return decideLastResort({
      service,
      now,
      copies,
      holders,
      hasDatabase: spec.database !== undefined,
      startWithoutData: o.config.policy.services[service]?.recovery?.startWithoutData ?? false,
      graceMs: o.config.recovery.lostGraceMs,
      leaseMs: o.config.pilot.leaseMs,
    });
  }

  check(): void {
    const o = this.opts;
    for (const service of o.kits.services()) {
      if (this.stopped || this.busy.has(service)) continue;
      if (o.supervisor.pilotFor(service)) {
        // A copy runs here now (placed as a standby, or recovered): it protects the service.
        void o.kits.drop(service).catch(() => undefined);
        continue;
      }
      let d: LastResortDecision | undefined;
      try {
        d = this.decide(service);
      } catch (err) {
        this.log.error({ event: 'last-resort-check-failed', service, err: errorMessage(err) }, 'last-resort check failed');
        continue;
      }
      if (!d) continue;
      if (this.lastKind.get(service) !== d.kind) {
        this.lastKind.set(service, d.kind);
        if (d.kind !== 'none') this.log.warn({ event: 'last-resort-state', service, decision: d.kind, ...('reason' in d ? { reason: d.reason } : {}), ...('host' in d ? { host: d.host } : {}) }, `last-resort recovery of ${service}: ${d.kind}`);
      }
      if (d.kind === 'recover' && d.peerId === o.self.peerId && this.handled.get(service) !== d.lostAt) {
        if (this.now() - (this.failedAt.get(service) ?? -Infinity) < RETRY_AFTER_MS) continue;
        this.busy.add(service);
        const decision = d;
        void this.recover(service, decision)
          .then(
            () => this.handled.set(service, decision.lostAt),
            (err: unknown) => {
              this.failedAt.set(service, this.now());
              this.log.error({ event: 'last-resort-failed', service, err: errorMessage(err), retryInMs: RETRY_AFTER_MS }, `last-resort recovery of ${service} failed: ${errorMessage(err)}`);
            },
          )
          .finally(() => this.busy.delete(service));
      } else if (d.kind === 'refuse' && d.peerId === o.self.peerId && this.handled.get(service) !== d.lostAt) {
        this.handled.set(service, d.lostAt);
        this.log.error({ event: 'last-resort-refused', service, lostAt: d.lostAt, reason: d.reason }, d.reason);
        o.notices.report({ kind: 'last-resort-recovery', service, subject: service, summary: `${service} is DOWN: ${d.reason}`, details: { recovered: false, lostTo: new Date(d.lostAt).toISOString() } });
      }
    }
  }

  private async recover(service: string, d: Extract<LastResortDecision, { kind: 'recover' }>): Promise<void> {
    const o = this.opts;
    const kit = o.kits.kit(service)!;
    const spec = kit.spec;
    const t0 = performance.now();
    const window = describeWindow(d.window, d.withoutData);
    const db = o.kits.dbCopy(service);
    if (d.dbAt !== undefined && (!db || db.meta.at !== d.dbAt)) throw new Error(`the database copy chosen (${new Date(d.dbAt).toISOString()}) is no longer held here`);
    this.log.warn({ event: 'last-resort-start', service, lostAt: d.lostAt, dbAt: d.dbAt, fromHost: d.fromHost, withoutData: d.withoutData }, `every copy of ${service} lost: recovering it here (${window})`);
    // The last voter group and term any copy reported (the kit's when fresher), so the voters
    // still in it recognise the campaign and its term is above every term granted before.
    let view: ElectionView = kit.view;
    let term = Math.max(kit.term, d.term);
    for (const m of o.members.view()) {
      for (const r of m.heartbeat?.containers ?? []) {
        if (r.service !== service) continue;
        term = Math.max(term, r.term);
        if (r.view && compareEpoch(r.view.epoch as Epoch, view.epoch as Epoch) > 0) view = r.view;
      }
    }
    const container = `${service}-${randomBytes(3).toString('hex')}`;
    await o.containers.startContainer({ id: container, service, image: spec.image, spec: spec.container, role: 'standby', term });
    const started = performance.now();
    let loadMs = 0;
    try {
      if (db && spec.database && d.dbAt !== undefined) {
        const dbSpec = spec.database;
        const password = dbSpec.passwordFile ? (await readFile(insideDir(join(o.containers.root, container), dbSpec.passwordFile, 'database.passwordFile'), 'utf8')).trim() : '';
        loadMs = await this.loadWithRetry(db.file, { host: '127.0.0.1', port: dbSpec.port, user: dbSpec.user, password });
      }
    } catch (err) {
      await o.containers.removeContainer(container, { timeoutMs: 30_000 }).catch(() => undefined);
      throw err;
    }
    const dbFrom = db ? ` and the database copy taken from ${db.meta.fromHost}` : '';
    const reason = `last-resort recovery: every copy lost (last on ${d.fromHost ?? 'unknown'}); started on ${o.self.name} from the pristine image${dbFrom}; ${window}`;
    await o.supervisor.assign({ spec, container, view, term, campaign: true, lastResort: { reason, ...(d.fromHost ? { fromHost: d.fromHost } : {}) } });
    const durationMs = Math.round(performance.now() - t0);
    const details = {
      recovered: true,
      host: o.self.name,
      withoutData: d.withoutData,
      lostTo: new Date(d.window.to).toISOString(),
      ...(d.window.from !== undefined ? { lostFrom: new Date(d.window.from).toISOString(), lostS: Number(((d.window.to - d.window.from) / 1000).toFixed(1)) } : {}),
      bootMs: Math.round(started - t0),
      loadMs,
    };
    if (d.withoutData) this.log.error({ event: 'last-resort-without-data', service, lostAt: d.lostAt }, `${service} STARTED WITHOUT ITS DATA on ${o.self.name} (policy recovery.startWithoutData): no database copy was held anywhere`);
    o.notices.report({
      kind: 'last-resort-recovery',
      service,
      subject: service,
      summary: d.withoutData
        ? `every copy of ${service} was lost and no database copy exists: STARTED EMPTY on ${o.self.name} (policy recovery.startWithoutData); ${window}`
        : `every copy of ${service} was lost; recovering on ${o.self.name} from the pristine image${dbFrom}; ${window}`,
      details,
    });
    this.log.warn({ event: 'last-resort-started', service, container, term: term + 1, durationMs, ...details }, `${service} copy started on ${o.self.name} from its image; campaigning`);
  }

  /** The copy's server may still be starting: retry the load for a while (each try replaces the whole database). */
  private async loadWithRetry(file: string, target: { host: string; port: number; user: string; password: string }): Promise<number> {
    const deadline = performance.now() + 60_000;
    for (let attempt = 1; ; attempt++) {
      try {
        return (await loadDatabaseGz({ file, target, timeoutMs: this.opts.config.recovery.dbCopyTimeoutMs, settings: this.opts.config.dbsync })).durationMs;
      } catch (err) {
        if (performance.now() > deadline || this.stopped) throw err;
        this.log.warn({ event: 'last-resort-load-retry', attempt, err: errorMessage(err) }, 'database copy load failed; retrying');
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  }
}
