import { mkdir, open, readFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import type { Logger } from '../../shared/logger.ts';
import { createVoter, voterForgetCopy, voterObserveSync, voterReceive, type VoterDurable, type VoterState } from './voter-role.ts';
import type { ElectionConfig } from './settings.ts';
import { ElectionView, type LeaseAck, type LeaseRelease, type LeaseRenew, type VoteReply, type VoteRequest } from '../../shared/wire.ts';

// This depot's vote in every service's election. The decisions come from the pure voter in
// voter-role.ts; this class keeps one state per service, writes the durable part (voted term,
// promisee, view) to disk with fsync BEFORE the reply leaves, and feeds in the sync times heard
// in heartbeats so the freshest standby wins.

const Durable = z.object({ votedTerm: z.number().int().nonnegative(), promisedTo: z.string().nullable(), view: ElectionView.nullable() });

export interface VotersOptions {
  selfId: string;
  dir: string;
  cfg: ElectionConfig;
  /** Monotonic local time in ms. */
  now: () => number;
  logger: Logger;
}

export class Voters {
  private readonly states = new Map<string, VoterState>();
  private readonly loading = new Map<string, Promise<VoterState>>();
  private queue: Promise<unknown> = Promise.resolve();
  private readonly log: Logger;

  constructor(private readonly opts: VotersOptions) {
    this.log = opts.logger.child({ component: 'voter' });
  }

  async start(): Promise<void> {
    await mkdir(this.opts.dir, { recursive: true });
  }

  /** Handle one request; the reply is only returned after its durable state is on disk. */
  receive(msg: VoteRequest | LeaseRenew | LeaseRelease): Promise<VoteReply | LeaseAck | undefined> {
    // One request at a time: each step reads the state the previous one wrote.
    const run = this.queue.then(async () => {
      const state = await this.state(msg.service);
      const step = voterReceive(state, msg, this.opts.now(), this.opts.cfg, Date.now());
      this.states.set(msg.service, step.state);
      let reply: VoteReply | LeaseAck | undefined;
      for (const d of step.decisions) {
        if (d.kind === 'persist') await this.persist(msg.service, d.durable);
        else reply = d.message;
      }
      if (msg.type === 'vote-request' && reply) {
        this.log.info(
          { event: 'vote', service: msg.service, term: msg.term, candidate: msg.candidate, granted: reply.granted, reason: reply.reason },
          `vote ${reply.granted ? 'granted' : 'refused'} for term ${msg.term}`,
        );
      }
      return reply;
    });
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** A standby copy's last good sync, from its depot's heartbeat. */
  observeSync(service: string, copy: string, syncTime: number): void {
    const s = this.states.get(service);
    if (s) this.states.set(service, voterObserveSync(s, copy, syncTime, this.opts.now()));
  }

  forgetCopy(service: string, copy: string): void {
    const s = this.states.get(service);
    if (s) this.states.set(service, voterForgetCopy(s, copy));
  }

  /** Read-only snapshot for the API. */
  snapshot(): Array<{ service: string; votedTerm: number; promisedTo: string | null; promiseLeftMs: number }> {
    const now = this.opts.now();
    return [...this.states.values()].map((s) => ({
      service: s.service,
      votedTerm: s.votedTerm,
      promisedTo: s.promisedTo,
      promiseLeftMs: Math.max(0, Math.round(s.promiseUntil - now)),
    }));
  }

  private file(service: string): string {
    return join(this.opts.dir, `${service}.json`);
  }

  private async state(service: string): Promise<VoterState> {
    const have = this.states.get(service);
    if (have) return have;
    let pending = this.loading.get(service);
    if (!pending) {
      pending = (async () => {
        const raw = await readFile(this.file(service), 'utf8').catch(() => undefined);
        let durable: VoterDurable | undefined;
        if (raw !== undefined) {
          const parsed = Durable.safeParse(safeJson(raw));
          if (parsed.success) durable = parsed.data;
          else this.log.error({ event: 'voter-state-corrupt', service, file: this.file(service) }, 'voter state unreadable; starting from scratch (quarantined)');
        }
        // createVoter keeps silent for leaseMs: after a restart a promise may have been lost.
        const s = createVoter({ id: this.opts.selfId, service, now: this.opts.now(), cfg: this.opts.cfg, durable });
        this.states.set(service, s);
        return s;
      })();
      this.loading.set(service, pending);
    }
    return pending;
  }

  private async persist(service: string, durable: VoterDurable): Promise<void> {
    const target = this.file(service);
    const tmp = `${target}.tmp`;
    const fh = await open(tmp, 'w', 0o600);
    try {
      await fh.writeFile(JSON.stringify(durable));
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, target);
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
