import type { Command } from 'commander';
import { z } from 'zod';
import { NavigatorError } from '../../shared/errors.ts';
import { MemberState } from '../../shared/member-state.ts';
import { getDepotJson, type BodyCheck } from '../depot-http.ts';
import { formatRanking, rankHosts, type PlacementCandidate, type PlacementRequirements, type PlacementResult } from '../../pilot/placement.ts';
import { servicePolicy } from '../../pilot/policy.ts';
import { PolicySection } from '../../shared/config-policy.ts';
import type { PolicyResponse } from '../../shared/api/policy.ts';

// `navigator placement --service NAME`: where the next copy of a service would go, and why.
// Reads the depots from a depot's /api/depots and its policy from /api/policy, and runs the same
// pure ranking the pilots use.

const DEFAULT_API = 'http://127.0.0.1:7480';

const num = z.number().finite().nullable().optional();

/** The part of an /api/depots row placement needs (extra fields are ignored). */
export const DepotRowForPlacement = z.object({
  name: z.string().min(1),
  peerId: z.string().optional(),
  state: MemberState,
  uptimeS: num,
  load: z.tuple([z.number(), z.number(), z.number()]).nullable().optional(),
  cpus: num,
  memFreeBytes: num,
  memTotalBytes: num,
  diskFreeBytes: num,
  images: z.array(z.string()).default([]),
  containers: z.array(z.object({ service: z.string(), role: z.string().optional(), image: z.string().optional() }).passthrough()).default([]),
  group: z.string().optional(),
  sessions: z.array(z.object({ startMs: z.number(), endMs: z.number() })).optional(),
});
export type DepotRowForPlacement = z.infer<typeof DepotRowForPlacement>;

// /api/depots answers {self, counts, dropped, depots: [...]}; a bare array is accepted too.
const DepotList = z.array(DepotRowForPlacement);
const DepotsObject = z.object({ depots: DepotList }).passthrough();

/** Sizes like 2GiB, 512M, 1.5G, 2048 (bytes). */
export function parseSize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$/i.exec(text);
  if (!m) throw new NavigatorError('BAD_REQUEST', `not a size: "${text}" (examples: 2GiB, 512M, 1073741824)`);
  const power = { '': 0, k: 1, m: 2, g: 3, t: 4 }[m[2]!.toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
  return Math.round(Number(m[1]) * 1024 ** power);
}

/** Depot rows → placement candidates; a depot with no resource report yet gets NaN figures,
 * which placement excludes as an unusable report. */
function depotsToCandidates(rows: DepotRowForPlacement[]): PlacementCandidate[] {
  const n = (v: number | null | undefined) => (v === null || v === undefined ? Number.NaN : v);
  return rows.map((d) => ({
    name: d.name,
    ...(d.peerId ? { peerId: d.peerId } : {}),
    state: d.state,
    uptimeS: n(d.uptimeS),
    load: d.load ?? [Number.NaN, Number.NaN, Number.NaN],
    cpus: n(d.cpus),
    memFreeBytes: n(d.memFreeBytes),
    memTotalBytes: n(d.memTotalBytes),
    diskFreeBytes: n(d.diskFreeBytes),
    images: d.images,
    copies: [...new Set(d.containers.map((c) => c.service))],
    ...(d.group ? { group: d.group } : {}),
    ...(d.sessions ? { history: d.sessions } : {}),
  }));
}

/** /api/depots as the depot serves it ({ depots: [...] }) or a bare list of rows. */
const DepotRows: BodyCheck<DepotRowForPlacement[]> = {
  safeParse: (body) => (Array.isArray(body) ? DepotList.safeParse(body) : DepotsObject.transform((o) => o.depots).safeParse(body)),
};

async function fetchDepotRows(api: string, timeoutMs = 5000): Promise<DepotRowForPlacement[]> {
  return getDepotJson(api, '/api/depots', DepotRows, { what: 'a depot list', timeoutMs });
}

export interface PlacementCommandOptions {
  service: string;
  api: string;
  memory?: string;
  disk?: string;
  image?: string;
  now?: number;
}

const PolicyBody = z.object({ depot: z.string(), policy: PolicySection, quietNow: z.string().nullable(), preferredVoters: z.array(z.string()), explained: z.array(z.string()), warnings: z.array(z.string()) });

/** The depot's policy; an older depot without /api/policy has none. */
async function fetchPolicy(api: string): Promise<PolicyResponse | undefined> {
  const none = { depot: '', policy: PolicySection.parse({}), quietNow: null, preferredVoters: [], explained: [], warnings: [] } as PolicyResponse;
  const res = (await getDepotJson(api, '/api/policy', PolicyBody, { what: 'a policy', whenMissing: none })) as PolicyResponse;
  return res.depot ? res : undefined;
}

/** Fetch, rank, and return the result with the policy in force (the action prints both). */
export async function runPlacement(opts: PlacementCommandOptions): Promise<PlacementResult & { policyInForce?: PolicyResponse }> {
  const [rows, policyInForce] = await Promise.all([fetchDepotRows(opts.api), fetchPolicy(opts.api)]);
  const policy = policyInForce ? servicePolicy(policyInForce.policy, opts.service) : undefined;
  const groups = policy?.groups ?? {};
  const copies = rows.flatMap((d) => d.containers.filter((c) => c.service === opts.service).map((c) => ({ depot: d, image: c.image })));
  // The image: given, or the one the existing copies run.
  const image = opts.image ?? copies.map((c) => c.image).find((i): i is string => typeof i === 'string' && i !== '');
  const req: PlacementRequirements = {
    service: opts.service,
    memBytes: opts.memory ? parseSize(opts.memory) : 0,
    diskBytes: opts.disk ? parseSize(opts.disk) : 0,
    ...(image ? { image } : {}),
    avoidGroups: [...new Set(copies.map((c) => c.depot.group).filter((g): g is string => !!g))],
  };
  const primary = copies.find((c) => c.depot.state === 'alive' && (c.depot.containers.find((x) => x.service === opts.service)?.role ?? '') === 'primary');
  const primaryGroup = primary ? groups[primary.depot.name] : undefined;
  if (primaryGroup) req.primaryGroup = primaryGroup;
  req.standbyGroups = copies.filter((c) => c !== primary).map((c) => groups[c.depot.name]).filter((g): g is string => g !== undefined && g !== primaryGroup);
  const result = rankHosts(depotsToCandidates(rows), req, opts.now ?? Date.now(), policy ? { policy } : {});
  return policyInForce ? { ...result, policyInForce } : result;
}

/** The ranking, then the policy in force as the depot explains it. */
export function formatPlacement(result: PlacementResult & { policyInForce?: PolicyResponse }): string {
  const p = result.policyInForce;
  if (!p) return formatRanking(result);
  const lines = ['', `policy of ${p.depot}${p.quietNow ? ` (quiet hours now: ${p.quietNow})` : ''}:`, ...p.explained.map((l) => `  ${l}`), ...p.warnings.map((w) => `  warning: ${w}`)];
  return `${formatRanking(result)}${lines.join('\n')}\n`;
}

export function registerPlacement(program: Command): void {
  program
    .command('placement')
    .description('Rank the depots for the next copy of a service, with every factor and every exclusion')
    .requiredOption('--service <name>', 'service to place')
    .option('--memory <size>', 'memory the copy needs (e.g. 2GiB)')
    .option('--disk <size>', 'disk the copy needs (e.g. 20GiB)')
    .option('--image <id>', 'content id of the image (default: the one the existing copies run)')
    .option('--json', 'print the ranking as JSON')
    .option('--api <url>', 'HTTP address of a depot', DEFAULT_API)
    .action(async (opts: PlacementCommandOptions & { json?: boolean }) => {
      const result = await runPlacement(opts);
      process.stdout.write(opts.json ? `${JSON.stringify(result, null, 2)}\n` : formatPlacement(result));
    });
}
