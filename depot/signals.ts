import { errorMessage } from '../shared/errors.ts';
import type { Depot } from './depot.ts';

/** Run a started depot until SIGTERM or SIGINT, then stop it cleanly (announcing `left`). */
export function stopOnSignals(depot: Depot, exit: (code: number) => void = (c) => process.exit(c)): void {
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) {
      depot.log.warn({ event: 'signal-again', signal }, 'second signal: exiting now');
      exit(1);
      return;
    }
    stopping = true;
    depot.log.info({ event: 'signal', signal }, `received ${signal}, stopping`);
    const force = setTimeout(() => exit(1), 15_000);
    force.unref();
    void depot.stop().then(
      () => exit(0),
      (err: unknown) => {
        depot.log.error({ event: 'stop-failed', err: errorMessage(err) }, 'stop failed');
        exit(1);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}
