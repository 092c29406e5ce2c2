import type { PubSub } from '@libp2p/interface';

// Gossipsub (14.x) keeps one outbound and one inbound stream per connected peer. When one of
// them fails while the connection stays open — a stream reset, a stall on a starved host, an
// identify that timed out so the peer was never announced to gossipsub — it never opens a new
// one (ChainSafe/js-libp2p-gossipsub#456, libp2p/js-libp2p#3531), and that peer hears nothing
// from this depot again. Measured: 32 depots on one host converged, then a CPU stall at start-up
// cut most streams and every view fell back to itself for good. The cure is to close such a
// connection: the next dial brings a new connection and gossipsub opens fresh streams on it.
//
// `judgeLinks` is the pure decision (which connections have been broken longer than the grace
// time); `gossipLinkHealth` reads the streams out of gossipsub.

export interface LinkObservation {
  peer: string;
  /** Both gossip streams exist and are open. */
  healthy: boolean;
  /** When the connection was opened (ms): a new connection gets the grace time to set up. */
  openedAt: number;
}

export interface LinkJudgement {
  /** Peers whose connection should be closed now. */
  close: string[];
  /** Carry into the next call: since when each unhealthy peer has been seen unhealthy. */
  unhealthySince: Map<string, number>;
}

export function judgeLinks(links: readonly LinkObservation[], prevUnhealthySince: ReadonlyMap<string, number>, now: number, graceMs: number): LinkJudgement {
  const unhealthySince = new Map<string, number>();
  const close: string[] = [];
  for (const l of links) {
    if (l.healthy) continue;
    const since = Math.max(prevUnhealthySince.get(l.peer) ?? now, l.openedAt);
    if (now - since >= graceMs) close.push(l.peer);
    else unhealthySince.set(l.peer, since);
  }
  return { close, unhealthySince };
}

interface StreamLike {
  rawStream?: { status?: string; writeStatus?: string; readStatus?: string };
}

interface GossipsubInternals {
  peers?: Map<string, unknown>;
  streamsOutbound?: Map<string, StreamLike>;
  streamsInbound?: Map<string, StreamLike>;
}

/**
 * Whether gossipsub has an open outbound and inbound stream to `peer`. Reads gossipsub's
 * internal maps (there is no public API for it); if they are not there (another version),
 * every link counts as healthy, so the watchdog does nothing rather than something wrong.
 */
export function gossipLinkHealth(pubsub: PubSub, peer: string): boolean {
  const g = pubsub as unknown as GossipsubInternals;
  if (!(g.peers instanceof Map) || !(g.streamsOutbound instanceof Map) || !(g.streamsInbound instanceof Map)) return true;
  if (!g.peers.has(peer)) return false;
  return streamOpen(g.streamsOutbound.get(peer), 'writeStatus') && streamOpen(g.streamsInbound.get(peer), 'readStatus');
}

function streamOpen(s: StreamLike | undefined, side: 'writeStatus' | 'readStatus'): boolean {
  if (!s) return false;
  const raw = s.rawStream;
  if (!raw) return true;
  if (raw.status !== undefined && raw.status !== 'open') return false;
  // ReadStatus 'ready'; WriteStatus 'ready' or 'writing' (a write in progress).
  const dir = raw[side];
  return dir === undefined || dir === 'ready' || dir === 'writing';
}
