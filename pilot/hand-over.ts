import type { Logger } from '../shared/logger.ts';
import { errorMessage } from '../shared/errors.ts';
import type { CopyView } from './pilot.ts';

// A clean stop of a depot (systemctl stop, a package upgrade, a shutdown) is a planned move, not
// a failure: every primary on it hands its service to the freshest standby the way a switchover
// does (writes stop, a final DB sync, resign, the standby campaigns) and the depot waits until
// another depot reports the new primary before it goes on stopping — so its vote is still there
// for the election and the service is out for one hand-over, not for a lease expiry plus an
// election. What does not finish within the budget is left to the ordinary stop (resign and go).

export interface HandOverOptions {
  /** Services whose primary copy runs here now. */
  primaries: () => string[];
  /** The planned move (AdminOperations.switchover). */
  switchover: (service: string) => Promise<{ from: string; to: string }>;
  /** Copies of a service as the heartbeats show them. */
  copies: (service: string) => CopyView[];
  selfId: string;
  /** Budget for all of it (config pilot.handOverMs). */
  timeoutMs: number;
  logger: Logger;
  now?: () => number;
  sleep?: (ms: number) => Promise<void>;
}

/** Hand every primary on this depot over, all at once; resolves when done or out of time (never throws). */
export async function handOverPrimaries(o: HandOverOptions): Promise<Array<{ service: string; to?: string | undefined; ok: boolean; durationMs: number }>> {
  const now = o.now ?? (() => performance.now());
  const sleep = o.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const log = o.logger.child({ component: 'pilots' });
  const deadline = now() + o.timeoutMs;
  // All at once: each service is out for one hand-over, not for the sum of those before it.
  return Promise.all(
    o.primaries().map(async (service) => {
      const t0 = now();
      let to: string | undefined;
      try {
        const left = deadline - now();
        if (left <= 0) throw new Error('no time left');
        to = (await withTimeout(o.switchover(service), left, `hand-over of ${service} did not finish within ${o.timeoutMs} ms`)).to;
        // Stay until the new primary is known, so this depot still votes in its election.
        while (now() < deadline && !o.copies(service).some((c) => c.peerId !== o.selfId && c.depotState === 'alive' && c.report.role === 'primary')) await sleep(50);
        const ok = now() < deadline;
        log[ok ? 'info' : 'warn'](
          { event: 'hand-over', service, to, ok, durationMs: Math.round(now() - t0) },
          ok ? `handed ${service} over to ${to} before stopping` : `${service} handed to ${to}, but its new primary was not seen in time`,
        );
        return { service, to, ok, durationMs: Math.round(now() - t0) };
      } catch (err) {
        log.warn({ event: 'hand-over-failed', service, err: errorMessage(err), durationMs: Math.round(now() - t0) }, `could not hand ${service} over before stopping: ${errorMessage(err)}`);
        return { service, ok: false, durationMs: Math.round(now() - t0) };
      }
    }),
  );
}

function withTimeout<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(message)), ms)))]).finally(() => clearTimeout(timer));
}
