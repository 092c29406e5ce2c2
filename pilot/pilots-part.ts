import { randomBytes, randomUUID } from 'node:crypto';
import { mkdir, open, readFile, readdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { peerIdFromString } from '@libp2p/peer-id';
import { z } from 'zod';
import type { Logger } from '../shared/logger.ts';
import { NavigatorError, errorMessage, type ErrorCode } from '../shared/errors.ts';
import { MovementRecord } from '../shared/movement.ts';
import type { Depot, DepotPart } from '../depot/daemon.ts';
import type { ContainersPart } from '../depot/containers-part.ts';
import type { TrackingPart } from '../depot/tracking-part.ts';
import type { ImageStore } from '../depot/images/catalog.ts';
import { publishMovement } from '../depot/journal-sync.ts';
import { registerAdminPost } from '../web/tracking.ts';
import { electionConfigFrom, initialView, type ElectionConfig, type MemberObservation } from './election.ts';
import { ElectionTransport } from './election-transport.ts';
import { Voters } from './voters.ts';
import { Pilot, type ClusterView, type CopyView, type MovementInput } from './pilot.ts';
import { DbLink } from './db-link.ts';
import { hostAddressOf } from '../depot/host-address.ts';
import { rankHosts, type PlacementCandidate, type PlacementResult } from './placement.ts';
import { PilotAssignment, ServiceSpec, type ServiceSpecInput } from './service-spec.ts';
import { ImageShipping } from '../ship/image-shipping.ts';
import type { PrestageCandidate } from '../ship/prestage-plan.ts';
import type { TransfersResponse } from '../shared/api/transfers.ts';

// The pilots of the copies this depot hosts, and this depot's vote in every service's election,
// as a depot part. It supervises the pilots (a pilot that fails to start is retried with
// backoff), serves the control methods other depots use to hand it a copy (`pilot.assign`) or
// move the primary (`pilot.campaign`, `pilot.resign`), runs bootstrap, and — on the depot whose
// pilot is primary — keeps the configured number of standbys placed, shipping the image to a
// host that lacks it, and once they are in place pre-stages the image on the next likely hosts.

/** performance.now() based: the election must never see wall-clock jumps. */
const monotonicNow = (): number => performance.timeOrigin + performance.now();

export const BootstrapRequest = z
  .object({
    service: ServiceSpec.shape.name,
    imagePath: z.string().min(1).max(4096).describe('Folder of the image on this depot host'),
    container: ServiceSpec.shape.container,
    address: ServiceSpec.shape.address,
    iface: ServiceSpec.shape.iface,
    port: ServiceSpec.shape.port,
    standbys: z.number().int().min(0).max(8).default(1),
    memoryBytes: z.number().nonnegative().default(0),
    diskBytes: z.number().nonnegative().default(0),
    database: ServiceSpec.shape.database,
  })
  .strict();
export type BootstrapRequest = z.input<typeof BootstrapRequest>;

const ServiceParams = z.object({ service: ServiceSpec.shape.name }).strict();
const RetireParams = z.object({ container: z.string().min(1).max(64) }).strict();

export interface PilotsPartOptions {
  containers: () => ContainersPart;
  tracking: () => TrackingPart | undefined;
  store: ImageStore;
  /** Overrides of the election timing (tests). */
  election?: Partial<ElectionConfig>;
}

export interface PilotsPart extends DepotPart {
  bootstrap(req: BootstrapRequest): Promise<{ image: string; container: string }>;
  switchover(args: { service: string; to?: string | undefined }): Promise<{ from: string; to: string }>;
  drain(args: { host: string }): Promise<{ moved: string[] }>;
  pilots(): Pilot[];
  placement(service: string): PlacementResult | undefined;
}

export function pilotsPart(opts: PilotsPartOptions): (depot: Depot) => PilotsPart {
  return (depot) => new PilotsPartImpl(depot, opts);
}

const RESTART_BACKOFF_MS = [1000, 2000, 5000, 10_000, 30_000];
/** How long a just-placed standby counts before its heartbeat shows it. */
const PLACED_GRACE_MS = 10_000;

class PilotsPartImpl implements PilotsPart {
  readonly name = 'pilots';
  private readonly log: Logger;
  private readonly cfg: ElectionConfig;
  private voters!: Voters;
  private transport!: ElectionTransport;
  private readonly running = new Map<string, Pilot>();
  private readonly restarts = new Map<string, number>();
  private readonly placing = new Map<string, Promise<void>>();
  private readonly failedHosts = new Map<string, number>();
  /** Standbys placed lately, counted until their depot's heartbeat reports them (it lags). */
  private readonly recentlyPlaced = new Map<string, { service: string; peerId: string; container: string; at: number }>();
  private stopped = false;
  private readonly dir: string;
  private shipping: ImageShipping | undefined;
  private readonly onHeartbeat = (hb: { peerId: string; incarnation: number; containers: Array<{ id: string; service: string; role: string; lastSyncAt?: number | undefined }> }) => {
    for (const c of hb.containers) {
      if (c.role === 'standby' && c.lastSyncAt !== undefined) this.voters.observeSync(c.service, `${hb.peerId}/${c.id}/${hb.incarnation}`, c.lastSyncAt);
    }
  };

  constructor(
    private readonly depot: Depot,
    private readonly opts: PilotsPartOptions,
  ) {
    this.log = depot.log.child({ component: 'pilots' });
    this.cfg = electionConfigFrom(depot.config.pilot, opts.election ?? {});
    this.dir = join(depot.config.node.dataDir, 'pilots');
  }

  pilots(): Pilot[] {
    return [...this.running.values()];
  }

  async start(): Promise<void> {
    const depot = this.depot;
    await mkdir(this.dir, { recursive: true });
    this.voters = new Voters({ selfId: depot.peerId, dir: join(depot.config.node.dataDir, 'voters'), cfg: this.cfg, now: monotonicNow, logger: depot.log });
    await this.voters.start();
    this.transport = new ElectionTransport({
      node: depot.node,
      voters: this.voters,
      logger: depot.log,
      // A grant counts from its request's send time, so a late one still extends the lease as
      // long as it arrives within leaseMs − margin; later than that it is worthless.
      timeoutMs: Math.max(200, this.cfg.leaseMs - this.cfg.leaseSafetyMarginMs),
    });
    await this.transport.start();
    this.shipping = new ImageShipping({
      ship: depot.config.ship,
      store: this.opts.store,
      client: () => this.opts.containers().client,
      members: () => depot.membership.view(),
      logger: depot.log,
    });
    const shipping = this.shipping;
    depot.http?.route('GET', '/api/transfers', (): TransfersResponse => ({ transfers: shipping.transfers() }));
    const control = this.opts.containers().control;
    control.register('pilot.assign', async (params) => {
      const a = PilotAssignment.parse(params);
      await this.assign(a);
      return { ok: true };
    });
    control.register('pilot.retire', async (params) => {
      const { container } = parseParams('pilot.retire', RetireParams, params);
      const pilot = this.running.get(container);
      if (pilot?.role === 'primary') throw new NavigatorError('CONFLICT', `copy ${container} is the primary; it cannot be retired`);
      this.running.delete(container);
      await pilot?.stop();
      await rm(join(this.dir, `${container}.json`), { force: true });
      await this.opts.containers().containers.removeContainer(container, { timeoutMs: 30_000 });
      return { ok: true };
    });
    control.register('pilot.campaign', async (params) => {
      const { service } = parseParams('pilot.campaign', ServiceParams, params);
      const pilot = this.pilotFor(service);
      if (!pilot) throw new NavigatorError('NOT_FOUND', `no copy of ${service} on ${depot.config.node.name}`);
      pilot.campaign('switchover');
      return { ok: true };
    });
    control.register('pilot.resign', async (params) => {
      const { service } = parseParams('pilot.resign', ServiceParams, params);
      const pilot = this.pilotFor(service);
      if (!pilot) throw new NavigatorError('NOT_FOUND', `no copy of ${service} on ${depot.config.node.name}`);
      await pilot.resign('switchover requested');
      return { ok: true };
    });
    depot.events.on('heartbeat', this.onHeartbeat);
    // Same admin host + token rules as switchover and drain.
    if (depot.http) {
      registerAdminPost(
        depot.http,
        { admin: { token: depot.config.http.adminToken, host: depot.config.http.adminHost }, logger: depot.log },
        '/api/bootstrap',
        BootstrapRequest,
        (req) => this.bootstrap(req),
        'bootstrap',
      );
    }
    // Copies this depot hosted before a restart: their pilots start again, as standbys.
    for (const file of await readdir(this.dir)) {
      if (!file.endsWith('.json')) continue;
      const parsed = PilotAssignment.safeParse(safeJson(await readFile(join(this.dir, file), 'utf8').catch(() => '')));
      if (!parsed.success) {
        this.log.error({ event: 'assignment-unreadable', file }, 'pilot assignment unreadable; skipped');
        continue;
      }
      const a = { ...parsed.data, campaign: false };
      const exists = this.opts.containers().containers.list().some((c) => c.id === a.container);
      if (!exists) {
        this.log.warn({ event: 'assignment-orphan', container: a.container }, 'assignment without its container; removed');
        await rm(join(this.dir, file), { force: true });
        continue;
      }
      this.supervise(a);
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.depot.events.off('heartbeat', this.onHeartbeat);
    // Transfers first: a placement waiting on one must not hold the stop up.
    await this.shipping?.stop().catch(() => undefined);
    await Promise.all([...this.running.values()].map((p) => p.stop().catch(() => undefined)));
    this.running.clear();
    await this.transport?.stop().catch(() => undefined);
  }

  private pilotFor(service: string): Pilot | undefined {
    return [...this.running.values()].find((p) => p.spec.name === service);
  }

  /** Take a copy handed over by a primary (or by bootstrap) and run its pilot. */
  private async assign(a: PilotAssignment): Promise<void> {
    await this.persist(a);
    this.supervise(a);
  }

  private async persist(a: PilotAssignment): Promise<void> {
    const target = join(this.dir, `${a.container}.json`);
    const fh = await open(`${target}.tmp`, 'w', 0o600);
    try {
      await fh.writeFile(JSON.stringify(a));
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(`${target}.tmp`, target);
  }

  /** Start the pilot of a copy; a pilot that fails to start is retried with backoff. */
  private supervise(a: PilotAssignment): void {
    if (this.stopped || this.running.has(a.container)) return;
    const attempt = this.restarts.get(a.container) ?? 0;
    const pilot = new Pilot({
      assignment: a,
      id: `${this.depot.peerId}/${a.container}/${this.depot.incarnation}.${attempt}`,
      transport: this.transport,
      containers: this.opts.containers().containers,
      cluster: this.cluster(),
      cfg: this.cfg,
      probeIntervalMs: this.depot.config.pilot.probeIntervalMs,
      now: monotonicNow,
      logger: this.depot.log,
      record: (m) => this.record(a.spec, m, this.running.get(a.container)?.db),
      persist: (next) => this.persist(next),
      keepStandbys: (p) => this.keepStandbys(p),
      db: a.spec.database
        ? new DbLink({
            db: a.spec.database,
            containerDir: join(this.opts.containers().containers.root, a.container),
            dbsync: this.depot.config.dbsync,
            journal: this.opts.tracking()?.journal,
            publish: (r) => publishMovement(this.depot.node, r),
            logger: this.depot.log,
          })
        : undefined,
    });
    this.running.set(a.container, pilot);
    pilot.start().then(
      () => this.restarts.set(a.container, 0),
      (err: unknown) => {
        this.running.delete(a.container);
        const delay = RESTART_BACKOFF_MS[Math.min(attempt, RESTART_BACKOFF_MS.length - 1)]!;
        this.restarts.set(a.container, attempt + 1);
        this.log.error({ event: 'pilot-crashed', container: a.container, err: errorMessage(err), restartInMs: delay, attempt: attempt + 1 }, 'pilot failed; restarting with backoff');
        void pilot.stop().catch(() => undefined);
        setTimeout(() => this.supervise({ ...a, campaign: false }), delay).unref();
      },
    );
  }

  private cluster(): ClusterView {
    const depot = this.depot;
    return {
      selfId: depot.peerId,
      selfName: depot.config.node.name,
      copies: (service) => copiesOf(depot, service),
      observations: () => {
        // Crash removal needs a majority of the view to judge the depot dead; each depot
        // judges for itself from the same heartbeats and probes, so a dead verdict here
        // stands for all alive voters (view changes stay safe through joint consensus).
        const view = depot.membership.view();
        const alive = view.filter((o) => o.state === 'alive').map((o) => o.peerId);
        return view.map((m): MemberObservation => ({ peer: m.peerId, state: m.state, ...(m.state === 'dead' ? { deadReportedBy: alive } : {}) }));
      },
      ping: async (peerId, timeoutMs) => (await depot.prober.ping(peerId, timeoutMs)) !== undefined,
      beat: () => void depot.heartbeat.beat().catch(() => undefined),
    };
  }

  private async record(spec: ServiceSpec, m: MovementInput, db?: DbLink): Promise<void> {
    const tracking = this.opts.tracking();
    const record = MovementRecord.parse({
      id: randomUUID(),
      time: Date.now(),
      service: spec.name,
      role: m.role,
      host: m.host ?? this.depot.config.node.name,
      address: spec.address,
      fromHost: m.fromHost ?? '',
      event: m.event,
      failover: m.failover,
      reason: m.reason,
      term: m.term,
      timings: m.timings,
    });
    try {
      // The primary's recorder also writes navigator_movements in the service's database.
      if (db?.movements) {
        await db.movements.record(record);
        return;
      }
      if (tracking) await tracking.journal.append(record);
      await publishMovement(this.depot.node, record);
    } catch (err) {
      this.log.error({ event: 'movement-not-recorded', err: errorMessage(err), movement: record.event }, 'movement record failed');
    }
  }

  placement(service: string): PlacementResult | undefined {
    const spec = this.pilotFor(service)?.spec;
    const copies = copiesOf(this.depot, service);
    const image = spec?.image ?? copies[0]?.report.image;
    return rankHosts(candidatesOf(this.depot), { service, memBytes: spec?.memoryBytes ?? 0, diskBytes: spec?.diskBytes ?? 0, ...(image ? { image } : {}) }, Date.now());
  }

  /** Primary only: place new standbys until the service has its N, one host at a time. */
  private async keepStandbys(pilot: Pilot): Promise<void> {
    const spec = pilot.spec;
    if (pilot.role !== 'primary' || this.placing.has(spec.name)) return;
    const copies = copiesOf(this.depot, spec.name);
    const healthy = copies.filter(
      (c) => c.depotState === 'alive' && c.report.role === 'standby' && (c.report.state === 'running' || c.report.state === 'starting'),
    );
    const now0 = Date.now();
    let pending = 0;
    for (const [key, r] of this.recentlyPlaced) {
      const seen = copies.some((c) => c.peerId === r.peerId && c.report.id === r.container);
      if (seen || now0 - r.at > PLACED_GRACE_MS) this.recentlyPlaced.delete(key);
      else if (r.service === spec.name) pending++;
    }
    if (healthy.length + pending > spec.standbys && pending === 0) {
      // More standbys than asked for (a rebooted host brought its copy back): retire the one
      // with the oldest DB sync, so the freshest copies stay.
      const extra = healthy.filter((c) => c.report.state === 'running').sort((a, b) => (a.report.lastSyncAt ?? 0) - (b.report.lastSyncAt ?? 0))[0];
      if (extra) {
        const job = this.retire(pilot, extra).finally(() => this.placing.delete(spec.name));
        this.placing.set(spec.name, job);
      }
      return;
    }
    if (healthy.length + pending >= spec.standbys) {
      // Protected: use the quiet time to put the image where the next standby will likely go.
      this.prestage(spec);
      return;
    }
    const now = Date.now();
    const result = rankHosts(candidatesOf(this.depot), { service: spec.name, memBytes: spec.memoryBytes, diskBytes: spec.diskBytes, image: spec.image }, now);
    const retryMs = this.depot.config.pilot.placementRetryMs;
    const target = result.ranking.find((r) => r.peerId && now - (this.failedHosts.get(r.peerId) ?? -Infinity) > retryMs);
    if (!target?.peerId) return;
    const lost = copiesOf(this.depot, spec.name).some((c) => c.depotState !== 'alive' && c.report.role === 'standby');
    const job = this.createStandby(pilot, target.peerId, target.name, lost, result)
      .catch((err: unknown) => {
        this.failedHosts.set(target.peerId!, Date.now());
        this.log.error(
          { event: 'standby-failed', service: spec.name, host: target.name, err: errorMessage(err), code: (err as NavigatorError).code, retryInMs: retryMs },
          `could not place a standby on ${target.name}: ${errorMessage(err)}`,
        );
      })
      .finally(() => this.placing.delete(spec.name));
    this.placing.set(spec.name, job);
  }

  /** Pre-staging round: the top K of the placement ranking (hosts without a copy) keep the image. */
  private prestage(spec: ServiceSpec): void {
    this.shipping?.prestage(spec.image, () => {
      const candidates = candidatesOf(this.depot);
      const ranking = rankHosts(candidates, { service: spec.name, memBytes: spec.memoryBytes, diskBytes: spec.diskBytes, image: spec.image }, Date.now());
      const byPeer = new Map(candidates.map((c) => [c.peerId, c]));
      const ranked: PrestageCandidate[] = ranking.ranking
        .filter((r) => r.peerId && r.peerId !== this.depot.peerId)
        .map((r) => ({ host: r.peerId!, alive: byPeer.get(r.peerId)?.state === 'alive', images: byPeer.get(r.peerId)?.images ?? [] }));
      // Depots receiving this image from another sender (an earlier primary) are left to it.
      const busy = this.depot.membership
        .view()
        .filter((m) => m.heartbeat?.staging.some((s) => s.image === spec.image))
        .map((m) => m.peerId);
      return { ranked, busy };
    });
  }

  /** A control call to a depot; this depot's own methods are dispatched in process (libp2p cannot dial itself). */
  private async call<T>(peerId: string, method: string, params: unknown, timeoutMs: number): Promise<T> {
    if (peerId === this.depot.peerId) {
      const res = await this.opts.containers().control.dispatch({ id: `local-${method}`, method, params });
      if (res.ok) return res.result as T;
      throw new NavigatorError(res.error.code as ErrorCode, res.error.message);
    }
    return this.opts.containers().client.call<T>(peerIdFromString(peerId), method, params, { timeoutMs });
  }

  /** Remove one surplus standby copy: its pilot stops, its container stops and goes. */
  private async retire(pilot: Pilot, copy: CopyView): Promise<void> {
    try {
      await this.call(copy.peerId, 'pilot.retire', { container: copy.report.id }, 60_000);
      this.log.info({ event: 'standby-retired', service: pilot.spec.name, host: copy.host, container: copy.report.id }, `surplus standby on ${copy.host} retired`);
      await this.record(pilot.spec, { event: 'drained', role: 'standby', host: copy.host, failover: false, reason: `surplus standby on ${copy.host} removed (${pilot.spec.standbys} wanted)`, term: pilot.term, timings: {} });
    } catch (err) {
      this.log.warn({ event: 'retire-failed', host: copy.host, err: errorMessage(err) }, `could not retire the standby on ${copy.host}`);
    }
  }

  private async createStandby(pilot: Pilot, peerId: string, host: string, replacing: boolean, ranking: PlacementResult): Promise<void> {
    const spec = pilot.spec;
    const t0 = Date.now();
    const client = this.opts.containers().client;
    const peer = peerIdFromString(peerId);
    this.log.info(
      { event: 'placing-standby', service: spec.name, host, ranking: ranking.ranking.slice(0, 3).map((r) => ({ host: r.name, score: Number(r.total.toFixed(3)) })) },
      `placing a standby on ${host}`,
    );
    const status = await client.call<{ state?: string }>(peer, 'image.status', { image: spec.image }, { timeoutMs: 10_000 });
    let shipped = '';
    if (status.state !== 'ready') {
      // Not pre-staged there: ship it now. The target verifies every block before the image
      // exists in its store, so a failed transfer leaves nothing a container could start from.
      if (!this.shipping) throw new NavigatorError('INTERNAL', 'image shipping not started');
      const r = await this.shipping.ensureImage(peerId, spec.image);
      shipped = `; image shipped (${r.kind}, ${r.bytesSent} bytes in ${r.durationMs} ms)`;
    }
    const ship = Date.now() - t0;
    const container = `${spec.name}-${randomBytes(3).toString('hex')}`;
    const b0 = Date.now();
    await client.call(peer, 'container.start', { id: container, service: spec.name, image: spec.image, spec: spec.container, role: 'standby', term: pilot.term }, { timeoutMs: 120_000 });
    const assignment: PilotAssignment = { spec, container, view: pilot.view, term: pilot.term, campaign: false };
    await client.call(peer, 'pilot.assign', assignment, { timeoutMs: 10_000 });
    this.recentlyPlaced.set(`${peerId}/${container}`, { service: spec.name, peerId, container, at: Date.now() });
    const boot = Date.now() - b0;
    this.log.info({ event: 'standby-placed', service: spec.name, host, container, shipMs: ship, bootMs: boot, durationMs: Date.now() - t0 }, `standby running on ${host}`);
    await this.record(spec, {
      event: replacing ? 'replaced' : 'placed',
      role: 'standby',
      host,
      failover: false,
      reason: `${replacing ? 'replaces a lost standby' : 'new standby'} on ${host} (placement score ${ranking.ranking.find((r) => r.peerId === peerId)?.total.toFixed(2) ?? '?'})${shipped}`,
      term: pilot.term,
      timings: { ship, boot },
    }).then(() => undefined);
  }

  async bootstrap(input: BootstrapRequest): Promise<{ image: string; container: string }> {
    const req = BootstrapRequest.parse(input);
    if (this.pilotFor(req.service)) throw new NavigatorError('CONFLICT', `service ${req.service} already has a copy on ${this.depot.config.node.name}`);
    if (copiesOf(this.depot, req.service).length > 0) throw new NavigatorError('CONFLICT', `service ${req.service} is already running in this cluster`);
    const t0 = Date.now();
    const image = await this.opts.store.import(req.imagePath, req.service);
    const spec: ServiceSpecInput = {
      name: req.service,
      image,
      container: req.container,
      address: req.address,
      iface: req.iface,
      port: req.port,
      standbys: req.standbys,
      memoryBytes: req.memoryBytes,
      diskBytes: req.diskBytes,
      ...(req.database ? { database: req.database } : {}),
    };
    const parsed = ServiceSpec.parse(spec);
    const container = `${req.service}-${randomBytes(3).toString('hex')}`;
    await this.opts.containers().containers.startContainer({ id: container, service: req.service, image, spec: parsed.container, role: 'standby', term: 0 });
    const voters = this.depot.membership
      .view()
      .filter((m) => m.state === 'alive')
      .map((m) => m.peerId);
    const assignment: PilotAssignment = { spec: parsed, container, view: initialView(voters.length ? voters : [this.depot.peerId]), term: 0, campaign: true };
    await this.assign(assignment);
    this.log.info({ event: 'bootstrap', service: req.service, image, container, voters: voters.length, durationMs: Date.now() - t0 }, `bootstrapped ${req.service}`);
    return { image, container };
  }

  /** Planned move: the target standby campaigns once the primary has resigned. */
  async switchover(args: { service: string; to?: string | undefined }): Promise<{ from: string; to: string }> {
    const copies = copiesOf(this.depot, args.service).filter((c) => c.depotState === 'alive');
    const primary = copies.find((c) => c.report.role === 'primary');
    if (!primary) throw new NavigatorError('NOT_FOUND', `service ${args.service} has no primary now`);
    const standbys = copies.filter((c) => c.report.role === 'standby' && c.report.state === 'running');
    const target = args.to ? standbys.find((c) => c.host === args.to || c.peerId === args.to) : standbys.sort((a, b) => (b.report.lastSyncAt ?? 0) - (a.report.lastSyncAt ?? 0))[0];
    if (!target) throw new NavigatorError('NOT_FOUND', args.to ? `no running standby of ${args.service} on ${args.to}` : `service ${args.service} has no running standby`);
    // The primary stops writes, brings the standbys up to date and resigns; then the target stands.
    await this.call(primary.peerId, 'pilot.resign', { service: args.service }, 120_000);
    await this.call(target.peerId, 'pilot.campaign', { service: args.service }, 10_000);
    this.log.info({ event: 'switchover', service: args.service, from: primary.host, to: target.host }, `switchover ${primary.host} -> ${target.host}`);
    return { from: primary.host, to: target.host };
  }

  /** Move every primary off `host` (its standbys are replaced once it leaves). */
  async drain(args: { host: string }): Promise<{ moved: string[] }> {
    const moved: string[] = [];
    const services = new Set<string>();
    for (const m of this.depot.membership.view()) {
      for (const c of m.heartbeat?.containers ?? []) if (m.name === args.host && c.role === 'primary') services.add(c.service);
    }
    for (const service of services) {
      await this.switchover({ service });
      moved.push(service);
    }
    this.log.info({ event: 'drain', host: args.host, moved }, `drained ${args.host}`);
    return { moved };
  }
}

function copiesOf(depot: Depot, service: string): CopyView[] {
  const out: CopyView[] = [];
  for (const m of depot.membership.view()) {
    for (const report of m.heartbeat?.containers ?? []) {
      if (report.service === service) {
        out.push({ peerId: m.peerId, host: m.name, depotState: m.state, incarnation: m.incarnation, address: m.heartbeat ? hostAddressOf(m.heartbeat) : undefined, report });
      }
    }
  }
  return out;
}

function candidatesOf(depot: Depot): PlacementCandidate[] {
  return depot.membership
    .view()
    .filter((m) => m.heartbeat)
    .map((m) => {
      const hb = m.heartbeat!;
      return {
        name: m.name,
        peerId: m.peerId,
        state: m.state,
        uptimeS: hb.uptimeS,
        load: hb.load,
        cpus: hb.cpus,
        memFreeBytes: hb.memFreeBytes,
        memTotalBytes: hb.memTotalBytes,
        diskFreeBytes: hb.diskFreeBytes,
        images: hb.images,
        copies: hb.containers.map((c) => c.service),
      };
    });
}

function parseParams<T>(method: string, schema: z.ZodType<T>, params: unknown): T {
  const r = schema.safeParse(params);
  if (r.success) return r.data;
  throw new NavigatorError('BAD_REQUEST', `${method}: ${z.prettifyError(r.error)}`);
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

