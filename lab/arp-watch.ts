import type { Lab, LabProcess } from './lab.ts';

/**
 * Records every MAC that answers ARP for the service address, from an observer namespace of its
 * own (so its ARP traffic never touches the client's cache). iputils arping sends at most one
 * request per whole second, so `1000 / intervalMs` broadcasting arpings are started staggered by
 * `intervalMs`; together they ask every interval. One of them prints replies — arping prints
 * every ARP reply addressed to the observer, whichever process asked — and each reply line is
 * timestamped on arrival (arping flushes each line).
 *
 * Replies to one broadcast request arrive within about a millisecond of each other, while
 * requests are `intervalMs` apart; so replies are grouped into clusters of nearby arrivals
 * (`clusterMs`), and a cluster holding two different MACs is one split-brain moment.
 */

export interface ArpReply {
  t: number;
  mac: string;
}

export interface ArpWatchOptions {
  /** Service IP (no prefix). */
  address: string;
  host?: string;
  intervalMs?: number;
}

const REPLY = /^Unicast reply from (\d+\.\d+\.\d+\.\d+) \[([0-9A-Fa-f:]{17})\]/;

export class ArpWatch {
  readonly replies: ArpReply[] = [];
  readonly address: string;
  private readonly procs: LabProcess[];

  private constructor(address: string, procs: LabProcess[]) {
    this.address = address;
    this.procs = procs;
  }

  static async start(lab: Lab, opts: ArpWatchOptions): Promise<ArpWatch> {
    const host = lab.host(opts.host ?? 'watch');
    const intervalMs = opts.intervalMs ?? 50;
    if (!(intervalMs >= 10 && intervalMs <= 1000)) throw new Error('arp-watch intervalMs must be 10..1000');
    const n = Math.max(1, Math.round(1000 / intervalMs));
    // stdbuf: arping's stdout is a pipe here; line buffering makes its header appear even before any reply.
    const listener = lab.spawn(host.name, ['stdbuf', '-oL', 'arping', '-b', '-I', host.iface, opts.address], { name: 'arp-watch' });
    const w = new ArpWatch(opts.address, [listener]);
    listener.onLine((line) => {
      const m = REPLY.exec(line);
      if (m && m[1] === opts.address) w.replies.push({ t: performance.timeOrigin + performance.now(), mac: m[2]!.toLowerCase() });
    });
    await listener.waitForLine(/^ARPING /, 10_000);
    for (let i = 1; i < n; i++) {
      await new Promise((r) => setTimeout(r, intervalMs));
      w.procs.push(lab.spawn(host.name, ['arping', '-q', '-b', '-I', host.iface, opts.address], { name: 'arp-ask' }));
    }
    return w;
  }

  /** MACs that answered within [from, to]. */
  macs(from = 0, to = Infinity): string[] {
    return [...new Set(this.replies.filter((r) => r.t >= from && r.t <= to).map((r) => r.mac))];
  }

  /** Split-brain moments: clusters of replies (arrivals ≤ clusterMs apart) that hold ≥ 2 MACs. */
  splitBrainMoments(opts: { from?: number; to?: number; clusterMs?: number } = {}): Array<{ t: number; macs: string[] }> {
    const clusterMs = opts.clusterMs ?? 15;
    const rs = this.replies.filter((r) => r.t >= (opts.from ?? 0) && r.t <= (opts.to ?? Infinity)).sort((a, b) => a.t - b.t);
    const out: Array<{ t: number; macs: string[] }> = [];
    let i = 0;
    while (i < rs.length) {
      const first = rs[i]!;
      const macs = new Set([first.mac]);
      let j = i + 1;
      while (j < rs.length && rs[j]!.t - rs[j - 1]!.t <= clusterMs) macs.add(rs[j++]!.mac);
      if (macs.size >= 2) out.push({ t: first.t, macs: [...macs] });
      i = j;
    }
    return out;
  }

  splitBrainEvents(opts: { from?: number; to?: number; clusterMs?: number } = {}): number {
    return this.splitBrainMoments(opts).length;
  }

  /** Who answered when: consecutive replies from the same MAC merged into one span. */
  timeline(): Array<{ mac: string; from: number; to: number; replies: number }> {
    const out: Array<{ mac: string; from: number; to: number; replies: number }> = [];
    for (const r of [...this.replies].sort((a, b) => a.t - b.t)) {
      const last = out.at(-1);
      if (last && last.mac === r.mac) {
        last.to = r.t;
        last.replies++;
      } else out.push({ mac: r.mac, from: r.t, to: r.t, replies: 1 });
    }
    return out;
  }

  async stop(): Promise<void> {
    await Promise.all(this.procs.map((p) => p.stop(500)));
  }
}
