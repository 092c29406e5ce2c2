import type { Logger } from '../shared/logger.ts';
import type { LeaseAck, VoteReply } from '../shared/wire.ts';

// What the primary says about its lease's health, so a lapse can be explained from the logs: a
// renewal a voter answered late, refused or left unanswered, and, when the lease runs out, how old
// each voter's last acknowledgement was. All voters silent for the same time means this depot's
// own event loop was held (bench:scale at 32 depots); one voter silent means that voter.

export interface RenewalReply {
  voter: string;
  reply: LeaseAck | VoteReply | undefined;
  rttMs: number;
  /** Replies later than this (one renewal interval) are logged as slow. */
  slowMs: number;
  term: number;
  /** Lease left when the reply came (primary only). */
  leaseLeftMs: number | undefined;
}

export function logRenewalReply(log: Logger, r: RenewalReply): void {
  const refused = r.reply?.type === 'lease-ack' && !r.reply.granted;
  if (r.reply && !refused && r.rttMs <= r.slowMs) return;
  const who = `voter ${r.voter.slice(-8)}`;
  const rttMs = Math.round(r.rttMs);
  const fields = { event: 'renewal-unacknowledged', voter: r.voter, rttMs, answered: r.reply !== undefined, refused, term: r.term, leaseLeftMs: r.leaseLeftMs };
  if (!r.reply) log.warn(fields, `${who} did not answer a renewal within ${rttMs} ms`);
  // A refusal is normal at the start of a term (a voter that promised another candidate); silence is not.
  else if (refused) log.info({ ...fields, reason: r.reply.reason }, `${who} refused a renewal (${r.reply.reason ?? 'no reason'})`);
  else log.info({ ...fields, event: 'renewal-slow' }, `${who} acknowledged the renewal after ${rttMs} ms`);
}

/** The lease ran out: the age of each voter's last acknowledged renewal it was counted from. */
export function logLeaseLapsed(log: Logger, l: { term: number; acks: Readonly<Record<string, number>>; now: number; voters: number }): void {
  const acksAgeMs = Object.fromEntries(Object.entries(l.acks).map(([v, at]) => [v.slice(-8), Math.round(l.now - at)]));
  log.warn({ event: 'lease-lapsed', term: l.term, acksAgeMs, voters: l.voters }, 'lease ran out before a majority acknowledged a renewal');
}
