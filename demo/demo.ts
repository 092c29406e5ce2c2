import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { NavigatorError, errorMessage } from '../shared/errors.ts';
import type { DemoNetwork } from './network.ts';
import { NetnsNetwork } from './netns.ts';
import { LoopbackNetwork } from './loopback.ts';
import { sweepStaleDemos } from './registry.ts';
import { writeDemoImage } from './image.ts';
import { DemoCluster, waitFor } from './cluster.ts';
import { Chaos } from './chaos.ts';

// `navigator demo`: the whole system on one machine. Builds the LAN (namespaces as root, else
// loopback addresses), starts a depot per workstation, bootstraps the sample monitoring service
// with one standby, prints where the tracking page is, and — unless told not to — cuts the
// primary's power every interval. stop() removes everything it made.

export interface DemoOptions {
  depots: number;
  chaos: boolean;
  intervalS: number;
  /** Force the loopback mode even as root. */
  loopback?: boolean;
  out: (line: string) => void;
}

export class Demo {
  readonly id = randomBytes(3).toString('hex');
  private dir: string | undefined;
  private net: DemoNetwork | undefined;
  private cluster: DemoCluster | undefined;
  private chaos: Chaos | undefined;
  private stopping: Promise<void> | undefined;
  private starting: Promise<void> | undefined;
  private readonly abort = new AbortController();

  constructor(private readonly opts: DemoOptions) {
    if (!Number.isInteger(opts.depots) || opts.depots < 3 || opts.depots > 32) throw new NavigatorError('BAD_REQUEST', '--depots must be a whole number from 3 to 32 (a quorum and a spare host need at least 3)');
    if (!(opts.intervalS >= 10 && opts.intervalS <= 86_400)) throw new NavigatorError('BAD_REQUEST', '--interval must be 10 to 86400 seconds');
  }

  /** The tracking page's address (after start()). */
  pageUrl(): string {
    if (!this.cluster) throw new NavigatorError('INTERNAL', 'demo not started');
    return this.cluster.pageUrl();
  }

  /** Brings the demo up; a stop() meanwhile makes it give up at the next step. */
  start(): Promise<void> {
    this.starting ??= this.bringUp();
    return this.starting;
  }

  private cancelled(): void {
    if (this.abort.signal.aborted) throw new NavigatorError('INTERNAL', 'demo stopped while starting');
  }

  private async bringUp(): Promise<void> {
    const out = this.opts.out;
    const signal = this.abort.signal;
    await checkTools();
    const swept = await sweepStaleDemos();
    if (swept.length) out(`removed what earlier demos (${swept.join(', ')}) left behind`);
    const root = process.getuid?.() === 0;
    const mode = root && !this.opts.loopback ? 'netns' : 'loopback';
    this.dir = await mkdtemp(join(tmpdir(), `navdemo-${this.id}-`));
    await chmod(this.dir, 0o700);
    this.net = mode === 'netns' ? await NetnsNetwork.create(this.id, this.dir, this.opts.depots) : await LoopbackNetwork.create(this.id, this.dir, this.opts.depots);
    const net = this.net;
    this.cancelled();
    if (mode === 'netns') {
      out(`LAN: ${net.hosts.length} workstations in network namespaces navdemo-${this.id}-*, ${net.hosts.map((h) => `${h.name}=${h.ip}`).join(' ')}; this machine joins it as ${net.adminIp}`);
    } else {
      out(`LAN: ${net.hosts.length} workstations on loopback addresses ${net.hosts.map((h) => `${h.name}=${h.ip}`).join(' ')}`);
      if (!net.addressMoves) {
        out('NOTE: not running as root, so no network namespaces and no service-address move: the primary cannot take');
        out(`      ${net.serviceAddress} on lo (that needs CAP_NET_ADMIN) and failover will not complete. Run as root (sudo npm start) for the full demo.`);
      }
    }
    const image = await writeDemoImage(join(this.dir, 'image'), mode);
    if (!image.primaryOnly) out('NOTE: this build\'s process driver has no `primary:` commands yet; the monitor runs on every copy');
    this.cluster = new DemoCluster(this.id, net, this.dir, image);
    const cluster = this.cluster;
    await cluster.prepare();
    this.cancelled();
    out(`starting ${net.hosts.length} depots ...`);
    await Promise.all(net.hosts.map((h) => cluster.startDepot(h)));
    this.cancelled();
    await waitFor(async () => (await cluster.aliveCount(net.hosts[0]!)) === net.hosts.length, 30_000, 'every depot to see the others alive', signal);
    out(`all ${net.hosts.length} depots alive; bootstrapping the "monitor" service (mariadbd + monitor) with one standby ...`);
    const t0 = Date.now();
    await cluster.bootstrap(1);
    this.cancelled();
    try {
      await waitFor(async () => {
        const p = await cluster.placement();
        return p.primary !== undefined && p.standbys.length >= 1;
      }, net.addressMoves ? 120_000 : 20_000, 'the service to be protected (a primary and one standby running)', signal);
      const p = await cluster.placement();
      out(`service protected in ${((Date.now() - t0) / 1000).toFixed(1)} s: primary on ${p.primary} (term ${p.term}), standby on ${p.standbys.join(', ')}`);
    } catch (err) {
      this.cancelled();
      // The page still shows what happened; keep running so it can be looked at.
      out(`WARNING: ${errorMessage(err)}; the depot logs are in ${join(this.dir, 'logs')}`);
    }
    out(`Tracking page: ${cluster.pageUrl()}`);
    out(`  (every depot serves it too: ${net.hosts.map((h) => cluster.url(h)).join(' ')})`);
    if (mode === 'netns') out(`  the monitor's own status page: http://${net.serviceAddress.split('/')[0]}:8080/ (follows the primary)`);
    this.cancelled();
    if (this.opts.chaos) {
      this.chaos = new Chaos(net, cluster, { intervalMs: this.opts.intervalS * 1000, offMs: Math.min(20_000, (this.opts.intervalS * 1000) / 3), out });
      this.chaos.start();
    } else {
      out('chaos off (--no-chaos): nothing will fail unless you make it');
    }
    out('press Ctrl-C to stop; everything the demo made is removed');
  }

  /** Stops the chaos and the depots, removes the namespaces, links, addresses and files. Idempotent. */
  stop(): Promise<void> {
    this.stopping ??= this.teardown();
    return this.stopping;
  }

  private async teardown(): Promise<void> {
    // A start still under way gives up at its next step; then everything it made is known.
    this.abort.abort();
    await this.starting?.catch(() => undefined);
    const errors: string[] = [];
    await this.chaos?.stop().catch((e: unknown) => errors.push(errorMessage(e)));
    // Depots first, gracefully (they announce `left`); what is left (containers) goes with the LAN.
    await this.cluster?.stopDepots(3000).catch((e: unknown) => errors.push(errorMessage(e)));
    await this.net?.destroy().catch((e: unknown) => errors.push(errorMessage(e)));
    if (this.dir) await rm(this.dir, { recursive: true, force: true }).catch((e: unknown) => errors.push(errorMessage(e)));
    if (errors.length) throw new NavigatorError('INTERNAL', `demo cleanup incomplete: ${errors.join('; ')}`);
  }
}

/** The programs the demo needs, checked up front so a missing one is named, not a late failure. */
async function checkTools(): Promise<void> {
  const need = ['mariadbd', 'mariadb-install-db', 'mariadb-dump', 'ip'];
  const missing: string[] = [];
  for (const tool of need) {
    const r = await execa('which', [tool], { reject: false, env: { PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin` } });
    if (r.exitCode !== 0) missing.push(tool);
  }
  if (missing.length) throw new NavigatorError('NOT_FOUND', `the demo needs ${missing.join(', ')}; run scripts/setup.sh (installs mariadb-server, mariadb-client, iproute2)`);
}
