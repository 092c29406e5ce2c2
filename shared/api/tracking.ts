import { z } from 'zod';
import type { MemberState } from '../member-state.ts';

// What the tracking page's API serves (GET /api/services, /api/events) and what its mutating
// endpoints accept (POST /api/switchover, /api/drain).

/** One copy of a service as the page shows it. */
export interface CopyView {
  host: string;
  role: 'primary' | 'standby' | 'none';
  term: number;
  /** Container state on its depot (running, starting, ...). */
  state: string;
  /** When the copy took its current role (ms), null if unknown. */
  since: number | null;
  /** Last good DB sync into this copy (ms); the RPO is its age. Null for the primary or never synced. */
  lastSyncAt: number | null;
  syncFailing?: boolean;
  /** replicate/semisync, standby: transactions it is behind the primary (GTID), null if unknown. */
  lagTx?: number | null;
  /** replicate/semisync, standby: replication state and why it is broken or stopped. */
  replState?: string;
  replReason?: string;
  /** semisync, primary: fell back to async (no standby acknowledged in time). */
  semisyncFallback?: boolean;
  /** A standby whose database never completed a seed: it cannot take over (pilot/data-completeness.ts). */
  notSeeded?: boolean;
}

export interface ServiceView {
  service: string;
  /** Service address (moves with the primary). */
  address: string;
  term: number;
  copies: CopyView[];
  /** The voter group (newest view any copy reports): host names (peer ids of unknown depots), its epoch, and the old group while a change is joint. */
  voters?: { epoch: [number, number]; hosts: string[]; prev?: string[] };
}

/** One depot as the page shows it; web/depot-api.ts DepotRow fits (transfers optional). */
export interface DepotView {
  name: string;
  peerId?: string;
  state: MemberState;
  uptimeS: number | null;
  load: [number, number, number] | null;
  cpus?: number | null;
  memFreeBytes: number | null;
  memTotalBytes?: number | null;
  diskFreeBytes: number | null;
  /** Images staged (content ids). */
  images: string[];
  /** Transfers in progress (the heartbeat's `staging`). */
  transfers?: Array<{ image: string; bytes: number; total: number }>;
  /** When the last heartbeat arrived (ms). */
  lastSeen?: number;
}

/** What buildServiceViews needs of a depot: its name, state and the containers its heartbeat reports. */
export interface DepotContainers {
  name: string;
  peerId?: string;
  state: MemberState;
  containers: ReadonlyArray<unknown>;
}

export const SwitchoverRequest = z
  .object({
    service: z.string().min(1).max(128).describe('Service to switch over'),
    to: z.string().min(1).max(253).optional().describe('Depot to make primary (default: the best standby)'),
  })
  .strict();
export const DrainRequest = z.object({ host: z.string().min(1).max(253).describe('Depot to move every copy away from') }).strict();

