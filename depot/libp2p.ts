import type { Multiaddr } from '@multiformats/multiaddr';
import { createLibp2p, type Libp2p } from 'libp2p';
import { tcp } from '@libp2p/tcp';
import { memory } from '@libp2p/memory';
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import { identify } from '@libp2p/identify';
import { mdns } from '@libp2p/mdns';
import { bootstrap } from '@libp2p/bootstrap';
import { preSharedKey } from '@libp2p/pnet';
import { gossipsub, type GossipsubOpts } from '@chainsafe/libp2p-gossipsub';
import type { PrivateKey, PeerDiscovery, PubSub } from '@libp2p/interface';
import type { Identify } from '@libp2p/identify';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { NetworkSection } from '../shared/config.ts';

// The one place a libp2p node is composed: TCP (or the in-process memory transport for large
// simulations), the private-network protector, Noise, Yamux, identify and gossipsub with
// strict signing. Every other component receives the running node and registers its own protocols.

export type NodeServices = {
  identify: Identify;
  pubsub: PubSub;
};

export type NavigatorNode = Libp2p<NodeServices>;

/**
 * Gossipsub tuned for a LAN cluster whose traffic is a heartbeat per depot when its content
 * changes (and every 30 s anyway), a few movement events, and deaths (measured with
 * `npm run bench:gossip`, see its notes):
 * - floodPublish: the publisher sends to every subscriber it is connected to (with mDNS that is
 *   everyone), so a heartbeat arrives in one hop.
 * - No mesh (D 0): nothing is forwarded. Every depot is connected to every other one (it dials
 *   every depot it hears of, the push-pull member exchange fills gaps, gossip/links.ts repairs broken streams),
 *   so forwarding would only send each heartbeat a second time; measured at 32 depots, D 1 cost
 *   about 0.8 KB/s per depot for nothing. Liveness does not depend on heartbeats (probes), and
 *   movements missed while a connection was down are filled from the journal.
 * - Its own heartbeat every 5 s instead of every second: with no mesh there is little to maintain.
 * - No IHAVE gossip (below).
 * - fastMsgIdFn (from + seqno): duplicates are recognised before their signature is verified.
 */
const GOSSIP_TUNING: Partial<GossipsubOpts> = {
  floodPublish: true,
  D: 0,
  Dlo: 0,
  Dhi: 0,
  Dscore: 0,
  Dout: 0,
  heartbeatInterval: 5000,
  // No IHAVE gossip: it costs more than the heartbeats it could recover, and every heartbeat is
  // replaced by the next one anyway (deaths are also probed, movements pulled by journal gap filling).
  Dlazy: 0,
  gossipFactor: 0,
  mcacheGossip: 1,
  // IDONTWANT control messages would follow almost every heartbeat and save little with D 1.
  idontwantMinDataSize: 16_384,
  // Peer scoring's IP colocation penalty graylists a peer once more than 10 others share its
  // address, and gossipsub then ignores everything it sends. Only swarm-key holders get this
  // far, and depots behind one address (NAT, several per host in tests and benchmarks) are
  // legitimate: measured, 32 depots on loopback stalled at 13 with the default penalty.
  scoreParams: { IPColocationFactorWeight: 0 },
  fastMsgIdFn: (msg) =>
    msg.from && msg.seqno ? `${Buffer.from(msg.from).toString('base64')}:${Buffer.from(msg.seqno).toString('base64')}` : `${Math.random()}`,
};

export interface CreateNodeOptions {
  /** Private network key (swarm.key contents). */
  swarmKey: Uint8Array;
  privateKey?: PrivateKey;
  listen: string[];
  announce?: string[];
  bootstrap?: string[];
  mdns?: boolean;
  /** network.mdnsIntervalMs (default: its default). */
  mdnsIntervalMs?: number;
  /** Use the in-process memory transport instead of TCP (benchmarks with hundreds of nodes). */
  transport?: 'tcp' | 'memory';
  gossip?: Partial<GossipsubOpts>;
  /** network.maxConnections (default: its default). */
  maxConnections?: number;
  /** Addresses never to announce (identify, getMultiaddrs): the service addresses this host may hold. */
  hiddenAddresses?: () => ReadonlySet<string>;
}

export async function createNode(opts: CreateNodeOptions): Promise<NavigatorNode> {
  const defaults = NetworkSection.parse({});
  const peerDiscovery: Array<(components: any) => PeerDiscovery> = [];
  if (opts.mdns) peerDiscovery.push(mdns({ interval: opts.mdnsIntervalMs ?? defaults.mdnsIntervalMs, serviceTag: 'navigator-depot.local' }));
  if (opts.bootstrap && opts.bootstrap.length > 0) peerDiscovery.push(bootstrap({ list: opts.bootstrap, timeout: 100 }));

  return createLibp2p({
    privateKey: opts.privateKey ?? (await generateKeyPair('Ed25519')),
    addresses: {
      listen: opts.listen,
      announce: opts.announce ?? [],
      // A service address moves at every failover: a peer that reached this depot on it would
      // lose the connection, without a word, when the address goes.
      ...(opts.hiddenAddresses
        ? {
            announceFilter: (addrs: Multiaddr[]) => {
              const hidden = opts.hiddenAddresses!();
              return addrs.filter((a) => !hidden.has(a.toOptions().host));
            },
          }
        : {}),
    },
    transports: [opts.transport === 'memory' ? memory() : tcp()],
    connectionProtector: preSharedKey({ psk: opts.swarmKey }),
    connectionEncrypters: [noise()],
    // No Yamux keep-alive pings (one per connection every 30 s): the membership's probes already
    // ping every peer, and a connection whose peer stops answering is closed after it is dead.
    streamMuxers: [yamux({ enableKeepAlive: false })],
    peerDiscovery,
    connectionManager: {
      maxConnections: opts.maxConnections ?? defaults.maxConnections,
      // The defaults (5 inbound connections a second per IP, 10 pending) refuse a cluster that
      // starts at once, and every depot on one host (tests, benchmarks) shares one IP. Only
      // holders of the swarm key get past the handshake anyway.
      inboundConnectionThreshold: 100,
      maxIncomingPendingConnections: 100,
    },
    // The membership's probes check every depot (one per second, round-robin, and at once when
    // a connection drops) and close a connection whose ping fails; libp2p's own monitor would
    // ping every connection every 10 s on top of that (31 pings a second on a 32-depot cluster).
    // The ping protocol itself is served by the prober (ping-channel.ts), not libp2p's service.
    connectionMonitor: { enabled: false },
    services: {
      identify: identify(),
      pubsub: gossipsub({
        globalSignaturePolicy: 'StrictSign',
        allowPublishToZeroTopicPeers: true,
        emitSelf: false,
        ...GOSSIP_TUNING,
        ...opts.gossip,
      }) as unknown as (components: any) => PubSub,
    },
  }) as Promise<NavigatorNode>;
}
