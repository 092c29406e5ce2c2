import type { Config } from '../shared/config.ts';
import { parseQuietWindow, type PolicyConfig, type QuietWindow } from '../shared/config-policy.ts';
import { DEFAULT_WEIGHTS, FACTORS, type PlacementPolicy } from './placement.ts';

// The admin's policy (config section `policy`) as the pilots apply it, pure: the placement policy
// of one service, the standbys it keeps, whether now is within quiet hours, and the words
// `navigator config check`, `navigator placement` and the page explain it with.

export interface ServicePolicyInForce extends PlacementPolicy {
  /** Standbys kept when the policy names a number (it wins over the bootstrap's). */
  standbys?: number;
}

export function servicePolicy(policy: PolicyConfig, service: string): ServicePolicyInForce {
  const own = policy.services[service];
  return {
    weights: policy.weights,
    excluded: [...policy.excludedHosts.map((h) => [h, 'policy.excludedHosts'] as const), ...(own?.excluded ?? []).map((h) => [h, `policy.services.${service}.excluded`] as const)],
    pinned: own?.pinned ?? [],
    groups: policy.groups,
    ...(own?.standbys !== undefined ? { standbys: own.standbys } : {}),
  };
}

/** Minutes past local midnight and the local weekday of `now`; `utcOffsetMin` east of UTC (default: this host's zone). */
function localTime(now: number, utcOffsetMin: number): { day: number; min: number } {
  const local = new Date(now + utcOffsetMin * 60_000);
  return { day: local.getUTCDay(), min: local.getUTCHours() * 60 + local.getUTCMinutes() };
}

/** The quiet window `now` falls in, if any (a window past midnight belongs to the day it starts). */
export function quietWindowAt(policy: Pick<PolicyConfig, 'quietHours'>, now: number, utcOffsetMin = -new Date(now).getTimezoneOffset()): QuietWindow | undefined {
  const { day, min } = localTime(now, utcOffsetMin);
  for (const text of policy.quietHours) {
    const w = parseQuietWindow(text);
    if (w.fromMin < w.toMin) {
      if (w.days.includes(day) && min >= w.fromMin && min < w.toMin) return w;
    } else if ((w.days.includes(day) && min >= w.fromMin) || (w.days.includes((day + 6) % 7) && min < w.toMin)) {
      return w;
    }
  }
  return undefined;
}

/** Likely mistakes in the policy that the schema cannot see; each names the fields. */
export function policyWarnings(cfg: Pick<Config, 'policy' | 'pilot'>): string[] {
  const p = cfg.policy;
  const out: string[] = [];
  const weights = FACTORS.map((f) => p.weights[f] ?? DEFAULT_WEIGHTS[f]);
  if (weights.every((w) => w === 0)) out.push('policy.weights: every weight is 0, so placement cannot rank hosts (give at least one a positive weight)');
  for (const [service, s] of Object.entries(p.services)) {
    for (const h of s.pinned) {
      if (p.excludedHosts.includes(h)) out.push(`policy.services.${service}.pinned names ${h}, which policy.excludedHosts excludes: it never gets a copy`);
      if (s.excluded.includes(h)) out.push(`policy.services.${service}: ${h} is both pinned and excluded (excluded wins)`);
    }
    const inGroup = new Map<string, string[]>();
    for (const h of s.pinned) {
      const g = p.groups[h];
      if (g) inGroup.set(g, [...(inGroup.get(g) ?? []), h]);
    }
    for (const [g, hosts] of inGroup) {
      if (hosts.length > 1) out.push(`policy.services.${service}.pinned: ${hosts.join(' and ')} are both in group ${g}; a primary on one keeps a standby off the other`);
    }
  }
  const groups = new Set(Object.values(p.groups));
  if (groups.size === 1 && Object.keys(p.groups).length > 1) {
    out.push(`policy.groups puts every named depot in group ${[...groups][0]}: a standby then needs a depot not named there`);
  }
  return out;
}

/** The policy in words, one line per rule (config check, `navigator placement`, the page). */
export function explainPolicy(cfg: Pick<Config, 'policy'> & { election?: { preferredVoters?: string[] } }, now = Date.now()): string[] {
  const p = cfg.policy;
  const lines: string[] = [];
  const weights = FACTORS.map((f) => `${f} ${p.weights[f] ?? DEFAULT_WEIGHTS[f]}${p.weights[f] === undefined ? '' : ' (set)'}`);
  lines.push(`placement weights: ${weights.join(', ')}`);
  lines.push(p.excludedHosts.length ? `never a copy on: ${p.excludedHosts.join(', ')} (policy.excludedHosts)` : 'no depot is excluded for every service');
  const byGroup = new Map<string, string[]>();
  for (const [h, g] of Object.entries(p.groups)) byGroup.set(g, [...(byGroup.get(g) ?? []), h]);
  lines.push(
    byGroup.size
      ? `anti-affinity groups (never primary and standby in one): ${[...byGroup].map(([g, hs]) => `${g}: ${hs.join(', ')}`).join('; ')}`
      : 'no anti-affinity groups (policy.groups): any two depots may hold the primary and a standby',
  );
  if (p.quietHours.length) {
    const w = quietWindowAt(p, now);
    lines.push(`quiet hours (local time; no planned moves): ${p.quietHours.join(', ')}; now ${w ? `inside "${w.text}"` : 'outside them'}`);
  } else {
    lines.push('no quiet hours: planned moves may happen at any time');
  }
  for (const [service, s] of Object.entries(p.services)) {
    const parts = [
      s.standbys !== undefined ? `${s.standbys} standby${s.standbys === 1 ? '' : 's'}` : 'standbys as bootstrapped',
      ...(s.pinned.length ? [`pinned ${s.pinned.join(', ')}`] : []),
      ...(s.excluded.length ? [`excluded ${s.excluded.join(', ')}`] : []),
    ];
    lines.push(`service ${service}: ${parts.join('; ')}`);
  }
  const voters = cfg.election?.preferredVoters ?? [];
  lines.push(voters.length ? `preferred voters: ${voters.join(', ')} (election.preferredVoters)` : 'no preferred voter hosts');
  return lines;
}
