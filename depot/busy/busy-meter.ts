import { readFile } from 'node:fs/promises';
import { cpus as osCpus } from 'node:os';
import type { z } from 'zod';
import type { Clock, TimerHandle } from '../../shared/clock.ts';
import type { BusySection } from '../../shared/config.ts';
import { errorMessage } from '../../shared/errors.ts';
import type { Logger } from '../../shared/logger.ts';
import type { BusySignal } from '../../shared/wire.ts';
import { isAbsolute } from 'node:path';
import { cgroupCpuNs, cgroupFolder, detectCpuHierarchy, ownCgroupFolder, within } from './cgroup-cpu.ts';
import { activeLocalSessions, type SessionCount } from './login-sessions.ts';
import { cpuPercent, nextBusySignal } from './busy-state.ts';

// Measures this host's busy signal every busy.sampleMs: the CPU time the host's user work used
// since the last sample — the cgroup busy.cgroup (default: the whole host), less the cgroups of
// Navigator's own units (busy.excludeCgroups) and less this depot process when it runs inside
// the measured cgroup — as a share of all CPUs, and the active local login sessions (systemd-logind's records: login-sessions.ts).
// Machine-wide figures (/proc/stat, the load average) are not used: in the lab every
// workstation shares one kernel, and a cgroup per workstation is what tells them apart.
// When nothing can be measured (no CPU accounting, the cgroup missing) there is no signal: the
// heartbeat leaves it out, this host is never moved away from and never moved onto.

export interface BusyMeterOptions {
  config: z.infer<typeof BusySection>;
  clock: Clock;
  logger: Logger;
  /** Where the cgroup hierarchies are mounted (tests). */
  cgroupBase?: string;
  /** Counting local sessions (tests; default logind's records). */
  sessions?: () => Promise<SessionCount>;
  cpus?: number;
  /** Monotonic ms for the time between samples (tests; default performance.now). */
  monotonic?: () => number;
  /** Text of /proc/self/cgroup (tests). */
  procSelfCgroup?: () => Promise<string>;
}

/** How long a host without logind's records is assumed to have no local sessions before it is asked again. */
const SESSIONS_RETRY_MS = 60_000;

interface Reading {
  at: number;
  measured: number;
  excluded: number;
  selfUs: number;
}

export class BusyMeter {
  private signalNow: BusySignal | undefined;
  private timer: TimerHandle | undefined;
  private measuring = false;
  private measured = '';
  private excluded: string[] = [];
  private countSelf = false;
  private last: Reading | undefined;
  private sampling: Promise<void> | undefined;
  private sessionsWarned = false;
  /** No logind records: looked for again no sooner than this (monotonic ms). */
  private sessionsRetryAt = 0;
  private readingWarned = false;
  private readonly log: Logger;
  private readonly cpus: number;

  constructor(private readonly o: BusyMeterOptions) {
    this.log = o.logger.child({ component: 'busy' });
    this.cpus = o.cpus ?? Math.max(1, osCpus().length);
  }

  /** The signal of the last sample, or undefined while nothing could be measured. */
  signal(): BusySignal | undefined {
    return this.signalNow;
  }

  /** The folder measured (after start). */
  get folder(): string {
    return this.measured;
  }

  async start(): Promise<void> {
    const c = this.o.config;
    const h = await detectCpuHierarchy(this.o.cgroupBase);
    // An absolute busy.cgroup is read where it is, even where the hierarchy is not mounted at
    // the usual place (the lab's namespaces see it through a bind mount).
    const measured = isAbsolute(c.cgroup) ? c.cgroup : h ? cgroupFolder(h, c.cgroup) : undefined;
    if (measured === undefined) {
      this.log.warn({ event: 'busy-unmeasured', reason: 'no CPU accounting cgroup (v2 cpu.stat or v1 cpuacct) on this host' }, 'the busy signal cannot be measured here: this host is never counted busy or idle');
    } else {
      this.measuring = true;
      this.measured = measured;
      // Only what lies inside the measured cgroup is part of its figure and can be taken out.
      this.excluded = c.excludeCgroups
        .filter((p) => h || isAbsolute(p))
        .map((p) => (h ? cgroupFolder(h, p) : p))
        .filter((d) => d !== measured && within(d, measured));
      const own = h ? ownCgroupFolder(h, await (this.o.procSelfCgroup ?? (() => readFile('/proc/self/cgroup', 'utf8')))().catch(() => '')) : undefined;
      this.countSelf = own !== undefined && within(own, measured) && !this.excluded.some((d) => within(own, d));
      this.log.info({ event: 'busy-meter', cgroup: measured, kind: h?.kind ?? 'given', excluded: this.excluded, selfSubtracted: this.countSelf, cpuPct: c.cpuPct, sessions: c.sessions }, `measuring the busy signal of ${measured}`);
    }
    await this.sample();
    this.timer = this.o.clock.setInterval(() => void this.sample(), c.sampleMs);
  }

  async stop(): Promise<void> {
    this.o.clock.clear(this.timer);
    this.timer = undefined;
    await this.sampling;
  }

  /** Take one sample now (the timer does this every sampleMs). */
  sample(): Promise<void> {
    this.sampling ??= this.sampleOnce()
      .catch((err: unknown) => this.log.warn({ event: 'busy-sample-failed', err: errorMessage(err) }, 'busy sample failed'))
      .finally(() => (this.sampling = undefined));
    return this.sampling;
  }

  private async sampleOnce(): Promise<void> {
    const reading = await this.read();
    const sessions = this.o.config.sessions ? await this.countSessions() : 0;
    const prev = this.last;
    this.last = reading;
    if (!reading) {
      this.signalNow = undefined;
      return;
    }
    if (!prev) return;
    const used = reading.measured - prev.measured - Math.max(0, reading.excluded - prev.excluded) - (this.countSelf ? (reading.selfUs - prev.selfUs) * 1000 : 0);
    const cpuPct = cpuPercent(Math.max(0, used), (reading.at - prev.at) * 1e6, this.cpus);
    const before = this.signalNow;
    this.signalNow = nextBusySignal(before, { cpuPct, sessions }, { cpuPct: this.o.config.cpuPct, sessions: this.o.config.sessions }, this.o.clock.now());
    if (before?.busy !== this.signalNow.busy) {
      this.log.info(
        { event: this.signalNow.busy ? 'host-busy' : 'host-not-busy', cpuPct: this.signalNow.cpuPct, sessions: this.signalNow.sessions, thresholdPct: this.o.config.cpuPct },
        this.signalNow.busy ? `host busy: user CPU ${this.signalNow.cpuPct} %, ${this.signalNow.sessions} local sessions` : `host no longer busy: user CPU ${this.signalNow.cpuPct} %`,
      );
    }
  }

  private async read(): Promise<Reading | undefined> {
    if (!this.measuring) return undefined;
    const at = (this.o.monotonic ?? (() => performance.now()))();
    const measured = await cgroupCpuNs(this.measured);
    if (measured === undefined) {
      if (!this.readingWarned) {
        this.readingWarned = true;
        this.log.warn({ event: 'busy-unmeasured', cgroup: this.measured, reason: 'its CPU use cannot be read' }, `the busy signal cannot be measured: no CPU figure in ${this.measured}`);
      }
      return undefined;
    }
    this.readingWarned = false;
    let excluded = 0;
    for (const d of this.excluded) excluded += (await cgroupCpuNs(d)) ?? 0;
    const u = process.cpuUsage();
    return { at, measured, excluded, selfUs: u.user + u.system };
  }

  private async countSessions(): Promise<number> {
    const now = (this.o.monotonic ?? (() => performance.now()))();
    if (now < this.sessionsRetryAt) return 0;
    const r = await (this.o.sessions ?? activeLocalSessions)();
    // Where logind does not answer, asking every sample is a process for nothing.
    if (!r.available) this.sessionsRetryAt = now + SESSIONS_RETRY_MS;
    if (!r.available && !this.sessionsWarned) {
      this.sessionsWarned = true;
      this.log.info({ event: 'busy-sessions-unavailable', reason: r.error }, `local login sessions are not counted: ${r.error ?? 'unavailable'}`);
    }
    return r.active;
  }
}
