import type { SFTPWrapper } from 'ssh2';

// SFTP WRITE requests built in the caller's buffer, for image shipping.
//
// ssh2's sftp.write() allocates a new request buffer and copies the data into it; at several
// hundred MB/s that copy and the garbage it leaves are a large part of the sender's CPU (the
// sender is one node thread, and it is the bottleneck of a transfer). Here the caller reads the
// file straight into the data part of a request buffer it owns and reuses once the server has
// answered (an answer means the whole request was sent). Sending follows ssh2 1.x's own
// sendOrBuffer/tryWritePayload (SFTP.js): as much as the channel window allows now, the rest
// queued on the channel and sent by ssh2 when the server opens the window. rawSftpWriter()
// checks the ssh2 internals it relies on and returns undefined when they are not there, so the
// caller falls back to sftp.write().

const WRITE = 6; // SSH_FXP_WRITE
const HEADER_FIXED = 4 + 1 + 4 + 4 + 8 + 4; // length, type, request id, handle length, offset, data length

/** The ssh2 SFTPWrapper internals used (ssh2 1.x, lib/protocol/SFTP.js). */
interface SftpInternals {
  server?: boolean;
  _writeReqid: number;
  _requests: Record<number, { cb: (err?: Error) => void }>;
  _buffer: Buffer[];
  _waitWindow: boolean;
  _chunkcb: (() => void) | undefined;
  outgoing: { id: number; window: number; packetSize: number; state: string };
  _protocol: { channelData(id: number, data: Buffer): void };
}

export interface RawSftpWriter {
  /** Bytes before the data in a WRITE request for this handle. */
  headerBytes(handle: Buffer): number;
  /**
   * Send `request` (headerBytes(handle) bytes of room, then the data) as a WRITE of its data at
   * `position`. `cb` gets the server's answer; until then the buffer belongs to the channel.
   */
  write(request: Buffer, handle: Buffer, position: number, cb: (err?: Error) => void): void;
}

export function rawSftpWriter(sftp: SFTPWrapper): RawSftpWriter | undefined {
  const s = sftp as unknown as Partial<SftpInternals>;
  const ok =
    !s.server &&
    typeof s._writeReqid === 'number' &&
    typeof s._requests === 'object' &&
    s._requests !== null &&
    Array.isArray(s._buffer) &&
    typeof s.outgoing?.window === 'number' &&
    typeof s.outgoing.packetSize === 'number' &&
    typeof s.outgoing.id === 'number' &&
    typeof s._protocol?.channelData === 'function';
  if (!ok) return undefined;
  const c = s as SftpInternals;

  // Same as ssh2's drainBuffer: called (as a method of the channel) on a window adjust.
  function drain(this: SftpInternals): void {
    this._chunkcb = undefined;
    const buffer = this._buffer;
    let i = 0;
    while (i < buffer.length) {
      const rest = trySend(this, buffer[i]!);
      if (rest !== undefined) {
        buffer[i] = rest;
        if (i > 0) this._buffer = buffer.slice(i);
        return;
      }
      ++i;
    }
    if (i > 0) this._buffer = [];
  }

  // Sends what the window allows; returns the unsent rest (undefined when all went out).
  function trySend(ch: SftpInternals, payload: Buffer): Buffer | undefined {
    const out = ch.outgoing;
    if (out.state !== 'open') return undefined; // ssh2 drops writes on a closed channel too
    let p = 0;
    const len = payload.length;
    while (p < len && out.window > 0) {
      const n = Math.min(len - p, out.window, out.packetSize);
      out.window -= n;
      ch._protocol.channelData(out.id, p === 0 && n === len ? payload : payload.subarray(p, p + n));
      p += n;
    }
    if (out.window === 0) {
      ch._waitWindow = true;
      ch._chunkcb = drain;
    }
    return p < len ? payload.subarray(p) : undefined;
  }

  return {
    headerBytes: (handle) => HEADER_FIXED + handle.length,
    write(request, handle, position, cb) {
      const hl = handle.length;
      const dataLen = request.length - HEADER_FIXED - hl;
      if (dataLen <= 0) throw new RangeError(`SFTP write request of ${request.length} bytes holds no data`);
      const reqid = (c._writeReqid = (c._writeReqid + 1) >>> 0);
      request.writeUInt32BE(request.length - 4, 0);
      request[4] = WRITE;
      request.writeUInt32BE(reqid, 5);
      request.writeUInt32BE(hl, 9);
      handle.copy(request, 13);
      let p = 13 + hl;
      request.writeUInt32BE(Math.floor(position / 0x1_0000_0000), p);
      request.writeUInt32BE(position >>> 0, p + 4);
      request.writeUInt32BE(dataLen, (p += 8));
      c._requests[reqid] = { cb };
      // Behind requests already waiting for window, in order.
      if (c._buffer.length > 0) {
        c._buffer.push(request);
        return;
      }
      const rest = trySend(c, request);
      if (rest !== undefined) c._buffer.push(rest);
    },
  };
}
