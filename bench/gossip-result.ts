// bench:gossip's result of one run (bench/gossip.ts runs depot processes, gossip-in-process.ts
// hundreds of depots in one process) and the arithmetic both use.

export interface RunResult {
  mode: string;
  nodes: number;
  deathKnownMs: number[];
  bytesSentPerNodePerS?: number;
  bytesRecvPerNodePerS?: number;
  /** All TCP bytes of the depot's libp2p connections (processes only). */
  tcpSentPerNodePerS?: number;
  tcpRecvPerNodePerS?: number;
  publishedBytesPerNodePerS?: number;
  rssMbPerDepot?: number;
  rssMbMax?: number;
  cpuPctIdle?: number;
  /** Undefined: the views did not converge within the run's limit. */
  convergeMs?: number;
  falseDeaths: number;
  heartbeatMs?: number;
  /** In-process runs: the settings that differ from a real depot, and what the one process did. */
  inProcess?: {
    heartbeatSampleMs: number;
    /** Measured mean time between two heartbeats of a depot, steady state. */
    heartbeatPeriodMs: number;
    probeIntervalMs: number;
    bootstrapPeers: number;
    mesh: { D: number; Dlo: number; Dhi: number };
    nodeArgs: string;
    /** Gossip message copies (duplicates included) received per depot per second, steady state. */
    copiesPerNodePerS: number;
    /** CPU of the whole process (all depots), % of one core, steady state. */
    cpuPctIdle: number;
    victimConnections: number;
    /** Crash to the last survivor suspecting the victim (the news reached everyone; its own probe decides). */
    deathSuspectedByAllMs?: number;
    /** DeadMessages gossiped about the victim: every survivor that confirms the death gossips its own. */
    deadMessages: number;
    falseSuspects: number;
    startMs: number;
  };
}

export const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);

export function fmt(x: number | undefined, digits = 0): string {
  return x === undefined || Number.isNaN(x) ? '-' : x.toFixed(digits);
}
