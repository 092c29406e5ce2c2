import type { MemberState } from '../shared/member-state.ts';

// Where to put the next copy of a service: a pure, explainable ranking of depots.
//
// First exclusions, each with its reason (dead, suspect or left depot, already holds a copy,
// anti-affinity group, too little memory or disk, unusable report). Then every remaining depot is
// scored on named factors, each normalised to 0..1 and weighted:
//   uptime   u / (u + 12 h)                         a host up for long tends to stay up
//   memory   (free − needed) / total                room left after the copy starts
//   cpu      1 − load(5 min) / cpus                 idle processor share
//   session  r / (r + 2 h), r = expected remaining  how long this host's past sessions went on
//            time of the current session, from past sessions that were running at this time of
//            day (lab machines switched off at 6 pm score low at 5 pm); 0.5 with no history
//   image    1 when the image is already staged     no transfer needed (re-protection ≈ boot)
// total = Σ weight·value / Σ weight. Ties are broken by name, so the result is deterministic.
// The reference chose by uptime alone (report 4.3, 6.2.7).
//
// The admin's policy (config section `policy`, pilot/policy.ts) comes first: hosts excluded for
// all services or for this one, and hosts in the anti-affinity group of the primary, are excluded;
// pinned hosts rank before all others, and hosts whose group already holds a standby rank after
// all others (shared only when nothing else is left). Each ranked host says which rule put it
// where it is (`rule`): pinned, group, or the score and its largest factor.

/** A past session of a host: from boot (or depot start) to shutdown, ms since epoch. */
export interface HostSession {
  startMs: number;
  endMs: number;
}

export interface PlacementCandidate {
  name: string;
  peerId?: string;
  state: MemberState;
  uptimeS: number;
  load: [number, number, number];
  cpus: number;
  memFreeBytes: number;
  memTotalBytes: number;
  diskFreeBytes: number;
  /** Content ids of the images staged on the host. */
  images: string[];
  /** Services the host already runs a copy of (any role). */
  copies: string[];
  /** Rack, room or power group; copies of one service avoid sharing one. */
  group?: string;
  history?: HostSession[];
}

export interface PlacementRequirements {
  service: string;
  memBytes: number;
  diskBytes: number;
  /** Content id of the service's image. */
  image?: string;
  /** Groups that already hold a copy of the service (anti-affinity, hard). */
  avoidGroups?: string[];
  /** Group of the host that holds the primary: never a standby there (policy.groups). */
  primaryGroup?: string;
  /** Groups that hold a standby: ranked after every other host (policy.groups). */
  standbyGroups?: string[];
}

/** The admin's placement policy for one service (pilot/policy.ts makes it from the config). */
export interface PlacementPolicy {
  weights?: Partial<PlacementWeights>;
  /** Depot names that never get a copy: [name, why] (which config field). */
  excluded?: ReadonlyArray<readonly [string, string]>;
  /** Depot names ranked first whenever eligible. */
  pinned?: readonly string[];
  /** Depot name → anti-affinity group. */
  groups?: Readonly<Record<string, string>>;
}

export const FACTORS = ['uptime', 'memory', 'cpu', 'session', 'image'] as const;
export type FactorName = (typeof FACTORS)[number];
export type PlacementWeights = Record<FactorName, number>;

export const DEFAULT_WEIGHTS: PlacementWeights = { uptime: 0.2, memory: 0.2, cpu: 0.2, session: 0.25, image: 0.15 };

export interface FactorScore {
  name: FactorName;
  /** Normalised 0..1, higher is better. */
  value: number;
  weight: number;
  /** weight·value / Σ weights: this factor's share of the total. */
  contribution: number;
  /** The raw figure behind the value, for people. */
  detail: string;
}

/** What decided a host's place: 0 pinned, 1 by score, 2 after the others (its group holds a standby). */
export type RankTier = 0 | 1 | 2;

export interface RankedHost {
  name: string;
  peerId?: string;
  total: number;
  factors: FactorScore[];
  tier: RankTier;
  /** The rule that decided this host's place, in words. */
  rule: string;
  group?: string;
}

export interface ExcludedHost {
  name: string;
  reasons: string[];
}

export interface PlacementResult {
  service: string;
  requirements: PlacementRequirements;
  ranking: RankedHost[];
  excluded: ExcludedHost[];
  /** Name of the best host, or null when every host is excluded. */
  best: string | null;
  /** The weights used and the policy in force. */
  weights: PlacementWeights;
  policy: { pinned: string[]; excluded: Array<[string, string]>; groups: Record<string, string> };
}

export interface PlacementOptions {
  weights?: Partial<PlacementWeights>;
  policy?: PlacementPolicy;
}

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const UPTIME_HALF_S = 12 * 3600;
const SESSION_HALF_MS = 2 * HOUR;

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v.toFixed(0) : v.toFixed(1)} ${units[i]}`;
}

function formatDuration(ms: number): string {
  if (!Number.isFinite(ms)) return '∞';
  const m = Math.round(ms / 60_000);
  if (m < 60) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h${String(m % 60).padStart(2, '0')}`;
  return `${Math.round(h / 24)}d`;
}

const clamp01 = (x: number) => (Number.isFinite(x) ? Math.min(1, Math.max(0, x)) : 0);

function exclusions(c: PlacementCandidate, req: PlacementRequirements, policy: PlacementPolicy): string[] {
  const reasons: string[] = [];
  if (c.state !== 'alive') reasons.push(`depot is ${c.state}`);
  if (c.copies.includes(req.service)) reasons.push(`already holds a copy of ${req.service}`);
  for (const [name, why] of policy.excluded ?? []) if (name === c.name) reasons.push(`excluded by ${why}`);
  if (c.group !== undefined && c.group !== '' && (req.avoidGroups ?? []).includes(c.group)) reasons.push(`group ${c.group} already holds a copy`);
  if (c.group !== undefined && c.group !== '' && req.primaryGroup === c.group) reasons.push(`group ${c.group} holds the primary (anti-affinity: never primary and standby in one group)`);
  const numbers = [c.uptimeS, c.cpus, c.memFreeBytes, c.memTotalBytes, c.diskFreeBytes, ...c.load];
  if (numbers.some((n) => !Number.isFinite(n) || n < 0) || c.cpus <= 0 || c.memTotalBytes <= 0) {
    reasons.push('unusable resource report');
    return reasons;
  }
  if (c.memFreeBytes < req.memBytes) reasons.push(`free memory ${formatBytes(c.memFreeBytes)} < needed ${formatBytes(req.memBytes)}`);
  if (c.diskFreeBytes < req.diskBytes) reasons.push(`free disk ${formatBytes(c.diskFreeBytes)} < needed ${formatBytes(req.diskBytes)}`);
  return reasons;
}

/**
 * Expected time the host stays up from `now`, learned from its past sessions that were running
 * at the same time of day: the median of how long each went on from that time. Undefined without
 * history. A host whose past sessions never covered this time of day gets 0 (it is usually off
 * by now).
 */
export function expectedRemainingMs(history: HostSession[] | undefined, now: number): number | undefined {
  const sessions = (history ?? []).filter((s) => Number.isFinite(s.startMs) && Number.isFinite(s.endMs) && s.endMs > s.startMs && s.endMs <= now);
  if (sessions.length === 0) return undefined;
  const remaining: number[] = [];
  for (const s of sessions) {
    // The first instant of the session a whole number of days before `now` (same time of day in
    // any fixed time zone): from there, how long did the session go on?
    const at = s.startMs + ((((now - s.startMs) % DAY) + DAY) % DAY);
    if (at < s.endMs) remaining.push(s.endMs - at);
  }
  if (remaining.length === 0) return 0;
  remaining.sort((a, b) => a - b);
  const mid = Math.floor(remaining.length / 2);
  return remaining.length % 2 ? remaining[mid]! : (remaining[mid - 1]! + remaining[mid]!) / 2;
}

function pastSessions(history: HostSession[] | undefined): string {
  const n = history?.length ?? 0;
  return `${n} past session${n === 1 ? '' : 's'}`;
}

function score(c: PlacementCandidate, req: PlacementRequirements, now: number, weights: PlacementWeights): FactorScore[] {
  const load5 = c.load[1];
  const remaining = expectedRemainingMs(c.history, now);
  const raw: Record<FactorName, { value: number; detail: string }> = {
    uptime: { value: clamp01(c.uptimeS / (c.uptimeS + UPTIME_HALF_S)), detail: `up ${formatDuration(c.uptimeS * 1000)}` },
    memory: {
      value: clamp01((c.memFreeBytes - req.memBytes) / c.memTotalBytes),
      detail: `${formatBytes(c.memFreeBytes - req.memBytes)} of ${formatBytes(c.memTotalBytes)} free after`,
    },
    cpu: { value: clamp01(1 - load5 / c.cpus), detail: `load ${load5.toFixed(2)} on ${c.cpus} cpus` },
    session:
      remaining === undefined
        ? { value: 0.5, detail: 'no history' }
        : remaining === 0
          ? { value: 0, detail: `usually off at this hour (${pastSessions(c.history)})` }
          : { value: clamp01(remaining / (remaining + SESSION_HALF_MS)), detail: `expect ${formatDuration(remaining)} more (${pastSessions(c.history)})` },
    image:
      req.image === undefined
        ? { value: 0, detail: 'image not given' }
        : c.images.includes(req.image)
          ? { value: 1, detail: 'staged' }
          : { value: 0, detail: 'to ship' },
  };
  const sum = FACTORS.reduce((acc, f) => acc + weights[f], 0);
  return FACTORS.map((name) => ({
    name,
    value: raw[name].value,
    weight: weights[name],
    contribution: sum > 0 ? (weights[name] * raw[name].value) / sum : 0,
    detail: raw[name].detail,
  }));
}

/** Rank the candidates for a new copy of `req.service`. Pure: same input, same output. */
export function rankHosts(candidates: PlacementCandidate[], req: PlacementRequirements, now: number, opts: PlacementOptions = {}): PlacementResult {
  const policy = opts.policy ?? {};
  const defined = <T extends object>(o: T | undefined) => Object.fromEntries(Object.entries(o ?? {}).filter(([, v]) => v !== undefined)) as Partial<PlacementWeights>;
  const weights: PlacementWeights = { ...DEFAULT_WEIGHTS, ...defined(policy.weights), ...defined(opts.weights) };
  if (FACTORS.every((f) => weights[f] === 0)) throw new RangeError('placement weights are all 0: at least one must be positive');
  const groups = policy.groups ?? {};
  const pinned = new Set(policy.pinned ?? []);
  const standbyGroups = new Set(req.standbyGroups ?? []);
  for (const f of FACTORS) {
    if (!Number.isFinite(weights[f]) || weights[f] < 0) throw new RangeError(`placement weight ${f} must be a non-negative number (got ${weights[f]})`);
  }
  const ranking: RankedHost[] = [];
  const excluded: ExcludedHost[] = [];
  const seen = new Set<string>();
  for (const c of candidates) {
    if (seen.has(c.name)) {
      excluded.push({ name: c.name, reasons: ['duplicate host name in the input'] });
      continue;
    }
    seen.add(c.name);
    const group = groups[c.name] ?? c.group;
    const withGroup = group !== undefined ? { ...c, group } : c;
    const reasons = exclusions(withGroup, req, policy);
    if (reasons.length) {
      excluded.push({ name: c.name, reasons });
      continue;
    }
    const factors = score(c, req, now, weights);
    const total = factors.reduce((acc, f) => acc + f.contribution, 0);
    const top = [...factors].sort((a, b) => b.contribution - a.contribution)[0]!;
    const [tier, rule]: [RankTier, string] = pinned.has(c.name)
      ? [0, `pinned for ${req.service}: ranked before unpinned hosts`]
      : group && standbyGroups.has(group)
        ? [2, `group ${group} already holds a standby: ranked after hosts in other groups`]
        : [1, `score ${total.toFixed(3)} (largest share: ${top.name} ${top.contribution.toFixed(3)})`];
    ranking.push({ name: c.name, ...(c.peerId ? { peerId: c.peerId } : {}), total, factors, tier, rule, ...(group ? { group } : {}) });
  }
  const byName = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
  ranking.sort((a, b) => a.tier - b.tier || b.total - a.total || byName(a.name, b.name));
  excluded.sort((a, b) => byName(a.name, b.name));
  return {
    service: req.service,
    requirements: req,
    ranking,
    excluded,
    best: ranking[0]?.name ?? null,
    weights,
    policy: { pinned: [...pinned], excluded: (policy.excluded ?? []).map(([n, w]) => [n, w]), groups: { ...groups } },
  };
}

function table(rows: string[][], rightAlign: boolean[]): string[] {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) =>
    r
      .map((cell, i) => (rightAlign[i] ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd(),
  );
}

/** The ranking as printed by `navigator placement --service NAME`. */
export function formatRanking(result: PlacementResult): string {
  const req = result.requirements;
  const lines: string[] = [];
  const needs = [`memory ${formatBytes(req.memBytes)}`, `disk ${formatBytes(req.diskBytes)}`, req.image ? `image ${req.image.slice(0, 16)}` : 'image not given'];
  lines.push(`placement of a new copy of ${result.service} (needs ${needs.join(', ')})`);
  if (result.ranking.length === 0) {
    lines.push('no eligible host');
  } else {
    const weights = FACTORS.map((f) => `${f} ${result.weights[f]}`).join(', ');
    lines.push(`score = weighted mean of factors in 0..1 (weights: ${weights})`);
    lines.push('');
    const head = ['rank', 'host', 'total', ...FACTORS, 'decided by'];
    const rows = result.ranking.map((r, i) => [String(i + 1), r.name, r.total.toFixed(3), ...r.factors.map((f) => f.value.toFixed(2)), r.tier === 0 ? 'pinned' : r.tier === 2 ? 'group' : 'score']);
    lines.push(...table([head, ...rows], [true, false, true, ...FACTORS.map(() => true), false]));
    lines.push('');
    lines.push('why:');
    const why = result.ranking.map((r) => [`  ${r.name}`, `${r.rule}; ${r.factors.map((f) => `${f.name}: ${f.detail}`).join('; ')}`]);
    lines.push(...table(why, [false, false]));
  }
  const p = result.policy;
  const groupList = Object.entries(p.groups);
  if (p.pinned.length || p.excluded.length || groupList.length) {
    lines.push('');
    lines.push('policy in force:');
    if (p.pinned.length) lines.push(`  pinned: ${p.pinned.join(', ')}`);
    if (p.excluded.length) lines.push(`  excluded: ${p.excluded.map(([n, w]) => `${n} (${w})`).join(', ')}`);
    if (groupList.length) lines.push(`  groups: ${groupList.map(([h, g]) => `${h}=${g}`).join(', ')}`);
  }
  if (result.excluded.length) {
    lines.push('');
    lines.push('excluded:');
    lines.push(...table(result.excluded.map((e) => [`  ${e.name}`, e.reasons.join('; ')]), [false, false]));
  }
  return `${lines.join('\n')}\n`;
}
