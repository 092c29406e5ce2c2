import type { Lab, LabProcess } from './lab.ts';

/**
 * Parent side of the 10 ms prober (prober-main.ts runs in the client namespace): collects its
 * results and measures outage the way the OpenSAF study does — the longest gap between
 * successful connections.
 */

export interface ProbeSuccess {
  /** When the attempt started (epoch ms, sub-ms precision). */
  start: number;
  /** When the reply arrived. */
  t: number;
  /** The answering host's name. */
  server: string;
}

export interface ProbeFailure {
  start: number;
  reason: string;
}

export interface Outage {
  /** Longest gap between consecutive successful replies that overlaps the window. */
  outageMs: number;
  /** Last success before the gap and first success after it (gapEnd = window end if not recovered). */
  gapStart: number;
  gapEnd: number;
  /** False when no success came after the gap within the window. */
  recovered: boolean;
  /** Server that answered after the gap. */
  serverAfter: string | undefined;
}

export interface ProberOptions {
  /** Service IP (no prefix). */
  target: string;
  port: number;
  host?: string;
  intervalMs?: number;
  timeoutMs?: number;
}

/**
 * Longest gap between consecutive success times that intersects [from, to]. `times` sorted
 * ascending. When there is no success after the last one before `to`, the gap runs to `to`
 * and recovered is false.
 */
export function longestGap(times: readonly number[], from: number, to: number): { gapMs: number; gapStart: number; gapEnd: number; recovered: boolean; endIndex: number } {
  let best = { gapMs: 0, gapStart: from, gapEnd: from, recovered: true, endIndex: -1 };
  let prev: number | undefined;
  let prevIdx = -1;
  for (let i = 0; i < times.length; i++) {
    const t = times[i]!;
    if (prev !== undefined && t > from && prev < to) {
      const gap = t - prev;
      if (gap > best.gapMs) best = { gapMs: gap, gapStart: prev, gapEnd: t, recovered: true, endIndex: i };
    }
    if (t >= to) return best;
    prev = t;
    prevIdx = i;
  }
  // Window ends without a success after `prev`: the service is still out at `to`.
  const start = prev ?? from;
  if (to - start > best.gapMs) best = { gapMs: to - start, gapStart: start, gapEnd: to, recovered: false, endIndex: prevIdx };
  return best;
}

/** Every gap longer than `minMs` between consecutive success times (sorted) within [from, to]. */
export function gapsOver(times: readonly number[], from: number, to: number, minMs: number): Array<{ gapMs: number; gapStart: number; gapEnd: number }> {
  const out: Array<{ gapMs: number; gapStart: number; gapEnd: number }> = [];
  for (let i = 1; i < times.length; i++) {
    const a = times[i - 1]!;
    const b = times[i]!;
    if (b > from && a < to && b - a > minMs) out.push({ gapMs: b - a, gapStart: a, gapEnd: b });
  }
  return out;
}

export class Prober {
  readonly successes: ProbeSuccess[] = [];
  readonly failures: ProbeFailure[] = [];
  private readonly proc: LabProcess;
  private readonly waiters = new Set<(s: ProbeSuccess) => void>();
  private ended: Promise<void>;

  private constructor(proc: LabProcess) {
    this.proc = proc;
    let endResolve!: () => void;
    this.ended = new Promise((r) => (endResolve = r));
    proc.onLine((line, stream) => {
      if (stream !== 'stdout' || !line.startsWith('{')) return;
      let msg: { type?: string; ok?: Array<[number, number, string]>; fail?: Array<[number, string]> };
      try {
        msg = JSON.parse(line) as typeof msg;
      } catch {
        return;
      }
      if (msg.type === 'batch') {
        for (const [start, t, server] of msg.ok ?? []) {
          const s = { start, t, server };
          this.successes.push(s);
          for (const w of this.waiters) w(s);
        }
        for (const [start, reason] of msg.fail ?? []) this.failures.push({ start, reason });
      } else if (msg.type === 'end') endResolve();
    });
    void proc.exited.then(() => endResolve());
  }

  /** Starts the prober process in the client namespace and waits until it runs. */
  static async start(lab: Lab, opts: ProberOptions): Promise<Prober> {
    const proc = lab.spawnNode(opts.host ?? 'client', 'lab/prober-main.ts', [
      '--target', opts.target, '--port', String(opts.port),
      '--interval', String(opts.intervalMs ?? 10), '--timeout', String(opts.timeoutMs ?? 50),
    ], { name: 'prober' });
    const p = new Prober(proc);
    await proc.waitForLine(/"type":"ready"/, 15_000);
    return p;
  }

  /** Resolves with the first success (after now) whose server matches; rejects after timeoutMs. */
  waitForServer(server: string | RegExp, timeoutMs = 10_000): Promise<ProbeSuccess> {
    const match = (s: ProbeSuccess): boolean => (typeof server === 'string' ? s.server === server : server.test(s.server));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(w);
        const last = this.successes.at(-1);
        reject(new Error(`prober: no reply from ${String(server)} within ${timeoutMs} ms (last success: ${last ? `${last.server} ${Math.round(Date.now() - last.t)} ms ago` : 'none'})`));
      }, timeoutMs);
      const w = (s: ProbeSuccess): void => {
        if (!match(s)) return;
        clearTimeout(timer);
        this.waiters.delete(w);
        resolve(s);
      };
      this.waiters.add(w);
    });
  }

  /** Outage within [from, to] (epoch ms; `to` defaults to the newest result). */
  outage(from: number, to?: number): Outage {
    const ok = [...this.successes].sort((a, b) => a.t - b.t);
    const end = to ?? Math.max(ok.at(-1)?.t ?? from, from);
    const g = longestGap(ok.map((s) => s.t), from, end);
    return {
      outageMs: Math.round(g.gapMs * 10) / 10,
      gapStart: g.gapStart,
      gapEnd: g.gapEnd,
      recovered: g.recovered,
      serverAfter: g.recovered ? ok[g.endIndex]?.server : undefined,
    };
  }

  /** Every gap longer than `minMs` between successful replies within [from, to] (an upgrade must show at most one). */
  gaps(from: number, to: number, minMs: number): Array<{ gapMs: number; gapStart: number; gapEnd: number }> {
    return gapsOver([...this.successes].map((s) => s.t).sort((a, b) => a - b), from, to, minMs);
  }

  /** Servers in the order they answered (consecutive repeats collapsed), with the time each began. */
  serverTimeline(): Array<{ server: string; since: number }> {
    const out: Array<{ server: string; since: number }> = [];
    for (const s of [...this.successes].sort((a, b) => a.t - b.t)) {
      if (out.at(-1)?.server !== s.server) out.push({ server: s.server, since: s.t });
    }
    return out;
  }

  /** Stops the process after it flushed everything it measured. */
  async stop(): Promise<void> {
    this.proc.kill('SIGTERM');
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), 3000);
    await Promise.race([this.ended, this.proc.exited]);
    await this.proc.exited;
    clearTimeout(timer);
  }
}
