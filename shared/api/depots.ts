import type { MemberState } from '../member-state.ts';

// What GET /api/depots returns (depot/depots-response.ts builds it; `navigator status` prints it).

/** One depot as /api/depots shows it. */
export interface DepotRow {
  name: string;
  peerId: string;
  self: boolean;
  state: MemberState;
  reason: string;
  incarnation: number;
  since: number;
  /** Local time the last heartbeat (or probe answer) was observed, ms since the epoch. */
  lastSeen: number;
  version: string | null;
  uptimeS: number | null;
  load: [number, number, number] | null;
  cpus: number | null;
  memFreeBytes: number | null;
  memTotalBytes: number | null;
  diskFreeBytes: number | null;
  images: string[];
  /** Images being received (the heartbeat's `staging`): bytes on disk so far of total. */
  staging: Array<{ image: string; bytes: number; total: number }>;
  containers: unknown[];
  addresses: string[];
  hostAddresses: string[];
  httpPort: number | null;
  /** Port of the sshd that receives images shipped to this depot. */
  sshPort: number | null;
  /** Fingerprint of the sshd host key it announces. */
  sshHostKey: string | null;
  /** Whether this depot trusts that host key (see DepotHostKey). */
  hostKeyTrust: DepotHostKey | null;
  /** The host's recent ended sessions from its heartbeat (placement's time-of-day factor). */
  sessions?: Array<{ startMs: number; endMs: number }>;
  /** The host's busy signal from its heartbeat (config section busy); null when it does not measure one. */
  busy?: { busy: boolean; cpuPct: number; sessions: number; since?: number | undefined } | null;
}

/** A container report in a depot row as received (`containers: unknown[]`): every field still to check. */
export interface UncheckedContainerRow {
  service?: unknown;
  role?: unknown;
  state?: unknown;
  term?: unknown;
  lastSyncAt?: unknown;
  syncFailing?: unknown;
  gtid?: unknown;
  replState?: unknown;
  replReason?: unknown;
  semisyncFallback?: unknown;
  seeded?: unknown;
}

/** How this depot judges another depot's sshd host key, pinned from its signed heartbeats. */
export type DepotHostKey =
  /** Pinned and announced alike: images are shipped to it when its sshd presents this key. */
  | { state: 'pinned'; fingerprint: string; pinnedAt: number }
  /** It announces another key than the one pinned: refused (logged as ssh-host-key-changed). */
  | { state: 'changed'; pinned: string; announced: string; pinnedAt: number; since: number }
  /** It announces no host key: nothing can be shipped to it. */
  | { state: 'none' };

/** Facts about a depot that a part of this depot adds (not from its heartbeat). */
export interface DepotRowExtras {
  /** This depot's judgment of its sshd host key (null for itself, or without SSH trust). */
  hostKeyTrust?: DepotHostKey;
}

export interface DepotsResponse {
  self: { name: string; peerId: string; version: string; incarnation: number };
  counts: Record<MemberState, number>;
  /** Gossip messages this depot dropped, by reason. */
  dropped: Record<string, number>;
  depots: DepotRow[];
}
