import { mkdir, readFile, readdir, rm } from 'node:fs/promises';
import { writeFileDurable } from '../shared/durable-file.ts';
import { join } from 'node:path';
import type { Logger } from '../shared/logger.ts';
import type { Config } from '../shared/config.ts';
import { errorMessage } from '../shared/errors.ts';
import type { DepotComponents } from '../depot/components.ts';
import type { ContainerManager } from '../depot/containers/manager.ts';
import type { ElectionConfig } from './election/settings.ts';
import type { ElectionTransport } from './election/transport.ts';
import { Pilot, type ClusterView, type CopyView } from './pilot.ts';
import { DbLink } from './db/db-link.ts';
import { GUEST_DB_READY_WAIT_MS, guestDbAddress, guestSocketsOf } from './guest-mode.ts';
import type { MovementJournal } from './db/movements-table.ts';
import { PilotAssignment } from './service-spec.ts';
import { movementPublisher, type RecordMovement } from './movement-recorder.ts';

// Runs the pilot of every copy this depot hosts (Pacemaker's "resource supervision"): starts a
// pilot for each assignment, restarts a pilot that failed with backoff (config
// pilot.supervisorBackoffMs), and keeps each assignment on disk (DATADIR/pilots/<copy>.json) so
// a restarted depot runs its copies' pilots again — as standbys: they must win an election to
// serve.

/** performance.now() based: the election must never see wall-clock jumps. */
export const monotonicNow = (): number => performance.timeOrigin + performance.now();

export interface PilotSupervisorOptions {
  dir: string;
  self: DepotComponents['self'];
  gossip: DepotComponents['gossip'];
  config: Pick<Config, 'pilot' | 'dbsync'>;
  logger: Logger;
  election: ElectionConfig;
  transport: ElectionTransport;
  containers: ContainerManager;
  cluster: ClusterView;
  journal: MovementJournal | undefined;
  record: RecordMovement;
  /** Primary only: keep N standbys; called from the pilot's probe loop. */
  keepStandbys: (pilot: Pilot) => Promise<void>;
  /** Primary only: is a copy one the primary knows (StandbyKeeper.trusts)? */
  trustsCopy?: (pilot: Pilot, copy: CopyView) => boolean;
}

export class PilotSupervisor {
  private readonly log: Logger;
  private readonly running = new Map<string, Pilot>();
  private readonly restarts = new Map<string, number>();
  private stopped = false;

  constructor(private readonly opts: PilotSupervisorOptions) {
    this.log = opts.logger.child({ component: 'pilots' });
  }

  pilots(): Pilot[] {
    return [...this.running.values()];
  }

  pilotFor(service: string): Pilot | undefined {
    return this.pilots().find((p) => p.spec.name === service);
  }

  pilotOf(container: string): Pilot | undefined {
    return this.running.get(container);
  }

  /** Copies this depot hosted before a restart: their pilots start again, as standbys. */
  async start(): Promise<void> {
    await mkdir(this.opts.dir, { recursive: true });
    for (const file of await readdir(this.opts.dir)) {
      if (!file.endsWith('.json')) continue;
      const parsed = PilotAssignment.safeParse(safeJson(await readFile(join(this.opts.dir, file), 'utf8').catch(() => '')));
      if (!parsed.success) {
        this.log.error({ event: 'assignment-unreadable', file }, 'pilot assignment unreadable; skipped');
        continue;
      }
      // A depot restart ends any recovery in progress: the copy stands like any standby again.
      const { lastResort: _recovery, ...kept } = parsed.data;
      const a = { ...kept, campaign: false };
      const exists = this.opts.containers.list().some((c) => c.id === a.container);
      if (!exists) {
        this.log.warn({ event: 'assignment-orphan', container: a.container }, 'assignment without its container; removed');
        await rm(join(this.opts.dir, file), { force: true });
        continue;
      }
      this.supervise(a);
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.pilots().map((p) => p.stop().catch(() => undefined)));
    this.running.clear();
  }

  /** Take a copy handed over by a primary (or by bootstrap) and run its pilot. */
  async assign(a: PilotAssignment): Promise<void> {
    await this.persist(a);
    this.supervise(a);
  }

  /** Stop a copy's pilot and forget its assignment (the copy itself is removed by the caller). */
  async forget(container: string): Promise<void> {
    const pilot = this.running.get(container);
    this.running.delete(container);
    await pilot?.stop();
    await rm(join(this.opts.dir, `${container}.json`), { force: true });
  }

  private async persist(a: PilotAssignment): Promise<void> {
    await writeFileDurable(join(this.opts.dir, `${a.container}.json`), JSON.stringify(a));
  }

  /** Start the pilot of a copy; a pilot that fails to start is retried with backoff. */
  private supervise(a: PilotAssignment): void {
    if (this.stopped || this.running.has(a.container)) return;
    const o = this.opts;
    const attempt = this.restarts.get(a.container) ?? 0;
    const pilot = new Pilot({
      assignment: a,
      id: `${o.self.peerId}/${a.container}/${o.self.incarnation}.${attempt}`,
      transport: o.transport,
      containers: o.containers,
      cluster: o.cluster,
      cfg: o.election,
      timing: o.config.pilot,
      now: monotonicNow,
      logger: o.logger,
      record: (m) => o.record(a.spec, m, this.running.get(a.container)?.db),
      persist: (next) => this.persist(next),
      keepStandbys: (p) => o.keepStandbys(p),
      ...(o.trustsCopy ? { trustsCopy: o.trustsCopy } : {}),
      db: a.spec.database
        ? new DbLink({
            db: a.spec.database,
            copyKey: `${o.self.peerId}/${a.container}`,
            containerDir: join(o.containers.root, a.container),
            dbsync: o.config.dbsync,
            journal: o.journal,
            publish: movementPublisher(o.gossip),
            logger: o.logger,
            // A VM-packed copy: its database runs in the guest, at the guest's own address.
            ...(guestSocketsOf(a.spec.container, join(o.containers.root, a.container)) ? { ownAddress: () => guestDbAddress(o.containers, a.container), ownReadyWaitMs: GUEST_DB_READY_WAIT_MS } : {}),
          })
        : undefined,
    });
    this.running.set(a.container, pilot);
    pilot.start().then(
      () => this.restarts.set(a.container, 0),
      (err: unknown) => {
        this.running.delete(a.container);
        const backoff = o.config.pilot.supervisorBackoffMs;
        const delay = backoff[Math.min(attempt, backoff.length - 1)]!;
        this.restarts.set(a.container, attempt + 1);
        this.log.error({ event: 'pilot-crashed', container: a.container, err: errorMessage(err), restartInMs: delay, attempt: attempt + 1 }, 'pilot failed; restarting with backoff');
        void pilot.stop().catch(() => undefined);
        setTimeout(() => this.supervise({ ...a, campaign: false }), delay).unref();
      },
    );
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
