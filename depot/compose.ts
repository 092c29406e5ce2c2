import type { Config } from '../shared/config.ts';
import type { Logger } from '../shared/logger.ts';
import { Depot, type DepotOptions } from './daemon.ts';
import { ImageStore } from './images/catalog.ts';
import { containersPart, type ContainersPart } from './containers-part.ts';
import { imagesPart } from './images-part.ts';
import { trackingPart, type TrackingPart } from './tracking-part.ts';
import { pilotsPart, type PilotsPart } from '../pilot/pilots-part.ts';
import type { ElectionConfig } from '../pilot/election.ts';

// A complete depot as `navigator depot run` starts it: the core (libp2p, heartbeat, membership,
// HTTP) plus the image store, the containers and control protocol, the movement journal and
// tracking page, and the pilots. Parts are started in this order and stopped in reverse.

export interface FullDepot {
  depot: Depot;
  store: ImageStore;
  containers: () => ContainersPart;
  tracking: () => TrackingPart;
  pilots: () => PilotsPart;
}

export interface ComposeOptions extends Omit<DepotOptions, 'config' | 'parts'> {
  config: Config;
  log?: Logger;
  election?: Partial<ElectionConfig>;
}

export async function composeDepot(opts: ComposeOptions): Promise<FullDepot> {
  let containers: ContainersPart | undefined;
  let tracking: TrackingPart | undefined;
  let pilots: PilotsPart | undefined;
  const need = <T>(v: T | undefined, name: string): T => {
    if (!v) throw new Error(`${name} part not started`);
    return v;
  };
  const { config } = opts;
  const depotLog = opts.log;
  const store = new ImageStore({
    dir: config.store.dir,
    keepVersions: config.store.keepVersions,
    blockSize: config.store.blockBytes,
    spareCopies: config.store.spareCopies,
    ...(depotLog ? { logger: depotLog } : {}),
    pinned: () => containers?.containers.imagesInUse() ?? [],
  });
  await store.start();
  const depot = new Depot({
    ...opts,
    parts: [
      (d) => (containers = containersPart({ images: store })(d)),
      imagesPart({ store, control: () => need(containers, 'containers').control }),
      (d) =>
        (tracking = trackingPart({
          switchover: (a) => need(pilots, 'pilots').switchover(a),
          drain: (a) => need(pilots, 'pilots').drain(a),
        })(d)),
      (d) => (pilots = pilotsPart({ containers: () => need(containers, 'containers'), tracking: () => tracking, store, ...(opts.election ? { election: opts.election } : {}) })(d)),
    ],
  });
  return {
    depot,
    store,
    containers: () => need(containers, 'containers'),
    tracking: () => need(tracking, 'tracking'),
    pilots: () => need(pilots, 'pilots'),
  };
}
