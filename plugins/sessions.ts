import type { DepotComponents, DepotPlugin } from '../depot/components.ts';
import { bootTimeMs } from '../depot/heartbeat/resources.ts';
import { SessionLog } from '../depot/sessions/session-log.ts';

// This host's session history (depot/sessions): recorded on disk, summarised in the heartbeat,
// where the placement of standbys and the ranking of voters read which hosts usually stay on at
// this time of day. First in the composition, so it is stopped last: a clean stop's end time is
// when the depot really went.

export type SessionsComponents = Pick<DepotComponents, 'config' | 'logger' | 'clock' | 'heartbeat'>;

export interface SessionsInit {
  /** The host's boot time (ms); default: the kernel's. */
  bootTime?: () => number;
}

export interface SessionsPlugin extends DepotPlugin {
  readonly log: SessionLog;
}

export function sessionsPlugin(init: SessionsInit = {}): (components: SessionsComponents) => SessionsPlugin {
  return (c) => {
    const log = new SessionLog({ config: c.config.sessions, clock: c.clock, logger: c.logger, bootTime: init.bootTime ?? bootTimeMs });
    return {
      name: 'sessions',
      log,
      async start() {
        await log.start();
        c.heartbeat.contribute(() => ({ sessions: log.summary() }));
      },
      stop: () => log.stop(),
    };
  };
}
