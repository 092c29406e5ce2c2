import { z } from 'zod';
import type { Logger } from '../shared/logger.ts';
import { NavigatorError, errorMessage, isNavigatorError } from '../shared/errors.ts';
import type { MemberState } from '../shared/member-state.ts';
import type { ImageRefreshResponse, ImageRefreshTarget, ImageRefreshView } from '../shared/api/image-refresh.ts';
import type { ShipResult } from '../ship/shipper.ts';
import { ServiceSpec } from './service-spec.ts';

// A changed image re-shipped to the depots that hold the old one (POST /api/image-refresh,
// `navigator image refresh`). The admin changed the service's image folder — for a VM-packed
// service: booted the guest from it, updated packages, powered it off cleanly, so disk.qcow2 was
// changed in place and most of its clusters are where they were. The primary's depot imports the
// folder as a new version of the service's image (same name, new content id) and ships it, one
// depot at a time, through the normal shipping path (ship/shipper.ts) to every alive depot that
// holds the version the service runs: each receiver seeds the new version from the one it holds
// and asks only for the blocks whose hashes differ (a delta, depot/images/receive.ts); a transfer
// cut off is resumed from the receiver's staging folder (up to ATTEMPTS tries). Only the primary's
// depot may do this: receivers take an image of a service only from the holder of its lease.
// What this does not do: put the new version into service. The copies keep running the image they
// were started from (and standbys placed later get that one); switching them over is not built.

export const ImageRefreshRequest = z
  .object({
    service: ServiceSpec.shape.name,
    imagePath: z.string().min(1).max(4096).describe('Folder of the changed image on this depot host'),
  })
  .strict();
export type ImageRefreshRequest = z.input<typeof ImageRefreshRequest>;

/** Tries per depot; each retry resumes from what the previous one left in the receiver's staging. */
export const ATTEMPTS = 3;
const RETRY_AFTER_MS = 5000;

/** A depot as the refresh plan sees it (from its membership entry and heartbeat). */
export interface RefreshCandidate {
  peerId: string;
  host: string;
  state: MemberState;
  images: readonly string[];
}

/** The refresh's candidates from a membership view: each depot's state and the images its heartbeat lists. */
export function refreshCandidates(view: ReadonlyArray<{ peerId: string; name: string; state: MemberState; heartbeat?: { images: readonly string[] } | undefined }>): RefreshCandidate[] {
  return view.map((m) => ({ peerId: m.peerId, host: m.name, state: m.state, images: m.heartbeat?.images ?? [] }));
}

/**
 * Which depots get the new version `newId`: every other alive depot holding a version the service
 * runs (`oldIds`) and not the new one yet. Those already holding it are `present`; those holding
 * the old one but not alive are skipped, with why. Pure.
 */
export function refreshTargets(
  candidates: readonly RefreshCandidate[],
  selfPeerId: string,
  oldIds: ReadonlySet<string>,
  newId: string,
): { targets: RefreshCandidate[]; present: string[]; skipped: Array<{ host: string; reason: string }> } {
  const targets: RefreshCandidate[] = [];
  const present: string[] = [];
  const skipped: Array<{ host: string; reason: string }> = [];
  for (const c of candidates) {
    if (c.peerId === selfPeerId || !c.images.some((i) => oldIds.has(i))) continue;
    if (c.images.includes(newId)) present.push(c.host);
    else if (c.state !== 'alive') skipped.push({ host: c.host, reason: `depot ${c.state}` });
    else targets.push(c);
  }
  return { targets, present, skipped };
}

/** Share of the image a transfer sent, in percent (one decimal). Pure. */
export function sentPct(r: Pick<ShipResult, 'bytesSent' | 'imageBytes'>): number {
  return r.imageBytes > 0 ? Math.round((r.bytesSent / r.imageBytes) * 1000) / 10 : 0;
}

export interface ImageRefreshOptions {
  self: { peerId: string; name: string };
  /** Depots with their state and the images their heartbeat lists. */
  candidates: () => RefreshCandidate[];
  /** The service's pilot here: its role and the image it runs; undefined when no copy runs here. */
  pilotFor: (service: string) => { role: string; spec: { image: string } } | undefined;
  /** Image ids the copies of the service report running (heartbeats). */
  runningImages: (service: string) => string[];
  store: { import(srcDir: string, name: string): Promise<string> };
  /** The normal shipping path (ImageShipping.ensureImage). */
  ship: (peerId: string, imageId: string) => Promise<ShipResult>;
  logger: Logger;
  retryAfterMs?: number;
}

export class ImageRefresh {
  private readonly log: Logger;
  private readonly jobs: ImageRefreshView[] = [];
  private readonly running = new Set<Promise<void>>();
  private stopped = false;

  constructor(private readonly opts: ImageRefreshOptions) {
    this.log = opts.logger.child({ component: 'image-refresh' });
  }

  /** Import the changed folder as the service's new image version and start shipping it. */
  async refresh(input: ImageRefreshRequest): Promise<ImageRefreshResponse> {
    const req = ImageRefreshRequest.parse(input);
    const o = this.opts;
    const pilot = o.pilotFor(req.service);
    if (!pilot || pilot.role !== 'primary') throw new NavigatorError('CONFLICT', `the primary of ${req.service} is not on ${o.self.name}: run the refresh on its depot (depots take an image of a service only from the holder of its lease)`);
    if (this.jobs.some((j) => j.service === req.service && j.state === 'shipping')) throw new NavigatorError('CONFLICT', `a refresh of ${req.service} is still shipping (GET /api/image-refresh)`);
    const base = pilot.spec.image;
    const oldIds = new Set([base, ...o.runningImages(req.service)]);
    const t0 = Date.now();
    const image = await o.store.import(req.imagePath, req.service);
    const importMs = Date.now() - t0;
    if (oldIds.has(image)) {
      this.log.info({ event: 'image-refresh-unchanged', service: req.service, image }, `image of ${req.service} unchanged: nothing to ship`);
      return { service: req.service, image, base, unchanged: true, targets: [], present: [], skipped: [] };
    }
    const plan = refreshTargets(o.candidates(), o.self.peerId, oldIds, image);
    const job: ImageRefreshView = {
      service: req.service,
      image,
      base,
      startedAt: t0,
      importMs,
      state: 'shipping',
      targets: plan.targets.map((t) => ({ host: t.host, peerId: t.peerId, state: 'pending', attempts: 0 })),
      present: plan.present,
      skipped: plan.skipped,
    };
    this.jobs.unshift(job);
    if (this.jobs.length > 20) this.jobs.length = 20;
    this.log.info(
      { event: 'image-refresh-start', service: req.service, image, base, importMs, targets: plan.targets.map((t) => t.host), present: plan.present, skipped: plan.skipped },
      `new version of ${req.service}'s image (${image.slice(0, 12)}, was ${base.slice(0, 12)}): shipping it to ${plan.targets.length} depot(s) holding the old one`,
    );
    const p = this.shipAll(job).finally(() => this.running.delete(p));
    this.running.add(p);
    return { service: req.service, image, base, unchanged: false, targets: plan.targets.map((t) => t.host), present: plan.present, skipped: plan.skipped };
  }

  /** Refreshes, newest first (GET /api/image-refresh). */
  status(): ImageRefreshView[] {
    return this.jobs.map((j) => ({ ...j, targets: j.targets.map((t) => ({ ...t })) }));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.allSettled([...this.running]);
  }

  private async shipAll(job: ImageRefreshView): Promise<void> {
    for (const t of job.targets) {
      if (this.stopped) break;
      await this.shipOne(job, t);
    }
    job.state = job.targets.every((t) => t.state === 'done') ? 'done' : 'failed';
    job.finishedAt = Date.now();
    const sent = job.targets.reduce((s, t) => s + (t.bytesSent ?? 0), 0);
    const level = job.state === 'done' ? 'info' : 'warn';
    this.log[level](
      { event: 'image-refresh-done', service: job.service, image: job.image, state: job.state, depots: job.targets.length, failed: job.targets.filter((t) => t.state !== 'done').map((t) => t.host), bytesSent: sent, durationMs: job.finishedAt - job.startedAt },
      `refresh of ${job.service}'s image ${job.state}: ${job.targets.filter((t) => t.state === 'done').length}/${job.targets.length} depot(s) hold the new version`,
    );
  }

  private async shipOne(job: ImageRefreshView, t: ImageRefreshTarget): Promise<void> {
    t.state = 'shipping';
    for (;;) {
      t.attempts += 1;
      try {
        const r = await this.opts.ship(t.peerId, job.image);
        // The attempt that completed (after a cut-off one it is a resume: only what had not arrived).
        Object.assign(t, { state: 'done', kind: r.kind, bytesSent: r.bytesSent, imageBytes: r.imageBytes, durationMs: r.durationMs });
        delete t.error;
        this.log.info(
          { event: 'image-refresh-shipped', service: job.service, image: job.image, host: t.host, kind: r.kind, attempt: t.attempts, bytesSent: r.bytesSent, imageBytes: r.imageBytes, sentPct: sentPct(r), durationMs: r.durationMs },
          `${t.host} holds the new version of ${job.service}'s image (${r.kind}: ${sentPct(r)} % of it sent)`,
        );
        return;
      } catch (err) {
        t.error = errorMessage(err);
        const final = this.stopped || t.attempts >= ATTEMPTS || isNavigatorError(err, 'HOST_KEY_MISMATCH') || isNavigatorError(err, 'DISK_FULL');
        this.log.warn({ event: 'image-refresh-ship-failed', service: job.service, image: job.image, host: t.host, attempt: t.attempts, final, err: t.error }, `shipping the new version of ${job.service}'s image to ${t.host} failed${final ? '' : '; resuming'}`);
        if (final) {
          t.state = 'failed';
          return;
        }
        await new Promise((r) => setTimeout(r, this.opts.retryAfterMs ?? RETRY_AFTER_MS));
      }
    }
  }
}
