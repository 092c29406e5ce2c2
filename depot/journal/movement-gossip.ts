import type { Logger } from '../../shared/logger.ts';
import { errorMessage } from '../../shared/errors.ts';
import { MovementRecord } from '../../shared/movement.ts';
import { MAX_GOSSIP_BYTES, MovementMessage, TOPICS, decodeMessage, encodeMessage } from '../../shared/wire.ts';
import type { Journal } from './journal.ts';

// Live movement records travel between depots as gossip on TOPICS.events (a depot that was down
// fetches what it missed with journal/gap-fill.ts).

/** The gossip payload of one record. */
export function movementMessage(record: MovementRecord): Uint8Array {
  const msg: MovementMessage = { type: 'movement', v: 1, record: MovementRecord.parse(record) };
  return encodeMessage(msg);
}

export interface MovementGossipCounters {
  /** result: appended | duplicate | bad | error */
  (result: 'appended' | 'duplicate' | 'bad' | 'error'): void;
}

export interface MovementHandlerOptions {
  logger: Logger;
  count?: MovementGossipCounters;
  /** Report a rejected message (GossipInbox.drop) so it is counted with the other drops. */
  drop?: (reason: 'too-large' | 'not-json' | 'schema', detail: string, from?: string, topic?: string) => void;
  maxBytes?: number;
}

/**
 * A handler for TOPICS.events payloads that validates movement messages and appends their record
 * to the journal. Plug it into GossipInbox.subscribe(TOPICS.events, handler) in the daemon.
 * Messages of another `type` on the topic are ignored (not ours to judge).
 */
export function movementGossipHandler(journal: Journal, opts: MovementHandlerOptions): (data: Uint8Array, from: string) => void {
  const log = opts.logger.child({ component: 'journal-gossip' });
  return (data, from) => {
    // After a stop the inbox may still hand over a late message; the journal is closed then.
    if (!journal.isOpen) return;
    const decoded = decodeMessage(MovementMessage, data, opts.maxBytes ?? MAX_GOSSIP_BYTES);
    if (!decoded.ok) {
      if (decoded.reason === 'schema' && otherType(data)) return;
      opts.count?.('bad');
      opts.drop?.(decoded.reason, decoded.detail, from, TOPICS.events);
      log.warn({ event: 'movement-gossip-dropped', from, reason: decoded.reason, detail: decoded.detail }, 'dropped a bad movement message');
      return;
    }
    journal.append(decoded.value.record).then(
      (added) => opts.count?.(added ? 'appended' : 'duplicate'),
      (err) => {
        opts.count?.('error');
        log.error({ event: 'movement-append-failed', err: errorMessage(err) }, 'could not journal a gossiped movement');
      },
    );
  };
}

function otherType(data: Uint8Array): boolean {
  try {
    const v = JSON.parse(new TextDecoder().decode(data)) as { type?: unknown };
    return typeof v?.type === 'string' && v.type !== 'movement';
  } catch {
    return false;
  }
}

