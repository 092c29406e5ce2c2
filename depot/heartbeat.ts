import type { PubSub } from '@libp2p/interface';
import type { Clock, TimerHandle } from '../shared/clock.ts';
import type { Logger } from '../shared/logger.ts';
import { HeartbeatMessage, TOPICS, encodeMessage, type ContainerReport } from '../shared/wire.ts';
import { VERSION } from '../shared/version.ts';
import type { DepotMetrics } from './metrics.ts';
import { sampleResources, type ResourceSample } from './resources.ts';

// Gossips this depot's HeartbeatMessage every heartbeatMs. The host figures are sampled here;
// what the depot holds (images, images being received, containers and their roles) comes from
// content providers that other parts (image store, container supervisor) register.

export interface HeartbeatContent {
  images: string[];
  staging: HeartbeatMessage['staging'];
  containers: ContainerReport[];
  /** Port of the sshd that receives images (the images part); the last provider that sets it wins. */
  sshPort?: number;
}

/** Returns the part of the heartbeat content a part knows about; lists are concatenated. */
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
  maxMessageBytes: number;
  storeDir: string;
  httpPort: () => number | undefined;
  addresses: () => string[];
  /** Called with every heartbeat built, before it is published (the depot's own view). */
  onLocal?: (hb: HeartbeatMessage) => void;
  /** Host sampling, replaceable in tests. */
  sample?: (storeDir: string) => Promise<ResourceSample>;
}

export class HeartbeatPublisher {
  private readonly providers: HeartbeatContentProvider[] = [];
  private timer: TimerHandle | undefined;
  private seq = 0;
  private running = false;
  private inFlight: Promise<void> | undefined;

  constructor(private readonly opts: HeartbeatPublisherOptions) {}

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

  /** Publish one heartbeat now (also used to refute a false death report at once). */
  beat(): Promise<void> {
    if (!this.running || this.inFlight) return this.inFlight ?? Promise.resolve();
    this.inFlight = this.publishOne()
      .catch((err: unknown) => {
        this.opts.log.warn({ event: 'heartbeat-failed', err: (err as Error).message }, 'heartbeat not published');
      })
      .finally(() => {
        this.inFlight = undefined;
      });
    return this.inFlight;
  }

  async build(): Promise<HeartbeatMessage> {
    const o = this.opts;
    const res = await (o.sample ?? sampleResources)(o.storeDir);
    const content: HeartbeatContent = { images: [], staging: [], containers: [] };
    for (const p of this.providers) {
      try {
        const part = await p();
        content.images.push(...(part.images ?? []));
        content.staging.push(...(part.staging ?? []));
        content.containers.push(...(part.containers ?? []));
        if (part.sshPort !== undefined) content.sshPort = part.sshPort;
      } catch (err) {
        o.log.warn({ event: 'heartbeat-provider-failed', err: (err as Error).message }, 'heartbeat content provider failed');
      }
    }
    const httpPort = o.httpPort();
    return HeartbeatMessage.parse({
      type: 'heartbeat',
      v: 1,
      peerId: o.peerId,
      name: o.name,
      seq: this.seq,
      incarnation: o.incarnation,
      sentAt: o.clock.now(),
      addresses: o.addresses().slice(0, 8),
      hostAddresses: res.hostAddresses.slice(0, 8),
      ...(httpPort !== undefined ? { httpPort } : {}),
      ...(content.sshPort !== undefined ? { sshPort: content.sshPort } : {}),
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
      version: VERSION,
    });
  }

  private async publishOne(): Promise<void> {
    const hb = await this.build();
    this.seq += 1;
    const bytes = encodeMessage(hb, this.opts.maxMessageBytes);
    this.opts.onLocal?.(hb);
    await this.opts.pubsub.publish(TOPICS.heartbeat, bytes);
    this.opts.metrics.gossipPublished.inc({ topic: TOPICS.heartbeat });
    this.opts.metrics.gossipPublishedBytes.inc({ topic: TOPICS.heartbeat }, bytes.byteLength);
  }
}
