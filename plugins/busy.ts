import type { DepotComponents, DepotPlugin } from '../depot/components.ts';
import { BusyMeter } from '../depot/busy/busy-meter.ts';

// This host's busy signal (depot/busy): measured every busy.sampleMs and carried in the
// heartbeat, where the primary's depot reads whether its own host has been busy long enough to
// move away (pilot/busy-move.ts) and whether a standby's host is itself busy.

export type BusyComponents = Pick<DepotComponents, 'config' | 'logger' | 'clock' | 'heartbeat'>;

export interface BusyPlugin extends DepotPlugin {
  readonly meter: BusyMeter;
}

export function busyPlugin(): (components: BusyComponents) => BusyPlugin {
  return (c) => {
    const meter = new BusyMeter({ config: c.config.busy, clock: c.clock, logger: c.logger });
    return {
      name: 'busy',
      meter,
      async start() {
        await meter.start();
        c.heartbeat.contribute(() => {
          const busy = meter.signal();
          return busy ? { busy } : {};
        });
      },
      stop: () => meter.stop(),
    };
  };
}
