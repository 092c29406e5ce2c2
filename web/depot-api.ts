import type { Registry } from 'prom-client';
import type { DepotsResponse } from '../shared/api/depots.ts';
import type { RouteTarget } from '../shared/api/routes.ts';
import { VERSION } from '../shared/version.ts';
import { sendText } from './server.ts';

// The depot's own read-only endpoints: liveness, the membership view as JSON, Prometheus metrics.
// The depot gives the data; this file only serves it.

export interface DepotApiSource {
  health(): { ok: boolean; name: string; peerId: string };
  depots(): DepotsResponse;
  metrics: Registry;
}

export function registerDepotApi(server: RouteTarget, source: DepotApiSource): void {
  server.route('GET', '/healthz', () => ({ ...source.health(), version: VERSION }));
  server.route('GET', '/api/depots', () => source.depots());
  server.route('GET', '/metrics', async (_req, res) => {
    sendText(res, 200, await source.metrics.metrics(), source.metrics.contentType);
  });
}
