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
import { guestDbAddress, ownDbReach } from './guest-mode.ts';

// Carries out the last-resort recovery (pilot/last-resort.ts decides): every recovery.checkMs a
// depot holding recovery kits asks, for each kit's service, whether every copy is lost. As soon as
// no copy is alive and the decision names this depot as the likely recoverer, it gets ready: it
// starts a copy from the pristine image in its store (role standby: no address, nothing served)
// and loads its database copy into the copy's own server, while the membership layer's verdict,
// the grace and the last lease run out; a copy heard alive again (or another holder named) makes
// it remove that copy. Once the decision is to recover here, the copy goes to a pilot that
// campaigns at once (with the last voter group and term heard of): it serves only once it wins a
// term through the voter group, like any candidate. The movement record of that win (event last-resort), the
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

type PreparedResult = { ok: true; container: string; bootMs: number; loadMs: number } | { ok: false; err: unknown };

interface Prepared {
  container: string;
  dbAt: number | undefined;
  ready: Promise<PreparedResult>;
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
  /** Copies started ahead of the recovery (boot and load), by service; not yet a pilot's. */
  private readonly prepared = new Map<string, Prepared>();
  private stopped = false;

  constructor(private readonly opts: LastResortRunnerOptions) {
    this.log = opts.logger.child({ component: 'last-resort' });
    this.now = opts.now ?? Date.now;
  }

  /** The container got ready here for a recovery of `service`, if any (for the heartbeat). */
  preparing(service: string): string | undefined {
    return this.prepared.get(service)?.container;
  }

  async start(): Promise<void> {
    if (!this.opts.config.recovery.enabled) return;
    // A copy got ready for a recovery by an earlier run of this depot, never handed to a pilot: gone.
    for (const service of this.opts.kits.services()) {
      if (this.opts.supervisor.pilotFor(service)) continue;
      for (const c of this.opts.containers.list().filter((x) => x.service === service)) {
        this.log.warn({ event: 'last-resort-orphan', service, container: c.id }, 'copy of an unfinished recovery removed');
        await this.opts.containers.removeContainer(c.id, { timeoutMs: 30_000 }).catch(() => undefined);
      }
    }
    this.timer = setInterval(() => this.check(), this.opts.config.recovery.checkMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    for (const service of [...this.prepared.keys()]) await this.discard(service, 'depot stopping');
  }

  /** The decision for `service` as this depot sees it now (also for tests and the log). */
  decide(service: string): LastResortDecision | undefined {
    const o = this.opts;
    const kit = o.kits.kit(service);
    if (!kit) return undefined;
    const now = this.now();
    const view = o.members.view();
    const copies: LostCopy[] = [];
    const own = this.prepared.get(service)?.container;
    for (const m of view) {
      // A copy got ready for the recovery (here, or by another holder that saw things differently
      // for a moment) is not one of those lost: should two recover, the election picks one.
      const preparing = m.peerId === o.self.peerId ? own : m.heartbeat?.recoveryKits?.find((k) => k.service === service)?.preparing;
      for (const r of m.heartbeat?.containers ?? []) {
        if (preparing !== undefined && r.id === preparing) continue;
        // A standby whose database never completed a seed holds none of the service's data and
        // does not stand for election (pilot/data-completeness.ts): it is not one of the copies.
        if (r.seeded === false) continue;
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
      const mine = (d.kind === 'recover' && d.peerId === o.self.peerId) || (d.kind === 'wait' && d.prepare?.peerId === o.self.peerId);
      if (!mine && this.prepared.has(service)) {
        this.busy.add(service);
        void this.discard(service, `no longer needed here (${d.kind})`).finally(() => this.busy.delete(service));
        continue;
      }
      if (d.kind === 'wait' && d.prepare?.peerId === o.self.peerId && !this.prepared.has(service) && this.now() - (this.failedAt.get(service) ?? -Infinity) >= RETRY_AFTER_MS) {
        this.log.warn({ event: 'last-resort-prepare', service, reason: d.reason, dbAt: d.prepare.dbAt }, `no copy of ${service} alive: getting a copy ready here in case every copy is lost`);
        this.prepare(service, d.prepare.dbAt);
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
    this.log.warn({ event: 'last-resort-start', service, lostAt: d.lostAt, dbAt: d.dbAt, fromHost: d.fromHost, withoutData: d.withoutData, prepared: this.prepared.has(service) }, `every copy of ${service} lost: recovering it here (${window})`);
    let p = this.prepared.get(service);
    if (p && p.dbAt !== d.dbAt) {
      await this.discard(service, 'prepared with another database copy');
      p = undefined;
    }
    p ??= this.prepare(service, d.dbAt);
    const ready = await p.ready;
    if (!ready.ok) {
      this.prepared.delete(service);
      throw ready.err;
    }
    const { container, bootMs, loadMs } = ready;
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
    const dbFrom = db ? ` and the database copy taken from ${db.meta.fromHost}` : '';
    const reason = `last-resort recovery: every copy lost (last on ${d.fromHost ?? 'unknown'}); started on ${o.self.name} from the pristine image${dbFrom}; ${window}`;
    this.prepared.delete(service);
    await o.supervisor.assign({ spec, container, view, term, campaign: true, seeded: true, lastResort: { reason, ...(d.fromHost ? { fromHost: d.fromHost } : {}) } });
    const durationMs = Math.round(performance.now() - t0);
    const details = {
      recovered: true,
      host: o.self.name,
      withoutData: d.withoutData,
      lostTo: new Date(d.window.to).toISOString(),
      ...(d.window.from !== undefined ? { lostFrom: new Date(d.window.from).toISOString(), lostS: Number(((d.window.to - d.window.from) / 1000).toFixed(1)) } : {}),
      bootMs,
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

  /** Start a copy from the image and load the database copy `dbAt` into it (in the background). */
  private prepare(service: string, dbAt: number | undefined): Prepared {
    const o = this.opts;
    const spec = o.kits.kit(service)!.spec;
    const container = `${service}-${randomBytes(3).toString('hex')}`;
    const run = async (): Promise<PreparedResult> => {
      const t0 = performance.now();
      try {
        const db = o.kits.dbCopy(service);
        if (dbAt !== undefined && (!db || db.meta.at !== dbAt)) throw new Error(`the database copy chosen (${new Date(dbAt).toISOString()}) is no longer held here`);
        await o.containers.startContainer({ id: container, service, image: spec.image, spec: spec.container, role: 'standby', term: o.kits.kit(service)!.term });
        const bootMs = Math.round(performance.now() - t0);
        let loadMs = 0;
        if (db && spec.database && dbAt !== undefined) {
          const dbSpec = spec.database;
          const password = dbSpec.passwordFile ? (await readFile(insideDir(join(o.containers.root, container), dbSpec.passwordFile, 'database.passwordFile'), 'utf8')).trim() : '';
          // A VM-packed copy's server runs in its guest, answering some seconds after the guest's agent.
          const reach = ownDbReach(spec.container);
          const host = reach.inGuest ? await guestDbAddress(o.containers, container) : '127.0.0.1';
          this.log.info({ event: 'last-resort-load', service, container, host, inGuest: reach.inGuest, waitMs: reach.readyWaitMs }, `loading the database copy into the new copy's server at ${host}`);
          loadMs = await this.loadWithRetry(db.file, { host, port: dbSpec.port, user: dbSpec.user, password }, reach.readyWaitMs);
        }
        this.log.info({ event: 'last-resort-ready', service, container, bootMs, loadMs, dbAt }, `copy of ${service} ready for a recovery (boot ${bootMs} ms, load ${loadMs} ms)`);
        return { ok: true, container, bootMs, loadMs };
      } catch (err) {
        this.failedAt.set(service, this.now());
        await o.containers.removeContainer(container, { timeoutMs: 30_000 }).catch(() => undefined);
        return { ok: false, err };
      }
    };
    const p: Prepared = { container, dbAt, ready: run() };
    this.prepared.set(service, p);
    return p;
  }

  /** Remove a copy got ready for a recovery that is not happening here. */
  private async discard(service: string, why: string): Promise<void> {
    const p = this.prepared.get(service);
    if (!p) return;
    const r = await p.ready;
    if (this.prepared.get(service) === p) this.prepared.delete(service);
    if (!r.ok) return;
    this.log.warn({ event: 'last-resort-discard', service, container: p.container, why }, `copy of ${service} got ready for a recovery removed: ${why}`);
    await this.opts.containers.removeContainer(p.container, { timeoutMs: 30_000 }).catch((err: unknown) => this.log.error({ event: 'last-resort-discard-failed', container: p.container, err: errorMessage(err) }, 'could not remove the prepared copy'));
  }

  /** The copy's server may still be starting: retry the load for up to waitMs (each try replaces the whole database). */
  private async loadWithRetry(file: string, target: { host: string; port: number; user: string; password: string }, waitMs: number): Promise<number> {
    const { loadDatabaseGz } = await import('./db/db-copy.ts');
    const deadline = performance.now() + waitMs;
    for (let attempt = 1; ; attempt++) {
      try {
        return (await loadDatabaseGz({ file, target, timeoutMs: this.opts.config.recovery.dbCopyTimeoutMs, settings: this.opts.config.dbsync })).durationMs;
      } catch (err) {
        if (performance.now() > deadline || this.stopped) throw err;
        // A guest's MariaDB may take a minute to come up under TCG: not one line per try.
        if (attempt === 1 || attempt % 20 === 0) this.log.warn({ event: 'last-resort-load-retry', attempt, err: errorMessage(err) }, 'database copy load failed; retrying');
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  }
}
