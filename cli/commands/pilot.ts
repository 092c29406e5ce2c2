import type { Command } from 'commander';
import { resolve } from 'node:path';
import { loadConfig } from '../../shared/config.ts';
import { NavigatorError } from '../../shared/errors.ts';
import type { ServiceView } from '../../web/tracking.ts';

// `navigator pilot bootstrap`, `navigator switchover`, `navigator drain`: thin clients of the
// local depot's admin API (localhost + admin token from the configuration file).

interface ApiFlags {
  api: string;
  config?: string;
  token?: string;
  json?: boolean;
}

function adminToken(flags: ApiFlags): string {
  if (flags.token) return flags.token;
  if (process.env.NAVIGATOR_ADMIN_TOKEN) return process.env.NAVIGATOR_ADMIN_TOKEN;
  const cfg = loadConfig(flags.config !== undefined ? { path: flags.config } : {});
  if (!cfg.http.adminToken) {
    throw new NavigatorError('UNAUTHORIZED', 'no admin token: set http.adminToken in the depot configuration (or pass --token / NAVIGATOR_ADMIN_TOKEN)');
  }
  return cfg.http.adminToken;
}

async function post(flags: ApiFlags, path: string, body: unknown): Promise<unknown> {
  const url = new URL(path, flags.api);
  let res: Response;
  try {
    res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${adminToken(flags)}` },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(180_000),
    });
  } catch (err) {
    throw new NavigatorError('PEER_UNREACHABLE', `cannot reach the depot at ${flags.api}: ${(err as Error).message} (is \`navigator depot run\` running there?)`);
  }
  const text = await res.text();
  const data = text ? (JSON.parse(text) as { error?: string }) : {};
  if (!res.ok) throw new NavigatorError(res.status === 401 ? 'UNAUTHORIZED' : 'COMMAND_FAILED', `${path}: HTTP ${res.status}: ${data.error ?? text}`);
  return data;
}

async function services(api: string): Promise<ServiceView[]> {
  const res = await fetch(new URL('/api/services', api), { signal: AbortSignal.timeout(5000) });
  return ((await res.json()) as { services: ServiceView[] }).services;
}

function printCopies(view: ServiceView): void {
  const rows = [['ROLE', 'HOST', 'TERM', 'STATE'], ...view.copies.map((c) => [c.role, c.host, String(c.term), c.state])];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const r of rows) process.stdout.write(`${r.map((c, i) => c.padEnd(widths[i]!)).join('  ')}\n`);
}

const apiOption = (cmd: Command) =>
  cmd
    .option('--api <url>', 'the local depot', 'http://127.0.0.1:7480')
    .option('--config <file>', 'depot configuration file holding http.adminToken')
    .option('--token <token>', 'admin token (default: from the configuration file)')
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
    const res = (await post(o, '/api/bootstrap', {
      service: o.service,
      imagePath: resolve(o.image),
      container: spec,
      address: o.address,
      iface: o.iface,
      port: Number(o.port),
      standbys,
      ...(o.database ? { database: JSON.parse(o.database) as unknown } : {}),
    })) as { result: { image: string; container: string } };
    if (!o.json) process.stdout.write(`image ${res.result.image.slice(0, 12)} imported; primary container ${res.result.container} starting\n`);
    const deadline = started + Number(o.timeout) * 1000;
    let last = '';
    for (;;) {
      // A busy depot may miss one poll; only the overall deadline counts.
      const view = (await services(o.api).catch(() => [] as ServiceView[])).find((s) => s.service === o.service);
      const primary = view?.copies.find((c) => c.role === 'primary' && c.state === 'running');
      const ready = view?.copies.filter((c) => c.role === 'standby' && c.state === 'running').length ?? 0;
      const line = `primary: ${primary?.host ?? '-'}  standbys: ${ready}/${standbys}`;
      if (!o.json && line !== last) process.stdout.write(`  ${line}\n`);
      last = line;
      if (view && primary && ready >= standbys) {
        if (o.json) process.stdout.write(`${JSON.stringify(view)}\n`);
        else {
          process.stdout.write(`${o.service} is protected (${((Date.now() - started) / 1000).toFixed(1)} s):\n`);
          printCopies(view);
        }
        return;
      }
      if (Date.now() > deadline) throw new NavigatorError('TIMEOUT', `${o.service} not protected after ${o.timeout} s (${line}); see the depot logs`);
      await new Promise((r) => setTimeout(r, 500));
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
      const res = (await post(o, '/api/drain', { host })) as { moved?: string[] };
      process.stdout.write(o.json ? `${JSON.stringify(res)}\n` : `drained ${host}: moved ${res.moved?.join(', ') || 'nothing'}\n`);
    },
  );
}
