import type { Command } from 'commander';
import { NavigatorError } from '../../shared/errors.ts';
import type { DepotsResponse, DepotRow } from '../../web/depot-api.ts';

// `navigator status`: the cluster as one depot sees it, from its /api/depots.

export const DEFAULT_API = 'http://127.0.0.1:7480';

export async function fetchDepots(api: string, timeoutMs = 5000): Promise<DepotsResponse> {
  const url = `${api.replace(/\/+$/, '')}/api/depots`;
  let res: Response;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  } catch (err) {
    throw new NavigatorError('COMMAND_FAILED', `cannot reach the depot at ${url}: ${(err as Error).cause ? String(((err as Error).cause as Error).message ?? (err as Error).cause) : (err as Error).message} (is \`navigator depot run\` running? use --api URL)`);
  }
  if (!res.ok) throw new NavigatorError('COMMAND_FAILED', `${url} answered HTTP ${res.status}`);
  const body = (await res.json()) as DepotsResponse;
  if (!body || !Array.isArray(body.depots)) throw new NavigatorError('COMMAND_FAILED', `${url} did not return a depot list`);
  return body;
}

function gib(bytes: number | null): string {
  return bytes === null ? '-' : `${(bytes / 2 ** 30).toFixed(1)}G`;
}

function duration(s: number | null): string {
  if (s === null) return '-';
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d${Math.floor((s % 86400) / 3600)}h`;
}

export function formatTable(body: DepotsResponse, now = Date.now()): string {
  const head = ['NAME', 'STATE', 'UPTIME', 'LOAD', 'CPUS', 'MEM FREE', 'DISK FREE', 'IMAGES', 'CONTAINERS', 'LAST SEEN', 'VERSION', 'PEER'];
  const rows = body.depots.map((d: DepotRow) => [
    d.self ? `${d.name} *` : d.name,
    d.state,
    duration(d.uptimeS),
    d.load ? d.load[0].toFixed(2) : '-',
    d.cpus === null ? '-' : String(d.cpus),
    gib(d.memFreeBytes),
    gib(d.diskFreeBytes),
    String(d.images.length),
    String(d.containers.length),
    d.self ? 'now' : `${((now - d.lastSeen) / 1000).toFixed(1)}s ago`,
    d.version ?? '-',
    `${d.peerId.slice(0, 8)}…${d.peerId.slice(-6)}`,
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  const dropped = Object.entries(body.dropped).filter(([, n]) => n > 0);
  const c = body.counts;
  const footer = `${c.alive} alive, ${c.suspect} suspect, ${c.dead} dead, ${c.left} left` + (dropped.length ? `; dropped gossip: ${dropped.map(([r, n]) => `${r}=${n}`).join(' ')}` : '');
  return [line(head), ...rows.map(line), '', footer].join('\n');
}

export function registerStatus(program: Command): void {
  program
    .command('status')
    .description('Show the depots in the cluster as one depot sees them')
    .option('--json', 'print the JSON of /api/depots')
    .option('--api <url>', 'HTTP address of a depot', DEFAULT_API)
    .action(async (opts: { json?: boolean; api: string }) => {
      const body = await fetchDepots(opts.api);
      process.stdout.write(opts.json ? `${JSON.stringify(body, null, 2)}\n` : `${formatTable(body)}\n`);
    });
}
