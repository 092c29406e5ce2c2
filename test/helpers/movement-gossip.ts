import type { Message } from '@libp2p/interface';
import type { NavigatorNode } from '../../depot/libp2p.ts';
import type { Journal } from '../../depot/journal/journal.ts';
import { movementGossipHandler, movementMessage, type MovementHandlerOptions } from '../../depot/journal/movement-gossip.ts';
import type { MovementRecord } from '../../shared/movement.ts';
import { TOPICS } from '../../shared/wire.ts';

// Movement gossip straight on a libp2p node, for tests without a whole depot (a depot publishes
// through its gossip bus and subscribes through its GossipInbox: plugins/tracking.ts).

/** Gossip one record to every node subscribed to TOPICS.events. */
export async function publishMovement(node: NavigatorNode, record: MovementRecord): Promise<void> {
  await node.services.pubsub.publish(TOPICS.events, movementMessage(record));
}

/**
 * Standalone subscription (without a GossipInbox): subscribe to TOPICS.events and journal every
 * valid movement. Returns the function that unsubscribes.
 */
export function subscribeMovements(node: NavigatorNode, journal: Journal, opts: MovementHandlerOptions): () => void {
  const pubsub = node.services.pubsub;
  const handle = movementGossipHandler(journal, opts);
  const onMessage = (evt: CustomEvent<Message>) => {
    const msg = evt.detail;
    if (msg.topic !== TOPICS.events) return;
    handle(msg.data, msg.type === 'signed' ? msg.from.toString() : '');
  };
  pubsub.subscribe(TOPICS.events);
  pubsub.addEventListener('message', onMessage);
  return () => {
    pubsub.removeEventListener('message', onMessage);
  };
}
