import { open, readFile, type FileHandle } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { Client, type SFTPWrapper } from 'ssh2';
import type { Logger } from '../shared/logger.ts';
import { silentLogger } from '../shared/logger.ts';
import { NavigatorError, errorMessage, isNavigatorError } from '../shared/errors.ts';
import type { CommitResult, ImageStore, MissingBlocks, PrepareResult } from '../depot/image-store.ts';
import { blockLength, totalBytes, unsafePathReason, type ImageManifest } from '../depot/image-manifest.ts';
import { hostVerifierFromFile } from './ssh-known-hosts.ts';
import type { TokenBucket } from './bandwidth.ts';
import { TransferTracker, type TransferInfo } from './transfers.ts';

// Image shipping: push an image from this depot's store into the staging folder of a target
// depot over SFTP (ssh2 client, the target's own OpenSSH sshd), then have the target verify
// and commit it.
//
// The target decides what must be sent (ShipTarget.prepare): everything for a new image, only
// the changed blocks when it holds another version (delta: it seeds staging from that version),
// and on a retry after a cut-off transfer only the blocks whose on-disk hash does not yet match
// the manifest (resume: the target hashes what actually reached its disk, so a block half
// written or never acknowledged is simply sent again). The sender streams those blocks with
// many SFTP WRITE requests in flight, and asks the target to commit: the target hashes every
// received block and renames atomically, or answers with the bad blocks, which are re-sent.

/** The target depot's side of a transfer (control protocol in production, ImageStore in tests). */
export interface ShipTarget {
  /** sshd address of the target depot. */
  host: string;
  port: number;
  prepare(manifest: ImageManifest): Promise<PrepareResult>;
  commit(id: string): Promise<CommitResult>;
  abort(id: string): Promise<void>;
}

/** A ShipTarget that calls an ImageStore in this process (tests, or a depot shipping to itself). */
export function localShipTarget(store: ImageStore, host: string, port: number): ShipTarget {
  return {
    host,
    port,
    prepare: (m) => store.prepareReceive(m),
    commit: (id) => store.commitStaged(id),
    abort: (id) => store.abortStaged(id),
  };
}

export interface SshAuth {
  user: string;
  /** Private key file (key authentication only; no passwords, no agent). */
  keyFile: string;
  /** Pinned host keys (OpenSSH known_hosts format). */
  knownHostsFile: string;
  /** Cipher preference (default: AES-GCM first, it is the fastest in both ssh2 and OpenSSH here). */
  ciphers?: string[];
  readyTimeoutMs?: number;
}

export interface ShipperOptions {
  /** Where the images come from. */
  store: ImageStore;
  ssh: SshAuth;
  /** SFTP write requests in flight (config.ship.requestsInFlight). */
  requestsInFlight: number;
  /** Bytes per SFTP write request (default 256 KiB - OpenSSH's sftp-server accepts up to 255 KiB + header; see below). */
  chunkBytes?: number;
  /** A transfer with requests in flight and no reply for this long is failed (default 30 s). */
  stallTimeoutMs?: number;
  /** Send/verify rounds before giving up on blocks that keep arriving damaged (default 3). */
  maxRounds?: number;
  tracker?: TransferTracker;
  logger?: Logger;
}

export interface ShipOptions {
  signal?: AbortSignal;
  /** Bandwidth limit (pre-staging). */
  bandwidth?: TokenBucket;
  /** Called with every progress update. */
  onProgress?: (t: TransferInfo) => void;
  /** Test hook: replace a chunk's bytes before it is sent (simulates corruption in flight). */
  transformChunk?: (c: { path: string; offset: number; round: number }, data: Buffer) => Buffer;
}

export interface ShipResult {
  id: string;
  target: string;
  kind: 'present' | 'full' | 'delta' | 'resume';
  imageBytes: number;
  /** File bytes written over SFTP in this call (all rounds). */
  bytesSent: number;
  rounds: number;
  /** Blocks sent again because the target found them damaged. */
  resentBlocks: number;
  prepareMs: number;
  sendMs: number;
  commitMs: number;
  durationMs: number;
}

const DEFAULT_CIPHERS = ['aes128-gcm@openssh.com', 'chacha20-poly1305@openssh.com', 'aes256-gcm@openssh.com', 'aes128-ctr', 'aes256-ctr'];
// OpenSSH's sftp-server takes WRITEs of up to 256 KiB of payload minus protocol overhead;
// 255 KiB keeps each request in one WRITE (ssh2 would split a bigger one into two, serially).
const DEFAULT_CHUNK = 261_120;

export class Shipper {
  private readonly log: Logger;
  readonly tracker: TransferTracker;
  private readonly chunkBytes: number;

  constructor(private readonly opts: ShipperOptions) {
    this.log = (opts.logger ?? silentLogger()).child({ component: 'ship' });
    this.tracker = opts.tracker ?? new TransferTracker();
    this.chunkBytes = opts.chunkBytes ?? DEFAULT_CHUNK;
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
    const result: ShipResult = { id, target: where, kind: 'full', imageBytes, bytesSent: 0, rounds: 0, resentBlocks: 0, prepareMs: 0, sendMs: 0, commitMs: 0, durationMs: 0 };
    this.log.info({ event: 'ship-start', id, image: manifest.name, target: where, imageBytes }, 'shipping image');
    let conn: Client | undefined;
    try {
      // Connect first: a refused host key or login must not leave a staging folder behind.
      conn = await this.connect(target, opts.signal);
      const prep = await target.prepare(manifest);
      result.prepareMs = Date.now() - t0;
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

      let missing = prep.missing;
      let toSend = prep.missingBytes;
      const maxRounds = this.opts.maxRounds ?? 3;
      const sendStart = Date.now();
      for (let round = 1; ; round++) {
        result.rounds = round;
        if (missing.length > 0) {
          const sftp = await sftpOf(conn!);
          const s0 = Date.now();
          await this.sendBlocks(conn!, sftp, manifest, srcDir, prep.filesDir, missing, round, result, opts, (sent) =>
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
        toSend += bytesOf(manifest, missing);
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
          rounds: result.rounds,
          durationMs: result.durationMs,
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
      conn?.end();
    }
  }

  /** Open an SSH connection with key authentication and the pinned host key. */
  async connect(target: { host: string; port: number }, signal?: AbortSignal): Promise<Client> {
    const { ssh } = this.opts;
    const where = `${target.host}:${target.port}`;
    const verifier = await hostVerifierFromFile(ssh.knownHostsFile, target.host, target.port);
    let privateKey: Buffer;
    try {
      privateKey = await readFile(ssh.keyFile);
    } catch (err) {
      throw new NavigatorError('TRANSFER_FAILED', `cannot read SSH key ${ssh.keyFile}: ${errorMessage(err)}`);
    }
    const conn = new Client();
    await new Promise<void>((resolve, reject) => {
      const onAbort = () => {
        conn.destroy();
        reject(new NavigatorError('TRANSFER_FAILED', `connection to ${where} aborted`));
      };
      if (signal?.aborted) return onAbort();
      signal?.addEventListener('abort', onAbort, { once: true });
      conn.once('ready', () => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      });
      conn.once('error', (err) => {
        signal?.removeEventListener('abort', onAbort);
        const refused = verifier.refusal();
        if (refused) return reject(refused);
        reject(new NavigatorError('TRANSFER_FAILED', `cannot open SSH to ${ssh.user}@${where}: ${errorMessage(err)}`));
      });
      conn.connect({
        host: target.host,
        port: target.port,
        username: ssh.user,
        privateKey,
        hostVerifier: (key: Buffer) => verifier.verify(key),
        tryKeyboard: false,
        readyTimeout: ssh.readyTimeoutMs ?? 10_000,
        keepaliveInterval: 5000,
        keepaliveCountMax: 3,
        algorithms: { cipher: (ssh.ciphers ?? DEFAULT_CIPHERS) as never, compress: ['none'] },
      });
    });
    if (signal) {
      const onAbort = () => conn.destroy();
      signal.addEventListener('abort', onAbort, { once: true });
      conn.once('close', () => signal.removeEventListener('abort', onAbort));
    }
    // Errors after ready surface through the pending SFTP requests; keep the emitter quiet.
    conn.on('error', (err) => this.log.debug({ event: 'ssh-error', target: where, err: errorMessage(err) }, 'ssh connection error'));
    return conn;
  }

  /**
   * Write the given blocks. Local reads run one block ahead; each block is cut into chunks and
   * up to requestsInFlight WRITE requests are outstanding across files.
   */
  private async sendBlocks(
    conn: Client,
    sftp: SFTPWrapper,
    manifest: ImageManifest,
    srcDir: string,
    remoteFilesDir: string,
    missing: MissingBlocks[],
    round: number,
    result: ShipResult,
    opts: ShipOptions,
    onSent: (sent: number) => void,
  ): Promise<void> {
    const maxInFlight = this.opts.requestsInFlight;
    // One WRITE per request: ssh2 splits anything above the server's announced limit
    // (limits@openssh.com) into a second request sent only after the first is answered.
    const serverMax = (sftp as unknown as { _maxWriteLen?: number })._maxWriteLen;
    const chunk = serverMax && serverMax > 0 ? Math.min(this.chunkBytes, serverMax) : this.chunkBytes;
    const stallMs = this.opts.stallTimeoutMs ?? 30_000;
    const byPath = new Map(manifest.files.map((f) => [f.path, f]));
    let inFlight = 0;
    let failure: unknown;
    let wake: (() => void) | undefined;
    let lastReply = Date.now();
    let lastReport = 0;
    const notify = () => {
      const w = wake;
      wake = undefined;
      w?.();
    };
    // Once the connection is gone no reply will come: stop waiting for the writes in flight
    // (ssh2 also silently drops writes issued on a closed channel).
    let connClosed = false;
    const onClose = () => {
      connClosed = true;
      failure ??= new NavigatorError('TRANSFER_FAILED', 'SSH connection closed during the transfer');
      notify();
    };
    conn.once('close', onClose);
    const stallTimer = setInterval(() => {
      if (inFlight > 0 && Date.now() - lastReply > stallMs && !failure) {
        failure = new NavigatorError('TRANSFER_FAILED', `no reply from the target for ${stallMs} ms with ${inFlight} writes in flight`);
        conn.destroy();
        notify();
      }
    }, Math.min(1000, stallMs));
    const waitSlot = async () => {
      while (inFlight >= maxInFlight && !failure) await new Promise<void>((r) => (wake = r));
    };
    const pendingCloses: Promise<void>[] = [];
    try {
      for (const mb of missing) {
        if (failure) break;
        const f = byPath.get(mb.path);
        if (!f) throw new NavigatorError('BAD_REQUEST', `target asked for ${mb.path}, which is not in image ${manifest.name}`);
        const why = unsafePathReason(mb.path);
        if (why) throw new NavigatorError('PATH_OUTSIDE_STORE', `refusing to write ${JSON.stringify(mb.path)}: path ${why}`);
        const remotePath = posix.join(remoteFilesDir, mb.path);
        let check: NodeJS.Timeout | undefined;
        const handle = await Promise.race([
          sftpCall<Buffer>((cb) => sftp.open(remotePath, 'r+', cb)),
          // ssh2 never answers a request made on a closed channel.
          new Promise<never>((_, reject) => {
            check = setInterval(() => {
              if (connClosed) reject(new Error('connection closed'));
            }, 100);
          }),
        ])
          .catch((err) => {
            throw new NavigatorError('TRANSFER_FAILED', `cannot open ${remotePath} on the target: ${errorMessage(err)}`);
          })
          .finally(() => clearInterval(check));
        let local: FileHandle | undefined;
        let fileInFlight = 0;
        let fileDone = false;
        let closeResolve: (() => void) | undefined;
        const remoteClosed = new Promise<void>((r) => (closeResolve = r));
        const maybeClose = () => {
          if (fileDone && fileInFlight === 0 && closeResolve) {
            const done = closeResolve;
            closeResolve = undefined;
            try {
              sftp.close(handle, () => done());
            } catch {
              done(); // channel already gone
            }
          }
        };
        try {
          local = await open(join(srcDir, mb.path), 'r');
          const fh = local;
          const readBlock = async (i: number) => {
            const len = blockLength(manifest, f, i);
            const buf = Buffer.allocUnsafe(len);
            let got = 0;
            while (got < len) {
              const { bytesRead } = await fh.read(buf, got, len - got, i * manifest.blockSize + got);
              if (bytesRead === 0) throw new NavigatorError('IMAGE_CORRUPT', `local image file ${mb.path} is shorter than its manifest says`);
              got += bytesRead;
            }
            return buf;
          };
          let next = readBlock(mb.blocks[0]!);
          for (let k = 0; k < mb.blocks.length; k++) {
            const buf = await next;
            if (k + 1 < mb.blocks.length) next = readBlock(mb.blocks[k + 1]!);
            const base = mb.blocks[k]! * manifest.blockSize;
            for (let off = 0; off < buf.length; off += chunk) {
              await waitSlot();
              if (failure) break;
              const len = Math.min(chunk, buf.length - off);
              if (opts.bandwidth) await opts.bandwidth.take(len, { now: Date.now, sleep: (ms) => new Promise((r) => setTimeout(r, ms)) });
              if (opts.signal?.aborted) failure ??= new NavigatorError('TRANSFER_FAILED', 'transfer aborted');
              if (failure || connClosed) break;
              let data: Buffer = buf.subarray(off, off + len);
              if (opts.transformChunk) data = opts.transformChunk({ path: mb.path, offset: base + off, round }, Buffer.from(data));
              inFlight++;
              fileInFlight++;
              sftp.write(handle, data, 0, data.length, base + off, (err?: Error | null) => {
                inFlight--;
                fileInFlight--;
                lastReply = Date.now();
                if (err) {
                  failure ??= err;
                } else {
                  result.bytesSent += len;
                  if (lastReply - lastReport > 100) {
                    lastReport = lastReply;
                    onSent(result.bytesSent);
                  }
                }
                maybeClose();
                notify();
              });
            }
            if (failure) {
              // Don't leave the read-ahead dangling on a closed handle.
              await next.catch(() => undefined);
              break;
            }
          }
        } finally {
          // sftp.write() copies the data into its packet at once: the local file can close now;
          // the remote handle closes when its last write is answered.
          await local?.close();
          fileDone = true;
          maybeClose();
          pendingCloses.push(remoteClosed);
        }
      }
      while (inFlight > 0 && !connClosed) await new Promise<void>((r) => (wake = r));
      if (!failure) await Promise.all(pendingCloses);
      onSent(result.bytesSent);
    } finally {
      clearInterval(stallTimer);
      conn.removeListener('close', onClose);
    }
    if (failure) {
      if (opts.signal?.aborted) throw new NavigatorError('TRANSFER_FAILED', `transfer to ${remoteFilesDir} aborted after ${result.bytesSent} bytes`);
      throw await this.explainWriteFailure(sftp, failure, remoteFilesDir, bytesOf(manifest, missing));
    }
  }

  /** Turn an SFTP write failure into a clear error; a full target disk becomes DISK_FULL. */
  private async explainWriteFailure(sftp: SFTPWrapper, err: unknown, remoteDir: string, bytesPlanned: number): Promise<NavigatorError> {
    if (isNavigatorError(err)) return err;
    const free = await new Promise<number | undefined>((resolve) => {
      const timer = setTimeout(() => resolve(undefined), 3000);
      try {
        sftp.ext_openssh_statvfs(remoteDir, (e, st) => {
          clearTimeout(timer);
          resolve(e || !st ? undefined : Number(st.f_bavail) * Number(st.f_frsize));
        });
      } catch {
        clearTimeout(timer);
        resolve(undefined);
      }
    });
    const chunk = this.chunkBytes;
    if (free !== undefined && free < chunk * 2) {
      return new NavigatorError('DISK_FULL', `target has no space left in ${remoteDir}: ${bytesPlanned} bytes to write, ${free} free (${errorMessage(err)})`, {
        path: remoteDir,
        neededBytes: bytesPlanned,
        freeBytes: free,
      });
    }
    return new NavigatorError('TRANSFER_FAILED', `SFTP write to ${remoteDir} failed: ${errorMessage(err)}`, undefined, { cause: err });
  }
}

function sftpOf(conn: Client): Promise<SFTPWrapper> {
  const cached = (conn as unknown as { __navSftp?: Promise<SFTPWrapper> }).__navSftp;
  if (cached) return cached;
  const p = new Promise<SFTPWrapper>((resolve, reject) =>
    conn.sftp((err, sftp) => (err ? reject(new NavigatorError('TRANSFER_FAILED', `cannot start SFTP: ${errorMessage(err)}`)) : resolve(sftp))),
  );
  (conn as unknown as { __navSftp?: Promise<SFTPWrapper> }).__navSftp = p;
  return p;
}

function sftpCall<T>(fn: (cb: (err: Error | null | undefined, v: T) => void) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => fn((err, v) => (err ? reject(err) : resolve(v))));
}

function groupBad(bad: { path: string; block?: number }[], m: ImageManifest): MissingBlocks[] {
  const byPath = new Map<string, Set<number>>();
  for (const b of bad) {
    if (b.block === undefined) continue;
    byPath.set(b.path, (byPath.get(b.path) ?? new Set()).add(b.block));
  }
  const sizes = new Map(m.files.map((f) => [f.path, f.size]));
  return [...byPath].map(([path, s]) => ({ path, size: sizes.get(path) ?? 0, blocks: [...s].sort((a, b) => a - b) }));
}

function bytesOf(m: ImageManifest, missing: MissingBlocks[]): number {
  const byPath = new Map(m.files.map((f) => [f.path, f]));
  let n = 0;
  for (const mb of missing) {
    const f = byPath.get(mb.path);
    if (f) for (const i of mb.blocks) n += blockLength(m, f, i);
  }
  return n;
}

function describeBad(bad: { path: string; block?: number; reason: string }[]): string {
  return bad
    .slice(0, 3)
    .map((b) => `${b.path}${b.block !== undefined ? ` block ${b.block}` : ''}: ${b.reason}`)
    .join('; ');
}

/** A shipper as configured (config.ship), for the daemon and the pilot. */
export function createShipper(
  cfg: { sshUser: string; sshKeyFile: string; knownHostsFile: string; requestsInFlight: number; chunkBytes?: number; stallTimeoutMs?: number },
  store: ImageStore,
  logger?: Logger,
  tracker?: TransferTracker,
): Shipper {
  return new Shipper({
    store,
    ssh: { user: cfg.sshUser, keyFile: cfg.sshKeyFile, knownHostsFile: cfg.knownHostsFile },
    requestsInFlight: cfg.requestsInFlight,
    ...(cfg.chunkBytes ? { chunkBytes: cfg.chunkBytes } : {}),
    ...(cfg.stallTimeoutMs ? { stallTimeoutMs: cfg.stallTimeoutMs } : {}),
    ...(logger ? { logger } : {}),
    ...(tracker ? { tracker } : {}),
  });
}
