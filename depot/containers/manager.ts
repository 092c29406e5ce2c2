import { access, mkdir, readFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import type { Logger } from '../../shared/logger.ts';
import { SystemClock, type Clock, type TimerHandle } from '../../shared/clock.ts';
import { NavigatorError, errorMessage } from '../../shared/errors.ts';
import { SafeName } from '../../shared/names.ts';
import { writeFileDurable } from '../../shared/durable-file.ts';
import { Role, type ContainerReport, type ElectionView } from '../../shared/wire.ts';
import { ContainerSpec, type ContainerDriver, type ContainerStateName, type DriverTiming, type ExecResult, type StopResult } from './drivers/driver.ts';
import { createDriver, specPaths } from './drivers/factory.ts';
import type { CgroupHost } from './cgroup-limits.ts';
import { createRunner, type RunnerKind, type ServiceUser } from './runner.ts';
import type { ContainerLimits } from '../../shared/config.ts';
import { insideDir } from './drivers/paths.ts';

// The containers this depot hosts. Each one runs in its own folder under `root`, a
// copy-on-write clone of an image made by the image store, never in the stored image itself.
// Operations on one container are queued so a stop cannot overtake a start; the last known
// state of every container is kept for the heartbeat (reports()) and refreshed on a timer, so
// a container that dies on its own shows up as `failed`.

/** What the manager needs from the image store. */
export interface ImageSource {
  /** Copy-on-write clone of image `id` into the folder `dest` (which must not exist yet). */
  clone(id: string, dest: string): Promise<void>;
  has(id: string): Promise<boolean>;
}

export const ContainerId = SafeName.describe('Container id on this depot; also its folder name');

export const StartContainerParams = z
  .object({
    id: ContainerId,
    service: SafeName.describe('Service this container is a copy of'),
    image: z.string().min(1).max(128).optional().describe('Image to clone into the container folder when the folder does not exist yet'),
    spec: ContainerSpec,
    role: Role.optional(),
    term: z.number().int().nonnegative().optional(),
  })
  .strict();
export type StartContainerParams = z.input<typeof StartContainerParams>;

export interface ContainerStatus {
  id: string;
  service: string;
  driver: ContainerSpec['driver'];
  state: ContainerStateName;
  image: string;
  role: z.infer<typeof Role>;
  term: number;
  /** Time (ms) of the last state change. */
  since: number;
  lastError?: string;
}

interface Entry {
  id: string;
  service: string;
  image: string;
  spec: ContainerSpec;
  dir: string;
  driver: ContainerDriver;
  state: ContainerStateName;
  /** Whether the depot wants it running (a running→stopped change it did not ask for is a failure). */
  wanted: boolean;
  role: z.infer<typeof Role>;
  term: number;
  since: number;
  lastError?: string;
  lastSyncAt?: number;
  syncFailing: boolean;
  /** A standby's database holds a complete copy (undefined: no database, or not known yet). */
  seeded?: boolean | undefined;
  view?: ElectionView | undefined;
  repl?: ReplicationReport | undefined;
  /** A qemu guest on the LAN: its own address (learned once it runs; its database answers there). */
  guestAddr?: string | undefined;
}

/** Replication fields of a copy's heartbeat report (replicate/semisync modes). */
export type ReplicationReport = Pick<ContainerReport, 'gtid' | 'replState' | 'replReason' | 'semisyncFallback'>;

/** Saved in each container folder so a restarted depot knows its containers again. */
const META_FILE = '.navigator-container.json';
const Meta = z.object({
  id: ContainerId,
  service: z.string(),
  image: z.string(),
  spec: ContainerSpec,
  wanted: z.boolean(),
  role: Role.default('none'),
  term: z.number().int().nonnegative().default(0),
});

export interface ContainerManagerOptions {
  /** Folder holding one folder per container (e.g. <store>/containers). */
  root: string;
  images?: ImageSource;
  logger: Logger;
  clock?: Clock;
  /** How often the state of every container is checked (config.containers.statusIntervalMs). */
  statusIntervalMs: number;
  vmrunPath?: string;
  qemuPath?: string;
  /** The drivers' timing (config section `containers`; default: its defaults). */
  driverTiming?: DriverTiming;
  /** Called on every state change, e.g. to send a heartbeat at once. */
  onChange?: (status: ContainerStatus) => void;
  /** Cgroup limits of a service's containers (config containers.limits/serviceLimits); none: run in the depot's cgroup. */
  limits?: { host: CgroupHost; of: (service: string) => ContainerLimits };
  /** How process containers' commands run (runner.ts): systemd units as `user`, or the depot's children (dropping to `user` when root). Default: direct, no user. */
  isolation?: { kind: RunnerKind; user?: ServiceUser; passEnv?: readonly string[] };
}

export class ContainerManager {
  private readonly entries = new Map<string, Entry>();
  private readonly queues = new Map<string, Promise<void>>();
  private readonly log: Logger;
  private readonly clock: Clock;
  private timer: TimerHandle | undefined;
  /** Between start() and stop(). */
  private watching = false;
  private refreshing = false;

  constructor(private readonly opts: ContainerManagerOptions) {
    this.log = opts.logger.child({ component: 'containers' });
    this.clock = opts.clock ?? new SystemClock();
  }

  get root(): string {
    return this.opts.root;
  }

  /** Find the containers left by a previous run of the depot, then watch their state. */
  async start(): Promise<void> {
    await mkdir(this.opts.root, { recursive: true });
    for (const name of await readdir(this.opts.root)) {
      if (this.entries.has(name) || !ContainerId.safeParse(name).success) continue;
      const dir = join(this.opts.root, name);
      const raw = await readFile(join(dir, META_FILE), 'utf8').catch(() => undefined);
      if (!raw) continue;
      const meta = Meta.safeParse(safeJson(raw));
      if (!meta.success || meta.data.id !== name) continue;
      const entry = this.makeEntry(meta.data.id, meta.data.service, meta.data.image, meta.data.spec, dir);
      entry.wanted = meta.data.wanted;
      entry.role = meta.data.role;
      entry.term = meta.data.term;
      this.entries.set(name, entry);
      this.log.info({ event: 'container-found', container: name, driver: entry.spec.driver }, 'container from a previous run');
    }
    await this.refresh();
    this.watching = true;
    this.watch();
  }

  /** Stop watching. Containers keep running: they outlive the depot process on purpose. */
  async stop(): Promise<void> {
    this.watching = false;
    this.watch();
    await Promise.allSettled([...this.queues.values()]);
  }

  /**
   * Run the status timer only while there are containers to check: most depots host none, and
   * an idle depot should not wake up for nothing.
   */
  private watch(): void {
    const want = this.watching && this.entries.size > 0;
    if (want && !this.timer) {
      this.timer = this.clock.setInterval(() => void this.refresh(), this.opts.statusIntervalMs);
    } else if (!want && this.timer) {
      this.clock.clear(this.timer);
      this.timer = undefined;
    }
  }

  /** Start (or confirm running) a container; clones the image into its folder the first time. */
  async startContainer(input: unknown): Promise<ContainerStatus> {
    const parsed = StartContainerParams.safeParse(input);
    if (!parsed.success) throw badRequest('container.start', parsed.error);
    const p = parsed.data;
    const dir = join(this.opts.root, p.id);
    // Refuse a spec that names a file outside the container folder before anything happens.
    for (const [what, rel] of specPaths(p.spec)) insideDir(dir, rel, what);

    const existing = this.entries.get(p.id);
    if (existing && existing.image && p.image && existing.image !== p.image) {
      throw new NavigatorError('CONFLICT', `container ${p.id} already runs image ${existing.image}; remove it before starting image ${p.image}`);
    }
    if (existing && existing.service !== p.service) {
      throw new NavigatorError('CONFLICT', `container ${p.id} is a copy of ${existing.service}, not of ${p.service}`);
    }
    if (existing && existing.spec.driver !== p.spec.driver) {
      throw new NavigatorError('CONFLICT', `container ${p.id} already exists with driver ${existing.spec.driver}`);
    }
    return this.serial(p.id, async () => {
      let entry = this.entries.get(p.id);
      if (!(await exists(dir))) {
        if (!p.image) throw new NavigatorError('NOT_FOUND', `container ${p.id} has no folder on this depot and no image was given to create it`);
        const images = this.opts.images;
        if (!images) throw new NavigatorError('NOT_FOUND', `this depot has no image store to clone image ${p.image} from`);
        if (!(await images.has(p.image))) throw new NavigatorError('NOT_FOUND', `image ${p.image} is not in this depot's store`);
        const started = this.clock.now();
        await images.clone(p.image, dir);
        this.log.info({ event: 'container-cloned', container: p.id, image: p.image, durationMs: this.clock.now() - started }, 'image cloned');
      }
      if (!entry || JSON.stringify(entry.spec) !== JSON.stringify(p.spec)) {
        entry = this.makeEntry(p.id, p.service, p.image ?? entry?.image ?? '', p.spec, dir);
        this.entries.set(p.id, entry);
        this.watch();
      }
      if (p.role) entry.role = p.role;
      if (p.term !== undefined) entry.term = p.term;
      entry.wanted = true;
      await this.saveMeta(entry);
      this.setState(entry, 'starting');
      const started = this.clock.now();
      try {
        await entry.driver.start();
      } catch (err) {
        entry.lastError = errorMessage(err);
        this.setState(entry, 'failed');
        throw err;
      }
      entry.lastError = undefined;
      this.setState(entry, 'running');
      this.log.info({ event: 'container-running', container: p.id, driver: p.spec.driver, durationMs: this.clock.now() - started }, 'container running');
      return this.statusOf(entry);
    });
  }

  async stopContainer(id: string, opts: { timeoutMs?: number } = {}): Promise<ContainerStatus & StopResult> {
    const entry = this.get(id);
    return this.serial(id, async () => {
      entry.wanted = false;
      await this.saveMeta(entry);
      this.setState(entry, 'stopping');
      const started = this.clock.now();
      let r: StopResult;
      try {
        r = await entry.driver.stop({ timeoutMs: opts.timeoutMs });
      } catch (err) {
        entry.lastError = errorMessage(err);
        this.setState(entry, 'failed');
        throw err;
      }
      this.setState(entry, 'stopped');
      this.log.info({ event: 'container-stopped', container: id, forced: r.forced, durationMs: this.clock.now() - started }, 'container stopped');
      return { ...this.statusOf(entry), forced: r.forced };
    });
  }

  /** Stop a container and delete its folder (the clone, with its data). */
  async removeContainer(id: string, opts: { timeoutMs?: number } = {}): Promise<void> {
    await this.stopContainer(id, opts);
    const entry = this.get(id);
    await this.serial(id, async () => {
      await rm(entry.dir, { recursive: true, force: true });
      this.entries.delete(id);
      this.watch();
    });
  }

  /** Current state, asked from the driver now. */
  async status(id: string): Promise<ContainerStatus> {
    const entry = this.get(id);
    await this.refreshOne(entry);
    return this.statusOf(entry);
  }

  list(): ContainerStatus[] {
    return [...this.entries.values()].map((e) => this.statusOf(e));
  }

  async exec(id: string, cmd: string, args: string[], opts: { timeoutMs?: number } = {}): Promise<ExecResult> {
    return this.get(id).driver.exec(cmd, args, opts);
  }

  /** Start a program in the container's guest without waiting (qemu with a guest agent). */
  async spawnInGuest(id: string, cmd: string, args: string[]): Promise<void> {
    const d = this.get(id).driver;
    if (!d.spawnInGuest) throw new NavigatorError('DRIVER_FAILED', `container ${id}: the ${d.kind} driver cannot start programs in a guest`);
    await d.spawnInGuest(cmd, args);
  }

  async guestAddress(id: string): Promise<string | undefined> {
    return this.get(id).driver.guestAddress();
  }

  /** Record the copy's role and let the driver start or stop its primary-only processes. */
  async setRole(id: string, role: z.infer<typeof Role>, term: number): Promise<void> {
    const e = this.get(id);
    e.role = role;
    e.term = term;
    await this.saveMeta(e);
    await e.driver.setRole?.(role);
  }

  /**
   * Stop the copy's primary-only processes but keep reporting its role: a primary handing over
   * (pilot resign) still holds its lease until its fence, and says so in its heartbeat.
   */
  async stopPrimaryProcesses(id: string): Promise<void> {
    await this.get(id).driver.setRole?.('standby');
  }

  /** Record the last DB sync into this copy (reported in the heartbeat as the RPO). */
  setSync(id: string, at: number | undefined, failing: boolean, repl?: ReplicationReport): void {
    const e = this.get(id);
    if (at !== undefined) e.lastSyncAt = at;
    e.syncFailing = failing;
    if (repl !== undefined) e.repl = repl;
  }

  /** Whether a copy's database holds a complete copy of the service's data (pilot/data-completeness.ts). */
  setSeeded(id: string, seeded: boolean): void {
    const e = this.entries.get(id);
    if (e) e.seeded = seeded;
  }

  /** Replication fields of a copy (the primary's GTID position, a semisync fallback). */
  setReplication(id: string, repl: ReplicationReport | undefined): void {
    this.get(id).repl = repl;
  }

  /** Record the service's voter group as this copy's pilot knows it (reported in the heartbeat). */
  setView(id: string, view: ElectionView | undefined): void {
    const e = this.entries.get(id);
    if (e) e.view = view;
  }

  /** For the heartbeat: every container with its last known state. Never throws, never waits. */
  reports(): ContainerReport[] {
    return [...this.entries.values()].slice(0, 64).map((e) => ({
      id: e.id,
      service: e.service.slice(0, 256),
      driver: e.spec.driver,
      state: e.state,
      role: e.role,
      term: e.term,
      image: e.image.slice(0, 256),
      // A copy whose database is not (or no longer) a complete copy has no sync time to claim: a
      // time from before a reseed began would make the voters hold other candidates stale.
      ...(e.lastSyncAt !== undefined && e.seeded !== false ? { lastSyncAt: e.lastSyncAt } : {}),
      syncFailing: e.syncFailing,
      ...(e.seeded !== undefined ? { seeded: e.seeded } : {}),
      ...(e.view ? { view: e.view } : {}),
      ...(e.repl?.gtid !== undefined ? { gtid: e.repl.gtid.slice(0, 512) } : {}),
      ...(e.repl?.replState !== undefined ? { replState: e.repl.replState } : {}),
      ...(e.repl?.replReason !== undefined ? { replReason: e.repl.replReason.slice(0, 256) } : {}),
      ...(e.repl?.semisyncFallback !== undefined ? { semisyncFallback: e.repl.semisyncFallback } : {}),
      ...(e.guestAddr !== undefined ? { guestAddress: e.guestAddr } : {}),
    }));
  }

  /** Images the hosted containers were cloned from: pin them in the image store so they are not pruned. */
  imagesInUse(): string[] {
    return [...new Set([...this.entries.values()].map((e) => e.image).filter(Boolean))];
  }

  /** Stop every container (drain, tests). */
  async stopAll(opts: { timeoutMs?: number } = {}): Promise<void> {
    await Promise.allSettled([...this.entries.keys()].map((id) => this.stopContainer(id, opts)));
  }

  /** Ask every driver for its state; an unwanted change away from running is a failure. */
  async refresh(): Promise<void> {
    if (this.refreshing) return;
    this.refreshing = true;
    try {
      await Promise.allSettled([...this.entries.values()].map((e) => this.refreshOne(e)));
    } finally {
      this.refreshing = false;
    }
  }

  private async refreshOne(e: Entry): Promise<void> {
    // A start or stop in progress owns the state until it finishes.
    if (busy(e)) return;
    let s: ContainerStateName;
    try {
      s = await e.driver.status();
    } catch (err) {
      e.lastError = errorMessage(err);
      s = 'unknown';
    }
    if (busy(e)) return;
    // A guest on the LAN: the pilots reach its database at its own address, reported in the heartbeat.
    if (s === 'running' && e.guestAddr === undefined && e.spec.driver === 'qemu' && e.spec.network) {
      const a = await e.driver.guestAddress().catch(() => undefined);
      if (a && /^\d{1,3}(\.\d{1,3}){3}$/.test(a)) e.guestAddr = a;
    }
    if (s === 'stopped' && e.wanted) {
      e.lastError ??= 'container stopped without being asked to';
      s = 'failed';
    }
    this.setState(e, s);
  }

  private makeEntry(id: string, service: string, image: string, spec: ContainerSpec, dir: string): Entry {
    const limits = this.opts.limits;
    const cgroup = limits ? { enter: () => limits.host.enter(id, limits.of(service)), leave: () => limits.host.leave(id) } : undefined;
    const iso = this.opts.isolation ?? { kind: 'direct' as const };
    const runner = createRunner({ kind: iso.kind, id, dir, logger: this.opts.logger, ...(iso.passEnv ? { passEnv: iso.passEnv } : {}), ...(iso.user ? { user: iso.user } : {}), ...(limits ? { limits: limits.of(service) } : {}), ...(cgroup && iso.kind === 'direct' ? { cgroup } : {}) });
    const driver = createDriver(spec, { id, dir, logger: this.opts.logger, vmrunPath: this.opts.vmrunPath, qemuPath: this.opts.qemuPath, timing: this.opts.driverTiming, runner, ...(cgroup ? { cgroup } : {}) });
    return {
      id,
      service,
      image,
      spec,
      dir,
      driver,
      state: 'unknown',
      wanted: false,
      role: 'none',
      term: 0,
      since: this.clock.now(),
      syncFailing: false,
    };
  }

  private setState(e: Entry, state: ContainerStateName): void {
    if (e.state === state) return;
    const from = e.state;
    e.state = state;
    e.since = this.clock.now();
    this.log.info({ event: 'container-state', container: e.id, from, to: state }, `container ${e.id} ${state}`);
    this.opts.onChange?.(this.statusOf(e));
  }

  private statusOf(e: Entry): ContainerStatus {
    return {
      id: e.id,
      service: e.service,
      driver: e.spec.driver,
      state: e.state,
      image: e.image,
      role: e.role,
      term: e.term,
      since: e.since,
      ...(e.lastError ? { lastError: e.lastError } : {}),
    };
  }

  private get(id: string): Entry {
    const e = this.entries.get(id);
    if (!e) throw new NavigatorError('NOT_FOUND', `no container ${id} on this depot`);
    return e;
  }

  /** Run operations on one container one after the other. */
  private serial<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.queues.get(id) ?? Promise.resolve();
    const run = prev.then(fn);
    const settled = run.then(
      () => undefined,
      () => undefined,
    );
    this.queues.set(id, settled);
    void settled.then(() => {
      if (this.queues.get(id) === settled) this.queues.delete(id);
    });
    return run;
  }

  private async saveMeta(e: Entry): Promise<void> {
    const meta: z.infer<typeof Meta> = { id: e.id, service: e.service, image: e.image, spec: e.spec, wanted: e.wanted, role: e.role, term: e.term };
    await writeFileDurable(join(e.dir, META_FILE), JSON.stringify(meta), { mode: 0o644 });
  }
}

function busy(e: Entry): boolean {
  return e.state === 'starting' || e.state === 'stopping';
}

function badRequest(method: string, error: z.ZodError): NavigatorError {
  const first = error.issues[0];
  const where = first ? first.path.join('.') || '(params)' : '(params)';
  return new NavigatorError('BAD_REQUEST', `${method}: ${where}: ${first?.message ?? 'invalid'}`, {
    issues: error.issues.slice(0, 10).map((i) => ({ path: i.path.join('.'), message: i.message })),
  });
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
