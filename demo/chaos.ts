import { setTimeout as sleep } from 'node:timers/promises';
import { errorMessage } from '../shared/errors.ts';
import type { DemoNetwork } from './network.ts';
import type { DemoCluster, Placement } from './cluster.ts';

// The demo's chaos: every interval, the primary's workstation loses power (cable cut, every
// process killed), a standby takes over, and a while later the workstation boots again as a
// fresh machine (its depot restarts from its data folder). Runs until stopped.

export interface ChaosOptions {
  intervalMs: number;
  /** How long a workstation stays off before it boots again. */
  offMs: number;
  out: (line: string) => void;
}

export class Chaos {
  private readonly abort = new AbortController();
  private loop: Promise<void> | undefined;

  constructor(
    private readonly net: DemoNetwork,
    private readonly cluster: DemoCluster,
    private readonly opts: ChaosOptions,
  ) {}

  start(): void {
    this.loop = this.run().catch((err: unknown) => {
      if (!this.abort.signal.aborted) this.opts.out(`chaos stopped: ${errorMessage(err)}`);
    });
  }

  async stop(): Promise<void> {
    this.abort.abort();
    await this.loop;
  }

  private async run(): Promise<void> {
    const signal = this.abort.signal;
    for (;;) {
      const next = Date.now() + this.opts.intervalMs;
      this.opts.out(`chaos: next power cut of the primary's workstation at ${new Date(next).toLocaleTimeString()}`);
      await sleep(this.opts.intervalMs, undefined, { signal });
      await this.round(signal);
    }
  }

  /** What the pilots recorded about the failover, the monitor's history, the new standby. */
  private async report(victim: string, after: Placement, signal: AbortSignal): Promise<void> {
    const rec = await this.cluster.failoverRecord(after.term, [victim]);
    if (rec) {
      const t = rec.timings;
      this.opts.out(`chaos:   recorded by the pilot: detect ${t.detect ?? '?'} ms, elect ${t.elect ?? '?'} ms, takeover ${t.takeover ?? '?'} ms`);
    }
    const deadline = Date.now() + 10_000;
    let status = await this.cluster.monitorStatus(after.primary!);
    while ((!status?.history || status.written === 0) && Date.now() < deadline && !signal.aborted) {
      await sleep(250, undefined, { signal });
      status = await this.cluster.monitorStatus(after.primary!);
    }
    if (status?.history) {
      const inherited = status.history.byHost.filter((b) => b.host !== status!.host).reduce((n, b) => n + b.n, 0);
      this.opts.out(`chaos:   the monitor on ${status.host} continues its history: ${status.history.rows} rows, ${inherited} of them written by earlier primaries (synced here by mysqldump; rows of the last seconds before the cut are lost, the RPO)`);
    }
    const placed = Date.now() + 30_000;
    while (Date.now() < placed && !signal.aborted) {
      const p = await this.cluster.placement([victim]);
      const fresh = p.standbys.filter((h) => h !== victim);
      if (fresh.length > 0) {
        this.opts.out(`chaos:   protected again: standby on ${fresh.join(', ')}`);
        return;
      }
      await sleep(250, undefined, { signal });
    }
  }

  /** One power cut of the primary's host, the takeover, and the host's return. */
  private async round(signal: AbortSignal): Promise<void> {
    const before = await this.cluster.placement();
    const victim = this.cluster.hosts.find((h) => h.name === before.primary);
    if (!victim) {
      this.opts.out('chaos: no primary right now; skipping this round');
      return;
    }
    const t0 = Date.now();
    this.opts.out(`chaos: power cut on ${victim.name} (primary, term ${before.term})`);
    await this.net.powerOff(victim);
    await this.cluster.depotGone(victim);
    let after = before;
    const deadline = t0 + 60_000;
    while (Date.now() < deadline && !signal.aborted) {
      after = await this.cluster.placement([victim.name]);
      if (after.primary && after.primary !== victim.name && after.term > before.term) break;
      await sleep(100, undefined, { signal });
    }
    if (after.primary && after.primary !== victim.name) {
      this.opts.out(`chaos: ${after.primary} is primary (term ${after.term}), seen here ${((Date.now() - t0) / 1000).toFixed(1)} s after the power cut`);
      await this.report(victim.name, after, signal);
    } else {
      this.opts.out(`chaos: no new primary within 60 s of the power cut`);
    }
    await sleep(Math.max(0, t0 + this.opts.offMs - Date.now()), undefined, { signal });
    await this.net.powerOn(victim);
    await this.cluster.startDepot(victim);
    this.opts.out(`chaos: ${victim.name} booted again; its depot rejoined`);
  }
}
