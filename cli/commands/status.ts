import type { Command } from 'commander';
import { errorMessage } from '../../shared/errors.ts';
import { getDepotJson, type BodyCheck } from '../depot-http.ts';
import type { DepotsResponse, DepotRow, UncheckedContainerRow } from '../../shared/api/depots.ts';
import { noColour, stdoutPainter, type Painter, type Style } from '../colour.ts';
import { renderTable, type Cell } from '../table.ts';
import { gtidTransactions } from '../../web/service-views.ts';
import { formatBar, formatBytes, formatEta, formatPercent, formatRate, fractionOf, paintBar } from '../progress.ts';
import { buildServiceViews } from '../../web/service-views.ts';
import { depotOf, fetchTransfers, imageNames, shortId, stagingNotShipped, type TransferRow } from '../transfers-api.ts';

// `navigator status`: the cluster as one depot sees it, from its /api/depots (depots, the
// copies of each service their heartbeats report, what they are receiving) and its
// /api/transfers (images it is shipping, with rate and ETA).

export const DEFAULT_API = 'http://127.0.0.1:7480';

/** /api/depots, checked only as far as status needs: a `depots` list (rows are printed defensively). */
const DepotsBody: BodyCheck<DepotsResponse> = {
  safeParse: (body) =>
    typeof body === 'object' && body !== null && Array.isArray((body as DepotsResponse).depots)
      ? { success: true, data: body as DepotsResponse }
      : { success: false, error: { issues: [{ path: ['depots'], message: 'expected a list' }] } },
};

async function fetchDepots(api: string, timeoutMs = 5000): Promise<DepotsResponse> {
  return getDepotJson(api, '/api/depots', DepotsBody, { what: 'a depot list', timeoutMs });
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

function ago(ms: number): string {
  const s = Math.max(0, ms / 1000);
  return s < 60 ? `${s.toFixed(s < 10 ? 1 : 0)}s ago` : `${duration(s)} ago`;
}

const STATE_STYLE: Record<DepotRow['state'], Style | readonly Style[]> = { alive: 'green', suspect: 'yellow', dead: ['red', 'bold'], left: 'dim' };
const CONTAINER_STYLE: Record<string, Style> = { running: 'green', starting: 'yellow', stopping: 'yellow', failed: 'red', stopped: 'dim', unknown: 'dim' };

/** One copy of a service as a depot's heartbeat reports it. */
interface CopyRow {
  service: string;
  role: string;
  host: string;
  state: string;
  term: number;
  lastSyncAt: number | null;
  syncFailing: boolean;
  /** replicate/semisync: GTID position, replication state, why broken. */
  gtid?: string;
  replState?: string;
  replReason?: string;
  semisyncFallback?: boolean;
  /** Standby whose database never completed a seed (it cannot take over). */
  notSeeded?: boolean;
  /** Standby: transactions behind the primary (GTID), when both positions are known. */
  lagTx?: number;
}

/** A replica's lag: age of the newest primary heartbeat it holds, transactions behind, state. */
export function replicationCell(c: CopyRow, now: number): Cell {
  const age = c.lastSyncAt !== null ? Math.max(0, now - c.lastSyncAt) : undefined;
  const lag = `${age === undefined ? '-' : age < 1000 ? `${Math.round(age)} ms` : `${(age / 1000).toFixed(1)} s`}${c.lagTx !== undefined ? ` / ${c.lagTx} tx` : ''}`;
  if (c.replState === 'broken') return { text: `broken, reseeding (${c.replReason ?? 'unknown'}); ${lag}`, style: 'red' };
  if (c.replState !== 'replicating') return { text: `${c.replState}${c.replReason ? ` (${c.replReason})` : ''}; ${lag}`, style: 'yellow' };
  return lag;
}

/** The LAST SYNC / LAG column: a standby that cannot take over first, then its replication or sync state. */
export function syncCell(c: CopyRow, now: number): Cell {
  if (c.notSeeded) return { text: `not seeded: cannot take over${c.replState !== undefined ? ` (${c.replState})` : ''}`, style: 'red' };
  if (c.replState !== undefined) return replicationCell(c, now);
  if (c.syncFailing) return { text: `failing${c.lastSyncAt !== null ? ` (last good ${ago(now - c.lastSyncAt)})` : ''}`, style: 'red' };
  if (c.lastSyncAt !== null) return ago(now - c.lastSyncAt);
  return c.semisyncFallback ? { text: 'semisync fell back to async', style: 'yellow' } : '-';
}

/** Copies on depots that are alive or suspect (a dead depot's last heartbeat is stale). */
export function copiesOf(depots: readonly DepotRow[]): CopyRow[] {
  const out: CopyRow[] = [];
  for (const d of depots) {
    if (d.state === 'dead' || d.state === 'left') continue;
    for (const raw of d.containers) {
      const c = (raw ?? {}) as UncheckedContainerRow;
      if (typeof c.service !== 'string') continue;
      out.push({
        service: c.service,
        role: typeof c.role === 'string' ? c.role : 'none',
        host: d.name,
        state: typeof c.state === 'string' ? c.state : 'unknown',
        term: typeof c.term === 'number' ? c.term : 0,
        lastSyncAt: typeof c.lastSyncAt === 'number' ? c.lastSyncAt : null,
        syncFailing: c.syncFailing === true,
        ...(typeof c.gtid === 'string' ? { gtid: c.gtid } : {}),
        ...(typeof c.replState === 'string' ? { replState: c.replState } : {}),
        ...(typeof c.replReason === 'string' ? { replReason: c.replReason } : {}),
        ...(c.semisyncFallback === true ? { semisyncFallback: true } : {}),
        ...(c.role === 'standby' && c.seeded === false ? { notSeeded: true } : {}),
      });
    }
  }
  for (const c of out) {
    const primary = out.filter((p) => p.service === c.service && p.role === 'primary' && p.gtid !== undefined).sort((a, b) => b.term - a.term)[0];
    if (c.role === 'standby' && c.gtid !== undefined && primary) c.lagTx = Math.max(0, gtidTransactions(primary.gtid!) - gtidTransactions(c.gtid));
  }
  const order: Record<string, number> = { primary: 0, standby: 1 };
  return out.sort((a, b) => a.service.localeCompare(b.service) || (order[a.role] ?? 2) - (order[b.role] ?? 2) || a.host.localeCompare(b.host));
}

export interface StatusFormatOptions {
  paint?: Painter;
  /** Transfers from the depot's /api/transfers (in progress). */
  transfers?: readonly TransferRow[];
  /** Bars in '#' and '.' (output that is not a terminal). */
  ascii?: boolean;
}

const BAR_WIDTH = 20;

function barCell(fraction: number | undefined, paint: Painter, ascii: boolean, failed = false): Cell {
  const bar = formatBar(fraction, BAR_WIDTH, ascii);
  const pct = formatPercent(fraction);
  return { text: `[${bar}] ${pct}`, styled: `[${paintBar(bar, paint, failed)}] ${pct}` };
}

/** The transfers table: what this depot ships (with rate and ETA) and what every depot receives. */
function transferRows(body: DepotsResponse, transfers: readonly TransferRow[], paint: Painter, ascii: boolean): Cell[][] {
  const rows: Cell[][] = transfers.map((t) => {
    const f = t.state === 'preparing' ? undefined : fractionOf(t.bytesSent, t.bytesToSend);
    const failed = t.state === 'failed';
    return [
      `${t.imageName || shortId(t.imageId)} ${shortId(t.imageId)}`,
      `→ ${depotOf(t.target, body.depots) ?? t.target}`,
      { text: t.state === 'sending' ? `sending (${t.kind})` : t.state, style: failed ? 'red' : t.state === 'sending' ? 'cyan' : undefined },
      barCell(f, paint, ascii, failed),
      t.state === 'preparing' ? `? / ${formatBytes(t.imageBytes)}` : `${formatBytes(t.bytesSent)} / ${formatBytes(t.bytesToSend)}`,
      t.state === 'sending' ? formatRate(t.rateBps) : '-',
      t.state === 'sending' ? formatEta(t.etaMs) : '-',
    ];
  });
  const names = imageNames(transfers, body.depots);
  for (const { depot, entry } of stagingNotShipped(transfers, body.depots)) {
    rows.push([
      `${names.get(entry.image) ?? '-'} ${shortId(entry.image)}`,
      `← ${depot}`,
      { text: 'receiving', style: 'cyan' },
      barCell(fractionOf(entry.bytes, entry.total), paint, ascii),
      `${formatBytes(entry.bytes)} / ${formatBytes(entry.total)}`,
      '-',
      '-',
    ]);
  }
  return rows;
}

export function formatTable(body: DepotsResponse, now = Date.now(), opts: StatusFormatOptions = {}): string {
  const paint = opts.paint ?? noColour;
  const ascii = opts.ascii ?? !paint.enabled;
  const head = ['NAME', 'STATE', 'UPTIME', 'LOAD', 'CPUS', 'MEM FREE', 'DISK FREE', 'IMAGES', 'CONTAINERS', 'LAST SEEN', 'VERSION', 'PEER'];
  const rows: Cell[][] = body.depots.map((d: DepotRow) => [
    d.self ? { text: `${d.name} *`, style: 'bold' } : d.name,
    { text: d.state, style: STATE_STYLE[d.state] },
    duration(d.uptimeS),
    d.load ? d.load[0].toFixed(2) : '-',
    d.cpus === null ? '-' : String(d.cpus),
    gib(d.memFreeBytes),
    gib(d.diskFreeBytes),
    String(d.images.length),
    String(d.containers.length),
    d.self ? 'now' : ago(now - d.lastSeen),
    d.version ?? '-',
    `${d.peerId.slice(0, 8)}…${d.peerId.slice(-6)}`,
  ]);
  // A depot that left is history: the whole row dim.
  const out = renderTable(head, rows, { paint, rowStyle: (i) => (body.depots[i]!.state === 'left' ? 'dim' : undefined) });

  const copies = copiesOf(body.depots);
  if (copies.length) {
    const copyRows: Cell[][] = copies.map((c) => [
      c.service,
      { text: c.role, style: c.role === 'primary' ? ['bold', 'cyan'] : undefined },
      c.role === 'primary' ? { text: c.host, style: 'bold' } : c.host,
      { text: c.state, style: CONTAINER_STYLE[c.state] },
      String(c.term),
      syncCell(c, now),
    ]);
    out.push('', ...renderTable(['SERVICE', 'ROLE', 'HOST', 'STATE', 'TERM', 'LAST SYNC / LAG'], copyRows, { paint }));
  }
  // The voter group of each service (the newest one a copy reports), one line per service.
  for (const v of buildServiceViews(body.depots, [])) {
    if (!v.voters) continue;
    const joint = v.voters.prev ? ` ${paint('yellow', `(changing from ${v.voters.prev.join(', ')})`)}` : '';
    out.push(`voters of ${v.service}: ${v.voters.hosts.join(', ')} [view ${v.voters.epoch.join('.')}, term ${v.term}]${joint}`);
  }

  const transfers = transferRows(body, opts.transfers ?? [], paint, ascii);
  if (transfers.length) out.push('', ...renderTable(['IMAGE', 'PEER', 'STATE', 'PROGRESS', 'BYTES', 'RATE', 'ETA'], transfers, { paint }));

  const dropped = Object.entries(body.dropped).filter(([, n]) => n > 0);
  const c = body.counts;
  const counts = [
    paint(c.alive ? 'green' : undefined, `${c.alive} alive`),
    paint(c.suspect ? 'yellow' : undefined, `${c.suspect} suspect`),
    paint(c.dead ? 'red' : undefined, `${c.dead} dead`),
    `${c.left} left`,
  ].join(', ');
  const footer = counts + (dropped.length ? `; dropped gossip: ${dropped.map(([r, n]) => `${r}=${n}`).join(' ')}` : '');
  return [...out, '', footer].join('\n');
}

export function registerStatus(program: Command): void {
  program
    .command('status')
    .description('Show the depots in the cluster as one depot sees them, the copies of each service and the image transfers')
    .option('--json', 'print the JSON of /api/depots')
    .option('--api <url>', 'HTTP address of a depot', DEFAULT_API)
    .action(async (opts: { json?: boolean; api: string }) => {
      const body = await fetchDepots(opts.api);
      if (opts.json) {
        process.stdout.write(`${JSON.stringify(body, null, 2)}\n`);
        return;
      }
      // Transfers are an extra: if the depot cannot list them, say so and show the rest.
      const transfers = await fetchTransfers(opts.api).catch((err: unknown) => {
        process.stderr.write(`navigator: transfers not shown: ${errorMessage(err)}\n`);
        return [];
      });
      const paint = stdoutPainter();
      process.stdout.write(`${formatTable(body, Date.now(), { paint, transfers, ascii: !process.stdout.isTTY })}\n`);
    });
}
