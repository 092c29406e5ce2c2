import { afterEach, describe, expect, it } from 'vitest';
import { HttpServer, sendJson } from '../../web/server.ts';
import { NavigatorError } from '../../shared/errors.ts';
import { silentLogger } from '../../shared/logger.ts';
import { formatTable } from '../../cli/commands/status.ts';
import type { DepotsResponse } from '../../shared/api/depots.ts';

describe('HttpServer route table', () => {
  let server: HttpServer | undefined;
  afterEach(async () => {
    await server?.stop();
    server = undefined;
  });

  async function start(): Promise<string> {
    server = new HttpServer({ host: '127.0.0.1', port: 0, log: silentLogger() });
    server.route('GET', '/api/things', () => [{ id: 1 }]);
    server.route('GET', '/api/things/:id', (_req, _res, url, params) => ({ id: params.id, q: url.searchParams.get('q') }));
    server.route('POST', '/api/things/:id', () => {
      throw new NavigatorError('CONFLICT', 'already there');
    });
    server.route('GET', '/boom', () => {
      throw new Error('internal detail');
    });
    server.route('GET', '/manual', (_req, res) => sendJson(res, 201, { made: true }));
    server.route('GET', '/empty', () => undefined);
    await server.start();
    return `http://127.0.0.1:${server.port}`;
  }

  it('serves JSON from return values, path parameters and query strings', async () => {
    const base = await start();
    expect(await (await fetch(`${base}/api/things`)).json()).toEqual([{ id: 1 }]);
    const r = await fetch(`${base}/api/things/a%20b?q=x`);
    expect(r.headers.get('content-type')).toContain('application/json');
    expect(await r.json()).toEqual({ id: 'a b', q: 'x' });
    const m = await fetch(`${base}/manual`);
    expect(m.status).toBe(201);
    expect((await fetch(`${base}/empty`)).status).toBe(204);
  });

  it('answers 404, 405 and error codes as JSON', async () => {
    const base = await start();
    const nf = await fetch(`${base}/nope`);
    expect(nf.status).toBe(404);
    expect(((await nf.json()) as { error: string }).error).toBe('NOT_FOUND');
    expect((await fetch(`${base}/api/things`, { method: 'DELETE' })).status).toBe(405);
    const c = await fetch(`${base}/api/things/1`, { method: 'POST' });
    expect(c.status).toBe(409);
    expect(await c.json()).toEqual({ error: 'CONFLICT', message: 'already there' });
    expect((await fetch(`${base}/boom`)).status).toBe(500);
  });

  it('a later route replaces an earlier one for the same method and path', async () => {
    const base = await start();
    server!.route('GET', '/api/things', () => ['replaced']);
    expect(await (await fetch(`${base}/api/things`)).json()).toEqual(['replaced']);
  });
});

describe('navigator status table', () => {
  it('prints one row per depot, marks itself, and sums up states and drops', () => {
    const now = 1_700_000_010_000;
    const body: DepotsResponse = {
      self: { name: 'ws1', peerId: '12D3KooWSelfSelfSelfSelf', version: '0.1.0', incarnation: 1 },
      counts: { alive: 1, suspect: 0, dead: 1, left: 0 },
      dropped: { 'not-json': 2, spoofed: 0 },
      depots: [
        { name: 'ws1', peerId: '12D3KooWSelfSelfSelfSelf', self: true, state: 'alive', reason: 'self', incarnation: 1, since: now, lastSeen: now, version: '0.1.0', uptimeS: 90_000, load: [0.5, 0.4, 0.3], cpus: 4, memFreeBytes: 2 * 2 ** 30, memTotalBytes: 8 * 2 ** 30, diskFreeBytes: 100 * 2 ** 30, images: ['a'], containers: [], addresses: [], hostAddresses: [], httpPort: 7480, staging: [], sshPort: 22, sshHostKey: null, hostKeyTrust: null },
        { name: 'ws2', peerId: '12D3KooWOtherOtherOther1', self: false, state: 'dead', reason: 'probe failed', incarnation: 1, since: now, lastSeen: now - 4000, version: '0.1.0', uptimeS: 600, load: [1, 1, 1], cpus: 2, memFreeBytes: 2 ** 30, memTotalBytes: 4 * 2 ** 30, diskFreeBytes: 2 ** 30, images: [], containers: [], addresses: [], hostAddresses: [], httpPort: 7480, staging: [], sshPort: 22, sshHostKey: null, hostKeyTrust: null },
      ],
    };
    const out = formatTable(body, now).split('\n');
    expect(out[0]).toMatch(/^NAME\s+STATE\s+UPTIME/);
    expect(out[1]).toMatch(/^ws1 \*\s+alive\s+1d1h\s+0\.50\s+4\s+2\.0G\s+100\.0G\s+1\s+0\s+now/);
    expect(out[2]).toMatch(/^ws2\s+dead\s+10m\s+1\.00\s+2\s+1\.0G\s+1\.0G\s+0\s+0\s+4\.0s ago/);
    expect(out.at(-1)).toBe('1 alive, 0 suspect, 1 dead, 0 left; dropped gossip: not-json=2');
  });
});
