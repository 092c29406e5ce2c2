import { z } from 'zod';
import { getDepotJson } from './depot-http.ts';
import type { TransferInfo } from '../shared/api/transfers.ts';
import type { ProgressItem } from './progress.ts';

// Image transfers as the CLI sees them: the shipping depot's GET /api/transfers (rate and ETA)
// and the heartbeat's `staging` list in /api/depots (what each depot is receiving, cluster-wide).

const n = z.number().finite().nonnegative();

/** One entry of GET /api/transfers (shared/api/transfers.ts TransferInfo as JSON: etaMs is left out when unknown). */
export const TransferRow = z.object({
  key: z.string(),
  imageId: z.string(),
  imageName: z.string(),
  target: z.string(),
  kind: z.enum(['full', 'delta', 'resume', 'pending']),
  state: z.enum(['preparing', 'sending', 'verifying', 'done', 'failed']),
  startedAt: n,
  bytesToSend: n,
  bytesSent: n,
  imageBytes: n,
  rateBps: n,
  etaMs: n.nullable().optional(),
  error: z.string().optional(),
});
export type TransferRow = z.infer<typeof TransferRow>;

// The depot's type must stay readable as a row: this fails to compile if TransferInfo drifts.
const _fits: (t: TransferInfo) => TransferRow = (t) => t;
void _fits;

const TransfersBody = z.object({ transfers: z.array(TransferRow) });

/** An image a depot is receiving, from its heartbeat. */
export const StagingEntry = z.object({ image: z.string(), bytes: n, total: n });
export type StagingEntry = z.infer<typeof StagingEntry>;

/**
 * Transfers in progress on the depot at `api`. A depot without the endpoint (404, an older
 * version) has none to show; any other failure is an error naming the URL.
 */
export async function fetchTransfers(api: string, timeoutMs = 5000): Promise<TransferRow[]> {
  const body = await getDepotJson(api, '/api/transfers', TransfersBody, { what: 'a transfer list', timeoutMs, whenMissing: { transfers: [] } });
  return body.transfers.filter(isActive);
}

function isActive(t: TransferRow): boolean {
  return t.state !== 'done' && t.state !== 'failed';
}

/**
 * What a depot row of /api/depots says it is receiving: `staging` (the heartbeat field), or
 * `transfers` (the same list under the tracking page's name). Malformed entries are skipped:
 * they are a display extra, the depot table must still print.
 */
export function stagingOf(row: unknown): StagingEntry[] {
  if (!row || typeof row !== 'object') return [];
  const r = row as { staging?: unknown; transfers?: unknown };
  const list = Array.isArray(r.staging) ? r.staging : Array.isArray(r.transfers) ? r.transfers : [];
  return list.flatMap((e) => {
    const p = StagingEntry.safeParse(e);
    return p.success ? [p.data] : [];
  });
}

/** What depotOf needs of a depot row (fields of /api/depots). */
export interface DepotAddressRow {
  name: string;
  hostAddresses?: readonly string[] | null;
  sshPort?: number | null;
}

/**
 * The depot a transfer's target ("host:port" of its sshd) is, from the host addresses and sshd
 * port in the depots' heartbeats; undefined when none matches (then the address is shown).
 */
export function depotOf(target: string, depots: readonly DepotAddressRow[]): string | undefined {
  const m = /^\[?([^\]]+?)\]?(?::(\d+))?$/.exec(target);
  if (!m) return undefined;
  const host = m[1]!;
  const port = m[2] === undefined ? undefined : Number(m[2]);
  const found = depots.filter((d) => (d.hostAddresses ?? []).includes(host) && (port === undefined || d.sshPort == null || d.sshPort === port));
  // Two depots on one address (loopback tests) with no port to tell them apart: do not guess.
  return found.length === 1 ? found[0]!.name : undefined;
}

/** A depot row as far as transfers need it. */
export interface DepotTransferRow extends DepotAddressRow {
  state: string;
  staging?: unknown;
  transfers?: unknown;
}

/**
 * What live depots report receiving that is not one of `transfers` (this depot's own, shown
 * with rate and ETA): images shipped by another depot. A transfer whose target address matches
 * no depot hides its image's staging everywhere (it may be any of them).
 */
export function stagingNotShipped(transfers: readonly TransferRow[], depots: readonly DepotTransferRow[]): Array<{ depot: string; entry: StagingEntry }> {
  const covered = new Set<string>();
  const anywhere = new Set<string>();
  for (const t of transfers) {
    const to = depotOf(t.target, depots);
    if (to === undefined) anywhere.add(t.imageId);
    else covered.add(`${to}\u0000${t.imageId}`);
  }
  const out: Array<{ depot: string; entry: StagingEntry }> = [];
  for (const d of depots) {
    if (d.state === 'dead' || d.state === 'left') continue;
    for (const entry of stagingOf(d)) {
      if (!anywhere.has(entry.image) && !covered.has(`${d.name}\u0000${entry.image}`)) out.push({ depot: d.name, entry });
    }
  }
  return out;
}

/** Names of images by content id: from transfers, else the service a depot runs it for. */
export function imageNames(transfers: readonly TransferRow[], depots: ReadonlyArray<{ containers?: readonly unknown[] }>): Map<string, string> {
  const names = new Map<string, string>();
  for (const d of depots) {
    for (const raw of d.containers ?? []) {
      const c = (raw ?? {}) as { image?: unknown; service?: unknown };
      if (typeof c.image === 'string' && c.image && typeof c.service === 'string') names.set(c.image, c.service);
    }
  }
  for (const t of transfers) if (t.imageName) names.set(t.imageId, t.imageName);
  return names;
}

/** A short image id for display. */
export const shortId = (id: string) => id.slice(0, 12);

/** A transfer as a progress line: bytes of this transfer (after delta/resume), rate, ETA. */
export function transferItem(t: TransferRow, targetName?: string): ProgressItem {
  const phase = t.state === 'sending' ? `sending (${t.kind})` : t.state;
  return {
    label: `ship ${t.imageName || shortId(t.imageId)} → ${targetName ?? t.target}`,
    phase,
    done: t.bytesSent,
    // Before the kind is decided the bytes to send are not known: phase and elapsed time only.
    ...(t.state === 'preparing' ? {} : { total: t.bytesToSend }),
    unit: 'bytes',
    // Rate and ETA mean something only while bytes flow; an unknown ETA shows as "--".
    ...(t.state === 'sending' ? { rateBps: t.rateBps, etaMs: t.etaMs ?? undefined } : {}),
    startedAt: t.startedAt,
    failed: t.state === 'failed',
  };
}

/** A staging entry as a progress line (no rate: the heartbeat carries only the byte counts). */
export function stagingItem(depot: string, s: StagingEntry, name?: string): ProgressItem {
  return { label: `receive ${name ?? shortId(s.image)} on ${depot}`, done: s.bytes, total: s.total, unit: 'bytes' };
}
