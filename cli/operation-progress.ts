import type { ServiceView } from '../shared/api/tracking.ts';
import type { ProgressItem } from './progress.ts';
import { depotOf, imageNames, stagingItem, stagingNotShipped, transferItem, type DepotTransferRow, type TransferRow } from './transfers-api.ts';

// What the progress board shows while `navigator pilot bootstrap` and `navigator drain` run,
// decided from what the depot's API answers (pure: the commands poll and draw).

/** A depot row as far as progress needs it (name, state, containers, staging). */
export interface DepotRowLike extends DepotTransferRow {
  containers?: readonly unknown[];
}

export interface Board {
  /** Live lines by key, in display order. */
  items: Array<[string, ProgressItem]>;
}

/**
 * Image movement for `image` (all images when undefined): this depot's transfers (rate, ETA),
 * then what depots report receiving that is not one of those (shipped by another depot).
 */
function transferItems(transfers: readonly TransferRow[], depots: readonly DepotRowLike[], image?: string): Array<[string, ProgressItem]> {
  const mine = transfers.filter((t) => image === undefined || t.imageId === image);
  const names = imageNames(transfers, depots);
  return [
    ...mine.map((t): [string, ProgressItem] => [`transfer:${t.key}`, transferItem(t, depotOf(t.target, depots))]),
    ...stagingNotShipped(mine, depots)
      .filter((s) => image === undefined || s.entry.image === image)
      .map((s): [string, ProgressItem] => [`staging:${s.depot}:${s.entry.image}`, stagingItem(s.depot, s.entry, names.get(s.entry.image))]),
  ];
}

export interface BootstrapInput {
  service: string;
  image: string;
  standbys: number;
  startedAt: number;
  view: ServiceView | undefined;
  transfers: readonly TransferRow[];
  depots: readonly DepotRowLike[];
}

/** Copies that count: running primary, running standbys. */
export function bootstrapState(view: ServiceView | undefined): { primary: string | undefined; ready: string[] } {
  const running = view?.copies.filter((c) => c.state === 'running') ?? [];
  return { primary: running.find((c) => c.role === 'primary')?.host, ready: running.filter((c) => c.role === 'standby').map((c) => c.host) };
}

/** The bootstrap's line (phase, standbys ready of wanted) and a bar per image transfer. */
export function bootstrapBoard(input: BootstrapInput): Board {
  const { primary, ready } = bootstrapState(input.view);
  const moving = transferItems(input.transfers, input.depots, input.image);
  let phase: string;
  if (!primary) phase = 'waiting for the primary (election, address, start)';
  else if (ready.length >= input.standbys) phase = 'protected';
  else {
    const next = `standby ${ready.length + 1}/${input.standbys}`;
    const starting = input.view?.copies.find((c) => c.role === 'standby' && c.state !== 'running');
    // A standby copy exists only once its image has arrived: then it is booting.
    if (starting) phase = `${next}: ${starting.state} on ${starting.host}`;
    else if (moving.length) phase = `${next}: shipping the image`;
    else phase = `${next}: choosing a host`;
  }
  const main: ProgressItem = {
    label: `bootstrap ${input.service}`,
    phase: primary ? `primary on ${primary}; ${phase}` : phase,
    startedAt: input.startedAt,
    ...(input.standbys > 0 ? { done: Math.min(ready.length, input.standbys), total: input.standbys, unit: 'count' as const } : {}),
  };
  return { items: [['bootstrap', main], ...moving] };
}

/** Services whose primary runs on `host` (what a drain has left to move). */
export function primariesOn(host: string, depots: readonly DepotRowLike[]): string[] {
  const out = new Set<string>();
  for (const d of depots) {
    if (d.name !== host) continue;
    for (const raw of d.containers ?? []) {
      const c = (raw ?? {}) as { service?: unknown; role?: unknown };
      if (typeof c.service === 'string' && c.role === 'primary') out.add(c.service);
    }
  }
  return [...out].sort();
}

export interface DrainInput {
  host: string;
  /** Primaries on the host when the drain started. */
  initial: readonly string[];
  startedAt: number;
  transfers: readonly TransferRow[];
  depots: readonly DepotRowLike[];
}

/** The drain's line (primaries moved of those on the host, the one moving now) and transfer bars. */
export function drainBoard(input: DrainInput): Board {
  const left = primariesOn(input.host, input.depots).filter((s) => input.initial.includes(s));
  const total = input.initial.length;
  const phase = total === 0
    ? 'asking the depot to move the primaries'
    : left.length
      ? `switchover of ${left[0]} (${left.length} of ${total} left on ${input.host})`
      : `all ${total} moved; waiting for the depot to confirm`;
  const main: ProgressItem = {
    label: `drain ${input.host}`,
    phase,
    startedAt: input.startedAt,
    ...(total > 0 ? { done: total - left.length, total, unit: 'count' as const } : {}),
  };
  return { items: [['drain', main], ...transferItems(input.transfers, input.depots)] };
}
