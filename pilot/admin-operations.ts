import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import type { Logger } from '../shared/logger.ts';
import { NavigatorError, errorMessage } from '../shared/errors.ts';
import type { RouteTarget } from '../shared/api/routes.ts';
import { DrainRequest, SwitchoverRequest } from '../shared/api/tracking.ts';
import { registerAdminPost } from '../web/admin-routes.ts';
import type { DepotComponents } from '../depot/components.ts';
import type { ContainerManager } from '../depot/containers/manager.ts';
import type { ImageStore } from '../depot/images/catalog.ts';
import { initialView } from './election/views.ts';
import { RestartHistory, copiesOf, voterObservations } from './cluster-view.ts';
import { initialGroup, type GroupSettings } from './election/voter-group.ts';
import { groupCandidates } from './election/pilot-role.ts';
import { PilotAssignment, ServiceSpec, type ServiceSpecInput } from './service-spec.ts';
import type { PilotSupervisor } from './supervisor.ts';
import type { CopyView } from './pilot.ts';
import { gtidTransactions as gtidCount } from '../web/service-views.ts';

// What an admin asks of the cluster through this depot: bootstrap a service (once), a planned
// switchover of its primary, and draining every primary off a host. Each is a POST behind the
// admin host and token (web/admin-routes.ts) and a CLI command.

/** Longest wait for the primary to resign (writes stop, the standbys catch up or get a final sync). */
const RESIGN_TIMEOUT_MS = 120_000;

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

/**
 * How long a switchover whose campaign request was refused waits for the target to report itself
 * primary in a newer term (it stood on its own): its election (a vote round) and takeover (address,
 * primary-only processes), seconds on a loaded host, and a heartbeat to carry the news.
 */
const SWITCHOVER_WIN_WAIT_MS = 15_000;

export interface AdminOperationsOptions {
  self: DepotComponents['self'];
  members: DepotComponents['members'];
  control: DepotComponents['control'];
  store: ImageStore;
  containers: ContainerManager;
  supervisor: PilotSupervisor;
  logger: Logger;
  /** Voter group size and preferred hosts (config section election). */
  group: GroupSettings;
}

/**
 * The most caught-up standby first: a healthy replica before a broken one, then the newest data
 * (lastSyncAt: the last sync, or the newest primary heartbeat a replica holds), then the most
 * transactions applied (GTID position).
 */
export function byFreshness(a: CopyView, b: CopyView): number {
  const broken = (c: CopyView) => (c.report.replState === 'broken' || c.report.syncFailing ? 1 : 0);
  return broken(a) - broken(b) || (b.report.lastSyncAt ?? 0) - (a.report.lastSyncAt ?? 0) || gtidTransactions(b.report.gtid) - gtidTransactions(a.report.gtid);
}

/** Transactions a GTID position stands for (sum of the sequence numbers over its domains). */
export function gtidTransactions(gtid: string | undefined): number {
  return gtidCount(gtid ?? '');
}

export class AdminOperations {
  private readonly log: Logger;

  constructor(private readonly opts: AdminOperationsOptions) {
    this.log = opts.logger.child({ component: 'pilots' });
  }

  /** POST /api/bootstrap, /api/switchover, /api/drain (admin host and token from config http). */
  registerRoutes(routes: RouteTarget, admin: { token: string; host: string }): void {
    const opts = { admin, logger: this.opts.logger };
    registerAdminPost(routes, opts, '/api/bootstrap', BootstrapRequest, (req) => this.bootstrap(req), 'bootstrap');
    registerAdminPost(routes, opts, '/api/switchover', SwitchoverRequest, (req) => this.switchover(req), 'switchover');
    registerAdminPost(routes, opts, '/api/drain', DrainRequest, (req) => this.drain(req), 'drain');
  }

  /** Register the service, import its image, start the first copy and let it stand for election. */
  async bootstrap(input: BootstrapRequest): Promise<{ image: string; container: string }> {
    const { self, members, supervisor } = this.opts;
    const req = BootstrapRequest.parse(input);
    if (supervisor.pilotFor(req.service)) throw new NavigatorError('CONFLICT', `service ${req.service} already has a copy on ${self.name}`);
    if (copiesOf(members, req.service).length > 0) throw new NavigatorError('CONFLICT', `service ${req.service} is already running in this cluster`);
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
    await this.opts.containers.startContainer({ id: container, service: req.service, image, spec: parsed.container, role: 'standby', term: 0 });
    // The first voter group: the best-ranked alive depots (pilot/election/voter-group.ts).
    const candidates = groupCandidates(voterObservations(members, req.service, new RestartHistory(), Date.now()));
    const voters = initialGroup(candidates, this.opts.group, self.peerId);
    const assignment: PilotAssignment = { spec: parsed, container, view: initialView(voters), term: 0, campaign: true, seeded: true };
    await supervisor.assign(assignment);
    this.log.info({ event: 'bootstrap', service: req.service, image, container, voters: voters.length, durationMs: Date.now() - t0 }, `bootstrapped ${req.service}`);
    return { image, container };
  }

  /** Planned move: the target standby campaigns once the primary has resigned. `why`: for the movement record (a busy host). */
  async switchover(args: { service: string; to?: string | undefined; why?: string | undefined }): Promise<{ from: string; to: string }> {
    const copies = copiesOf(this.opts.members, args.service).filter((c) => c.depotState === 'alive');
    const primary = copies.find((c) => c.report.role === 'primary');
    if (!primary) throw new NavigatorError('NOT_FOUND', `service ${args.service} has no primary now`);
    const running = copies.filter((c) => c.report.role === 'standby' && c.report.state === 'running');
    // A standby whose database is not a complete copy yet cannot take the service (pilot/data-completeness.ts).
    const standbys = running.filter((c) => c.report.seeded !== false);
    const named = (c: (typeof running)[number]) => !args.to || c.host === args.to || c.peerId === args.to;
    const target = args.to ? standbys.find(named) : standbys.sort(byFreshness)[0];
    if (!target) {
      const unseeded = running.find((c) => c.report.seeded === false && named(c));
      if (unseeded) throw new NavigatorError('CONFLICT', `the standby of ${args.service} on ${unseeded.host} is not seeded yet (its database is not a complete copy of the primary's): wait until navigator status shows its sync`);
      throw new NavigatorError('NOT_FOUND', args.to ? `no running standby of ${args.service} on ${args.to}` : `service ${args.service} has no running standby`);
    }
    // Only the primary's own depot may move it (pilot.resign and pilot.campaign are served to the
    // lease holder alone): a switchover asked elsewhere names the host to ask instead.
    const own = this.opts.supervisor.pilotFor(args.service);
    if (primary.peerId !== this.opts.self.peerId || !own) {
      throw new NavigatorError('CONFLICT', `the primary of ${args.service} is on ${primary.host}: run the switchover there (its own admin API); only the primary's depot may move it`);
    }
    const term = own.term;
    const why = args.why ? { why: args.why.slice(0, 512) } : {};
    // The target learns first that the move is coming (it may see the primary go and win before
    // pilot.campaign reaches it: that win is the switchover too). Advice only: the move goes on without it.
    await this.opts.control.call(target.peerId, 'pilot.expect', { service: args.service, term, withinMs: RESIGN_TIMEOUT_MS + 15_000, ...why }, { timeoutMs: 5000 }).catch((err: unknown) => {
      this.log.warn({ event: 'switchover-expect-failed', service: args.service, to: target.host, err: errorMessage(err) }, `could not tell ${target.host} of the switchover: ${errorMessage(err)}`);
    });
    // The primary stops writes, brings the standbys up to date and resigns; then the target stands.
    await this.opts.control.call(primary.peerId, 'pilot.resign', { service: args.service }, { timeoutMs: RESIGN_TIMEOUT_MS }).catch(async (err: unknown) => {
      // No hand-over after all (the standbys did not catch up): the announcement is withdrawn.
      await this.opts.control.call(target.peerId, 'pilot.expect', { service: args.service, term, withinMs: 1 }, { timeoutMs: 5000 }).catch(() => undefined);
      throw err;
    });
    try {
      await this.opts.control.call(target.peerId, 'pilot.campaign', { service: args.service, term, ...why }, { timeoutMs: 10_000 });
    } catch (err) {
      // Refused because the target already won a later term by itself: the move is done.
      if (!(await this.wonBy(args.service, target.peerId, term))) throw err;
      this.log.info({ event: 'switchover-target-won', service: args.service, to: target.host }, `${target.host} won the election before it was asked to stand`);
    }
    this.log.info({ event: 'switchover', service: args.service, from: primary.host, to: target.host, ...(args.why ? { why: args.why } : {}) }, `switchover ${primary.host} -> ${target.host}`);
    return { from: primary.host, to: target.host };
  }

  /** Whether `peer` reports a primary copy of `service` in a term after `term` (within SWITCHOVER_WIN_WAIT_MS: heartbeats lag). */
  private async wonBy(service: string, peer: string, term: number): Promise<boolean> {
    const deadline = performance.now() + SWITCHOVER_WIN_WAIT_MS;
    for (;;) {
      if (copiesOf(this.opts.members, service).some((c) => c.peerId === peer && c.report.role === 'primary' && c.report.term > term)) return true;
      if (performance.now() > deadline) return false;
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Move every primary off `host` (its standbys are replaced once it leaves). */
  async drain(args: { host: string }): Promise<{ moved: string[] }> {
    const moved: string[] = [];
    const services = new Set<string>();
    for (const m of this.opts.members.view()) {
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
