import { readFile, rename } from 'node:fs/promises';
import { z } from 'zod';
import type { Clock, TimerHandle } from '../../shared/clock.ts';
import type { SessionsSection } from '../../shared/config.ts';
import { writeFileDurable } from '../../shared/durable-file.ts';
import { errorMessage } from '../../shared/errors.ts';
import type { Logger } from '../../shared/logger.ts';
import { sessionAlive, sessionStarted, sessionStopped, summarizeSessions, type SessionRecord, type SessionSummary } from './session-history.ts';

// This host's sessions on disk (config sessions.file): opened at start (closing what a power cut
// left open), marked alive every sessions.markMs, closed at a clean stop. The rules are in
// session-history.ts; this file only reads, writes and times. A file that cannot be read is
// reported and set aside (renamed), never a reason not to start: the history is advice for
// placement, not state anything depends on.

const FileFormat = z.object({
  v: z.literal(1),
  sessions: z.array(
    z.object({
      bootTime: z.number().nonnegative(),
      startMs: z.number().nonnegative(),
      lastSeenMs: z.number().nonnegative(),
      endMs: z.number().nonnegative().optional(),
      end: z.enum(['clean', 'lost']).optional(),
    }),
  ),
});

export interface SessionLogOptions {
  config: z.infer<typeof SessionsSection>;
  clock: Clock;
  logger: Logger;
  /** The host's boot time (ms), as the kernel reports it. */
  bootTime: () => number;
}

export class SessionLog {
  private records: SessionRecord[] = [];
  private summaryCache: { stamp: string; at: number; value: SessionSummary[] } | undefined;
  private timer: TimerHandle | undefined;
  private writing: Promise<void> = Promise.resolve();
  private readonly log: Logger;

  constructor(private readonly o: SessionLogOptions) {
    this.log = o.logger.child({ component: 'sessions' });
  }

  async start(): Promise<void> {
    this.records = await this.load();
    const before = this.records.at(-1);
    this.records = sessionStarted(this.records, { now: this.o.clock.now(), bootTime: this.o.bootTime() }, this.o.config);
    const current = this.records.at(-1)!;
    const continued = before !== undefined && current.startMs === before.startMs && current.bootTime === before.bootTime;
    if (before && before.endMs === undefined && !continued) {
      this.log.info({ event: 'session-lost', startMs: before.startMs, lastSeenMs: before.lastSeenMs }, 'the last session ended without a clean stop (power loss or crash)');
    }
    this.log.info({ event: continued ? 'session-continued' : 'session-started', startMs: current.startMs, bootTime: current.bootTime, known: this.records.length }, continued ? 'session continues after a restart' : 'new session');
    await this.save();
    this.timer = this.o.clock.setInterval(() => {
      this.records = sessionAlive(this.records, this.o.clock.now());
      void this.save();
    }, this.o.config.markMs);
  }

  async stop(): Promise<void> {
    this.o.clock.clear(this.timer);
    this.timer = undefined;
    this.records = sessionStopped(this.records, this.o.clock.now());
    await this.save();
  }

  /** Every record, oldest first (the current session last, without an end). */
  all(): SessionRecord[] {
    return this.records.map((r) => ({ ...r }));
  }

  /** What the heartbeat carries. */
  summary(): SessionSummary[] {
    // Asked at every heartbeat; it changes only when a session ends (or, for the age limit, slowly).
    const now = this.o.clock.now();
    const last = this.records.at(-1);
    const stamp = `${this.records.length}:${last?.startMs}:${last?.endMs}`;
    if (this.summaryCache?.stamp !== stamp || now - this.summaryCache.at >= this.o.config.markMs) {
      this.summaryCache = { stamp, at: now, value: summarizeSessions(this.records, now, { max: this.o.config.gossip, maxAgeMs: this.o.config.maxAgeMs }) };
    }
    return this.summaryCache.value;
  }

  private async load(): Promise<SessionRecord[]> {
    let text: string;
    try {
      text = await readFile(this.o.config.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      this.log.warn({ event: 'sessions-unreadable', file: this.o.config.file, err: errorMessage(err) }, `cannot read ${this.o.config.file}; starting a new history`);
      return [];
    }
    let parsed: z.infer<typeof FileFormat> | undefined;
    try {
      const r = FileFormat.safeParse(JSON.parse(text));
      if (r.success) parsed = r.data;
    } catch {
      parsed = undefined;
    }
    if (!parsed) {
      const aside = `${this.o.config.file}.corrupt-${this.o.clock.now()}`;
      await rename(this.o.config.file, aside).catch(() => undefined);
      this.log.warn({ event: 'sessions-corrupt', file: this.o.config.file, movedTo: aside }, `${this.o.config.file} is not a session history: moved to ${aside}, starting a new one`);
      return [];
    }
    return parsed.sessions.map((s) => ({ ...s }) as SessionRecord);
  }

  /** Resolves when every write asked for so far is on disk. */
  flushed(): Promise<void> {
    return this.writing;
  }

  /** Writes are queued, and each writes the records as they are when its turn comes. */
  private save(): Promise<void> {
    this.writing = this.writing.then(() =>
      writeFileDurable(this.o.config.file, `${JSON.stringify({ v: 1, sessions: this.records })}\n`, { mode: 0o640 }).catch((err: unknown) => {
        this.log.warn({ event: 'sessions-write-failed', file: this.o.config.file, err: errorMessage(err) }, `cannot write ${this.o.config.file}: ${errorMessage(err)}`);
      }),
    );
    return this.writing;
  }
}
