import { join } from 'node:path';
import type { Depot, DepotPart } from './daemon.ts';
import { ContainerManager, type ImageSource } from './containers.ts';
import { ControlClient, ControlServer, type ControlImages } from './control.ts';

// The containers this depot hosts and the control protocol, as a depot part: a ContainerManager
// on <store.dir>/containers (same file system as the images, so clones can share blocks), the
// /navigator/control/1 server on the depot's libp2p node, a client for calling other depots,
// and the container reports in every heartbeat.
// Use: new Depot({ ..., parts: [containersPart({ images: imageStore })] }).

export interface ContainersPartOptions {
  /** The depot's image store (depot/images/catalog.ts ImageStore fits both interfaces). */
  images?: ImageSource & ControlImages;
  /** Folder of the container folders (default <store.dir>/containers). */
  root?: string;
  vmrunPath?: string;
  qemuPath?: string;
  statusIntervalMs?: number;
}

export interface ContainersPart extends DepotPart {
  readonly containers: ContainerManager;
  readonly control: ControlServer;
  readonly client: ControlClient;
}

export function containersPart(opts: ContainersPartOptions = {}): (depot: Depot) => ContainersPart {
  return (depot: Depot) => new ContainersPartImpl(depot, opts);
}

class ContainersPartImpl implements ContainersPart {
  readonly name = 'containers';
  readonly containers: ContainerManager;
  private _control: ControlServer | undefined;
  private _client: ControlClient | undefined;

  constructor(
    private readonly depot: Depot,
    private readonly opts: ContainersPartOptions,
  ) {
    this.containers = new ContainerManager({
      root: opts.root ?? join(depot.config.store.dir, 'containers'),
      images: opts.images,
      logger: depot.log,
      clock: depot.clock,
      statusIntervalMs: opts.statusIntervalMs ?? depot.config.membership.heartbeatMs,
      vmrunPath: opts.vmrunPath,
      qemuPath: opts.qemuPath,
    });
  }

  get control(): ControlServer {
    if (!this._control) throw new Error('containers part not started');
    return this._control;
  }

  get client(): ControlClient {
    if (!this._client) throw new Error('containers part not started');
    return this._client;
  }

  async start(): Promise<void> {
    await this.containers.start();
    this._control = new ControlServer({ node: this.depot.node, containers: this.containers, images: this.opts.images, logger: this.depot.log });
    this._client = new ControlClient({ node: this.depot.node });
    await this._control.start();
    this.depot.addHeartbeatContent(() => ({ containers: this.containers.reports() }));
  }

  async stop(): Promise<void> {
    await this._control?.stop();
    // Containers keep running: a restarted depot finds them again (ContainerManager.start).
    await this.containers.stop();
  }
}
