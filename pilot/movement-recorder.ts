import { randomUUID } from 'node:crypto';
import type { Logger } from '../shared/logger.ts';
import { errorMessage } from '../shared/errors.ts';
import { TOPICS } from '../shared/wire.ts';
import { MovementRecord } from '../shared/movement.ts';
import type { DepotComponents } from '../depot/components.ts';
import { movementMessage } from '../depot/journal/movement-gossip.ts';
import type { MovementJournal } from './db/movements-table.ts';
import type { DbLink } from './db/db-link.ts';
import type { MovementInput } from './pilot.ts';
import type { ServiceSpec } from './service-spec.ts';

// Writes one movement of a copy of a service: on the primary into navigator_movements of the
// service's own database (which journals and gossips it too), elsewhere into this depot's journal
// and to every depot by gossip. A failure is logged, never thrown: a movement that could not be
// recorded must not stop the movement itself.

export interface MovementRecorderDeps {
  self: DepotComponents['self'];
  gossip: DepotComponents['gossip'];
  journal: MovementJournal | undefined;
  logger: Logger;
}

export type RecordMovement = (spec: ServiceSpec, m: MovementInput, db?: DbLink) => Promise<void>;

export function movementRecorder(deps: MovementRecorderDeps): RecordMovement {
  const log = deps.logger.child({ component: 'pilots' });
  return async (spec, m, db) => {
    const record = MovementRecord.parse({
      id: randomUUID(),
      time: Date.now(),
      service: spec.name,
      role: m.role,
      host: m.host ?? deps.self.name,
      address: spec.address,
      fromHost: m.fromHost ?? '',
      event: m.event,
      failover: m.failover,
      reason: m.reason,
      term: m.term,
      timings: m.timings,
    });
    try {
      if (db?.movements) {
        await db.movements.record(record);
        return;
      }
      if (deps.journal) await deps.journal.append(record);
      await deps.gossip.publish(TOPICS.events, movementMessage(record));
    } catch (err) {
      log.error({ event: 'movement-not-recorded', err: errorMessage(err), movement: record.event }, 'movement record failed');
    }
  };
}

/** Gossip a record to every depot (what DbLink's movement table does after its own write). */
export function movementPublisher(gossip: DepotComponents['gossip']): (record: MovementRecord) => Promise<void> {
  return (record) => gossip.publish(TOPICS.events, movementMessage(record));
}
