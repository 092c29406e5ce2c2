import type { Command } from 'commander';
import { NavigatorError } from '../../shared/errors.ts';
import type { MovementRecord } from '../../shared/movement.ts';
import { DEFAULT_API } from './status.ts';
import { painter, stdoutPainter, type Painter } from '../colour.ts';
import { renderTable } from '../table.ts';

// `navigator history`: the movement journal of one depot, newest first, as a table or JSON.

const TIMING_KEYS = ['detect', 'elect', 'takeover', 'ship', 'boot'] as const;

/** The journal as a table; failovers in red when `colour` (a painter, or true/false). */
export function formatHistory(records: MovementRecord[], colour: boolean | Painter): string {
  const paint = typeof colour === 'boolean' ? painter(colour) : colour;
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
  return renderTable(head, rows, { paint, rowStyle: (i) => (records[i]!.failover ? 'red' : undefined) }).join('\n');
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
      else process.stdout.write(`${body.records.length ? formatHistory(body.records, stdoutPainter()) : 'no movements recorded'}\n`);
    });
}
