import { z } from 'zod';
import { Severity } from './config-alerts.ts';

// Alerts as they cross the network and the HTTP API: the alert record every depot keeps (the
// sending depot opens, resolves and marks deliveries; the others keep the same table from gossip),
// and notices: events one depot saw (a refused peer, an image that failed verification, a voter
// quorum lost or back, a last-resort recovery) gossiped so that whichever depot sends can alert.

export const ALERT_TYPES = [
  'failover',
  'service-down',
  'unprotected',
  'sync-failing',
  'sync-lagging',
  'semisync-fallback',
  'quorum-lost',
  'last-resort-recovery',
  'peer-refused',
  'image-verify-failed',
] as const;
export const AlertType = z.enum(ALERT_TYPES);
export type AlertType = z.infer<typeof AlertType>;

export const CHANNELS = ['webhook', 'mail'] as const;
export const Channel = z.enum(CHANNELS);
export type Channel = z.infer<typeof Channel>;

const name = z.string().max(253);
const time = z.number().int().nonnegative();
const Details = z.record(z.string().max(64), z.union([z.string().max(512), z.number(), z.boolean()])).refine((d) => Object.keys(d).length <= 24, 'at most 24 details');

export const AlertRecord = z
  .object({
    id: z.string().min(1).max(400).describe('key@openedAt: unique, the same on every depot'),
    key: z.string().min(1).max(360).describe('What the alert is about (type/service/subject); one open alert per key'),
    type: AlertType,
    severity: Severity,
    service: name.default(''),
    host: name.default('').describe('Depot the alert is about, if one'),
    summary: z.string().max(1024),
    details: Details.default({}),
    openedAt: time,
    resolvedAt: time.optional(),
    resolveSummary: z.string().max(1024).optional(),
    /** Occurrences joined into this alert (events of one key while it is open). */
    count: z.number().int().min(1).default(1),
    lastAt: time,
    /** Ids of the events (movement records, notices) this alert covers, newest last. */
    events: z.array(z.string().max(128)).max(32).default([]),
    /** Channels the open (and the resolve) notification reached. */
    sentOpen: z.array(Channel).default([]),
    sentResolve: z.array(Channel).default([]),
    /** Channels that gave up on this alert (giveUpAfterMs) or that it was below minSeverity for. */
    skipped: z.array(Channel).default([]),
    /** A second open alert of the same key (two senders for a moment): never sent. */
    superseded: z.boolean().default(false),
    openedBy: name.default(''),
  })
  .strict();
export type AlertRecord = z.infer<typeof AlertRecord>;

export const NOTICE_KINDS = ['peer-refused', 'image-verify-failed', 'quorum', 'last-resort-recovery'] as const;
export const NoticeKind = z.enum(NOTICE_KINDS);
export type NoticeKind = z.infer<typeof NoticeKind>;

export const Notice = z
  .object({
    id: z.string().min(1).max(128),
    kind: NoticeKind,
    at: time,
    /** Depot that saw it (name and peer id). */
    host: name,
    peerId: z.string().max(128),
    service: name.default(''),
    /** What it is about: the refused peer, the image id, ... */
    subject: z.string().max(256).default(''),
    summary: z.string().max(1024),
    /** For condition reports (kind quorum): true while the condition holds. */
    active: z.boolean().optional(),
    details: Details.default({}),
  })
  .strict();
export type Notice = z.infer<typeof Notice>;
export type NoticeInput = Omit<z.input<typeof Notice>, 'id' | 'at' | 'host' | 'peerId'>;

/** Gossiped on TOPICS.alerts. */
export const AlertMessage = z.discriminatedUnion('type', [
  z.object({ type: z.literal('alert-state'), v: z.literal(1), alerts: z.array(AlertRecord).max(32) }).strict(),
  z.object({ type: z.literal('alert-notice'), v: z.literal(1), notice: Notice }).strict(),
]);
export type AlertMessage = z.infer<typeof AlertMessage>;

/** One channel's delivery state, as /api/alerts and the page show it. */
export interface ChannelStatus {
  channel: Channel;
  /** Where it goes (URL without credentials, mail recipients). */
  target: string;
  pending: number;
  failures: number;
  lastError?: string;
  lastErrorAt?: number;
  lastOkAt?: number;
  nextAttemptAt?: number;
  sent: number;
}

/** GET /api/alerts */
export interface AlertsResponse {
  now: number;
  enabled: boolean;
  sender: { name: string; peerId: string; self: boolean; sending: boolean };
  channels: ChannelStatus[];
  alerts: AlertRecord[];
}
