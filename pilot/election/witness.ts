import { join } from 'node:path';
import type { Config } from '../../shared/config.ts';
import type { Logger } from '../../shared/logger.ts';
import { createNode, type NavigatorNode } from '../../depot/libp2p.ts';
import { readSwarmKey } from '../../depot/swarm-key.ts';
import { loadOrCreateIdentity } from '../../depot/identity.ts';
import { electionConfigFrom } from './settings.ts';
import { ElectionTransport } from './transport.ts';
import { Voters } from './voters.ts';
import { WITNESS_ID } from './views.ts';
import { monotonicNow } from '../supervisor.ts';

// The witness (`navigator witness`): a vote and nothing else, for an always-on machine. A libp2p
// node holding the swarm key that answers election requests on ELECTION_PROTOCOL with the same
// pure voter as every depot (voter-role.ts, id WITNESS_ID, its promises on disk with fsync before
// each reply). It holds no copy, publishes no heartbeat and is no member: depots reach it at the
// multiaddr in their pilot.witness, and count it only when a service has exactly two voters
// (views.ts, THE WITNESS). Its lease timing must be the depots' (the same pilot section).

export interface Witness {
  node: NavigatorNode;
  /** Multiaddrs (with /p2p/ID) to put in the depots' pilot.witness. */
  addresses(): string[];
  stop(): Promise<void>;
}

export async function startWitness(config: Config, logger: Logger): Promise<Witness> {
  const log = logger.child({ component: 'witness' });
  const cfg = electionConfigFrom(config.pilot, {}, config.election);
  const swarmKey = await readSwarmKey(config.network.swarmKeyFile);
  const privateKey = await loadOrCreateIdentity(config.network.identityFile);
  const node = await createNode({ swarmKey, privateKey, listen: config.network.listen, announce: config.network.announce, mdns: false });
  const voters = new Voters({ selfId: WITNESS_ID, dir: join(config.node.dataDir, 'witness-votes'), cfg, now: monotonicNow, logger: log });
  await voters.start();
  // Replies later than the depots' lease (less the margin) are worth nothing to them anyway.
  const transport = new ElectionTransport({ node, voters, logger: log, timeoutMs: Math.max(200, cfg.leaseMs - cfg.leaseSafetyMarginMs) });
  await transport.start();
  const addresses = () => node.getMultiaddrs().map((a) => a.toString());
  log.info({ event: 'witness-started', peerId: node.peerId.toString(), addresses: addresses(), leaseMs: cfg.leaseMs }, 'witness voting; set pilot.witness on the depots to one of its addresses');
  return {
    node,
    addresses,
    stop: async () => {
      await transport.stop().catch(() => undefined);
      await node.stop();
      log.info({ event: 'witness-stopped', served: transport.counters.served }, 'witness stopped');
    },
  };
}
