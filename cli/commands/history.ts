import type { Command } from 'commander';
import { NavigatorError } from '../../shared/errors.ts';
import type { MovementRecord } from '../../shared/movement.ts';
import { DEFAULT_API } from './status.ts';

// `navigator history`: the movement journal of one depot, newest first, as a table or JSON.

const TIMING_KEYS = ['detect', 'elect', 'takeover', 'ship', 'boot'] as const;

export function formatHistory(records: MovementRecord[], color: boolean): string {
  const paint = (code: number, s: string) => (color ? `\u001b[${code}m${s}\u001b[0m` : s);
  const head = ['TIME', 'SERVICE', 'EVENT', 'ROLE', 'HOST', 'FROM', 'FAILOVER', 'TERM', 'TIMINGS (ms)', 'REASON'];
  const rows = records.map((r) => [
    new Date(r.time).toISOString().replace('T', ' ').slice(0, 19),
    r.service,
    r.event,
    r.role,
    r.host,
    r.fromHost || '-',
    r.failover ? 'yes' : 'no',
    String(r.term),
    TIMING_KEYS.filter((k) => r.timings[k] !== undefined).map((k) => `${k} ${r.timings[k]}`).join(', ') || '-',
    r.reason,
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[], failover = false) => {
    const text = cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
    return failover ? paint(31, text) : text;
  };
  return [paint(1, line(head)), ...rows.map((row, i) => line(row, records[i]!.failover))].join('\n');
}

export function registerHistory(program: Command): void {
  program
    .command('history')
    .description('Movements of the services, newest first (from a depot\'s journal)')
    .option('--service <name>', 'only this service')
    .option('--host <name>', 'only movements to or from this depot')
    .option('--event <event>', 'only this event (bootstrap, placed, promoted, failover, replaced, demoted, switchover, drained)')
    .option('--limit <n>', 'how many', '50')
    .option('--api <url>', 'depot to ask', DEFAULT_API)
    .option('--json', 'print JSON')
    .action(async (o: { service?: string; host?: string; event?: string; limit: string; api: string; json?: boolean }) => {
      const url = new URL('/api/movements', o.api);
      for (const [k, v] of Object.entries({ service: o.service, host: o.host, event: o.event, limit: o.limit })) if (v) url.searchParams.set(k, v);
      let res: Response;
      try {
        res = await fetch(url, { signal: AbortSignal.timeout(5000) });
      } catch (err) {
        throw new NavigatorError('COMMAND_FAILED', `cannot reach the depot at ${o.api}: ${(err as Error).message} (use --api URL)`);
      }
      const body = (await res.json()) as { records?: MovementRecord[]; error?: string };
      if (!res.ok || !body.records) throw new NavigatorError('COMMAND_FAILED', `${url.pathname}: HTTP ${res.status}: ${body.error ?? 'no records'}`);
      if (o.json) process.stdout.write(`${JSON.stringify(body.records, null, 2)}\n`);
      else process.stdout.write(`${body.records.length ? formatHistory(body.records, Boolean(process.stdout.isTTY)) : 'no movements recorded'}\n`);
    });
}
