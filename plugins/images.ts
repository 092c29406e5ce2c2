import type { DepotComponents, DepotPlugin } from '../depot/components.ts';
import type { ImageStore } from '../depot/images/catalog.ts';
import { registerImageControl } from '../depot/images/control-methods.ts';
import { registerImageQueries } from '../depot/images/status-methods.ts';

// The image store, on the receiving side of image shipping: started and stopped here; the control
// methods a sender asks and drives a transfer with (image.status / image.verify, image.prepare /
// image.commit / image.abort); and what the heartbeat says about images — the ids held, the
// receives in progress (`staging`), and the port of this host's sshd (`ship.sshPort`) that
// senders write the data to.

export interface ImagesInit {
  store: ImageStore;
}

export type ImagesComponents = Pick<DepotComponents, 'config' | 'control' | 'heartbeat'>;

export function imagesPlugin(init: ImagesInit): (components: ImagesComponents) => DepotPlugin {
  const { store } = init;
  return (c) => ({
    name: 'images',
    async start() {
      await store.start();
      registerImageQueries(c.control, store);
      registerImageControl(c.control, store, { receiveChroot: c.config.ship.receiveChroot, guard: c.control.guard });
      c.heartbeat.contribute(async () => ({
        images: (await store.list()).map((i) => i.id),
        staging: (await store.receiving()).slice(0, 32),
        sshPort: c.config.ship.sshPort,
      }));
    },
    stop: () => store.stop(),
  });
}
