// Pre-staging, the decision: the primary's pilot keeps the current image on the top K placement
// candidates, in the background and under a bandwidth limit, so that a new standby usually
// starts with no transfer at all. planPrestage() is pure; Prestager (prestager.ts) runs the
// transfers it plans.

export interface PrestageCandidate {
  host: string;
  /** Depot is alive in the membership view. */
  alive: boolean;
  /** Image ids the depot holds (from its heartbeat). */
  images: readonly string[];
  /** The depot already runs a copy of the service (it has the image and is not a candidate). */
  hostsCopy?: boolean;
}

export interface PrestagePlan {
  /** The top K eligible candidates, in placement order. */
  targets: string[];
  /** Targets that still need the image. */
  ship: string[];
  /** Targets that already hold it. */
  staged: string[];
  /** Candidates passed over, with why. */
  skipped: { host: string; reason: string }[];
}

/**
 * Decide where the image should be pre-staged. `ranked` is the placement ranking, best first;
 * `busy` are hosts with a transfer of this image already running (they stay targets);
 * `backoff` are hosts where pre-staging failed lately (they give their place to the next one:
 * a host we cannot ship to is no use as a likely next host).
 */
export function planPrestage(input: {
  ranked: readonly PrestageCandidate[];
  imageId: string;
  k: number;
  busy?: ReadonlySet<string>;
  backoff?: ReadonlySet<string>;
}): PrestagePlan {
  const plan: PrestagePlan = { targets: [], ship: [], staged: [], skipped: [] };
  const seen = new Set<string>();
  for (const c of input.ranked) {
    if (seen.has(c.host)) {
      plan.skipped.push({ host: c.host, reason: 'listed twice' });
      continue;
    }
    seen.add(c.host);
    if (plan.targets.length >= input.k) {
      plan.skipped.push({ host: c.host, reason: `not in the top ${input.k}` });
      continue;
    }
    if (!c.alive) {
      plan.skipped.push({ host: c.host, reason: 'not alive' });
      continue;
    }
    if (c.hostsCopy) {
      plan.skipped.push({ host: c.host, reason: 'already runs a copy' });
      continue;
    }
    if (input.backoff?.has(c.host) && !c.images.includes(input.imageId)) {
      plan.skipped.push({ host: c.host, reason: 'pre-staging failed lately' });
      continue;
    }
    plan.targets.push(c.host);
    if (c.images.includes(input.imageId)) plan.staged.push(c.host);
    else if (input.busy?.has(c.host)) plan.skipped.push({ host: c.host, reason: 'transfer in progress' });
    else plan.ship.push(c.host);
  }
  return plan;
}
