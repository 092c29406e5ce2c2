import type { Socket } from 'node:net';
import type { Client } from 'ssh2';

// Sender-side tuning of an ssh2 connection for bulk data (image shipping).
//
// ssh2 turns every 32 KiB of channel data (the largest packet OpenSSH accepts on a session
// channel) into its own packet: a fresh Buffer, encrypted in place and written to the socket
// on its own. At several hundred MB/s that is tens of thousands of socket writes and of new
// ArrayBuffers a second; the latter count as V8 external memory, which makes V8 run a full
// mark-compact every few megabytes sent (35 per 512 MiB, most of the sender's GC time,
// measured with perf and --trace-gc). Two remedies, both local to one connection:
//  - batched writes: the socket is corked on the first write of an event-loop turn and
//    flushed in the check phase, so one writev replaces dozens of writes;
//  - recycled packets: the memory of large outgoing packets comes from a pool of slabs and
//    goes back to it once the socket has written it.
// ssh2's ciphers allocate a packet with Buffer.allocUnsafe() inside their allocPacket(), called
// from the protocol's packet writer (ssh2 1.x, lib/protocol/zlib.js PacketWriter.alloc). The
// protocol installs a new writer after every key exchange, so the writer slot is watched and
// each writer put there is wrapped. The wrapper answers the packet allocation from the pool: it
// swaps Buffer.allocUnsafe for the duration of the synchronous alloc() call only (nothing else
// can run meanwhile) and restores it in a finally. A slab that is not written back (a cipher
// that encrypts into a new buffer, a socket already gone) is simply left to the garbage
// collector. When ssh2's internals are not what this expects, only the writes are batched.

/** Slab size: a 32 KiB-data packet plus SSH framing, padding and MAC, with room to spare. */
const SLAB = 36 * 1024;
/** Payloads from this size on are pooled (channel data); smaller packets are left alone. */
const MIN_POOLED = 8 * 1024;
/** Free slabs kept per connection (a 2 MiB window is 64 packets; more are queued locally at times). */
const MAX_FREE = 192;

export interface SenderStats {
  /** Packets built in a recycled slab. */
  recycled: number;
  /** Packets that needed a new slab (none free). */
  fresh: number;
  /** Packet writers wrapped: ssh2 installs one at the first handshake and one per later key exchange. */
  writers: number;
}

interface PacketWriterLike {
  alloc(size: number, force?: boolean): Buffer;
}
interface ProtocolLike {
  /** Set while a key exchange is running: then alloc() makes a plain payload, not a packet. */
  _kexinit?: unknown;
  _packetRW?: { write?: PacketWriterLike };
}

/** Batch the socket's writes (see above). Call before handing the socket to ssh2. */
function batchWrites(sock: Socket, onWritten?: (chunk: Buffer) => void): void {
  const flush = () => {
    if (sock.writableCorked) sock.uncork();
  };
  const write = sock.write.bind(sock) as (...a: unknown[]) => boolean;
  sock.write = ((...a: unknown[]) => {
    if (!sock.writableCorked && !sock.destroyed) {
      sock.cork();
      setImmediate(flush);
    }
    // ssh2 writes packets without a callback; add one to learn when the memory is free again.
    if (onWritten && a.length === 1 && Buffer.isBuffer(a[0])) {
      const chunk = a[0];
      return write(chunk, (err?: Error | null) => {
        if (!err) onWritten(chunk);
      });
    }
    return write(...a);
  }) as typeof sock.write;
}

/**
 * Tune a connection for sending (batched writes, recycled packets). `sock` must be the socket
 * given to conn.connect(), and this must be called right after conn.connect().
 */
export function tuneSender(conn: Client, sock: Socket): SenderStats {
  const stats: SenderStats = { recycled: 0, fresh: 0, writers: 0 };
  const proto = (conn as unknown as { _protocol?: ProtocolLike })._protocol;
  const rw = proto?._packetRW;
  const desc = rw ? Object.getOwnPropertyDescriptor(rw, 'write') : undefined;
  if (!proto || !rw || !desc || !('value' in desc) || !desc.writable || typeof rw.write?.alloc !== 'function') {
    batchWrites(sock);
    return stats;
  }
  const free: ArrayBuffer[] = [];
  // Slabs handed out and not back yet. A slab comes back once, on the first write of (a view
  // of) it that completes: ssh2 is done with a packet when encrypt() returns, which is before
  // any write completes (ciphers without the native binding write a view of the length field
  // and a new buffer for the rest).
  const out = new WeakSet<ArrayBuffer>();
  batchWrites(sock, (chunk) => {
    const ab = chunk.buffer as ArrayBuffer;
    if (out.delete(ab) && free.length < MAX_FREE) free.push(ab);
  });
  // Answers one packet allocation from the pool.
  const pooled = (alloc: PacketWriterLike['alloc'], size: number, force?: boolean): Buffer => {
    let slab = free.pop();
    if (slab) stats.recycled++;
    else {
      slab = new ArrayBuffer(SLAB);
      stats.fresh++;
    }
    const real = Buffer.allocUnsafe;
    const s = slab;
    let used = false;
    // One-shot: the first allocation in alloc() is the packet (see the notes at the top).
    Buffer.allocUnsafe = (n: number) => {
      Buffer.allocUnsafe = real;
      if (n > SLAB) return real(n);
      used = true;
      out.add(s);
      return Buffer.from(s, 0, n);
    };
    try {
      return alloc(size, force);
    } finally {
      Buffer.allocUnsafe = real;
      if (!used && free.length < MAX_FREE) free.push(s);
    }
  };
  const wrap = (writer: PacketWriterLike): PacketWriterLike => {
    if (typeof writer?.alloc !== 'function') return writer;
    stats.writers++;
    const alloc = writer.alloc.bind(writer);
    // During a key exchange alloc() makes a plain payload that is copied later: not pooled.
    writer.alloc = (size, force) =>
      size < MIN_POOLED || size + 256 > SLAB || (proto._kexinit !== undefined && !force) ? alloc(size, force) : pooled(alloc, size, force);
    return writer;
  };
  let current = wrap(rw.write!);
  Object.defineProperty(rw, 'write', {
    configurable: true,
    enumerable: true,
    get: () => current,
    set: (w: PacketWriterLike) => {
      current = wrap(w);
    },
  });
  return stats;
}
