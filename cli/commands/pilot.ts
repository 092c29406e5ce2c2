import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { resolve } from 'node:path';
import { loadConfig } from '../../shared/config.ts';
import { NavigatorError } from '../../shared/errors.ts';
import type { ServiceView } from '../../shared/api/tracking.ts';
import { stdoutPainter, type Painter } from '../colour.ts';
import { ProgressBoard, formatBytes, type ProgressItem } from '../progress.ts';
import { renderTable } from '../table.ts';
import { fetchTransfers, type TransferRow } from '../transfers-api.ts';
import type { ImageRefreshResponse, ImageRefreshStatusResponse } from '../../shared/api/image-refresh.ts';
import { sentPct } from '../../pilot/image-refresh.ts';
import { bootstrapBoard, bootstrapState, drainBoard, primariesOn, type Board, type DepotRowLike } from '../operation-progress.ts';

// `navigator pilot bootstrap`, `navigator switchover`, `navigator drain`, `navigator image refresh`: thin clients of the
// local depot's admin API (localhost + admin token from the configuration file).

interface ApiFlags {
  api: string;
  config?: string;
  token?: string;
  tokenFile?: string;
  json?: boolean;
}

function adminToken(flags: ApiFlags): string {
  if (flags.tokenFile) {
    let text: string;
    try {
      text = readFileSync(flags.tokenFile, 'utf8');
    } catch (err) {
      throw new NavigatorError('UNAUTHORIZED', `cannot read the admin token file ${flags.tokenFile}: ${(err as Error).message}`);
    }
    const token = text.trim();
    if (!token) throw new NavigatorError('UNAUTHORIZED', `admin token file ${flags.tokenFile} is empty`);
    return token;
  }
  if (flags.token) return flags.token;
  if (process.env.NAVIGATOR_ADMIN_TOKEN) return process.env.NAVIGATOR_ADMIN_TOKEN;
  const cfg = loadConfig(flags.config !== undefined ? { path: flags.config } : {});
  if (!cfg.http.adminToken) {
    throw new NavigatorError('UNAUTHORIZED', 'no admin token: set http.adminToken in the depot configuration (or pass --token-file / NAVIGATOR_ADMIN_TOKEN)');
  }
  return cfg.http.adminToken;
}

async function post(flags: ApiFlags, path: string, body: unknown): Promise<unknown> {
  const url = new URL(path, flags.api);
  // Outside the try: a missing token is that, not an unreachable depot.
  const token = adminToken(flags);
  let res: Response;
  try {
    res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(180_000),
    });
  } catch (err) {
    throw new NavigatorError('PEER_UNREACHABLE', `cannot reach the depot at ${flags.api}: ${(err as Error).message} (is \`navigator depot run\` running there?)`);
  }
  const text = await res.text();
  let data: { error?: string } = {};
  try {
    if (text) data = JSON.parse(text) as { error?: string };
  } catch {
    // Not JSON (a proxy's page, say): the status and the text say what happened.
  }
  if (!res.ok) throw new NavigatorError(res.status === 401 ? 'UNAUTHORIZED' : 'COMMAND_FAILED', `${path}: HTTP ${res.status}: ${data.error ?? text}`);
  return data;
}

async function services(api: string): Promise<ServiceView[]> {
  const res = await fetch(new URL('/api/services', api), { signal: AbortSignal.timeout(5000) });
  return ((await res.json()) as { services: ServiceView[] }).services;
}

async function depotRows(api: string): Promise<DepotRowLike[]> {
  const res = await fetch(new URL('/api/depots', api), { signal: AbortSignal.timeout(5000) });
  const body = (await res.json()) as { depots?: DepotRowLike[] };
  return Array.isArray(body.depots) ? body.depots : [];
}

// Progress polls are best effort: a busy depot may miss one; only the command's own deadline counts.
const orEmpty = <T>(p: Promise<T[]>): Promise<T[]> => p.catch(() => [] as T[]);

function copiesTable(view: ServiceView, paint: Painter): string[] {
  const rows = view.copies.map((c) => [
    { text: c.role, style: c.role === 'primary' ? (['bold', 'cyan'] as const) : undefined },
    c.role === 'primary' ? { text: c.host, style: 'bold' as const } : c.host,
    String(c.term),
    { text: c.state, style: c.state === 'running' ? ('green' as const) : c.state === 'failed' ? ('red' as const) : ('yellow' as const) },
  ]);
  return renderTable(['ROLE', 'HOST', 'TERM', 'STATE'], rows, { paint });
}

/** Put a board's items on the live board, removing the lines that are gone. */
function show(board: ProgressBoard, next: Board): void {
  const keys = new Set(next.items.map(([k]) => k));
  for (const k of board.keys()) if (!keys.has(k)) board.remove(k);
  for (const [k, item] of next.items) board.set(k, item);
}

/** Redraw `item` every second until the returned stop is called (a request of unknown length). */
function ticking(board: ProgressBoard, key: string, item: ProgressItem): () => void {
  board.set(key, item);
  const t = setInterval(() => board.set(key, item), 1000);
  return () => {
    clearInterval(t);
    board.remove(key);
  };
}

const apiOption = (cmd: Command) =>
  cmd
    .option('--api <url>', 'the local depot', 'http://127.0.0.1:7480')
    .option('--config <file>', 'depot configuration file holding http.adminToken')
    .option('--token-file <file>', 'file holding the admin token (default: NAVIGATOR_ADMIN_TOKEN, then the configuration file)')
    .option('--token <token>', 'admin token on the command line (visible to every local user in ps: prefer --token-file or NAVIGATOR_ADMIN_TOKEN)')
    .option('--json', 'print JSON');

export function registerPilot(program: Command): void {
  const pilot = program.command('pilot').description('Pilots: the role agents next to each copy of a service');
  apiOption(
    pilot
      .command('bootstrap')
      .description('Register a service once: import and back up its image, start the primary, take the address, place the standbys')
      .requiredOption('--service <name>', 'service name')
      .requiredOption('--image <dir>', 'image folder on this host')
      .requiredOption('--address <ip/prefix>', 'service address, e.g. 192.168.1.50/24')
      .option('--driver <driver>', 'vmrun | qemu | process', 'process')
      .option('--spec <json>', 'driver spec as JSON (default for process: {"manifest":"container.yaml"})')
      .option('--iface <name>', 'interface for the service address on every host', 'eth0')
      .option('--port <port>', 'TCP port the service answers on (health probe)', '80')
      .option('--standbys <n>', 'standby copies', '1')
      .option('--database <json>', 'database kept in step on standbys, e.g. {"database":"zabbix","user":"navsync","passwordFile":"secrets/sync.password","port":3307}')
      .option('--timeout <s>', 'give up waiting for protection after this long', '300'),
  ).action(async (o: ApiFlags & { service: string; image: string; address: string; driver: string; spec?: string; database?: string; iface: string; port: string; standbys: string; timeout: string }) => {
    const spec = { driver: o.driver, ...(o.spec ? (JSON.parse(o.spec) as object) : {}) };
    const standbys = Number(o.standbys);
    const started = Date.now();
    const paint = stdoutPainter();
    // --json prints only the result: no live lines to parse around.
    const board = o.json ? undefined : new ProgressBoard({ paint, ascii: !process.stdout.isTTY });
    const stopTick = board ? ticking(board, 'request', { label: `bootstrap ${o.service}`, phase: 'importing the image and starting the primary', startedAt: started }) : () => undefined;
    let res: { result: { image: string; container: string } };
    try {
      res = (await post(o, '/api/bootstrap', {
        service: o.service,
        imagePath: resolve(o.image),
        container: spec,
        address: o.address,
        iface: o.iface,
        port: Number(o.port),
        standbys,
        ...(o.database ? { database: JSON.parse(o.database) as unknown } : {}),
      })) as { result: { image: string; container: string } };
    } catch (err) {
      // Refused or failed: the error line replaces the live line.
      board?.clearLines();
      board?.stop();
      throw err;
    } finally {
      stopTick();
    }
    const image = res.result.image;
    board?.note(`image ${image.slice(0, 12)} imported; primary container ${res.result.container} starting`);
    const deadline = started + Number(o.timeout) * 1000;
    const seen = new Set<string>();
    let line = '';
    try {
      for (;;) {
        const [all, transfers, depots] = await Promise.all([orEmpty(services(o.api)), board ? orEmpty(fetchTransfers(o.api)) : ([] as TransferRow[]), board ? orEmpty(depotRows(o.api)) : ([] as DepotRowLike[])]);
        const view = all.find((s) => s.service === o.service);
        const { primary, ready } = bootstrapState(view);
        line = `primary: ${primary ?? '-'}  standbys: ${ready.length}/${standbys}`;
        // Milestones stay on screen; the live lines show what happens now.
        for (const m of [...(primary ? [`primary running on ${primary}`] : []), ...ready.map((h) => `standby running on ${h}`)]) {
          if (!seen.has(m)) board?.note(`  ${m}`);
          seen.add(m);
        }
        if (view && primary && ready.length >= standbys) {
          board?.clearLines();
          board?.stop();
          if (o.json) process.stdout.write(`${JSON.stringify(view)}\n`);
          else {
            process.stdout.write(`${paint('green', `${o.service} is protected`)} (${((Date.now() - started) / 1000).toFixed(1)} s):\n`);
            for (const l of copiesTable(view, paint)) process.stdout.write(`${l}\n`);
          }
          return;
        }
        if (board) show(board, bootstrapBoard({ service: o.service, image, standbys, startedAt: started, view, transfers, depots }));
        if (Date.now() > deadline) throw new NavigatorError('TIMEOUT', `${o.service} not protected after ${o.timeout} s (${line}); see the depot logs`);
        await new Promise((r) => setTimeout(r, 500));
      }
    } finally {
      board?.stop();
    }
  });

  apiOption(
    program
      .command('switchover')
      .description('Planned move of the primary to a standby (no data loss)')
      .requiredOption('--service <name>', 'service name')
      .option('--to <host>', 'target standby host (default: the freshest standby)'),
  ).action(async (o: ApiFlags & { service: string; to?: string }) => {
    const res = (await post(o, '/api/switchover', { service: o.service, ...(o.to ? { to: o.to } : {}) })) as { from?: string; to?: string };
    process.stdout.write(o.json ? `${JSON.stringify(res)}\n` : `switchover of ${o.service}: ${res.from ?? '?'} -> ${res.to ?? '?'}\n`);
  });

  apiOption(program.command('drain').description('Move every primary off a host before maintenance').argument('<host>', 'depot name')).action(
    async (host: string, o: ApiFlags) => {
      if (o.json) {
        process.stdout.write(`${JSON.stringify(await post(o, '/api/drain', { host }))}\n`);
        return;
      }
      const started = Date.now();
      const board = new ProgressBoard({ paint: stdoutPainter(), ascii: !process.stdout.isTTY });
      const before = await orEmpty(depotRows(o.api));
      const initial = primariesOn(host, before);
      // The depot answers when every switchover is done; meanwhile poll what moved and what ships.
      let settled = false;
      const request = post(o, '/api/drain', { host }).finally(() => {
        settled = true;
      });
      request.catch(() => undefined);
      try {
        show(board, drainBoard({ host, initial, startedAt: started, transfers: [], depots: before }));
        while (!settled) {
          await Promise.race([request.catch(() => undefined), new Promise((r) => setTimeout(r, 500))]);
          if (settled) break;
          const [transfers, depots] = await Promise.all([orEmpty(fetchTransfers(o.api)), orEmpty(depotRows(o.api))]);
          if (!settled) show(board, drainBoard({ host, initial, startedAt: started, transfers, depots }));
        }
        const res = (await request) as { moved?: string[] };
        board.clearLines();
        board.stop();
        process.stdout.write(`drained ${host}: moved ${res.moved?.join(', ') || 'nothing'}\n`);
      } finally {
        board.stop();
      }
    },
  );

  const image = program.command('image').description("A service's image");
  apiOption(
    image
      .command('refresh')
      .description("Ship a changed image folder (e.g. a guest updated and powered off) to every depot holding the service's current image, as a delta; run on the primary's depot")
      .requiredOption('--service <name>', 'service name')
      .requiredOption('--image <dir>', 'the changed image folder on this host')
      .option('--timeout <s>', 'stop waiting for the depots after this long (the shipping goes on)', '3600'),
  ).action(async (o: ApiFlags & { service: string; image: string; timeout: string }) => {
    const res = ((await post(o, '/api/image-refresh', { service: o.service, imagePath: resolve(o.image) })) as { result: ImageRefreshResponse }).result;
    if (res.unchanged) {
      process.stdout.write(o.json ? `${JSON.stringify(res)}\n` : `image of ${o.service} unchanged (${res.image.slice(0, 12)}): nothing to ship\n`);
      return;
    }
    if (!o.json) process.stdout.write(`new version ${res.image.slice(0, 12)} of ${o.service} (was ${res.base.slice(0, 12)}): shipping to ${res.targets.join(', ') || 'no depot'}${res.present.length ? `; already there: ${res.present.join(', ')}` : ''}${res.skipped.length ? `; skipped ${res.skipped.map((s) => `${s.host} (${s.reason})`).join(', ')}` : ''}\n`);
    const deadline = Date.now() + Number(o.timeout) * 1000;
    const reported = new Set<string>();
    for (;;) {
      // A status read that fails (the depot busy, restarting) is tried again at the next second.
      const body = (await fetch(new URL('/api/image-refresh', o.api), { signal: AbortSignal.timeout(5000) })
        .then((r) => r.json())
        .catch(() => ({ refreshes: [] }))) as ImageRefreshStatusResponse;
      const job = body.refreshes.find((r) => r.service === o.service && r.image === res.image);
      for (const t of job?.targets ?? []) {
        if ((t.state === 'done' || t.state === 'failed') && !reported.has(t.host) && !o.json) {
          reported.add(t.host);
          const pct = sentPct({ bytesSent: t.bytesSent ?? 0, imageBytes: t.imageBytes ?? 0 });
          process.stdout.write(t.state === 'done' ? `  ${t.host}: ${t.kind}, ${formatBytes(t.bytesSent ?? 0)} of ${formatBytes(t.imageBytes ?? 0)} sent (${pct} %) in ${((t.durationMs ?? 0) / 1000).toFixed(1)} s\n` : `  ${t.host}: FAILED after ${t.attempts} tries: ${t.error}\n`);
        }
      }
      if (job && job.state !== 'shipping') {
        if (o.json) process.stdout.write(`${JSON.stringify(job)}\n`);
        if (job.state === 'failed') throw new NavigatorError('TRANSFER_FAILED', `the new version of ${o.service}'s image did not reach every depot (GET /api/image-refresh, /api/transfers)`);
        return;
      }
      if (Date.now() > deadline) throw new NavigatorError('TIMEOUT', `still shipping after ${o.timeout} s (GET /api/image-refresh on the depot)`);
      await new Promise((r) => setTimeout(r, 1000));
    }
  });
}
