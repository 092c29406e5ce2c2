import { open, type FileHandle } from 'node:fs/promises';
import { join, posix } from 'node:path';
import type { Client, SFTPWrapper } from 'ssh2';
import { NavigatorError, errorMessage, isNavigatorError } from '../shared/errors.ts';
import { blocksBytes, unsafePathReason, type ImageManifest } from '../depot/images/manifest.ts';
import type { MissingBlocks } from '../depot/images/receive.ts';
import type { TokenBucket } from './bandwidth.ts';
import { rawSftpWriter } from './sftp-write.ts';
import { sftpCall } from './ssh-connection.ts';
import { laneRequests, segmentChunks, sendQueue } from './send-queue.ts';

// Streaming an image's blocks to the target over SFTP: the lanes (one per SSH connection), their
// request buffers read straight from the local files (sftp-write.ts), the stall watch, and a
// clear error when a write fails (a full target disk is DISK_FULL).

// Largest WRITE header: fixed fields and an SFTP handle (at most 256 bytes by the protocol).
const RAW_HEADER_MAX = 25 + 256;

/** What a send needs of the shipper's settings (ShipperOptions). */
export interface StreamSettings {
  requestsInFlight: number;
  chunkBytes: number;
  stallTimeoutMs: number;
}

/** Per-transfer options of a send (ShipOptions). */
export interface StreamOptions {
  signal?: AbortSignal;
  /** Bandwidth limit (pre-staging). */
  bandwidth?: TokenBucket;
  /** Test hook: replace a chunk's bytes before it is sent (simulates corruption in flight). */
  transformChunk?: (c: { path: string; offset: number; round: number }, data: Buffer) => Buffer;
}

/** One round of a send: what to write where. */
export interface BlockSend {
  lanes: { conn: Client; sftp: SFTPWrapper }[];
  manifest: ImageManifest;
  srcDir: string;
  remoteFilesDir: string;
  missing: MissingBlocks[];
  round: number;
}

/**
 * Write the given blocks over one or more SFTP sessions ("lanes", one per SSH connection).
 * The lanes take segments (up to 16 requests' worth of a block) from one shared queue, so a
 * slow lane simply takes fewer; files are written at offsets, so lanes may write different
 * blocks of the same file at once. Each lane owns its share of requestsInFlight request
 * buffers: it reads a segment straight into free ones with one read, sends them, and gets
 * each back when the target answers it.
 */
export async function sendBlocks(
  send: BlockSend,
  settings: StreamSettings,
  result: { bytesSent: number },
  opts: StreamOptions,
  onSent: (sent: number) => void,
): Promise<void> {
  const { lanes, manifest, srcDir, remoteFilesDir, missing, round } = send;
  const byPath = new Map(manifest.files.map((f) => [f.path, f]));
  // Check every path before writing anything.
  for (const mb of missing) {
    if (!byPath.has(mb.path)) throw new NavigatorError('BAD_REQUEST', `target asked for ${mb.path}, which is not in image ${manifest.name}`);
    const why = unsafePathReason(mb.path);
    if (why) throw new NavigatorError('PATH_OUTSIDE_STORE', `refusing to write ${JSON.stringify(mb.path)}: path ${why}`);
  }
  let nextItem = 0;
  const perLane = laneRequests(settings.requestsInFlight, lanes.length);
  const stallMs = settings.stallTimeoutMs;
  let failure: unknown;
  let lastReport = 0;
  let lastReply = Date.now();
  const state = lanes.map((l) => {
    // One WRITE per request: ssh2 splits anything above the server's announced limit
    // (limits@openssh.com) into a second request sent only after the first is answered.
    const serverMax = (l.sftp as unknown as { _maxWriteLen?: number })._maxWriteLen;
    const chunk = serverMax && serverMax > 0 ? Math.min(settings.chunkBytes, serverMax) : settings.chunkBytes;
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
          remote = { path: seg.path, handle: await openRemote(l, posix.join(remoteFilesDir, seg.path)), inFlight: 0, done: false };
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
    throw await explainWriteFailure(open.sftp, failure, remoteFilesDir, blocksBytes(manifest, missing), settings.chunkBytes);
  }
}

/** Open a remote file for writing; fails at once when the lane's connection is gone (ssh2 would never answer). */
async function openRemote(l: { conn: Client; closed: boolean; sftp: SFTPWrapper }, remotePath: string): Promise<Buffer> {
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
async function explainWriteFailure(sftp: SFTPWrapper, err: unknown, remoteDir: string, bytesPlanned: number, chunk: number): Promise<NavigatorError> {
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
  if (free !== undefined && free < chunk * 2) {
    return new NavigatorError('DISK_FULL', `target has no space left in ${remoteDir}: ${bytesPlanned} bytes to write, ${free} free (${errorMessage(err)})`, {
      path: remoteDir,
      neededBytes: bytesPlanned,
      freeBytes: free,
    });
  }
  return new NavigatorError('TRANSFER_FAILED', `SFTP write to ${remoteDir} failed: ${errorMessage(err)}`, undefined, { cause: err });
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
