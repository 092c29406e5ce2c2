import type { Depot, DepotPart } from './daemon.ts';
import type { ImageStore } from './images/catalog.ts';
import { registerImageControl, type MethodRegistry } from './images/control-methods.ts';

// The image store as a depot part, on the receiving side of image shipping: the control methods a
// sender drives a transfer with (image.prepare / image.commit / image.abort), and what the
// heartbeat says about images — the ids held, the receives in progress (`staging`), and the
// port of this host's sshd (`sshPort`, config ship.sshPort) that senders write the data to.
// Start it after the containers part (which owns the control server).

export interface ImagesPartOptions {
  store: ImageStore;
  /** The control server of the containers part. */
  control: () => MethodRegistry;
}

export function imagesPart(opts: ImagesPartOptions): (depot: Depot) => DepotPart {
  return (depot) => ({
    name: 'images',
    start: () => {
      registerImageControl(opts.control(), opts.store);
      depot.addHeartbeatContent(async () => ({
        images: (await opts.store.list()).map((i) => i.id),
        staging: (await opts.store.receiving()).slice(0, 32),
        sshPort: depot.config.ship.sshPort,
      }));
    },
    stop: () => opts.store.stop(),
  });
}
