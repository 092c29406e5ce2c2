import { open, readFile, type FileHandle } from 'node:fs/promises';
import { connect as netConnect } from 'node:net';
import { join, posix } from 'node:path';
import { Client, type SFTPWrapper } from 'ssh2';
import type { Logger } from '../shared/logger.ts';
import { silentLogger } from '../shared/logger.ts';
import { NavigatorError, errorMessage, isNavigatorError } from '../shared/errors.ts';
import type { ImageStore } from '../depot/images/catalog.ts';
import type { MissingBlocks } from '../depot/images/receive.ts';
import type { ShipTarget } from '../depot/images/ship-target.ts';
import { blockLength, blocksBytes, totalBytes, unsafePathReason, type ImageManifest } from '../depot/images/manifest.ts';
import { hostVerifierFromFile } from './ssh-known-hosts.ts';
import type { TokenBucket } from './bandwidth.ts';
import { TransferTracker, type TransferInfo } from './transfers.ts';
import { rawSftpWriter } from './sftp-write.ts';
import { tuneSender, type SenderStats } from './ssh2-sender.ts';

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
//
// Speed: the sender is one node thread and, on a fast link, the bottleneck. The blocks go over
// several SSH connections at once (OpenSSH gives each session only a 2 MiB window, so one
// connection leaves sender and sshd waiting on each other); file data is read straight into
// the WRITE requests (sftp-write.ts) and ssh2's packets reuse their memory (ssh2-sender.ts), so
// no byte is copied in JavaScript but into its SSH packet, and the GC stays quiet.

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
  /** SFTP write requests in flight per transfer, shared by its connections (config.ship.requestsInFlight). */
  requestsInFlight: number;
  /** SSH connections per transfer, each with its own SFTP session writing different blocks (config.ship.connections, default 2). */
  connections?: number;
  /** Sends smaller than this use the first connection only (default 64 MiB). */
  singleConnectionBytes?: number;
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

const DEFAULT_CIPHERS = ['aes128-gcm@openssh.com', 'chacha20-poly1305@openssh.com', 'aes256-gcm@openssh.com', 'aes128-ctr', 'aes256-ctr'];
// OpenSSH's sftp-server takes WRITEs of up to 256 KiB of payload minus protocol overhead;
// 255 KiB keeps each request in one WRITE (ssh2 would split a bigger one into two, serially).
const DEFAULT_CHUNK = 261_120;
// One node thread drives ssh2, and OpenSSH gives each session a 2 MiB window, so with one
// connection the sender and sshd take turns; two connections keep both busy (bench:ship).
const DEFAULT_CONNECTIONS = 2;
// Largest WRITE header: fixed fields and an SFTP handle (at most 256 bytes by the protocol).
const RAW_HEADER_MAX = 25 + 256;
/** Sends smaller than this use the first connection only. */
const SINGLE_CONNECTION_BYTES = 64 * 1024 * 1024;

/** Packet recycling counts of the connections this module opened (tests check the pool is used). */
export const senderStats = new WeakMap<Client, SenderStats>();

export class Shipper {
  private readonly log: Logger;
  readonly tracker: TransferTracker;
  private readonly chunkBytes: number;
  private readonly connections: number;

  constructor(private readonly opts: ShipperOptions) {
    this.log = (opts.logger ?? silentLogger()).child({ component: 'ship' });
    this.tracker = opts.tracker ?? new TransferTracker();
    this.chunkBytes = opts.chunkBytes ?? DEFAULT_CHUNK;
    this.connections = opts.connections ?? DEFAULT_CONNECTIONS;
    if (!Number.isInteger(this.connections) || this.connections < 1) throw new RangeError(`ship connections must be an integer >= 1, got ${opts.connections}`);
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
      if (this.connections > 1) extra = this.connectExtra(target, this.connections - 1, opts.signal);
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
        if (prep.missingBytes >= (this.opts.singleConnectionBytes ?? SINGLE_CONNECTION_BYTES)) conns.push(...(await extra));
        else void extra.then((cs) => cs.forEach((c) => c.end()));
        extra = undefined;
      }
      const lanes = await Promise.all(conns.map(async (conn) => ({ conn, sftp: await sftpOf(conn) })));
      result.connectMs += Date.now() - c0;
      result.connections = conns.length;

      let missing = prep.missing;
      let toSend = prep.missingBytes;
      const maxRounds = this.opts.maxRounds ?? 3;
      const sendStart = Date.now();
      for (let round = 1; ; round++) {
        result.rounds = round;
        if (missing.length > 0) {
          const s0 = Date.now();
          await this.sendBlocks(lanes, manifest, srcDir, prep.filesDir, missing, round, result, opts, (sent) =>
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

  /** Open `n` more connections with their SFTP sessions; those that fail are logged and left out. */
  private async connectExtra(target: { host: string; port: number }, n: number, signal?: AbortSignal): Promise<Client[]> {
    const settled = await Promise.allSettled(
      Array.from({ length: n }, async () => {
        const c = await this.connect(target, signal);
        try {
          await sftpOf(c);
          return c;
        } catch (err) {
          c.end();
          throw err;
        }
      }),
    );
    const ok: Client[] = [];
    for (const s of settled) {
      if (s.status === 'fulfilled') ok.push(s.value);
      else this.log.warn({ event: 'ship-connect-extra-failed', target: `${target.host}:${target.port}`, err: errorMessage(s.reason) }, 'extra SSH connection failed; shipping with fewer');
    }
    return ok;
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
    // Our own socket, so that the sender tuning (ssh2-sender.ts) can batch its writes.
    const sock = netConnect({ host: target.host, port: target.port, noDelay: true });
    await new Promise<void>((resolve, reject) => {
      const onAbort = () => {
        conn.destroy();
        sock.destroy();
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
        sock.destroy();
        const refused = verifier.refusal();
        if (refused) return reject(refused);
        reject(new NavigatorError('TRANSFER_FAILED', `cannot open SSH to ${ssh.user}@${where}: ${errorMessage(err)}`));
      });
      conn.connect({
        sock,
        username: ssh.user,
        privateKey,
        hostVerifier: (key: Buffer) => verifier.verify(key),
        tryKeyboard: false,
        readyTimeout: ssh.readyTimeoutMs ?? 10_000,
        keepaliveInterval: 5000,
        keepaliveCountMax: 3,
        algorithms: { cipher: (ssh.ciphers ?? DEFAULT_CIPHERS) as never, compress: ['none'] },
      });
      senderStats.set(conn, tuneSender(conn, sock));
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
   * Write the given blocks over one or more SFTP sessions ("lanes", one per SSH connection).
   * The lanes take segments (up to 16 requests' worth of a block) from one shared queue, so a
   * slow lane simply takes fewer; files are written at offsets, so lanes may write different
   * blocks of the same file at once. Each lane owns its share of requestsInFlight request
   * buffers: it reads a segment straight into free ones with one read, sends them, and gets
   * each back when the target answers it.
   */
  private async sendBlocks(
    lanes: { conn: Client; sftp: SFTPWrapper }[],
    manifest: ImageManifest,
    srcDir: string,
    remoteFilesDir: string,
    missing: MissingBlocks[],
    round: number,
    result: ShipResult,
    opts: ShipOptions,
    onSent: (sent: number) => void,
  ): Promise<void> {
    const byPath = new Map(manifest.files.map((f) => [f.path, f]));
    // Check every path before writing anything.
    for (const mb of missing) {
      if (!byPath.has(mb.path)) throw new NavigatorError('BAD_REQUEST', `target asked for ${mb.path}, which is not in image ${manifest.name}`);
      const why = unsafePathReason(mb.path);
      if (why) throw new NavigatorError('PATH_OUTSIDE_STORE', `refusing to write ${JSON.stringify(mb.path)}: path ${why}`);
    }
    let nextItem = 0;
    const perLane = laneRequests(this.opts.requestsInFlight, lanes.length);
    const stallMs = this.opts.stallTimeoutMs ?? 30_000;
    let failure: unknown;
    let lastReport = 0;
    let lastReply = Date.now();
    const state = lanes.map((l) => {
      // One WRITE per request: ssh2 splits anything above the server's announced limit
      // (limits@openssh.com) into a second request sent only after the first is answered.
      const serverMax = (l.sftp as unknown as { _maxWriteLen?: number })._maxWriteLen;
      const chunk = serverMax && serverMax > 0 ? Math.min(this.chunkBytes, serverMax) : this.chunkBytes;
      return { ...l, chunk, inFlight: 0, closed: false, wake: undefined as (() => void) | undefined, onClose: () => {} };
    });
    type LaneState = (typeof state)[number];
    const notify = (l: LaneState) => {
      const w = l.wake;
      l.wake = undefined;
      w?.();
    };
    const notifyAll = () => state.forEach(notify);
    const fail = (err: unknown) => {
      failure ??= err;
      notifyAll();
    };
    const sleepOn = (l: LaneState) => new Promise<void>((r) => (l.wake = r));
    // Once a connection is gone no reply will come on it: stop waiting for its writes in flight
    // (ssh2 also silently drops writes issued on a closed channel).
    for (const l of state) {
      l.onClose = () => {
        l.closed = true;
        fail(new NavigatorError('TRANSFER_FAILED', 'SSH connection closed during the transfer'));
      };
      l.conn.once('close', l.onClose);
    }
    const stallTimer = setInterval(() => {
      const waiting = state.reduce((s, l) => s + l.inFlight, 0);
      if (waiting > 0 && Date.now() - lastReply > stallMs && !failure) {
        fail(new NavigatorError('TRANSFER_FAILED', `no reply from the target for ${stallMs} ms with ${waiting} writes in flight`));
        for (const l of state) l.conn.destroy();
      }
    }, Math.min(1000, stallMs));
    // Local files are shared by the lanes (positional reads); opened on first use.
    const locals = new Map<string, Promise<FileHandle>>();
    const localFile = (path: string) => {
      let p = locals.get(path);
      if (!p) {
        p = open(join(srcDir, path), 'r');
        locals.set(path, p);
      }
      return p;
    };
    const pendingCloses: Promise<void>[] = [];
    // A lane reads a segment (several requests' worth) at once while its earlier requests are
    // in flight; it owns perLane request buffers, each back in its pool once answered.
    // (Segments are cut with the smallest lane chunk, so no lane needs more than segChunks buffers.)
    const segChunks = segmentChunks(perLane);
    const chunkMin = Math.min(...state.map((l) => l.chunk));
    const queue = sendQueue(manifest, missing, Math.min(manifest.blockSize, segChunks * chunkMin));

    const runLane = async (l: LaneState) => {
      const raw = rawSftpWriter(l.sftp);
      // The remote file this lane has open; closed when the lane moves on and its writes are answered.
      let remote: { path: string; handle: Buffer; inFlight: number; done: boolean; closed?: () => void } | undefined;
      const release = (r: NonNullable<typeof remote>) => {
        if (r.done && r.inFlight === 0 && r.closed) {
          const done = r.closed;
          r.closed = undefined;
          try {
            l.sftp.close(r.handle, () => done());
          } catch {
            done(); // channel already gone
          }
        }
      };
      const finish = (r: NonNullable<typeof remote>) => {
        r.done = true;
        pendingCloses.push(new Promise<void>((res) => (r.closed = res)));
        release(r);
      };
      // Request buffers, made as needed up to perLane: room for the largest WRITE header and a chunk.
      const pool: Buffer[] = [];
      let made = 0;
      const take = () => (failure ? undefined : queue[nextItem++]);
      try {
        for (let seg = take(); seg; seg = take()) {
          if (!remote || remote.path !== seg.path) {
            if (remote) finish(remote);
            remote = { path: seg.path, handle: await this.openRemote(l, posix.join(remoteFilesDir, seg.path)), inFlight: 0, done: false };
          }
          const r = remote;
          const hdr = raw ? raw.headerBytes(r.handle) : 0;
          if (hdr > RAW_HEADER_MAX) throw new NavigatorError('TRANSFER_FAILED', `the target's SFTP handle is ${r.handle.length} bytes, more than the protocol's 256`);
          const n = Math.ceil(seg.length / l.chunk);
          while (pool.length + (perLane - made) < n && !failure) await sleepOn(l);
          if (failure || l.closed) break;
          for (; pool.length < n; made++) pool.push(Buffer.allocUnsafe(RAW_HEADER_MAX + l.chunk));
          const bufs = pool.splice(pool.length - n, n);
          const views = bufs.map((b, k) => b.subarray(hdr, hdr + Math.min(l.chunk, seg.length - k * l.chunk)));
          // One read for the whole segment, straight into the requests.
          await readFully(await localFile(seg.path), views, seg.offset, seg.path);
          for (let k = 0; k < n; k++) {
            const len = views[k]!.length;
            if (opts.bandwidth) await opts.bandwidth.take(len, { now: Date.now, sleep: (ms) => new Promise((res) => setTimeout(res, ms)) });
            if (opts.signal?.aborted) fail(new NavigatorError('TRANSFER_FAILED', 'transfer aborted'));
            if (failure || l.closed) {
              pool.push(...bufs.slice(k));
              break;
            }
            const pos = seg.offset + k * l.chunk;
            const buf = bufs[k]!;
            if (opts.transformChunk) {
              const out = opts.transformChunk({ path: seg.path, offset: pos, round }, Buffer.from(views[k]!));
              if (out.length !== len) throw new RangeError(`transformChunk must keep the chunk length (${len}), returned ${out.length}`);
              out.copy(views[k]!);
            }
            l.inFlight++;
            r.inFlight++;
            const done = (err?: Error | null) => {
              l.inFlight--;
              r.inFlight--;
              pool.push(buf);
              lastReply = Date.now();
              if (err) {
                fail(err);
              } else {
                result.bytesSent += len;
                if (lastReply - lastReport > 100) {
                  lastReport = lastReply;
                  onSent(result.bytesSent);
                }
              }
              release(r);
              notify(l);
            };
            // Fallback: sftp.write() copies the data into a request of its own.
            if (raw) raw.write(buf.subarray(0, hdr + len), r.handle, pos, done);
            else l.sftp.write(r.handle, views[k]!, 0, len, pos, done);
          }
          if (failure) break;
        }
      } catch (err) {
        fail(err);
      } finally {
        if (remote) finish(remote);
        while (l.inFlight > 0 && !l.closed) await sleepOn(l);
      }
    };

    try {
      await Promise.all(state.map(runLane));
      if (!failure) await Promise.all(pendingCloses);
      onSent(result.bytesSent);
    } finally {
      clearInterval(stallTimer);
      for (const l of state) l.conn.removeListener('close', l.onClose);
      await Promise.all([...locals.values()].map((p) => p.then((fh) => fh.close()).catch(() => undefined)));
    }
    if (failure) {
      if (opts.signal?.aborted) throw new NavigatorError('TRANSFER_FAILED', `transfer to ${remoteFilesDir} aborted after ${result.bytesSent} bytes`);
      const open = state.find((l) => !l.closed) ?? state[0]!;
      throw await this.explainWriteFailure(open.sftp, failure, remoteFilesDir, blocksBytes(manifest, missing));
    }
  }

  /** Open a remote file for writing; fails at once when the lane's connection is gone (ssh2 would never answer). */
  private async openRemote(l: { conn: Client; closed: boolean; sftp: SFTPWrapper }, remotePath: string): Promise<Buffer> {
    let check: NodeJS.Timeout | undefined;
    return Promise.race([
      sftpCall<Buffer>((cb) => l.sftp.open(remotePath, 'r+', cb)),
      new Promise<never>((_, reject) => {
        check = setInterval(() => {
          if (l.closed) reject(new Error('connection closed'));
        }, 100);
      }),
    ])
      .catch((err) => {
        throw new NavigatorError('TRANSFER_FAILED', `cannot open ${remotePath} on the target: ${errorMessage(err)}`);
      })
      .finally(() => clearInterval(check));
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

/** A piece of a file read with one read and sent as consecutive WRITE requests. */
export interface Segment {
  path: string;
  offset: number;
  length: number;
}

/**
 * Requests' worth a lane reads at once: half its requests (so reading overlaps with the other
 * half in flight), at most 16 (4 MiB).
 */
export function segmentChunks(perLane: number): number {
  return Math.min(16, Math.max(1, Math.floor(perLane / 2)));
}

/** The reads to make (at most `seg` bytes each, never across blocks), in file and block order. */
export function sendQueue(m: ImageManifest, missing: MissingBlocks[], seg: number): Segment[] {
  const byPath = new Map(m.files.map((f) => [f.path, f]));
  const out: Segment[] = [];
  for (const mb of missing) {
    const f = byPath.get(mb.path);
    if (!f) continue;
    for (const i of mb.blocks) {
      const len = blockLength(m, f, i);
      for (let o = 0; o < len; o += seg) out.push({ path: mb.path, offset: i * m.blockSize + o, length: Math.min(seg, len - o) });
    }
  }
  return out;
}

/** Read `views.length` consecutive pieces of a file starting at `position`, all of them or fail. */
async function readFully(fh: FileHandle, views: Buffer[], position: number, path: string): Promise<void> {
  const total = views.reduce((n, v) => n + v.length, 0);
  let got = (await fh.readv(views, position)).bytesRead;
  // readv may stop short (signals, some file systems): fill the rest piece by piece.
  let at = 0;
  for (const v of views) {
    if (got >= at + v.length) {
      at += v.length;
      continue;
    }
    let have = Math.max(0, got - at);
    while (have < v.length) {
      const { bytesRead } = await fh.read(v, have, v.length - have, position + at + have);
      if (bytesRead === 0) throw new NavigatorError('IMAGE_CORRUPT', `local image file ${path} is shorter than its manifest says`);
      have += bytesRead;
    }
    at += v.length;
    got = at;
  }
  if (at !== total) throw new Error('readFully: internal length mismatch');
}

/** WRITE requests each lane keeps in flight: the transfer's budget shared out, at least one. */
export function laneRequests(total: number, lanes: number): number {
  return Math.max(1, Math.ceil(total / Math.max(1, lanes)));
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

function describeBad(bad: { path: string; block?: number; reason: string }[]): string {
  return bad
    .slice(0, 3)
    .map((b) => `${b.path}${b.block !== undefined ? ` block ${b.block}` : ''}: ${b.reason}`)
    .join('; ');
}

/** A shipper as configured (config.ship), for the daemon and the pilot. */
export function createShipper(
  cfg: { sshUser: string; sshKeyFile: string; knownHostsFile: string; requestsInFlight: number; connections?: number; chunkBytes?: number; stallTimeoutMs?: number },
  store: ImageStore,
  logger?: Logger,
  tracker?: TransferTracker,
): Shipper {
  return new Shipper({
    store,
    ssh: { user: cfg.sshUser, keyFile: cfg.sshKeyFile, knownHostsFile: cfg.knownHostsFile },
    requestsInFlight: cfg.requestsInFlight,
    ...(cfg.connections ? { connections: cfg.connections } : {}),
    ...(cfg.chunkBytes ? { chunkBytes: cfg.chunkBytes } : {}),
    ...(cfg.stallTimeoutMs ? { stallTimeoutMs: cfg.stallTimeoutMs } : {}),
    ...(logger ? { logger } : {}),
    ...(tracker ? { tracker } : {}),
  });
}
