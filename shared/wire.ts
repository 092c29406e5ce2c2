import { z } from 'zod';
import { NavigatorError } from './errors.ts';
import { MovementRecord } from './movement.ts';
import { SafeName } from './names.ts';

// Every message that crosses the network is described here: a zod schema per message type,
// a size limit, and one codec. A message that fails the schema or the limit is dropped and
// counted by the receiver; it never throws into the daemon.

export const TOPICS = {
  heartbeat: 'navigator/v1/heartbeat',
  membership: 'navigator/v1/membership',
  events: 'navigator/v1/events',
  /** Alert table updates and notices (shared/alert.ts). */
  alerts: 'navigator/v1/alerts',
} as const;

export const PROTOCOLS = {
  control: '/navigator/control/1',
  probe: '/navigator/probe/1',
} as const;

/** Default size limit of one gossip message (config: membership.maxMessageBytes). */
export const MAX_GOSSIP_BYTES = 65_536;
/** Size limit of one control-protocol frame. */
export const MAX_CONTROL_BYTES = 1_048_576;

const shortText = z.string().max(256);
const peerIdText = z.string().min(10).max(128);
const nonNeg = z.number().finite().nonnegative();

export const ContainerState = z.enum(['stopped', 'starting', 'running', 'stopping', 'failed', 'unknown']);
export const Role = z.enum(['primary', 'standby', 'none']);

/** A copy of a service hosted by a depot, as reported in its heartbeat. */
export const ContainerReport = z.object({
  id: shortText.describe('Container id on this depot'),
  service: shortText.describe('Service the container is a copy of'),
  driver: z.enum(['vmrun', 'qemu', 'process']),
  state: ContainerState,
  role: Role.default('none'),
  term: z.number().int().nonnegative().default(0).describe('Election term the role was taken in'),
  image: shortText.default('').describe('Content id of the image the container runs'),
  lastSyncAt: nonNeg.optional().describe('Time (ms) of the last good DB sync into this copy'),
  syncFailing: z.boolean().default(false).describe('The last DB sync attempt failed'),
  seeded: z
    .boolean()
    .optional()
    .describe("A standby of a service with a database: false while its database never received a complete copy from a primary (it does not stand for election, and the last-resort recovery does not count it as a copy)"),
  view: z
    .lazy(() => ElectionView)
    .optional()
    .describe("The service's voter group as this copy knows it (a primary's is current): gossiped so every depot learns the group and the term"),
  gtid: z.string().max(512).optional().describe('replicate/semisync: GTID position of the copy (a standby: transactions applied; the primary: its binlog)'),
  replState: z.enum(['replicating', 'connecting', 'broken', 'stopped', 'seeding']).optional().describe("replicate/semisync: a standby's replication state"),
  replReason: shortText.optional().describe('Why replication is broken or stopped'),
  semisyncFallback: z.boolean().optional().describe('semisync: the primary fell back to async replication (no standby acknowledged in time)'),
  guestAddress: z
    .string()
    .regex(/^\d{1,3}(\.\d{1,3}){3}$/)
    .optional()
    .describe("A qemu copy on the LAN: its guest's own address, where the copy's database answers"),
});
export type ContainerReport = z.infer<typeof ContainerReport>;

/** A host's busy signal as its depot measures it (config section busy). */
export const BusySignal = z
  .object({
    busy: z.boolean().describe('The host is busy now (CPU use at or over busy.cpuPct, or an active local session)'),
    cpuPct: z.number().finite().min(0).max(100).describe("CPU use of the host's user work, percent of all its CPUs, over the last sample"),
    sessions: z.number().int().min(0).max(1000).describe('Active local login sessions (0 where loginctl is absent or not counted)'),
    since: nonNeg.optional().describe('While busy: when this busy spell began (ms since the epoch, clock of the host)'),
  })
  .strict();
export type BusySignal = z.infer<typeof BusySignal>;

/** Gossiped every membership.heartbeatMs on TOPICS.heartbeat. */
export const HeartbeatMessage = z.object({
  type: z.literal('heartbeat'),
  v: z.literal(1),
  peerId: peerIdText,
  name: shortText.min(1),
  seq: z.number().int().nonnegative().describe('Increases by one per heartbeat; restarts at 0 with a new incarnation'),
  incarnation: z.number().int().nonnegative().describe('Start time of this depot process (ms); a restart is a new incarnation'),
  sentAt: nonNeg,
  addresses: z.array(z.string().max(256)).max(32).describe('libp2p multiaddrs of the depot'),
  hostAddresses: z.array(z.string().max(64)).max(32).default([]).describe('IP addresses of the host'),
  httpPort: z.number().int().min(0).max(65535).optional(),
  sshPort: z.number().int().min(1).max(65535).optional().describe('Port of the sshd that receives images shipped to this depot (config ship.sshPort)'),
  sshHostKey: z
    .string()
    .regex(/^SHA256:[A-Za-z0-9+/]{43}$/)
    .optional()
    .describe("Fingerprint of this host's sshd Ed25519 host key (ship.hostKeyFile): senders pin it and connect only to an sshd presenting it"),
  sshKey: z
    .string()
    .regex(/^ssh-ed25519 [A-Za-z0-9+/]{68}$/)
    .optional()
    .describe("Public key this depot ships images with: every other depot authorizes it for its receive account while this one is a member"),
  bootTime: nonNeg.describe('Host boot time (ms since epoch)'),
  uptimeS: nonNeg.describe('Host uptime in seconds'),
  load: z.tuple([nonNeg, nonNeg, nonNeg]).describe('1, 5 and 15 minute load averages'),
  cpus: z.number().int().positive().max(4096),
  memFreeBytes: nonNeg,
  memTotalBytes: nonNeg,
  diskFreeBytes: nonNeg.describe('Free bytes in the image store'),
  images: z.array(z.string().max(128)).max(256).default([]).describe('Content ids of images held'),
  staging: z
    .array(z.object({ image: z.string().max(128), bytes: nonNeg, total: nonNeg }))
    .max(32)
    .default([])
    .describe('Images being received: bytes on disk so far of total (staging folders written to lately)'),
  containers: z.array(ContainerReport).max(64).default([]),
  sessions: z
    .array(z.tuple([z.number().int().nonnegative(), z.number().int().positive()]))
    .max(32)
    .optional()
    .describe("The host's recent ended sessions, newest last: [start minute since the epoch, length in minutes] (depot/sessions); placement and voter ranking read the time of day from them"),
  busy: BusySignal.optional()
    .describe("The host's busy signal (depot/busy): its user's CPU use and local sessions; a primary moves off a busy host, never onto one. Left out when this depot cannot measure it"),
  recoveryKits: z
    .array(
      z.object({
        service: shortText.min(1),
        image: z.string().max(128),
        dbAt: nonNeg.optional(),
        preparing: z.string().max(128).optional().describe('Container started here ahead of a last-resort recovery: not one of the copies lost'),
      }),
    )
    .max(32)
    .optional()
    .describe('Recovery kits this depot holds (pilot/recovery-kits.ts): service, image, and the time of its database copy if any; the last-resort recovery picks the freshest'),
  version: shortText,
});
export type HeartbeatMessage = z.infer<typeof HeartbeatMessage>;

/** Sent on TOPICS.membership when a depot stops cleanly, or when one is judged dead. */
export const LeftMessage = z.object({
  type: z.literal('left'),
  v: z.literal(1),
  peerId: peerIdText,
  name: shortText,
  incarnation: nonNeg,
  sentAt: nonNeg,
});
export type LeftMessage = z.infer<typeof LeftMessage>;

export const DeadMessage = z.object({
  type: z.literal('dead'),
  v: z.literal(1),
  peerId: peerIdText.describe('Depot judged dead'),
  incarnation: nonNeg,
  by: peerIdText.describe('Depot that judged it'),
  sentAt: nonNeg,
});
export type DeadMessage = z.infer<typeof DeadMessage>;

export const MembershipMessage = z.discriminatedUnion('type', [LeftMessage, DeadMessage]);
export type MembershipMessage = z.infer<typeof MembershipMessage>;

/** Indirect probe (SWIM ping-req) over PROTOCOLS.probe. */
export const ProbeRequest = z.object({
  type: z.literal('ping-req'),
  target: peerIdText,
  timeoutMs: z.number().int().positive().max(10_000),
});
export type ProbeRequest = z.infer<typeof ProbeRequest>;
export const ProbeResponse = z.object({ type: z.literal('ping-ack'), target: peerIdText, ok: z.boolean(), rttMs: nonNeg.optional() });
export type ProbeResponse = z.infer<typeof ProbeResponse>;

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

export function encodeMessage(msg: unknown, maxBytes = MAX_GOSSIP_BYTES): Uint8Array {
  const bytes = encoder.encode(JSON.stringify(msg));
  if (bytes.byteLength > maxBytes) {
    throw new NavigatorError('MESSAGE_TOO_LARGE', `message of ${bytes.byteLength} bytes exceeds the limit of ${maxBytes}`);
  }
  return bytes;
}

export type DecodeResult<T> = { ok: true; value: T } | { ok: false; reason: 'too-large' | 'not-json' | 'schema'; detail: string };

/** Decode and validate; never throws. */
export function decodeMessage<T>(schema: z.ZodType<T>, bytes: Uint8Array, maxBytes = MAX_GOSSIP_BYTES): DecodeResult<T> {
  if (bytes.byteLength > maxBytes) {
    return { ok: false, reason: 'too-large', detail: `${bytes.byteLength} bytes > limit ${maxBytes}` };
  }
  let raw: unknown;
  try {
    raw = JSON.parse(decoder.decode(bytes));
  } catch (err) {
    return { ok: false, reason: 'not-json', detail: (err as Error).message };
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    const first = parsed.error.issues[0];
    return { ok: false, reason: 'schema', detail: first ? `${first.path.join('.') || '(root)'}: ${first.message}` : 'invalid' };
  }
  return { ok: true, value: parsed.data };
}

/**
 * One request of the control protocol (PROTOCOLS.control): one length-prefixed JSON frame per
 * stream, answered by one ControlResponse frame. `method` is free text here so an unknown method
 * gets an UNKNOWN_METHOD reply instead of a schema error; each method checks its own params.
 */
export const ControlRequest = z.object({
  id: z.string().min(1).max(64).describe('Chosen by the caller, echoed in the response'),
  method: z.string().min(1).max(64).describe('e.g. container.start, image.verify'),
  params: z.unknown().optional().describe('Method parameters, checked by the method'),
});
export type ControlRequest = z.infer<typeof ControlRequest>;

export const ControlError = z.object({
  code: z.string().min(1).max(64).describe('An ErrorCode from shared/errors.ts'),
  message: z.string().max(4096),
  details: z.record(z.string(), z.unknown()).optional(),
});
export type ControlError = z.infer<typeof ControlError>;

export const ControlResponse = z.discriminatedUnion('ok', [
  z.object({ id: z.string().max(64).nullable().describe('null when the request could not be read'), ok: z.literal(true), result: z.unknown() }),
  z.object({ id: z.string().max(64).nullable(), ok: z.literal(false), error: ControlError }),
]);
export type ControlResponse = z.infer<typeof ControlResponse>;

/** A movement record gossiped on TOPICS.events to every depot's journal (see shared/movement.ts). */
export const MovementMessage = z.object({
  type: z.literal('movement'),
  v: z.literal(1),
  record: MovementRecord,
});
export type MovementMessage = z.infer<typeof MovementMessage>;
/** Journal gap filling (request/response), served on JOURNAL_PROTOCOL and by the control protocol's `journal.fetch`. */
export { JournalFetchRequest, JournalFetchResponse } from './movement.ts';
export const JOURNAL_PROTOCOL = '/navigator/journal/1';

// ---- Election (pilot/election/): votes and leases, request/response between a pilot and the
// voters of the service's group (pilot/election/voter-group.ts), plus the witness when the group is
// two. Times in these messages
// are never compared across hosts except `syncTime` (a DB dump time stamped by the primary).

const electionId = z.string().min(1).max(128);
const termNum = z.number().int().nonnegative();

/** A voter set. `epoch` = [term of the primary that made it, counter]; ordered lexicographically.
 * While a change is being committed the view is joint: `prev` holds the old set and a quorum needs
 * a majority of both. */
export const ElectionView = z.object({
  epoch: z.tuple([termNum, termNum]).describe('[term, n] of the primary that made this view'),
  voters: z.array(electionId).min(1).max(64).describe('Depot peer ids that vote (sorted)'),
  prev: z.array(electionId).min(1).max(64).optional().describe('Old voter set while a change is joint'),
});
export type ElectionView = z.infer<typeof ElectionView>;

const rejectReason = z.enum(['stale-view', 'stale-term', 'voted-other', 'promised', 'stale-sync', 'prefer-other']);

/** A candidate asks a voter for its vote in `term`. */
export const VoteRequest = z.object({
  type: z.literal('vote-request'),
  v: z.literal(1),
  service: SafeName.describe('Service name (also the voter\'s file name)'),
  term: termNum,
  candidate: electionId.describe('Pilot asking (peer id of its depot + copy)'),
  syncTime: nonNeg.describe('Time of the last good DB sync into the candidate (primary clock)'),
  seq: termNum.describe('Round number, echoed in the reply'),
  view: ElectionView,
});
export type VoteRequest = z.infer<typeof VoteRequest>;

export const VoteReply = z.object({
  type: z.literal('vote-reply'),
  v: z.literal(1),
  service: SafeName.describe('Service name (also the voter\'s file name)'),
  term: termNum,
  candidate: electionId,
  voter: electionId,
  seq: termNum,
  granted: z.boolean(),
  reason: rejectReason.optional(),
  freeInMs: z
    .number()
    .int()
    .nonnegative()
    .max(3_600_000)
    .optional()
    .describe('With reason "promised": how long (voter\'s clock) until its promise to the lease holder runs out, so the candidate asks again then rather than at its next round'),
  votedTerm: termNum.describe('Highest term this voter has voted in'),
  view: ElectionView.nullable().describe('The voter\'s view after handling the request'),
});
export type VoteReply = z.infer<typeof VoteReply>;

/** The primary renews its lease (every leaseMs/3); carries its view so voters learn changes. */
export const LeaseRenew = z.object({
  type: z.literal('lease-renew'),
  v: z.literal(1),
  service: SafeName.describe('Service name (also the voter\'s file name)'),
  term: termNum,
  holder: electionId,
  seq: termNum,
  view: ElectionView,
});
export type LeaseRenew = z.infer<typeof LeaseRenew>;

export const LeaseAck = z.object({
  type: z.literal('lease-ack'),
  v: z.literal(1),
  service: SafeName.describe('Service name (also the voter\'s file name)'),
  term: termNum,
  holder: electionId,
  voter: electionId,
  seq: termNum,
  granted: z.boolean(),
  reason: rejectReason.optional(),
  votedTerm: termNum,
  view: ElectionView.nullable(),
});
export type LeaseAck = z.infer<typeof LeaseAck>;

/** A pilot gives back the promises made to it in `term` (resigning primary, candidate standing down). */
export const LeaseRelease = z.object({
  type: z.literal('lease-release'),
  v: z.literal(1),
  service: SafeName.describe('Service name (also the voter\'s file name)'),
  term: termNum,
  holder: electionId,
});
export type LeaseRelease = z.infer<typeof LeaseRelease>;

export const ElectionMessage = z.discriminatedUnion('type', [VoteRequest, VoteReply, LeaseRenew, LeaseAck, LeaseRelease]);
export type ElectionMessage = z.infer<typeof ElectionMessage>;
/** Request/response protocol the election messages travel on (one request, one reply per stream). */
export const ELECTION_PROTOCOL = '/navigator/election/1';

/** Member exchange over PROTOCOLS.probe: a depot that just connected asks a peer whom it knows (memberlist push/pull). */
export const MembersRequest = z.object({ type: z.literal('members') });
export type MembersRequest = z.infer<typeof MembersRequest>;
export const MembersResponse = z.object({
  type: z.literal('members'),
  members: z
    .array(z.object({ peerId: peerIdText, addresses: z.array(z.string().max(256)).max(8) }))
    .max(1024)
    .describe('Depots the peer holds alive or suspect, with their libp2p addresses'),
});
export type MembersResponse = z.infer<typeof MembersResponse>;
/**
 * Ask a peer for its own current heartbeat (answered with a HeartbeatMessage). Sent when a
 * connection opens, so a joining depot knows the others at once without making every depot
 * gossip a heartbeat for it; the answer is accepted only if it names the connection's peer.
 */
export const HeartbeatRequest = z.object({ type: z.literal('heartbeat') });
export type HeartbeatRequest = z.infer<typeof HeartbeatRequest>;
/** Any request on PROTOCOLS.probe. */
export const ProbeProtocolRequest = z.discriminatedUnion('type', [ProbeRequest, MembersRequest, HeartbeatRequest]);
export type ProbeProtocolRequest = z.infer<typeof ProbeProtocolRequest>;
