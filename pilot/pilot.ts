import type { Logger } from '../shared/logger.ts';
import type { Config } from '../shared/config.ts';
import { errorMessage } from '../shared/errors.ts';
import type { ContainerReport, ElectionView, LeaseAck, VoteReply } from '../shared/wire.ts';
import type { MovementEvent } from '../shared/movement.ts';
import type { MemberState } from '../shared/member-state.ts';
import type { ContainerManager } from '../depot/containers/manager.ts';
import { tcpOpen } from '../shared/tcp-probe.ts';
import type { MemberObservation } from './election/views.ts';
import { createPilot, leaseValid, nextWakeAt, pilotCampaign, pilotLearnView, pilotObserveMembership, pilotObserveTerm, pilotProbe, pilotReceive, pilotResign, pilotSetSyncTime, pilotTick, type PilotDecision, type PilotState, type PilotStep } from './election/pilot-role.ts';
import { renewIntervalMs, type ElectionConfig } from './election/settings.ts';
import type { ElectionTransport } from './election/transport.ts';
import { ServiceAddress } from './address.ts';
import { GuestServiceAddress } from './guest-address.ts';
import { dbAddressOf, guestSocketsOf } from './guest-mode.ts';
import { qemuUnfenceSteps, unfenceGuest } from './guest-unfence.ts';
import { FenceGuard } from './fence-guard.ts';
import { logLeaseLapsed, logRenewalReply } from './lease-log.ts';
import { PRIMARY_PIDS_FILE } from '../depot/containers/drivers/process.ts';
import { join } from 'node:path';
import type { PilotAssignment, ServiceSpec } from './service-spec.ts';
import type { DbLink } from './db/db-link.ts';
import { campaignWithheld, seededAfterReading } from './data-completeness.ts';
import { restartInPlace } from './restart-in-place.ts';
import { mayCampaign, newCopyWatch, takeoverRecord, watchCampaign, watchOwnCopy, watchPrimarySeen, watchResigned, watchServiceProbe, watchSwitchoverExpected, type CopyWatch } from './copy-watch.ts';

// The role agent of one copy of a service, running inside the depot that hosts the copy. The
// decisions (campaign, lease, fence, restart in place) come from the pure election module; this
// class feeds it time, probe results, replies and membership news, and carries out what it
// decides: the address move (with the fence guard armed first), the container's role, the
// movement records. Every step is logged with its duration.

/** A copy of the service as seen in some depot's heartbeat. */
export interface CopyView {
  peerId: string;
  host: string;
  depotState: MemberState;
  incarnation: number;
  /** Address others reach the copy's host at (for the database sync). */
  address: string | undefined;
  report: ContainerReport;
}

/** What the pilot needs to know about the cluster (the depot provides it). */
export interface ClusterView {
  selfId: string;
  selfName: string;
  /** Every copy of `service` reported in heartbeats (this depot's included). */
  copies(service: string): CopyView[];
  /** Membership observations for the primary's changes of the voter group of `service`. */
  observations(service: string): MemberObservation[];
  /** Is the depot `peerId` reachable right now (libp2p ping within timeoutMs)? */
  ping(peerId: string, timeoutMs: number): Promise<boolean>;
  /** Send a heartbeat now so the others learn a role change at once. */
  beat(): void;
  /**
   * Highest term this depot's own voter has granted for `service` (undefined: it holds no state).
   * A term claimed in a heartbeat counts only once this is at least as high: a peer cannot demote
   * a primary, or push a standby's term up, with a forged claim.
   */
  votedTerm?(service: string): number | undefined;
}

export interface MovementInput {
  event: MovementEvent;
  /** Host of the copy after the movement (default: this depot). */
  host?: string;
  role: 'primary' | 'standby';
  fromHost?: string;
  failover: boolean;
  reason: string;
  term: number;
  timings: Partial<Record<'detect' | 'elect' | 'takeover' | 'ship' | 'boot', number>>;
}

/** How long the guard's add may take when it runs `ip addr add` in a VM guest through its agent. */
const GUEST_ADD_TIMEOUT_MS = 30_000;

export interface PilotOptions {
  assignment: PilotAssignment;
  /** Candidate id: unique per pilot instance (peer id / container / incarnation). */
  id: string;
  transport: ElectionTransport;
  containers: ContainerManager;
  cluster: ClusterView;
  cfg: ElectionConfig;
  /** config section pilot: probe interval and timeout, address re-assert, copy restart, own sync reads. */
  timing: Pick<Config['pilot'], 'probeIntervalMs' | 'serviceProbeTimeoutMs' | 'reassertMs' | 'copyRestartMs' | 'ownSyncReadMs'> & Partial<Pick<Config['pilot'], 'handOverMs'>>;
  /** Monotonic local time. */
  now: () => number;
  logger: Logger;
  record: (m: MovementInput) => Promise<void>;
  /** Keep the assignment (view, term) on disk for a restart. */
  persist: (a: PilotAssignment) => Promise<void>;
  /** Primary only: keep N standbys (placement); called from the probe loop. */
  keepStandbys?: (pilot: Pilot) => Promise<void>;
  /** Primary only: is this copy one the primary knows (not merely claimed in a heartbeat)? Default: all. */
  trustsCopy?: (pilot: Pilot, copy: CopyView) => boolean;
  /** The copy's database (sync to standbys, own sync status, movement table), if it has one. */
  db?: DbLink | undefined;
}

export class Pilot {
  private state: PilotState;
  private readonly log: Logger;
  /** On the host, or inside the copy's VM guest (qemu with a network and a guest agent). */
  private readonly address: ServiceAddress | GuestServiceAddress;
  private readonly guard: FenceGuard;
  private wakeTimer: NodeJS.Timeout | undefined;
  private probeTimer: NodeJS.Timeout | undefined;
  private probing = false;
  private running = false;
  /** Serialises side effects (takeover, fence) so they happen in decision order. */
  private effects: Promise<void> = Promise.resolve();
  private lastReassert = 0;
  private stopping = false;
  private lastOwnSync = 0;
  /** What this copy remembers around the election (pilot/copy-watch.ts). */
  private watch: CopyWatch;
  /** The takeover finished: the address is held and the service is ours to probe. */
  private serving = false;
  /** A VM-packed copy (qemu guest on the LAN with an agent): its QEMU sockets; its database is in the guest. */
  private readonly guest: ReturnType<typeof guestSocketsOf>;
  /** The copy's database holds the service's data (pilot/data-completeness.ts); logged once per missing-primary spell when that withholds a campaign. */
  private seeded: boolean;
  private withheldLogged = false;

  constructor(private readonly opts: PilotOptions) {
    const a = opts.assignment;
    this.state = createPilot({ id: opts.id, service: a.spec.name, view: a.view, term: a.term });
    this.log = opts.logger.child({ component: 'pilot', service: a.spec.name, container: a.container });
    this.watch = newCopyWatch({ bootstrapping: a.campaign, lastResort: a.lastResort });
    this.seeded = a.seeded;
    // A VM-packed copy: the address lives in the guest; the guard fences the guest (QMP stop, NIC off).
    const guest = guestSocketsOf(a.spec.container, join(opts.containers.root, a.container));
    this.guest = guest;
    this.guard = new FenceGuard({
      guest,
      address: a.spec.address,
      iface: a.spec.iface,
      logger: this.log,
      // A fence stops what runs only on the primary (process driver: its process groups).
      primaryPgidsFile: a.spec.container.driver === 'process' ? join(opts.containers.root, a.container, PRIMARY_PIDS_FILE) : undefined,
      // systemctl stop signals the depot and the guard together (KillMode=control-group): the
      // depot hands its primary over within pilot.handOverMs and then releases the guard.
      ...(opts.timing.handOverMs !== undefined ? { sigtermGraceMs: opts.timing.handOverMs + 5000 } : {}),
      // The guard's clock ran the lease out before ours did (a starved event loop): stop serving.
      onFenced: () => {
        if (this.state.role === 'primary') this.apply(pilotResign(this.state, this.opts.now(), this.opts.cfg, 'lease-expired'));
      },
    });
    // The guard is the only writer of the address: it adds it only while the lease lies ahead.
    this.address = guest
      ? new GuestServiceAddress({
          address: a.spec.address,
          iface: a.spec.iface,
          logger: this.log,
          run: (cmd, args, o) => opts.containers.exec(a.container, cmd, args, o),
          spawn: (cmd, args) => opts.containers.spawnInGuest(a.container, cmd, args),
          // Through the guest agent: a round trip of its own (seconds under TCG emulation).
          adder: () => this.guard.add(GUEST_ADD_TIMEOUT_MS),
        })
      : new ServiceAddress({ address: a.spec.address, iface: a.spec.iface, logger: this.log, adder: () => this.guard.add() });
  }

  get spec(): ServiceSpec {
    return this.opts.assignment.spec;
  }
  get container(): string {
    return this.opts.assignment.container;
  }
  get role(): PilotState['role'] {
    return this.state.role;
  }
  get term(): number {
    return Math.max(this.state.electionTerm, this.state.term);
  }
  get view(): ElectionView {
    return this.state.view;
  }
  get id(): string {
    return this.opts.id;
  }

  async start(): Promise<void> {
    this.running = true;
    // Whatever this copy was before a restart, it starts as standby: it must win an election
    // to serve again, so make sure no address is left behind from an earlier life. A guest the
    // guard fenced (paused, NIC off: the depot was killed) comes back only once it is clean.
    if (this.guest) await this.unfence('pilot started');
    else await this.address.release().catch((err: unknown) => this.log.warn({ event: 'release-failed', err: errorMessage(err) }, 'could not release address'));
    // A host that rebooted (or a depot restarted after its container died) brings its copy
    // back, as a standby: the service regains protection without anyone stepping in.
    const status = await this.opts.containers.status(this.container).catch(() => undefined);
    if (status && status.state !== 'running' && status.state !== 'starting') {
      const t0 = this.opts.now();
      await this.opts.containers.startContainer({ id: this.container, service: this.spec.name, spec: this.spec.container, role: 'standby', term: this.term });
      this.log.info({ event: 'copy-restarted', previousState: status.state, durationMs: Math.round(this.opts.now() - t0) }, 'copy started again as standby');
    }
    await this.opts.containers.setRole(this.container, 'standby', this.term).catch(() => undefined);
    this.opts.containers.setView(this.container, this.state.view);
    if (this.opts.db) this.opts.containers.setSeeded(this.container, this.seeded);
    this.opts.cluster.beat();
    this.log.info({ event: 'pilot-started', id: this.opts.id, term: this.term, voters: this.state.view.voters.length }, 'pilot started as standby');
    await this.guard.prepare();
    this.probeTimer = setInterval(() => void this.probe(), this.opts.timing.probeIntervalMs);
    if (this.opts.assignment.campaign) this.campaign('bootstrap');
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.running = false;
    clearInterval(this.probeTimer);
    clearTimeout(this.wakeTimer);
    if (this.state.role === 'primary') this.apply(pilotResign(this.state, this.opts.now(), this.opts.cfg, 'resigned'));
    await this.effects;
    await this.guard.release();
    await this.opts.db?.stop();
  }

  get db(): DbLink | undefined {
    return this.opts.db;
  }

  /** Planned hand-over (switchover, drain): stop serving and release the voters at once. */
  async resign(reason: string): Promise<void> {
    this.log.info({ event: 'resign', reason }, 'resigning');
    if (this.state.role === 'primary' && this.opts.db) {
      // No data lost on a planned move: the service's primary-only processes stop first (they
      // store what they acknowledged — zabbix_server flushes its history cache — while the
      // database still takes writes), then writes stop, every standby is brought up to date
      // (dump: a final sync; replicate: the last GTID applied), then go. The probe leaves the
      // stopped service alone meanwhile (not serving). The copy still reports role primary until
      // the fence (it holds the lease until then): a standby that saw "host up, no primary copy"
      // would stand for election on its own and race the switchover's campaign request.
      const t0 = this.opts.now();
      const term = this.state.electionTerm;
      this.serving = false;
      try {
        await this.opts.containers.stopPrimaryProcesses(this.container);
        await this.opts.db.syncAllNow(true);
      } catch (err) {
        await this.opts.db.resumeWrites();
        if (this.state.role === 'primary') {
          await this.opts.containers.setRole(this.container, 'primary', term).catch(() => undefined);
          this.serving = true;
        }
        throw err;
      }
      this.log.info({ event: 'final-sync', durationMs: Math.round(this.opts.now() - t0) }, 'standbys up to date; handing over');
    }
    this.watch = watchResigned(this.watch, this.opts.now(), this.opts.cfg.leaseMs);
    this.apply(pilotResign(this.state, this.opts.now(), this.opts.cfg, 'resigned'));
    await this.effects;
  }

  /** The primary will hand the service to this copy within `withinMs` (a switchover): a campaign of ours until then is that switchover. */
  expectSwitchover(withinMs: number, why?: string): void {
    this.watch = watchSwitchoverExpected(this.watch, this.opts.now(), withinMs, why);
    this.log.info({ event: 'switchover-expected', withinMs, ...(why ? { why } : {}) }, 'a switchover to this copy is coming');
  }

  /** Stand for election now (bootstrap, switchover target); `why`: what a switchover was asked for, for its movement record. */
  campaign(reason: string, why?: string): void {
    this.watch = watchCampaign(this.watch, this.opts.now(), reason, why);
    this.log.info({ event: 'campaign', reason, ...(why ? { why } : {}), term: this.state.term + 1 }, 'standing for election');
    this.apply(pilotCampaign(this.state, this.opts.now(), this.opts.cfg));
  }

  private apply(step: PilotStep): void {
    const before = this.state.view;
    // A lapse is told with the grants it was counted from, which the fence step clears.
    const lapse = step.decisions.find((d) => d.kind === 'fence' && d.reason === 'lease-expired');
    if (lapse) logLeaseLapsed(this.log, { term: this.state.electionTerm, acks: this.state.acks, now: this.opts.now(), voters: this.state.view.voters.length });
    this.state = step.state;
    for (const d of step.decisions) this.execute(d);
    if (this.state.view !== before) this.viewMoved();
    this.schedule();
  }

  /** The voter group changed (made here, or learned): tell the others by heartbeat, keep it for a restart. */
  private viewMoved(): void {
    const view = this.state.view;
    this.opts.containers.setView(this.container, view);
    if (this.state.role !== 'primary') {
      this.log.info({ event: 'view-learned', epoch: view.epoch, voters: view.voters.length, joint: Boolean(view.prev) }, 'newer voter group learned');
      this.persist(view);
    }
    this.opts.cluster.beat();
  }

  private schedule(): void {
    clearTimeout(this.wakeTimer);
    if (!this.running) return;
    const at = nextWakeAt(this.state);
    if (!Number.isFinite(at)) return;
    const delay = Math.max(0, at - this.opts.now());
    this.wakeTimer = setTimeout(() => this.apply(pilotTick(this.state, this.opts.now(), this.opts.cfg)), delay);
  }

  private execute(d: PilotDecision): void {
    switch (d.kind) {
      case 'send': {
        const sentAt = this.opts.now();
        void this.opts.transport.request(d.to, d.message).then((reply) => {
          if (d.message.type === 'lease-renew') this.noteRenewal(d.to, reply, sentAt);
          if (reply && (this.running || this.stopping)) this.apply(pilotReceive(this.state, reply, this.opts.now(), this.opts.cfg));
        });
        break;
      }
      case 'probe-witness':
        // The witness (`navigator witness` at pilot.witness) votes like a depot's voter.
        void this.opts.transport.requestWitness(d.message).then((reply) => {
          if (reply && (this.running || this.stopping)) this.apply(pilotReceive(this.state, reply, this.opts.now(), this.opts.cfg));
        });
        break;
      case 'become-primary':
        this.effect(() => this.takeOver(d.term, d.leaseExpiry));
        break;
      case 'lease-extended':
        this.guard.lease(d.leaseExpiry - this.opts.now());
        break;
      case 'fence':
        this.effect(() => this.fence(d.term, d.reason));
        break;
      case 'restart-service':
        this.effect(() => restartInPlace({ containers: this.opts.containers, container: this.container, spec: this.spec, term: d.term, log: this.log, now: this.opts.now }));
        break;
      case 'view-changed':
        this.log.info(
          {
            event: 'view-changed',
            voters: d.view.voters.length,
            joint: Boolean(d.view.prev),
            committed: d.committed,
            epoch: d.view.epoch,
            ...(d.change ? { change: d.change.kind, peer: d.change.peer, reason: d.change.reason } : {}),
          },
          d.change ? `voter group changing: ${d.change.reason}` : 'voter group change committed',
        );
        this.persist(d.view);
        break;
    }
  }

  private effect(fn: () => Promise<void>): void {
    this.effects = this.effects.then(fn).catch((err: unknown) => this.log.error({ event: 'pilot-effect-failed', err: errorMessage(err) }, 'pilot step failed'));
  }

  private async takeOver(term: number, leaseExpiry: number): Promise<void> {
    const t0 = this.opts.now();
    const won = takeoverRecord(this.watch, t0, this.opts.cluster.selfName);
    // The guard first: from the moment the address is ours, something must be able to drop it.
    await this.guard.arm(leaseExpiry - this.opts.now());
    if (this.state.role !== 'primary' || this.state.electionTerm !== term || !leaseValid(this.state, this.opts.now())) return;
    // Fail closed: without a running guard nothing could drop the address if this process hung.
    if (!this.guard.armed) {
      this.log.error({ event: 'takeover-refused', term, reason: 'fence guard not armed' }, 'fence guard not running: not taking the address; stepping down');
      this.apply(pilotResign(this.state, this.opts.now(), this.opts.cfg, 'resigned'));
      return;
    }
    try {
      await this.address.take();
    } catch (err) {
      // Not serving (e.g. a guest that does not answer its agent): give the term up rather than
      // hold a lease nobody serves under.
      this.log.error({ event: 'takeover-failed', term, err: errorMessage(err) }, 'could not take the service address; stepping down');
      if (this.state.role === 'primary' && this.state.electionTerm === term) this.apply(pilotResign(this.state, this.opts.now(), this.opts.cfg, 'resigned'));
      return;
    }
    this.lastReassert = this.opts.now();
    // The database first (replicate: apply what was received, stop replicating, writable; the
    // term fence raised so no older primary's sync lands), so the service's primary-only
    // processes start on a promoted, writable copy.
    await this.opts.db?.becomePrimary(this.spec.name, term);
    this.noteSeeded(true);
    await this.opts.containers.setRole(this.container, 'primary', term);
    this.serving = true;
    const takeover = Math.round(this.opts.now() - t0);
    this.opts.cluster.beat();
    this.watch = won.watch;
    const { event, failover, fromHost, reason, detect, elect } = won.record;
    this.log.info({ event: 'became-primary', term, detectMs: detect, electMs: elect, takeoverMs: takeover, fromHost }, `primary in term ${term}`);
    await this.opts.record({ event, role: 'primary', ...(fromHost ? { fromHost } : {}), failover, reason, term, timings: { detect, elect, takeover } });
  }

  /** The copy's database was found to hold the service's data, or not (kept for a restart, told in the heartbeat). */
  private noteSeeded(seeded: boolean): void {
    if (seeded === this.seeded) return;
    this.seeded = seeded;
    this.opts.containers.setSeeded(this.container, seeded);
    this.log[seeded ? 'info' : 'warn']({ event: seeded ? 'copy-seeded' : 'copy-unseeded' }, seeded ? "this copy's database holds the service's data" : "this copy's database is being replaced by a seed: it does not stand for election until the seed completes");
    this.persist(this.state.view);
  }

  /** Keep what a restart needs (voter group, term, seeded) in the assignment file; never a campaign again. */
  private persist(view: ElectionView): void {
    void this.opts.persist({ ...this.opts.assignment, view, term: this.term, campaign: false, seeded: this.seeded });
  }

  private noteRenewal(voter: string, reply: LeaseAck | VoteReply | undefined, sentAt: number): void {
    const now = this.opts.now();
    const leaseLeftMs = this.state.role === 'primary' ? Math.round(this.state.leaseExpiry - now) : undefined;
    logRenewalReply(this.log, { voter, reply, rttMs: now - sentAt, slowMs: renewIntervalMs(this.opts.cfg), term: this.state.electionTerm, leaseLeftMs });
  }

  private async fence(term: number, reason: string): Promise<void> {
    const t0 = this.opts.now();
    this.serving = false;
    if (this.address instanceof GuestServiceAddress) {
      // A guest that does not answer its agent (hung, or already paused by the guard) cannot drop
      // the address itself: then the guard fences it from the host (pause, NIC off) instead.
      const dropped = await this.address.release().then(
        () => true,
        (err: unknown) => (this.log.warn({ event: 'guest-release-failed', err: errorMessage(err) }, 'could not drop the address in the guest; fencing the guest'), false),
      );
      if (dropped) await this.guard.release();
      else {
        // false also when the guard had already fenced on its own (lease lapsed) and exited.
        if (!(await this.guard.fenceNow())) this.log.warn({ event: 'guest-fence-unconfirmed' }, 'the fence guard did not confirm a fence now (it may have fenced already)');
        // The fenced guest is unplugged until it is clean (or booted again): then a standby.
        await this.unfence('fenced on demotion', true).catch((err: unknown) => this.log.error({ event: 'guest-unfence-failed', err: errorMessage(err) }, 'fenced guest not brought back; it stays off the LAN'));
      }
    } else {
      await this.address.release();
      await this.guard.release();
    }
    await this.opts.containers.setRole(this.container, 'standby', this.term).catch(() => undefined);
    await this.opts.db?.becomeStandby();
    if (this.running) await this.guard.prepare();
    this.opts.cluster.beat();
    this.log.warn({ event: 'fenced', term, reason, durationMs: Math.round(this.opts.now() - t0) }, `stopped serving (${reason})`);
    // A stop after a hand-over that hit dbsync.catchUpTimeoutMs says so where the movement shows.
    const catchUp = reason === 'resigned' ? this.opts.db?.lastCatchUpFailure : undefined;
    await this.opts.record({
      event: 'demoted',
      role: 'standby',
      failover: false,
      reason: `fenced: ${reason}${catchUp ? ` without a completed hand-over (${catchUp})` : ''}`,
      term,
      timings: { takeover: Math.round(this.opts.now() - t0) },
    });
  }

  /** A guest that may be fenced: resumed without the address, or booted again (pilot/guest-unfence.ts). */
  private async unfence(why: string, suspect = false): Promise<void> {
    const g = this.guest;
    if (!g || !(this.address instanceof GuestServiceAddress)) return;
    const address = this.address;
    const spec = this.spec.container;
    const outcome = await unfenceGuest({
      logger: this.log.child({ why }),
      suspect,
      steps: qemuUnfenceSteps({
        qmpSocket: g.qmpSocket,
        nic: g.nic,
        primaryUnit: spec.driver === 'qemu' ? spec.primaryUnit : undefined,
        exec: (cmd, args, o) => this.opts.containers.exec(this.container, cmd, args, o),
        address,
        replace: async () => {
          // A short power-down (the guest may be hung), then QEMU goes; the disk boots clean.
          await this.opts.containers.stopContainer(this.container, { timeoutMs: 30_000 });
          await this.opts.containers.startContainer({ id: this.container, service: this.spec.name, spec, role: 'standby', term: this.term });
        },
      }),
    });
    // An ex-primary's database takes no writes; the current primary re-points or reseeds it.
    if (outcome.kind === 'clean' && outcome.resumed) await this.opts.db?.becomeStandby();
  }

  /** A term heard in a heartbeat is believed once this depot's voter granted it (or a later one). */
  private termCorroborated(term: number): boolean {
    const voted = this.opts.cluster.votedTerm;
    if (!voted) return true;
    return (voted.call(this.opts.cluster, this.spec.name) ?? -1) >= term;
  }

  /** One round of health probes; feeds the election and, on the primary, keeps the standbys. */
  private async probe(): Promise<void> {
    if (this.probing || !this.running) return;
    this.probing = true;
    try {
      const ip = this.address.ip;
      const copies = this.opts.cluster.copies(this.spec.name);
      const own = copies.find((c) => c.peerId === this.opts.cluster.selfId && c.report.id === this.container);
      if (own?.report.lastSyncAt !== undefined) this.state = pilotSetSyncTime(this.state, own.report.lastSyncAt);
      // The voter group by gossip: a newer view reported by any copy (the primary's first of all).
      for (const c of copies) {
        if (c.report.view && this.state.role !== 'primary') {
          const before = this.state.view;
          this.state = pilotLearnView(this.state, c.report.view);
          if (this.state.view !== before) this.viewMoved();
        }
      }
      // A primary elsewhere with a higher term: we must not serve (demote at once).
      for (const c of copies) {
        if (c.report.role === 'primary' && c.peerId !== this.opts.cluster.selfId && c.depotState === 'alive') {
          this.watch = watchPrimarySeen(this.watch, c.host);
          if (!this.termCorroborated(c.report.term)) continue;
          if (c.report.term > this.state.term || (this.state.role === 'primary' && c.report.term > this.state.electionTerm)) {
            this.apply(pilotObserveTerm(this.state, c.report.term, this.opts.now(), this.opts.cfg));
          }
        }
      }
      if (this.state.role === 'primary') {
        // Until the takeover has taken the address, a failed probe means nothing.
        if (!this.serving) return;
        const serviceOk = await tcpOpen(ip, this.spec.port, this.opts.timing.serviceProbeTimeoutMs);
        if (this.state.role !== 'primary' || !this.serving) return;
        this.apply(pilotProbe(this.state, { serviceOk, hostOk: true }, this.opts.now(), this.opts.cfg));
        if (this.state.role !== 'primary') return;
        // Never touch the address without a valid lease: the guard may just have dropped it.
        if (!leaseValid(this.state, this.opts.now() + this.opts.cfg.fenceLatencyMs)) {
          this.apply(pilotTick(this.state, this.opts.now(), this.opts.cfg));
          return;
        }
        if (this.opts.now() - this.lastReassert > this.opts.timing.reassertMs && this.guard.armed) {
          this.lastReassert = this.opts.now();
          await this.address.reassert().catch((err: unknown) => this.log.warn({ event: 'reassert-failed', err: errorMessage(err) }, 'address re-assert failed'));
        }
        this.apply(pilotObserveMembership(this.state, this.opts.cluster.observations(this.spec.name), this.opts.now(), this.opts.cfg));
        if (this.opts.db) {
          const targets = copies
            .filter((c) => c.peerId !== this.opts.cluster.selfId && c.depotState === 'alive' && c.report.role === 'standby' && c.report.state === 'running' && c.address)
            // The database goes only to copies this primary knows, never to a mere claim.
            .filter((c) => this.opts.trustsCopy?.(this, c) ?? true)
            // A VM-packed copy's database is in its guest: reached at the guest's own address.
            .flatMap((c) => {
              const address = dbAddressOf(c, this.guest !== undefined);
              return address ? [{ key: `${c.peerId}/${c.report.id}`, host: c.host, address }] : [];
            });
          await this.opts.db.setStandbys(targets, own ? dbAddressOf(own, this.guest !== undefined) : undefined, () => this.state.role === 'primary' && leaseValid(this.state, this.opts.now()));
          this.opts.containers.setReplication(this.container, this.opts.db.primaryReport());
        }
        if (this.opts.keepStandbys) await this.opts.keepStandbys(this);
        return;
      }
      // A standby whose own container died brings it back (at most every pilot.copyRestartMs).
      const ownCopy = watchOwnCopy(this.watch, own?.report.state, this.opts.now(), this.opts.timing.copyRestartMs);
      this.watch = ownCopy.watch;
      if (own && ownCopy.restart) {
        this.effect(async () => {
          this.log.warn({ event: 'standby-copy-restart', state: own.report.state }, 'standby copy not running: starting it again');
          await this.opts.containers.stopContainer(this.container, { timeoutMs: 5000 }).catch(() => undefined);
          await this.opts.containers.startContainer({ id: this.container, service: this.spec.name, spec: this.spec.container, role: 'standby', term: this.term });
        });
      }
      // Standby or candidate: is the primary there?
      const roleAtStart = this.state.role;
      const serviceOk = await tcpOpen(ip, this.spec.port, this.opts.timing.serviceProbeTimeoutMs);
      let hostOk = true;
      if (!serviceOk) {
        const primary = copies
          .filter((c) => c.report.role === 'primary' && c.peerId !== this.opts.cluster.selfId && c.depotState === 'alive')
          .sort((a, b) => b.report.term - a.report.term)[0];
        hostOk = primary !== undefined && (await this.opts.cluster.ping(primary.peerId, this.opts.timing.serviceProbeTimeoutMs));
      }
      this.watch = watchServiceProbe(this.watch, serviceOk, this.opts.now());
      // A candidate reads its freshness every probe round: voters compare it with the last
      // primary's renewals (voter-role.ts), so a reading up to ownSyncReadMs old could cost a
      // healthy replica its votes until the renewals age out. So does a standby that finds the
      // primary missing: a seed the primary's death cut off must be seen before it campaigns.
      if (this.opts.db && this.opts.now() - this.lastOwnSync > (this.state.role === 'candidate' || !serviceOk ? 0 : this.opts.timing.ownSyncReadMs)) {
        this.lastOwnSync = this.opts.now();
        // Only the current term's primary may feed this copy (replicate modes).
        const source = copies
          .filter((c) => c.report.role === 'primary' && c.peerId !== this.opts.cluster.selfId && c.depotState === 'alive')
          .sort((a, b) => b.report.term - a.report.term)[0];
        const sync = await this.opts.db.ownSync(Date.now(), source && source.report.term >= this.state.term ? dbAddressOf(source, this.guest !== undefined) : undefined);
        if (sync) {
          this.opts.containers.setSync(this.container, sync.lastSyncAt, sync.syncFailing, sync.repl);
          if (sync.lastSyncAt !== undefined) this.state = pilotSetSyncTime(this.state, sync.lastSyncAt);
        }
        this.noteSeeded(seededAfterReading(this.seeded, sync));
      }
      const before = this.state.role;
      // A standby's view of the primary says nothing about our own service if we won meanwhile.
      if (before !== roleAtStart) return;
      // Just handed over on purpose: let the chosen standby win.
      if (before === 'standby' && !mayCampaign(this.watch, serviceOk, this.opts.now())) return;
      const step = pilotProbe(this.state, { serviceOk, hostOk }, this.opts.now(), this.opts.cfg);
      if (serviceOk) this.withheldLogged = false;
      const withheld = before === 'standby' && step.state.role === 'candidate' ? campaignWithheld({ hasDatabase: this.opts.db !== undefined, seeded: this.seeded }) : undefined;
      if (withheld) {
        if (!this.withheldLogged) this.log.error({ event: 'campaign-withheld', reason: withheld }, `primary missing, but not standing for election: ${withheld}`);
        this.withheldLogged = true;
        return;
      }
      if (before === 'standby' && step.state.role === 'candidate') {
        this.watch = watchCampaign(this.watch, this.opts.now(), undefined);
        this.log.warn({ event: 'primary-missing', serviceOk, hostOk, term: step.state.electionTerm }, 'primary missing: standing for election');
      }
      this.apply(step);
    } catch (err) {
      this.log.error({ event: 'probe-failed', err: errorMessage(err) }, 'probe round failed');
    } finally {
      this.probing = false;
    }
  }
}
