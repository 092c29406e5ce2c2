import { join } from 'node:path';
import type { Config } from '../shared/config.ts';
import { createLogger, type Logger } from '../shared/logger.ts';
import { Depot, type DepotOptions } from '../depot/depot.ts';
import type { DepotComponents } from '../depot/components.ts';
import { ImageStore } from '../depot/images/catalog.ts';
import { ContainerManager } from '../depot/containers/manager.ts';
import { CgroupHost, limitsFor } from '../depot/containers/cgroup-limits.ts';
import { containerIsolation } from '../depot/containers/runner.ts';
import { Journal } from '../depot/journal/journal.ts';
import { electionConfigFrom, type ElectionConfig } from '../pilot/election/settings.ts';
import { containersPlugin } from './containers.ts';
import { imagesPlugin } from './images.ts';
import { trackingPlugin, type TrackingPlugin } from './tracking.ts';
import { pilotsPlugin, type PilotsPlugin } from './pilots.ts';
import { alertsPlugin, type AlertsPlugin, type QuorumStatus } from './alerts.ts';
import { sshTrustPlugin, type SshTrustPlugin } from './ssh-trust.ts';
import { sessionsPlugin } from './sessions.ts';
import { busyPlugin } from './busy.ts';

// The composition root of a workstation's depot as `navigator depot run` starts it: the depot
// core plus, in start order, the image store, the containers, the SSH trust for image shipping,
// the movement journal and tracking page, and the pilots. The resources they share (store, containers, journal) are made here and
// each is started and stopped by exactly one plugin.

export interface WorkstationDepot {
  depot: Depot;
  store: ImageStore;
  containers: ContainerManager;
  journal: Journal;
  /** Available once the depot has started. */
  tracking(): TrackingPlugin;
  pilots(): PilotsPlugin;
  alerts(): AlertsPlugin;
}

export interface WorkstationOptions extends Omit<DepotOptions, 'config' | 'plugins'> {
  config: Config;
  log?: Logger;
  election?: Partial<ElectionConfig>;
}

export function createWorkstationDepot(opts: WorkstationOptions): WorkstationDepot {
  const { config } = opts;
  // Refuse unsafe election timing before anything starts (it is checked here and nowhere else).
  electionConfigFrom(config.pilot, opts.election ?? {}, config.election, config.dbsync);
  // The same logger the depot core uses (every line of one depot carries its `depot` field).
  const base = opts.log ?? createLogger({ level: config.log.level });
  const log = base.child({ depot: config.node.name });
  let containers: ContainerManager | undefined;
  const store = new ImageStore({
    dir: config.store.dir,
    keepVersions: config.store.keepVersions,
    blockSize: config.store.blockBytes,
    spareCopies: config.store.spareCopies,
    spareMinBytes: config.store.spareMinBytes,
    spareDelayMs: config.store.spareDelayMs,
    stagingMaxAgeMs: config.store.stagingMaxAgeMs,
    clock: opts.clock,
    logger: log,
    // Images a container runs from are never removed.
    pinned: () => containers?.imagesInUse() ?? [],
    onVerifyFailed: (f) =>
      depot.notices.report({
        kind: 'image-verify-failed',
        subject: f.id,
        summary: `${f.stage === 'stored' ? 'stored image' : 'received image'} ${f.name || f.id.slice(0, 16)} failed verification on ${config.node.name} (${f.badItems} bad: ${f.first})${f.stage === 'stored' ? '; quarantined' : '; its bad blocks are sent again'}`,
        details: { image: f.id, name: f.name, stage: f.stage, badItems: f.badItems },
      }),
  });
  const manager = (containers = new ContainerManager({
    root: join(config.store.dir, 'containers'),
    images: store,
    logger: log,
    clock: opts.clock,
    statusIntervalMs: config.containers.statusIntervalMs,
    driverTiming: config.containers,
    isolation: containerIsolation(config.containers, log),
    ...(config.containers.limitsEnabled
      ? { limits: { host: new CgroupHost({ logger: log }), of: (service: string) => limitsFor(service, config.containers.limits, config.containers.serviceLimits) } }
      : {}),
  }));
  const journal = new Journal({ path: join(config.node.dataDir, 'journal.jsonl'), logger: log, gapSlackMs: config.journal.gapSlackMs });
  const started = <T>(v: T | undefined, what: string): T => {
    if (!v) throw new Error(`${what} plugin not started`);
    return v;
  };
  let tracking: TrackingPlugin | undefined;
  let pilots: PilotsPlugin | undefined;
  let trust: SshTrustPlugin | undefined;
  let alerts: AlertsPlugin | undefined;
  const depot = new Depot({
    ...opts,
    log: base,
    plugins: [
      sessionsPlugin(),
      busyPlugin(),
      imagesPlugin({ store }),
      containersPlugin({ manager }),
      (c) => (trust = sshTrustPlugin()(c)),
      (c) => (tracking = trackingPlugin({ journal })(c)),
      (c) =>
        (pilots = pilotsPlugin({
          store,
          containers: manager,
          journal,
          hostKeys: { expectedHostKey: (peerId, name) => started(trust, 'ssh-trust').trust.expectedHostKey(peerId, name) },
          ...(opts.election ? { election: opts.election } : {}),
        })(c)),
      (c) => (alerts = alertsPlugin({ journal, quorum: () => quorumOf(pilots, c.members, config.pilot) })(c)),
    ],
  });
  return {
    depot,
    store,
    containers: manager,
    journal,
    tracking: () => started(tracking, 'tracking'),
    pilots: () => started(pilots, 'pilots'),
    alerts: () => started(alerts, 'alerts'),
  };
}

/** The voter quorum of each service whose pilot runs here: alive voters against a majority (of both sets while a change is joint). */
export function quorumOf(pilots: PilotsPlugin | undefined, members: DepotComponents['members'], pilot: Pick<Config['pilot'], 'witness' | 'leaseMs'>): QuorumStatus[] {
  const alive = new Set(members.view().filter((m) => m.state === 'alive').map((m) => m.peerId));
  return (pilots?.pilots() ?? []).map((p) => {
    const sets = [p.view.voters, ...(p.view.prev ? [p.view.prev] : [])];
    // Two depots and a witness (pilot.witness) vote as three; the witness counts while it answers.
    const witness = pilot.witness ? (pilots!.witnessAnswered(3 * pilot.leaseMs) ? 1 : 0) : undefined;
    // The set with the least room to spare decides.
    const worst = sets
      .map((voters) => {
        const withWitness = voters.length === 2 && witness !== undefined;
        const n = voters.length + (withWitness ? 1 : 0);
        return { voters: n, alive: voters.filter((v) => alive.has(v)).length + (withWitness ? witness : 0), needed: Math.floor(n / 2) + 1 };
      })
      .sort((a, b) => a.alive - a.needed - (b.alive - b.needed))[0]!;
    return { service: p.spec.name, ...worst };
  });
}
