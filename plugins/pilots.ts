import { join } from 'node:path';
import type { TransfersResponse } from '../shared/api/transfers.ts';
import type { DepotComponents, DepotPlugin } from '../depot/components.ts';
import type { ContainerManager } from '../depot/containers/manager.ts';
import type { ImageStore } from '../depot/images/catalog.ts';
import type { Journal } from '../depot/journal/journal.ts';
import { electionConfigFrom, type ElectionConfig } from '../pilot/election/settings.ts';
import { ElectionTransport } from '../pilot/election/transport.ts';
import { Voters } from '../pilot/election/voters.ts';
import { ImageShipping } from '../ship/image-shipping.ts';
import { clusterView } from '../pilot/cluster-view.ts';
import { movementRecorder } from '../pilot/movement-recorder.ts';
import { PilotSupervisor, monotonicNow } from '../pilot/supervisor.ts';
import { StandbyKeeper } from '../pilot/standby-keeper.ts';
import { AdminOperations } from '../pilot/admin-operations.ts';
import { registerPilotControl } from '../pilot/control-methods.ts';
import { rankHosts, type PlacementResult } from '../pilot/placement.ts';
import { candidatesOf, copiesOf } from '../pilot/cluster-view.ts';
import type { Pilot } from '../pilot/pilot.ts';
import { explainPolicy, policyWarnings, quietWindowAt, servicePolicy } from '../pilot/policy.ts';
import type { PolicyResponse } from '../shared/api/policy.ts';
import { handOverPrimaries } from '../pilot/hand-over.ts';
import { DepotLeaseAuthority } from '../pilot/lease-authority.ts';
import { BusyWatch } from '../pilot/busy-watch.ts';
import { parseParams } from '../shared/params.ts';
import { RecoveryKit, RecoveryKits } from '../pilot/recovery-kits.ts';
import { RecoveryKitSender } from '../pilot/recovery-kit-sender.ts';
import { LastResortRunner } from '../pilot/last-resort-runner.ts';
import { ImageRefresh, ImageRefreshRequest, refreshCandidates } from '../pilot/image-refresh.ts';
import type { ImageRefreshStatusResponse } from '../shared/api/image-refresh.ts';
import { registerAdminPost } from '../web/admin-routes.ts';

// The pilots of the copies this depot hosts and this depot's vote in every service's election:
// the voters and the election protocol, the pilot supervisor, standby keeping and image shipping
// on the depot whose pilot is primary, the pilot control methods, and the admin operations
// (bootstrap, switchover, drain, image refresh) with their HTTP endpoints and GET /api/transfers.

/** How far ahead of this host's clock a standby's reported sync time may be (clock skew between hosts). */
const MAX_SYNC_CLOCK_SKEW_MS = 5_000;

export interface PilotsInit {
  store: ImageStore;
  containers: ContainerManager;
  journal: Journal | undefined;
  /** Overrides of the election timing (tests). */
  election?: Partial<ElectionConfig>;
  /** Host keys pinned from heartbeats, for image shipping (plugins/ssh-trust.ts). */
  hostKeys?: { expectedHostKey(peerId: string, name: string): Promise<string> };
}

export type PilotsComponents = Pick<DepotComponents, 'config' | 'logger' | 'clock' | 'self' | 'node' | 'members' | 'gossip' | 'control' | 'routes' | 'heartbeat' | 'reach' | 'serviceAddresses' | 'notices'>;

export interface PilotsPlugin extends DepotPlugin {
  readonly operations: AdminOperations;
  pilots(): Pilot[];
  /** The witness (pilot.witness) answered within the last `withinMs`. */
  witnessAnswered(withinMs: number): boolean;
  placement(service: string): PlacementResult | undefined;
  policyResponse(): PolicyResponse;
}

export function pilotsPlugin(init: PilotsInit): (components: PilotsComponents) => PilotsPlugin {
  return (components) => new Pilots(init, components);
}

class Pilots implements PilotsPlugin {
  readonly name = 'pilots';
  readonly operations: AdminOperations;
  private readonly election: ElectionConfig;
  private readonly voters: Voters;
  private readonly transport: ElectionTransport;
  private readonly shipping: ImageShipping;
  private readonly supervisor: PilotSupervisor;
  private readonly authority: DepotLeaseAuthority;
  private readonly keeper: StandbyKeeper;
  private readonly busyWatch: BusyWatch;
  /** Last-resort recovery: the kits held here, the primary's kit hand-over, the recovery itself. */
  private readonly kits: RecoveryKits;
  private readonly lastResort: LastResortRunner;
  /** A changed image shipped to the depots holding the old version (POST/GET /api/image-refresh). */
  private readonly refresh: ImageRefresh;
  private readonly onHeartbeat = (hb: { peerId: string; incarnation: number; containers: Array<{ id: string; service: string; role: string; term: number; lastSyncAt?: number | undefined }> }) => {
    this.keeper.observeCopies(hb.peerId, hb.containers);
    for (const c of hb.containers) {
      if (c.role === 'primary') this.authority.observePrimary(c.service, hb.peerId, c.term);
      // A sync time is stamped by the primary's clock when the dump was taken: one from the
      // future is a lie (it would make every honest candidate look stale), and is ignored.
      if (c.role === 'standby' && c.lastSyncAt !== undefined && c.lastSyncAt <= Date.now() + MAX_SYNC_CLOCK_SKEW_MS) {
        this.voters.observeSync(c.service, `${hb.peerId}/${c.id}/${hb.incarnation}`, c.lastSyncAt);
      }
    }
  };

  constructor(
    private readonly init: PilotsInit,
    private readonly c: PilotsComponents,
  ) {
    const { config, logger, self, members, control } = c;
    this.election = electionConfigFrom(config.pilot, init.election ?? {}, config.election, config.dbsync);
    this.voters = new Voters({ selfId: self.peerId, dir: join(config.node.dataDir, 'voters'), cfg: this.election, now: monotonicNow, logger });
    this.transport = new ElectionTransport({
      node: c.node,
      voters: this.voters,
      logger,
      // A grant counts from its request's send time, so a late one still extends the lease as
      // long as it arrives within leaseMs − margin; later than that it is worthless.
      timeoutMs: Math.max(200, this.election.leaseMs - this.election.leaseSafetyMarginMs),
      refuse: (peer, kind, reason) => void control.guard.refuse(peer, kind, reason),
      witness: config.pilot.witness,
    });
    this.shipping = new ImageShipping({
      ship: config.ship,
      store: init.store,
      client: () => ({ call: (peer, method, params, opts) => control.call(peer.toString(), method, params, opts) }),
      members: () => members.view(),
      ...(init.hostKeys ? { hostKeys: init.hostKeys } : {}),
      logger,
      clock: c.clock,
    });
    const record = movementRecorder({ self, gossip: c.gossip, journal: init.journal, logger });
    const keeper = (this.keeper = new StandbyKeeper({ self, members, control, pilot: config.pilot, policy: config.policy, shipping: this.shipping, record, logger }));
    this.kits = new RecoveryKits({ dir: join(config.node.dataDir, 'recovery'), self, members, imageFilesDir: (image) => init.store.imageFilesDir(image), config, logger });
    const kitSender = new RecoveryKitSender({ self, members, control, config, logger });
    this.supervisor = new PilotSupervisor({
      dir: join(config.node.dataDir, 'pilots'),
      self,
      gossip: c.gossip,
      config,
      logger,
      election: this.election,
      transport: this.transport,
      containers: init.containers,
      cluster: { ...clusterView(c), votedTerm: (service: string) => this.voters.snapshot().find((v) => v.service === service)?.votedTerm },
      journal: init.journal,
      record,
      keepStandbys: async (p) => {
        await keeper.keep(p);
        kitSender.offer(p);
      },
      trustsCopy: (p, copy) => keeper.trusts(p, copy),
    });
    this.authority = new DepotLeaseAuthority({
      voters: () => this.voters.snapshot(),
      // Only a primary's own term says something about the lease: a standby's may have been
      // raised by a candidacy that lost, which must not make it refuse the primary that won.
      localTerm: (service) => {
        const p = this.supervisor.pilotFor(service);
        return p?.role === 'primary' ? p.term : undefined;
      },
      current: (service) =>
        members
          .view()
          .filter((m) => m.peerId !== self.peerId)
          .flatMap((m) => (m.heartbeat?.containers ?? []).filter((c) => c.service === service && c.role === 'primary').map((c) => ({ peer: m.peerId, term: c.term }))),
    });
    // Leave a busy workstation (config busy): a planned switchover off this host when it stays busy.
    this.busyWatch = new BusyWatch({
      config: config.busy,
      quietHours: () => config.policy.quietHours,
      members,
      selfId: self.peerId,
      primaries: () => this.supervisor.pilots().filter((p) => p.role === 'primary').map((p) => p.spec.name),
      records: () => init.journal?.all() ?? [],
      switchover: (args) => this.operations.switchover(args),
      clock: c.clock,
      logger,
    });
    this.lastResort = new LastResortRunner({ self, members, notices: c.notices, kits: this.kits, containers: init.containers, supervisor: this.supervisor, config, logger });
    this.operations = new AdminOperations({ self, members, control, store: init.store, containers: init.containers, supervisor: this.supervisor, logger, group: { voters: this.election.voters, preferred: this.election.preferredVoters } });
    this.refresh = new ImageRefresh({
      self,
      candidates: () => refreshCandidates(members.view()),
      pilotFor: (service) => this.supervisor.pilotFor(service),
      runningImages: (service) => copiesOf(members, service).map((c) => c.report.image).filter((i) => i !== ''),
      store: init.store,
      ship: (peerId, imageId) => this.shipping.ensureImage(peerId, imageId),
      logger,
    });
  }

  witnessAnswered(withinMs: number): boolean {
    const at = this.transport.witnessHeardAt;
    return at !== undefined && performance.now() - at <= withinMs;
  }

  pilots(): Pilot[] {
    return this.supervisor.pilots();
  }

  placement(service: string): PlacementResult | undefined {
    const spec = this.supervisor.pilotFor(service)?.spec;
    const copies = copiesOf(this.c.members, service);
    const image = spec?.image ?? copies[0]?.report.image;
    const policy = servicePolicy(this.c.config.policy, service);
    const groups = policy.groups ?? {};
    const primary = copies.find((c) => c.depotState === 'alive' && c.report.role === 'primary');
    const primaryGroup = primary ? groups[primary.host] : undefined;
    const standbyGroups = copies.filter((c) => c.report.role === 'standby').map((c) => groups[c.host]).filter((g): g is string => g !== undefined && g !== primaryGroup);
    return rankHosts(
      candidatesOf(this.c.members),
      { service, memBytes: spec?.memoryBytes ?? 0, diskBytes: spec?.diskBytes ?? 0, ...(image ? { image } : {}), ...(primaryGroup ? { primaryGroup } : {}), standbyGroups },
      Date.now(),
      { policy },
    );
  }

  /** GET /api/policy: the policy this depot applies (it decides when its pilot is primary). */
  policyResponse(): PolicyResponse {
    const cfg = this.c.config;
    const now = Date.now();
    const quiet = quietWindowAt(cfg.policy, now);
    const preferredVoters = (cfg as { election?: { preferredVoters?: string[] } }).election?.preferredVoters ?? [];
    return {
      depot: this.c.self.name,
      policy: cfg.policy,
      quietNow: quiet?.text ?? null,
      preferredVoters,
      explained: explainPolicy({ policy: cfg.policy, election: { preferredVoters } }, now),
      warnings: policyWarnings(cfg),
    };
  }

  async start(): Promise<void> {
    const c = this.c;
    // The address of every service with a copy here: it may come and go with the primary role.
    c.serviceAddresses.provide(() => this.supervisor.pilots().map((p) => p.spec.address.split('/')[0]!));
    await this.voters.start();
    await this.transport.start();
    // Heartbeats heard before this start (the one asked for on connecting) count as well.
    c.control.guard.setAuthority(this.authority);
    registerPilotControl(c.control, { supervisor: this.supervisor, containers: this.init.containers, selfName: c.self.name, guard: c.control.guard });
    if (c.routes) {
      c.routes.route('GET', '/api/transfers', (): TransfersResponse => ({ transfers: this.shipping.transfers() }));
      c.routes.route('GET', '/api/policy', (): PolicyResponse => this.policyResponse());
      this.operations.registerRoutes(c.routes, { token: c.config.http.adminToken, host: c.config.http.adminHost });
      registerAdminPost(c.routes, { admin: { token: c.config.http.adminToken, host: c.config.http.adminHost }, logger: c.logger }, '/api/image-refresh', ImageRefreshRequest, (req) => this.refresh.refresh(req), 'image-refresh');
      c.routes.route('GET', '/api/image-refresh', (): ImageRefreshStatusResponse => ({ refreshes: this.refresh.status() }));
    }
    c.members.events.on('heartbeat', this.onHeartbeat);
    await this.supervisor.start();
    this.busyWatch.start();
    await this.startRecovery();
  }

  /** Recovery kits (served to the lease holder only), their heartbeat report, the last-resort checks. */
  private async startRecovery(): Promise<void> {
    const c = this.c;
    await this.kits.start();
    c.control.register('recovery.stage', async (params, caller) => {
      const kit = parseParams('recovery.stage', RecoveryKit, params);
      await c.control.guard.requireHolder(caller, 'recovery.stage', kit.spec.name, { term: kit.term, termRequired: true });
      // A depot running a copy is protected by it; it keeps no kit.
      if (this.supervisor.pilotFor(kit.spec.name)) return { held: false };
      return { held: true, ...(await this.kits.stage(kit)) };
    });
    c.heartbeat.contribute(() => ({ recoveryKits: this.kits.report((service) => this.lastResort.preparing(service)) }));
    await this.lastResort.start();
  }

  async stop(): Promise<void> {
    this.busyWatch.stop();
    // A clean stop is a planned move: primaries here go to a standby first, while this depot
    // still votes, heartbeats and serves control requests.
    await handOverPrimaries({
      primaries: () => this.supervisor.pilots().filter((p) => p.role === 'primary').map((p) => p.spec.name),
      switchover: (service) => this.operations.switchover({ service }),
      copies: (service) => copiesOf(this.c.members, service),
      selfId: this.c.self.peerId,
      timeoutMs: this.c.config.pilot.handOverMs,
      logger: this.c.logger,
    });
    this.c.members.events.off('heartbeat', this.onHeartbeat);
    await this.lastResort.stop();
    await this.kits.stop();
    // Transfers first: a placement waiting on one must not hold the stop up (nor a refresh retry one).
    const refreshStopped = this.refresh.stop();
    await this.shipping.stop().catch(() => undefined);
    await refreshStopped;
    await this.supervisor.stop();
    await this.transport.stop().catch(() => undefined);
    this.c.control.guard.setAuthority(undefined);
  }
}
