import type { SeedMark } from './db/seed-marker.ts';

// Does a standby's database hold a complete copy of the service's data, so that promoting it
// loses at most the last moments before the primary died? Pure.
//
// A standby placed by the primary starts from the image's initial database; the primary then
// seeds it (replicate: a snapshot loaded table by table; dump: a first sync swapped in whole).
// Until that completes, the copy's data is not the service's. Promoted then, the service would
// come back with its history missing or half-loaded, and the old primary's data, when its host
// returns, would be set aside as diverged. So such a copy does not stand for election on its own
// (fail closed: the service stays down and says why, until a copy with the data is back or the
// last-resort recovery loads the freshest database copy held in a recovery kit, which does not
// count such a copy as one of the service's: pilot/last-resort.ts).
//
// What tells: the assignment's `seeded` flag (false for a standby placed to be seeded, true for
// the bootstrap copy, a last-resort recovery, and copies placed before the flag existed), the
// keeper's seed mark on the copy's own server (db/seed-marker.ts: a seed that started and did
// not complete), and a good sync reading (a replica with the primary's heartbeats, or a dump
// sync recorded). Being primary makes a copy's data the service's own.

export interface OwnDataReading {
  lastSyncAt?: number | undefined;
  seedMark?: SeedMark | undefined;
}

/** The copy's seeded state after one reading of its own server (undefined reading: unreadable, no news). */
export function seededAfterReading(seeded: boolean, reading: OwnDataReading | undefined): boolean {
  if (!reading) return seeded;
  // The keeper's mark is the most specific: it is written around every seed.
  if (reading.seedMark === 'seeding') return false;
  if (reading.seedMark === 'complete') return true;
  // Unmarked: a good sync (dump) or a replica holding the primary's heartbeats completed a seed.
  if (reading.lastSyncAt !== undefined) return true;
  return seeded;
}

/** Why this standby may not stand for election on its own, or undefined when it may. */
export function campaignWithheld(o: { hasDatabase: boolean; seeded: boolean }): string | undefined {
  if (!o.hasDatabase || o.seeded) return undefined;
  return "this copy's database never received a complete copy from a primary (never seeded, or its seed was cut off): promoting it would serve the service without its data";
}
