import type { PubSub } from '@libp2p/interface';
import type { Clock, TimerHandle } from '../../shared/clock.ts';
import type { Logger } from '../../shared/logger.ts';
import { MembershipSection } from '../../shared/config.ts';
import { HeartbeatMessage, TOPICS, encodeMessage, type BusySignal, type ContainerReport } from '../../shared/wire.ts';
import { VERSION } from '../../shared/version.ts';
import type { DepotMetrics } from '../metrics.ts';
import { sampleResources, type ResourceSample } from './resources.ts';
import { heartbeatChange, isUrgent } from './change.ts';

// Samples this depot's HeartbeatMessage every heartbeatMs and gossips it when it changed enough
// (change.ts), and at least every refreshMs. The host figures are sampled here; what
// the depot holds (images, images being received, containers and their roles) comes from
// content providers that plugins (images, containers, pilots) register. Liveness
// does not depend on heartbeats (membership.ts probes), so a quiet depot costs little traffic.

export interface HeartbeatContent {
  images: string[];
  staging: HeartbeatMessage['staging'];
  containers: ContainerReport[];
  /** Port of the sshd that receives images (the images plugin); the last provider that sets it wins. */
  sshPort?: number;
  /** sshd host key fingerprint and SFTP public key (the SSH trust part); the last provider that sets them wins. */
  sshHostKey?: string;
  sshKey?: string;
  /** The host's past sessions, compact (the sessions plugin); the last provider that sets them wins. */
  sessions?: Array<[number, number]>;
  /** The host's busy signal (the busy plugin); the last provider that sets it wins. */
  busy?: BusySignal;
  /** Recovery kits held here (the pilots plugin); lists are concatenated. */
  recoveryKits?: NonNullable<HeartbeatMessage['recoveryKits']>;
}

/** Returns the part of the heartbeat content a plugin knows about; lists are concatenated. */
export type HeartbeatContentProvider = () => Partial<HeartbeatContent> | Promise<Partial<HeartbeatContent>>;

export interface HeartbeatPublisherOptions {
  pubsub: PubSub;
  clock: Clock;
  log: Logger;
  metrics: DepotMetrics;
  peerId: string;
  name: string;
  /** Start time of this process: a restart is a new incarnation. */
  incarnation: number;
  heartbeatMs: number;
  /** Longest time between two published heartbeats (membership.heartbeatRefreshMs). */
  refreshMs?: number;
  /** Host figures that moved enough are published at most this often (membership.figuresMinIntervalMs; default: its default). */
  figuresMinIntervalMs?: number;
  /** The host's address list is read again once this old (membership.hostAddressesTtlMs; default: its default). */
  hostAddressesTtlMs?: number;
  maxMessageBytes: number;
  storeDir: string;
  httpPort: () => number | undefined;
  addresses: () => string[];
  /** Called with every heartbeat built, before it is published (the depot's own view). */
  onLocal?: (hb: HeartbeatMessage) => void;
  /** Addresses of the host not to report (the service addresses it may hold). */
  hiddenAddresses?: () => ReadonlySet<string>;
  /** Host sampling, replaceable in tests. */
  sample?: (storeDir: string) => Promise<ResourceSample>;
}

export class HeartbeatPublisher {
  private readonly providers: HeartbeatContentProvider[] = [];
  private timer: TimerHandle | undefined;
  private seq = 0;
  private running = false;
  private inFlight: Promise<void> | undefined;
  private forceNext = false;
  private lastPublished: HeartbeatMessage | undefined;
  private lastPublishedSample: HeartbeatMessage | undefined;
  private lastPublishedAt = -Infinity;

  private readonly figuresMinIntervalMs: number;
  private readonly hostAddressesTtlMs: number;

  constructor(private readonly opts: HeartbeatPublisherOptions) {
    const defaults = MembershipSection.parse({});
    this.figuresMinIntervalMs = opts.figuresMinIntervalMs ?? defaults.figuresMinIntervalMs;
    this.hostAddressesTtlMs = opts.hostAddressesTtlMs ?? defaults.hostAddressesTtlMs;
  }

  /** The heartbeat last published (what the other depots hold of this one), if any. */
  latest(): HeartbeatMessage | undefined {
    return this.lastPublished;
  }

  addContentProvider(p: HeartbeatContentProvider): void {
    this.providers.push(p);
  }

  start(): void {
    this.running = true;
    void this.beat();
    this.timer = this.opts.clock.setInterval(() => void this.beat(), this.opts.heartbeatMs);
  }

  async stop(): Promise<void> {
    this.running = false;
    this.opts.clock.clear(this.timer);
    this.timer = undefined;
    await this.inFlight;
  }

  /**
   * Sample now and publish if it changed (or the refresh is due). `force`: publish whatever it
   * holds — to refute a false death report, or so a depot that just joined hears of this one.
   */
  beat(force = false): Promise<void> {
    if (force) this.forceNext = true;
    if (!this.running) return Promise.resolve();
    if (this.inFlight) {
      // A forced beat asked for while one is being built goes out right after it.
      return force ? this.inFlight.then(() => this.beat(this.forceNext)) : this.inFlight;
    }
    const forced = this.forceNext;
    this.forceNext = false;
    this.inFlight = this.publishOne(forced)
      .catch((err: unknown) => {
        this.opts.log.warn({ event: 'heartbeat-failed', err: (err as Error).message }, 'heartbeat not published');
      })
      .finally(() => {
        this.inFlight = undefined;
      });
    return this.inFlight;
  }

  private visible(addresses: string[]): string[] {
    const hidden = this.opts.hiddenAddresses?.();
    return hidden?.size ? addresses.filter((a) => !hidden.has(a)) : addresses;
  }

  /** A fresh sample of this depot's heartbeat (not yet checked against the schema). */
  async build(): Promise<HeartbeatMessage> {
    const o = this.opts;
    const res = o.sample ? await o.sample(o.storeDir) : await sampleResources(o.storeDir, { ttlMs: this.hostAddressesTtlMs, now: o.clock.now() });
    const content: HeartbeatContent = { images: [], staging: [], containers: [] };
    for (const p of this.providers) {
      try {
        const contribution = await p();
        content.images.push(...(contribution.images ?? []));
        content.staging.push(...(contribution.staging ?? []));
        content.containers.push(...(contribution.containers ?? []));
        if (contribution.sshPort !== undefined) content.sshPort = contribution.sshPort;
        if (contribution.sshHostKey !== undefined) content.sshHostKey = contribution.sshHostKey;
        if (contribution.sshKey !== undefined) content.sshKey = contribution.sshKey;
        if (contribution.sessions !== undefined) content.sessions = contribution.sessions;
        if (contribution.busy !== undefined) content.busy = contribution.busy;
        if (contribution.recoveryKits?.length) (content.recoveryKits ??= []).push(...contribution.recoveryKits);
      } catch (err) {
        o.log.warn({ event: 'heartbeat-provider-failed', err: (err as Error).message }, 'heartbeat content provider failed');
      }
    }
    const httpPort = o.httpPort();
    // Checked against the schema only when it is published (publishOne): most samples are not.
    return {
      type: 'heartbeat',
      v: 1,
      peerId: o.peerId,
      name: o.name,
      seq: this.seq,
      incarnation: o.incarnation,
      sentAt: o.clock.now(),
      addresses: o.addresses().slice(0, 8),
      hostAddresses: this.visible(res.hostAddresses).slice(0, 8),
      ...(httpPort !== undefined ? { httpPort } : {}),
      ...(content.sshPort !== undefined ? { sshPort: content.sshPort } : {}),
      ...(content.sshHostKey !== undefined ? { sshHostKey: content.sshHostKey } : {}),
      ...(content.sshKey !== undefined ? { sshKey: content.sshKey } : {}),
      bootTime: res.bootTime,
      uptimeS: res.uptimeS,
      load: res.load,
      cpus: res.cpus,
      memFreeBytes: res.memFreeBytes,
      memTotalBytes: res.memTotalBytes,
      diskFreeBytes: res.diskFreeBytes,
      images: content.images,
      staging: content.staging,
      containers: content.containers,
      ...(content.sessions?.length ? { sessions: content.sessions } : {}),
      ...(content.busy ? { busy: content.busy } : {}),
      ...(content.recoveryKits?.length ? { recoveryKits: content.recoveryKits.slice(0, 32) } : {}),
      version: VERSION,
    };
  }

  private async publishOne(force: boolean): Promise<void> {
    const sampled = await this.build();
    const now = this.opts.clock.now();
    const since = now - this.lastPublishedAt;
    const due = since >= (this.opts.refreshMs ?? this.opts.heartbeatMs);
    // Compared sample to sample: the published message went through the schema (defaults, key
    // order), and a sample compared with it would always look changed.
    const change = heartbeatChange(this.lastPublishedSample, sampled);
    const worth = change !== undefined && (isUrgent(change) || since >= this.figuresMinIntervalMs);
    if (!force && !due && !worth) return;
    const hb = HeartbeatMessage.parse(sampled);
    this.opts.log.debug({ event: 'heartbeat-publish', reason: force ? 'forced' : worth ? change : 'refresh', seq: this.seq }, 'heartbeat');
    this.lastPublished = hb;
    this.lastPublishedSample = sampled;
    this.lastPublishedAt = now;
    this.seq += 1;
    const bytes = encodeMessage(hb, this.opts.maxMessageBytes);
    this.opts.onLocal?.(hb);
    await this.opts.pubsub.publish(TOPICS.heartbeat, bytes);
    this.opts.metrics.gossipPublished.inc({ topic: TOPICS.heartbeat });
    this.opts.metrics.gossipPublishedBytes.inc({ topic: TOPICS.heartbeat }, bytes.byteLength);
  }
}
