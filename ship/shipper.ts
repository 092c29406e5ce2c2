import type { Client } from 'ssh2';
import type { Logger } from '../shared/logger.ts';
import { ShipSection, type Config } from '../shared/config.ts';
import { silentLogger } from '../shared/logger.ts';
import { NavigatorError, errorMessage, isNavigatorError } from '../shared/errors.ts';
import type { ImageStore } from '../depot/images/catalog.ts';
import type { ShipTarget } from '../depot/images/ship-target.ts';
import { blocksBytes, totalBytes } from '../depot/images/manifest.ts';
import type { TransferInfo } from '../shared/api/transfers.ts';
import { TransferTracker } from './transfers.ts';
import { connectMore, connectSsh, sftpOf, type SshAuth, type SshTarget } from './ssh-connection.ts';
import { sendBlocks, type StreamOptions } from './block-streaming.ts';
import { groupBad } from './send-queue.ts';

// Image shipping, the flow of one transfer: push an image from this depot's store into the
// staging folder of a target depot over SFTP (ssh2 client, the target's own OpenSSH sshd), then
// have the target verify and commit it. The SSH connections are in ssh-connection.ts, the
// streaming of the blocks in block-streaming.ts, what to send in which order in send-queue.ts.
//
// The target decides what must be sent (ShipTarget.prepare): everything for a new image, only
// the changed blocks when it holds another version (delta: it seeds staging from that version),
// and on a retry after a cut-off transfer only the blocks whose on-disk hash does not yet match
// the manifest (resume: the target hashes what actually reached its disk, so a block half
// written or never acknowledged is simply sent again). The sender streams those blocks with
// many SFTP WRITE requests in flight, and asks the target to commit: the target hashes every
// received block and renames atomically, or answers with the bad blocks, which are re-sent.
//
// Speed: the sender is one node thread and, on a fast link, the bottleneck. The blocks go over
// several SSH connections at once (OpenSSH gives each session only a 2 MiB window, so one
// connection leaves sender and sshd waiting on each other); file data is read straight into
// the WRITE requests (sftp-write.ts) and ssh2's packets reuse their memory (ssh2-sender.ts), so
// no byte is copied in JavaScript but into its SSH packet, and the GC stays quiet.

export interface ShipperOptions {
  /** Where the images come from. */
  store: ImageStore;
  ssh: SshAuth;
  /** SFTP write requests in flight per transfer, shared by its connections (config.ship.requestsInFlight). */
  requestsInFlight: number;
  /** SSH connections per transfer, each with its own SFTP session writing different blocks (config.ship.connections). */
  connections?: number;
  /** Sends smaller than this use the first connection only (config.ship.singleConnectionBytes). */
  singleConnectionBytes?: number;
  /** Bytes per SFTP write request (config.ship.chunkBytes). */
  chunkBytes?: number;
  /** A transfer with requests in flight and no reply for this long is failed (config.ship.stallTimeoutMs). */
  stallTimeoutMs?: number;
  /** Send/verify rounds before giving up on blocks that keep arriving damaged (default MAX_ROUNDS). */
  maxRounds?: number;
  tracker?: TransferTracker;
  logger?: Logger;
}

export interface ShipOptions extends StreamOptions {
  /** Called with every progress update. */
  onProgress?: (t: TransferInfo) => void;
}

export interface ShipResult {
  id: string;
  target: string;
  kind: 'present' | 'full' | 'delta' | 'resume';
  imageBytes: number;
  /** File bytes written over SFTP in this call (all rounds). */
  bytesSent: number;
  /** SSH connections the blocks were sent over (0 when nothing was sent). */
  connections: number;
  rounds: number;
  /** Blocks sent again because the target found them damaged. */
  resentBlocks: number;
  /** SSH connect, login and SFTP start (the first connection, plus any wait for the others after prepare). */
  connectMs: number;
  /** The target's prepare (creating or re-hashing staging). */
  prepareMs: number;
  sendMs: number;
  commitMs: number;
  durationMs: number;
}

/**
 * Send/verify rounds of one transfer. Not a knob: blocks still damaged after the third sending
 * mean a broken disk or link, which more rounds do not mend.
 */
const MAX_ROUNDS = 3;

export class Shipper {
  private readonly log: Logger;
  readonly tracker: TransferTracker;
  private readonly chunkBytes: number;
  private readonly connections: number;
  private readonly singleConnectionBytes: number;
  private readonly stallTimeoutMs: number;

  constructor(private readonly opts: ShipperOptions) {
    this.log = (opts.logger ?? silentLogger()).child({ component: 'ship' });
    this.tracker = opts.tracker ?? new TransferTracker();
    // What the caller leaves out is the config's default (shared/config.ts, section `ship`, says why each is what it is).
    const defaults = ShipSection.parse({});
    this.chunkBytes = opts.chunkBytes ?? defaults.chunkBytes;
    this.connections = opts.connections ?? defaults.connections;
    this.singleConnectionBytes = opts.singleConnectionBytes ?? defaults.singleConnectionBytes;
    this.stallTimeoutMs = opts.stallTimeoutMs ?? defaults.stallTimeoutMs;
    if (!Number.isInteger(this.connections) || this.connections < 1) throw new RangeError(`ship connections must be an integer >= 1, got ${opts.connections}`);
  }

  /** Open an SSH connection with key authentication and the pinned host key (ssh-connection.ts). */
  connect(target: SshTarget, signal?: AbortSignal): Promise<Client> {
    return connectSsh(this.opts.ssh, target, this.log, signal);
  }

  /** Ship image `id` to `target`; resolves when the target has verified and committed it. */
  async ship(id: string, target: ShipTarget, opts: ShipOptions = {}): Promise<ShipResult> {
    const manifest = await this.opts.store.getManifest(id);
    const srcDir = this.opts.store.imageFilesDir(id);
    const where = `${target.host}:${target.port}`;
    const imageBytes = totalBytes(manifest);
    const t0 = Date.now();
    const info = this.tracker.begin({ imageId: id, imageName: manifest.name, target: where, imageBytes });
    const progress = (patch: Partial<TransferInfo>, sendStartedAt?: number) => {
      this.tracker.update(info.key, patch, sendStartedAt);
      if (opts.onProgress) opts.onProgress({ ...info, ...patch });
    };
    const result: ShipResult = {
      id,
      target: where,
      kind: 'full',
      imageBytes,
      bytesSent: 0,
      connections: 0,
      rounds: 0,
      resentBlocks: 0,
      connectMs: 0,
      prepareMs: 0,
      sendMs: 0,
      commitMs: 0,
      durationMs: 0,
    };
    this.log.info({ event: 'ship-start', id, image: manifest.name, target: where, imageBytes }, 'shipping image');
    const conns: Client[] = [];
    let extra: Promise<Client[]> | undefined;
    try {
      // Connect first: a refused host key or login must not leave a staging folder behind.
      conns.push(await this.connect(target, opts.signal));
      result.connectMs = Date.now() - t0;
      // The SFTP session starts and the other connections log in while the target prepares
      // (a failure of an extra connection only costs speed).
      sftpOf(conns[0]!).catch(() => undefined);
      if (this.connections > 1) extra = connectMore(() => this.connect(target, opts.signal), target, this.connections - 1, this.log);
      const p0 = Date.now();
      const prep = await target.prepare(manifest);
      result.prepareMs = Date.now() - p0;
      if (prep.state === 'present') {
        result.kind = 'present';
        result.durationMs = Date.now() - t0;
        this.tracker.end(info.key, 'done');
        this.log.info({ event: 'ship-done', id, target: where, kind: 'present', durationMs: result.durationMs }, 'target already holds the image');
        return result;
      }
      result.kind = prep.resumed ? 'resume' : prep.baseId ? 'delta' : 'full';
      progress({ kind: result.kind, state: 'sending', bytesToSend: prep.missingBytes });
      this.log.info(
        { event: 'ship-plan', id, target: where, kind: result.kind, baseId: prep.baseId, bytesToSend: prep.missingBytes, imageBytes },
        `sending ${prep.missingBytes} of ${imageBytes} bytes`,
      );
      const c0 = Date.now();
      if (extra) {
        // A small send (a delta, the end of a resume) is done on one connection before a second
        // login would even finish: do not wait for the others, close them when they arrive.
        if (prep.missingBytes >= this.singleConnectionBytes) conns.push(...(await extra));
        else void extra.then((cs) => cs.forEach((c) => c.end()));
        extra = undefined;
      }
      const lanes = await Promise.all(conns.map(async (conn) => ({ conn, sftp: await sftpOf(conn) })));
      result.connectMs += Date.now() - c0;
      result.connections = conns.length;

      let missing = prep.missing;
      let toSend = prep.missingBytes;
      const maxRounds = this.opts.maxRounds ?? MAX_ROUNDS;
      const sendStart = Date.now();
      for (let round = 1; ; round++) {
        result.rounds = round;
        if (missing.length > 0) {
          const s0 = Date.now();
          const send = { lanes, manifest, srcDir, remoteFilesDir: prep.filesDir, missing, round };
          await sendBlocks(send, { requestsInFlight: this.opts.requestsInFlight, chunkBytes: this.chunkBytes, stallTimeoutMs: this.stallTimeoutMs }, result, opts, (sent) =>
            progress({ bytesSent: sent, bytesToSend: toSend }, sendStart),
          );
          result.sendMs += Date.now() - s0;
        }
        progress({ state: 'verifying' });
        const c0 = Date.now();
        const commit = await target.commit(id);
        result.commitMs += Date.now() - c0;
        if (commit.ok) break;
        if (round >= maxRounds) {
          throw new NavigatorError('IMAGE_CORRUPT', `target ${where} still finds ${commit.bad.length} damaged block(s) of image ${id} after ${round} rounds, e.g. ${describeBad(commit.bad)}`, {
            bad: commit.bad.slice(0, 20),
          });
        }
        this.log.warn({ event: 'ship-resend', id, target: where, round, bad: commit.bad.slice(0, 10), badCount: commit.bad.length }, 'target refused damaged blocks; sending them again');
        if (commit.bad.every((b) => b.block !== undefined)) {
          missing = groupBad(commit.bad, manifest);
        } else {
          // A whole file is wrong (size, missing): let the target re-hash and say what it needs.
          const again = await target.prepare(manifest);
          if (again.state === 'present') break;
          missing = again.missing;
        }
        const n = missing.reduce((s, m) => s + m.blocks.length, 0);
        result.resentBlocks += n;
        toSend += blocksBytes(manifest, missing);
        progress({ state: 'sending', bytesToSend: toSend });
      }
      result.durationMs = Date.now() - t0;
      this.tracker.update(info.key, { bytesSent: result.bytesSent }, sendStart);
      this.tracker.end(info.key, 'done');
      this.log.info(
        {
          event: 'ship-done',
          id,
          target: where,
          kind: result.kind,
          bytesSent: result.bytesSent,
          imageBytes,
          connections: result.connections,
          rounds: result.rounds,
          durationMs: result.durationMs,
          connectMs: result.connectMs,
          sendMs: result.sendMs,
          commitMs: result.commitMs,
          mbPerSec: result.sendMs > 0 ? Math.round((result.bytesSent / 1e6 / (result.sendMs / 1000)) * 10) / 10 : undefined,
        },
        'image shipped and verified by the target',
      );
      return result;
    } catch (err) {
      const e = opts.signal?.aborted && !isNavigatorError(err) ? new NavigatorError('TRANSFER_FAILED', `transfer of image ${id} to ${where} aborted`) : err;
      if (isNavigatorError(e, 'DISK_FULL')) {
        // Nothing will fit: drop the partial copy instead of leaving it for a resume.
        await target.abort(id).catch((abortErr) => this.log.warn({ event: 'ship-abort-failed', id, err: errorMessage(abortErr) }, 'could not clean the target staging'));
      }
      this.tracker.update(info.key, { bytesSent: result.bytesSent });
      this.tracker.end(info.key, 'failed', errorMessage(e));
      this.log.error({ event: 'ship-failed', id, target: where, bytesSent: result.bytesSent, err: errorMessage(e), code: (e as NavigatorError).code }, 'image shipping failed');
      throw e;
    } finally {
      for (const c of conns) c.end();
      // Connections still logging in when the transfer ended (present, failure) are closed once up.
      if (extra) void extra.then((cs) => cs.forEach((c) => c.end()));
    }
  }
}

function describeBad(bad: { path: string; block?: number; reason: string }[]): string {
  return bad
    .slice(0, 3)
    .map((b) => `${b.path}${b.block !== undefined ? ` block ${b.block}` : ''}: ${b.reason}`)
    .join('; ');
}

/** A shipper as configured (config.ship), for the daemon and the pilot. */
export function createShipper(cfg: Config['ship'], store: ImageStore, logger?: Logger, tracker?: TransferTracker): Shipper {
  return new Shipper({
    store,
    ssh: { user: cfg.sshUser, keyFile: cfg.sshKeyFile, knownHostsFile: cfg.knownHostsFile },
    requestsInFlight: cfg.requestsInFlight,
    connections: cfg.connections,
    chunkBytes: cfg.chunkBytes,
    stallTimeoutMs: cfg.stallTimeoutMs,
    singleConnectionBytes: cfg.singleConnectionBytes,
    ...(logger ? { logger } : {}),
    ...(tracker ? { tracker } : {}),
  });
}
