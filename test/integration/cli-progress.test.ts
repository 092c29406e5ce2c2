import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join, resolve } from 'node:path';
import { stripVTControlCharacters } from 'node:util';
import { execa } from 'execa';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';

// The CLI as a user runs it (bin/navigator.mjs under Node 22) against a small in-process HTTP
// server with canned depot answers: `status` without a terminal prints no escape codes, with
// FORCE_COLOR=1 (or a real pseudo-terminal) it colours and the columns stay where they were;
// `drain`, `pilot bootstrap` and `image refresh` print their progress as plain lines when piped.

const REPO = resolve(import.meta.dirname, '../..');
const NODE22 = join(REPO, 'node_modules/.bin/node');
const ESC = '\u001b[';
const NOW = Date.now();
const GiB = 2 ** 30;
const IMAGE = 'a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f0a1b2';

function depot(name: string, state: string, extra: Record<string, unknown> = {}) {
  return {
    name,
    peerId: `12D3KooW${name}PeerIdentityXYZ`,
    self: name === 'ws-1',
    state,
    reason: '',
    incarnation: 1,
    since: NOW - 60_000,
    // Old enough that two runs a few seconds apart print the same "10m ago".
    lastSeen: NOW - 600_000,
    version: '0.1.0',
    uptimeS: 7200,
    load: [0.25, 0.2, 0.1],
    cpus: 4,
    memFreeBytes: 3 * GiB,
    memTotalBytes: 8 * GiB,
    diskFreeBytes: 50 * GiB,
    images: [IMAGE],
    containers: [],
    addresses: [],
    hostAddresses: [],
    httpPort: 7480,
    ...extra,
  };
}

const primaryOn = (service: string) => ({ id: `${service}-1`, service, driver: 'process', state: 'running', role: 'primary', term: 3, image: IMAGE, syncFailing: false });

const depotsBody = {
  self: { name: 'ws-1', peerId: '12D3KooWws-1PeerIdentityXYZ', version: '0.1.0', incarnation: 1 },
  counts: { alive: 1, suspect: 1, dead: 1, left: 1 },
  dropped: {},
  depots: [
    depot('ws-1', 'alive', { containers: [primaryOn('zabbix')] }),
    depot('ws-2', 'suspect', {
      containers: [{ id: 'zabbix-2', service: 'zabbix', driver: 'process', state: 'running', role: 'standby', term: 3, image: IMAGE, lastSyncAt: NOW - 90_000, syncFailing: true }],
      // The image this depot ships to ws-2 (shown once, as the transfer) and one from elsewhere.
      staging: [{ image: IMAGE, bytes: GiB / 2, total: 2 * GiB }, { image: 'f'.repeat(64), bytes: GiB / 4, total: GiB }],
      hostAddresses: ['10.0.0.3'],
      sshPort: 7471,
    }),
    depot('ws-3', 'dead'),
    depot('ws-4', 'left'),
  ],
};

const sending = {
  key: 'a1b2c3d4e5f6-1',
  imageId: IMAGE,
  imageName: 'zabbix',
  target: '10.0.0.3:7471',
  kind: 'delta',
  state: 'sending',
  startedAt: NOW - 20_000,
  bytesToSend: 2 * GiB,
  bytesSent: GiB / 2,
  imageBytes: 4 * GiB,
  rateBps: 50 * 2 ** 20,
  etaMs: 30_720,
};
const preparing = { ...sending, key: 'a1b2c3d4e5f6-2', target: '10.0.0.4:7471', kind: 'pending', state: 'preparing', bytesToSend: 0, bytesSent: 0, rateBps: 0, etaMs: undefined };

type Handler = (req: IncomingMessage, res: ServerResponse) => void;
const json = (res: ServerResponse, status: number, body: unknown) => {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
};

async function serve(routes: Record<string, Handler>): Promise<{ url: string; server: Server }> {
  const server = createServer((req, res) => {
    const h = routes[`${req.method} ${new URL(req.url ?? '/', 'http://x').pathname}`];
    if (h) h(req, res);
    else json(res, 404, { error: 'not found' });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

/** The environment of a user's shell, without whatever colour settings the test runner has. */
function env(extra: Record<string, string> = {}): Record<string, string> {
  const e: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !['FORCE_COLOR', 'NO_COLOR', 'TERM', 'COLUMNS'].includes(k)) e[k] = v;
  return { ...e, TERM: 'xterm-256color', ...extra };
}

async function cli(args: string[], extra: Record<string, string> = {}) {
  return execa(NODE22, ['bin/navigator.mjs', ...args], { cwd: REPO, env: env(extra), extendEnv: false, reject: false, timeout: 30_000 });
}

/** Column where each header of a table starts, from its plain text. */
function columnStarts(header: string): number[] {
  return [...header.matchAll(/\S+(?: \S+)*/g)].map((m) => m.index!);
}

let api: { url: string; server: Server };
let withoutTransfers: { url: string; server: Server };

beforeAll(async () => {
  api = await serve({
    'GET /api/depots': (_q, r) => json(r, 200, depotsBody),
    'GET /api/transfers': (_q, r) => json(r, 200, { transfers: [sending, preparing, { ...sending, key: 'old', state: 'done' }] }),
  });
  // A depot from before /api/transfers existed: 404, which means "no transfers".
  withoutTransfers = await serve({ 'GET /api/depots': (_q, r) => json(r, 200, depotsBody) });
});
afterAll(async () => {
  for (const s of [api, withoutTransfers]) await new Promise((r) => s?.server.close(r));
});

describe('navigator status (CLI against canned depot answers)', () => {
  it('prints plain aligned tables with the copies and transfer bars when stdout is not a terminal', async () => {
    const r = await cli(['status', '--api', api.url]);
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
    expect(r.stdout).not.toContain(ESC);
    const lines = r.stdout.split('\n');
    expect(lines[0]).toMatch(/^NAME\s+STATE\s+UPTIME/);
    expect(lines[1]).toMatch(/^ws-1 \*\s+alive\s+2h0m/);
    expect(lines[3]).toMatch(/^ws-3\s+dead/);
    // Copies: the primary first; the failing sync is spelt out.
    const copies = lines.findIndex((l) => l.startsWith('SERVICE'));
    expect(lines[copies + 1]).toMatch(/^zabbix\s+primary\s+ws-1\s+running\s+3\s+-$/);
    expect(lines[copies + 2]).toMatch(/^zabbix\s+standby\s+ws-2\s+running\s+3\s+failing \(last good 1m ago\)$/);
    // Transfers: this depot's (rate, ETA; the finished one is not shown), then what ws-2 receives.
    const t = lines.findIndex((l) => l.startsWith('IMAGE'));
    expect(lines[t]).toMatch(/^IMAGE\s+PEER\s+STATE\s+PROGRESS\s+BYTES\s+RATE\s+ETA$/);
    expect(lines[t + 1]).toMatch(/^zabbix a1b2c3d4e5f6\s+→ ws-2\s+sending \(delta\)\s+\[#####\.{15}\]\s+25%\s+512 MiB \/ 2\.0 GiB\s+50\.0 MiB\/s\s+31s$/);
    expect(lines[t + 2]).toMatch(/^zabbix a1b2c3d4e5f6\s+→ 10\.0\.0\.4:7471\s+preparing\s+\[\.{20}\]\s+\?%\s+\? \/ 4\.0 GiB\s+-\s+-$/);
    expect(lines[t + 3]).toMatch(/^- ffffffffffff\s+← ws-2\s+receiving\s+\[#####\.{15}\]\s+25%\s+256 MiB \/ 1\.0 GiB/);
    expect(lines).toHaveLength(t + 6);
    expect(lines.at(-1)).toBe('1 alive, 1 suspect, 1 dead, 1 left');
    // Every row of a table starts its columns where its header does.
    const head = columnStarts(lines[t]!);
    for (const row of lines.slice(t + 1, t + 4)) expect(row.indexOf('[')).toBe(head[3]);
  });

  it('colours with FORCE_COLOR=1 even through a pipe, and the plain text is the same', async () => {
    const [plain, forced] = await Promise.all([cli(['status', '--api', api.url]), cli(['status', '--api', api.url], { FORCE_COLOR: '1' })]);
    expect(forced.exitCode).toBe(0);
    expect(forced.stdout).toContain(ESC);
    // Alignment is computed on the text: stripping the codes gives exactly the plain output.
    expect(stripVTControlCharacters(forced.stdout)).toBe(plain.stdout);
    const lines = forced.stdout.split('\n');
    expect(lines[1]).toContain(`${ESC}32malive${ESC}39m`); // alive green
    expect(lines[2]).toContain(`${ESC}33msuspect${ESC}39m`); // suspect yellow
    expect(lines[3]).toMatch(/\u001b\[31m\u001b\[1mdead/); // dead red
    expect(lines[4]).toMatch(/^\u001b\[2mws-4\u001b\[22m/); // left: the row dim
    expect(forced.stdout).toMatch(/\u001b\[1m\u001b\[36mprimary/); // the primary stands out
    expect(forced.stdout).toMatch(/\u001b\[31mfailing \(last good/); // failing sync red
  });

  it('NO_COLOR and FORCE_COLOR=0 keep it plain', async () => {
    for (const extra of [{ NO_COLOR: '1' }, { FORCE_COLOR: '0' }] as Array<Record<string, string>>) {
      const r = await cli(['status', '--api', api.url], extra);
      expect(r.exitCode).toBe(0);
      expect(r.stdout).not.toContain(ESC);
    }
  });

  it('colours on a real terminal (a pseudo-terminal from script(1)) with unicode bars, and not with NO_COLOR there', async () => {
    const cmd = `${NODE22} bin/navigator.mjs status --api ${api.url}`;
    const tty = await execa('script', ['-qec', cmd, '/dev/null'], { cwd: REPO, env: env(), extendEnv: false, reject: false, timeout: 30_000 });
    expect(tty.exitCode).toBe(0);
    expect(tty.stdout).toContain(`${ESC}32malive`);
    expect(stripVTControlCharacters(tty.stdout)).toMatch(/\[█████░{15}\]\s+25%/);
    const noColour = await execa('script', ['-qec', cmd, '/dev/null'], { cwd: REPO, env: env({ NO_COLOR: '1' }), extendEnv: false, reject: false, timeout: 30_000 });
    expect(noColour.exitCode).toBe(0);
    expect(noColour.stdout).not.toContain(ESC);
  });

  it('treats a depot without /api/transfers (404) as having none, and --json is the /api/depots body', async () => {
    const r = await cli(['status', '--api', withoutTransfers.url]);
    expect(r.exitCode).toBe(0);
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/← ws-2\s+receiving/);
    expect(r.stdout).not.toContain('→ ws-2');
    expect(r.stdout).toMatch(/zabbix a1b2c3d4e5f6\s+← ws-2\s+receiving\s+\[#####\.{15}\]\s+25%\s+512 MiB \/ 2\.0 GiB/);
    const j = await cli(['status', '--api', api.url, '--json']);
    expect(JSON.parse(j.stdout)).toEqual(depotsBody);
  });

  it('says what is wrong with a bad /api/transfers answer and still prints the depots', async () => {
    const bad = await serve({ 'GET /api/depots': (_q, r) => json(r, 200, depotsBody), 'GET /api/transfers': (_q, r) => json(r, 200, { transfers: [{ key: 1 }] }) });
    try {
      const r = await cli(['status', '--api', bad.url]);
      expect(r.exitCode).toBe(0);
      expect(r.stderr).toMatch(/transfers not shown: .*\/api\/transfers did not return a transfer list \(transfers\.0\.key: /);
      expect(r.stdout).toMatch(/^NAME/);
    } finally {
      await new Promise((r) => bad.server.close(r));
    }
  });
});

describe('progress of drain and bootstrap when piped', () => {
  it('drain prints the primaries left, the transfer, and the result as plain lines', async () => {
    let moved = false;
    let transferPolls = 0;
    const s = await serve({
      'GET /api/depots': (_q, r) => json(r, 200, { ...depotsBody, depots: [depot('ws-1', 'alive', { containers: moved ? [] : [primaryOn('zabbix'), primaryOn('grafana')] }), depot('ws-2', 'alive')] }),
      'GET /api/transfers': (_q, r) => json(r, 200, { transfers: ++transferPolls > 1 ? [sending] : [] }),
      'POST /api/drain': (req, r) => {
        expect(req.headers.authorization).toBe('Bearer t0ken');
        // The depot answers once both switchovers are done.
        setTimeout(() => {
          moved = true;
          json(r, 200, { moved: ['grafana', 'zabbix'] });
        }, 1800);
      },
    });
    try {
      // The token from a file (never on the command line, where `ps` shows it).
      const tokenFile = join(mkdtempSync(join(tmpdir(), 'nav-token-')), 'admin.token');
      writeFileSync(tokenFile, 't0ken\n', { mode: 0o600 });
      const r = await cli(['drain', 'ws-1', '--api', s.url, '--token-file', tokenFile]);
      expect(r.stderr).toBe('');
      expect(r.exitCode).toBe(0);
      expect(r.stdout).not.toContain(ESC);
      const lines = r.stdout.split('\n');
      expect(lines[0]).toMatch(/^drain ws-1: switchover of grafana \(2 of 2 left on ws-1\) 0% 0\/2 \d+\.\ds$/);
      expect(r.stdout).toMatch(/\nship zabbix → 10\.0\.0\.3:7471: sending \(delta\) 25% 512 MiB\/2\.0 GiB 50\.0 MiB\/s ETA 31s\n/);
      expect(lines.at(-1)).toBe('drained ws-1: moved grafana, zabbix');
    } finally {
      await new Promise((r) => s.server.close(r));
    }
  });

  it('pilot bootstrap shows the phases, the shipping of the image, and the copies at the end', async () => {
    let polls = 0;
    const copy = (host: string, role: string, state: string) => ({ host, role, term: 1, state, since: null, lastSyncAt: null });
    const s = await serve({
      'POST /api/bootstrap': (_q, r) => setTimeout(() => json(r, 200, { result: { image: IMAGE, container: 'zabbix-abc123' } }), 300),
      'GET /api/services': (_q, r) => {
        polls++;
        const copies = polls < 2 ? [] : polls < 4 ? [copy('ws-1', 'primary', 'running')] : polls < 5 ? [copy('ws-1', 'primary', 'running'), copy('ws-2', 'standby', 'starting')] : [copy('ws-1', 'primary', 'running'), copy('ws-2', 'standby', 'running')];
        json(r, 200, { now: Date.now(), services: [{ service: 'zabbix', address: '10.0.0.50/24', term: 1, copies }] });
      },
      'GET /api/transfers': (_q, r) => json(r, 200, { transfers: polls === 3 ? [sending] : [] }),
      'GET /api/depots': (_q, r) => json(r, 200, depotsBody),
    });
    try {
      const r = await cli(['pilot', 'bootstrap', '--service', 'zabbix', '--image', '/tmp/none', '--address', '10.0.0.50/24', '--api', s.url, '--token', 'x', '--timeout', '20']);
      expect(r.stderr).toBe('');
      expect(r.exitCode).toBe(0);
      expect(r.stdout).not.toContain(ESC);
      const out = r.stdout;
      expect(out).toMatch(/^bootstrap zabbix: importing the image and starting the primary \d+\.\ds\n/);
      expect(out).toContain(`image ${IMAGE.slice(0, 12)} imported; primary container zabbix-abc123 starting\n`);
      expect(out).toMatch(/\nbootstrap zabbix: waiting for the primary \(election, address, start\) 0% 0\/1 /);
      expect(out).toContain('\n  primary running on ws-1\n');
      expect(out).toMatch(/\nbootstrap zabbix: primary on ws-1; standby 1\/1: shipping the image 0% 0\/1 /);
      // The target address is ws-2's (its heartbeat's host address and sshd port).
      expect(out).toMatch(/\nship zabbix → ws-2: sending \(delta\) 25% 512 MiB\/2\.0 GiB 50\.0 MiB\/s ETA 31s\n/);
      expect(out).toMatch(/\nbootstrap zabbix: primary on ws-1; standby 1\/1: starting on ws-2 /);
      expect(out).toContain('\n  standby running on ws-2\n');
      expect(out).toMatch(/\nzabbix is protected \(\d+\.\d s\):\nROLE\s+HOST\s+TERM\s+STATE\nprimary\s+ws-1\s+1\s+running\nstandby\s+ws-2\s+1\s+running$/);
    } finally {
      await new Promise((r) => s.server.close(r));
    }
  });

  it('image refresh prints where the new version goes and, per depot, how it got there; a depot it could not reach fails the command', async () => {
    const NEW = 'b'.repeat(64);
    let polls = 0;
    let body: Record<string, unknown> = {};
    const target = (host: string, state: string, extra: Record<string, unknown> = {}) => ({ host, peerId: `p-${host}`, state, attempts: 1, ...extra });
    const s = await serve({
      'POST /api/image-refresh': (req, r) => {
        let text = '';
        req.on('data', (d: Buffer) => (text += d.toString()));
        req.on('end', () => {
          body = JSON.parse(text) as Record<string, unknown>;
          json(r, 200, { ok: true, result: { service: 'zabbix', image: NEW, base: IMAGE, unchanged: false, targets: ['ws-2', 'ws-3'], present: ['ws-4'], skipped: [{ host: 'ws-5', reason: 'depot dead' }] } });
        });
      },
      'GET /api/image-refresh': (_q, r) => {
        polls++;
        const done = target('ws-2', 'done', { kind: 'delta', bytesSent: 14_024_704, imageBytes: 169_213_982, durationMs: 1400 });
        const targets = polls < 2 ? [target('ws-2', 'shipping'), target('ws-3', 'pending')] : polls < 3 ? [done, target('ws-3', 'shipping')] : [done, target('ws-3', 'failed', { attempts: 3, error: 'sshd gone' })];
        json(r, 200, { refreshes: [{ service: 'zabbix', image: NEW, base: IMAGE, startedAt: NOW, importMs: 900, state: polls < 3 ? 'shipping' : 'failed', targets, present: ['ws-4'], skipped: [] }] });
      },
    });
    try {
      const r = await cli(['image', 'refresh', '--service', 'zabbix', '--image', '/tmp/zbx-image', '--api', s.url, '--token', 'x']);
      expect(body).toEqual({ service: 'zabbix', imagePath: '/tmp/zbx-image' });
      expect(r.stdout.split('\n')).toEqual([
        `new version bbbbbbbbbbbb of zabbix (was ${IMAGE.slice(0, 12)}): shipping to ws-2, ws-3; already there: ws-4; skipped ws-5 (depot dead)`,
        '  ws-2: delta, 13.4 MiB of 161 MiB sent (8.3 %) in 1.4 s',
        '  ws-3: FAILED after 3 tries: sshd gone',
      ]);
      expect(r.exitCode).toBe(1);
      expect(r.stderr).toContain("the new version of zabbix's image did not reach every depot");
    } finally {
      await new Promise((r) => s.server.close(r));
    }
  });
});
