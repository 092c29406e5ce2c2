import { createConnection } from 'node:net';

/**
 * Does `host:port` accept a TCP connection within `timeoutMs` (with `banner`: and send something
 * first)? The health check of process containers and the pilots' service probe.
 */
export function tcpOpen(host: string, port: number, timeoutMs: number, banner = false): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection({ host, port });
    const done = (ok: boolean) => {
      clearTimeout(timer);
      s.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    if (banner) s.once('data', () => done(true));
    else s.once('connect', () => done(true));
    s.once('error', () => done(false));
    s.once('end', () => done(false));
  });
}
