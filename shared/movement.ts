import { z } from 'zod';

// A movement record: one change of where a copy of a service runs or what role it has. Pilots
// write them to the service's own database and gossip them; every depot keeps them in its
// journal and shows them on the tracking page. This file must not import shared/wire.ts (wire
// imports it), so the few shared pieces are declared here.

export const MOVEMENT_EVENTS = ['bootstrap', 'placed', 'promoted', 'failover', 'replaced', 'demoted', 'switchover', 'drained', 'diverged', 'last-resort'] as const;
export const MovementEvent = z.enum(MOVEMENT_EVENTS).describe('What happened to the copy');
export type MovementEvent = z.infer<typeof MovementEvent>;

export const MovementRole = z.enum(['primary', 'standby', 'none']).describe('Role of the copy after the movement');
export type MovementRole = z.infer<typeof MovementRole>;

const ms = (what: string) => z.number().finite().nonnegative().max(86_400_000 * 30).optional().describe(what);

/** Durations (ms) of the phases of a movement; a phase that did not happen is left out. */
export const MovementTimings = z
  .object({
    detect: ms('From the last good probe of the lost copy to the decision that it is gone'),
    elect: ms('Vote round until a majority granted the new term'),
    takeover: ms('From winning the election to serving on the service address'),
    ship: ms('Image transfer to the new host (0 when already staged)'),
    boot: ms('Container start until the service answered its health check'),
  })
  .strict();
export type MovementTimings = z.infer<typeof MovementTimings>;

const text = (max: number, what: string) => z.string().max(max).describe(what);

export const MovementRecord = z
  .object({
    id: z
      .string()
      .min(1)
      .max(128)
      .regex(/^[A-Za-z0-9._:-]+$/, 'letters, digits and . _ : - only')
      .describe('Unique id (UUID); duplicates are ignored everywhere'),
    time: z.number().int().nonnegative().describe('When the movement completed (ms since epoch, clock of the host that wrote it)'),
    service: text(128, 'Service name').min(1),
    role: MovementRole,
    host: text(253, 'Depot that hosts the copy after the movement').min(1),
    address: text(64, 'Service address (primary) or host address (standby) after the movement'),
    fromHost: text(253, 'Depot the role or copy moved away from (empty if none)').default(''),
    event: MovementEvent,
    failover: z.boolean().describe('The movement was forced by a failure, not planned'),
    reason: text(1024, 'Why, in words an admin understands'),
    term: z.number().int().nonnegative().describe('Election term of the service after the movement'),
    timings: MovementTimings.default({}),
  })
  .strict();
export type MovementRecord = z.infer<typeof MovementRecord>;
export type MovementRecordInput = z.input<typeof MovementRecord>;

/** A record as held by one depot's journal: with the local sequence number it got there. */
export interface JournalEntry {
  seq: number;
  record: MovementRecord;
}

/** Ask a peer for the records it holds from `sinceTime` on, after its local `afterSeq`. */
export const JournalFetchRequest = z
  .object({
    type: z.literal('journal.fetch'),
    v: z.literal(1),
    sinceTime: z.number().int().nonnegative().describe('Only records whose time is at least this (ms)'),
    afterSeq: z.number().int().nonnegative().default(0).describe('Cursor: continue after this sequence number of the answering journal'),
    limit: z.number().int().min(1).max(256).default(256).describe('Most records in one answer'),
  })
  .strict();
export type JournalFetchRequest = z.infer<typeof JournalFetchRequest>;

export const JournalFetchResponse = z
  .object({
    type: z.literal('journal.records'),
    v: z.literal(1),
    records: z.array(MovementRecord).max(256),
    lastSeq: z.number().int().nonnegative().describe('Sequence number to pass as afterSeq for the next page'),
    more: z.boolean().describe('More records may follow'),
  })
  .strict();
export type JournalFetchResponse = z.infer<typeof JournalFetchResponse>;

/** One failover as drawn on the chart and measured by the metrics. */
export interface FailoverSummary {
  id: string;
  time: number;
  service: string;
  host: string;
  fromHost: string;
  /** Service unreachable: detect + elect + takeover (ms). */
  outageMs: number;
  /** From the failure until a new standby was in place (ms); null while not yet re-protected. */
  reprotectMs: number | null;
}

/** Outage of a failover: the phases from losing the primary to serving again. */
export function outageOf(r: MovementRecord): number {
  const t = r.timings;
  return (t.detect ?? 0) + (t.elect ?? 0) + (t.takeover ?? 0);
}

/**
 * Pair each failover with the first standby placed for the same service after it
 * (event `replaced` or `placed` with role standby): re-protection runs from the failure
 * (failover time minus its outage) to that standby's record time.
 */
export function failoverSummaries(records: Iterable<MovementRecord>): FailoverSummary[] {
  const sorted = [...records].sort((a, b) => a.time - b.time || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const out: FailoverSummary[] = [];
  const open = new Map<string, FailoverSummary[]>();
  for (const r of sorted) {
    if (r.event === 'failover') {
      const outageMs = outageOf(r);
      const s: FailoverSummary = { id: r.id, time: r.time, service: r.service, host: r.host, fromHost: r.fromHost, outageMs, reprotectMs: null };
      out.push(s);
      const list = open.get(r.service) ?? [];
      list.push(s);
      open.set(r.service, list);
    } else if ((r.event === 'replaced' || r.event === 'placed') && r.role === 'standby') {
      const list = open.get(r.service);
      if (!list || list.length === 0) continue;
      // One new standby re-protects every failover of the service still waiting for one.
      for (const s of list) s.reprotectMs = Math.max(0, r.time - (s.time - s.outageMs));
      open.set(r.service, []);
    }
  }
  return out;
}
