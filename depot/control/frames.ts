import type { Stream } from '@libp2p/interface';
import * as lp from 'it-length-prefixed';
import { NavigatorError, errorMessage } from '../../shared/errors.ts';

// One length-prefixed (unsigned varint) frame per direction: the framing of every
// request/response protocol of the depot (control, election).

/** Read exactly one frame of at most maxBytes from the stream, within timeoutMs. */
export async function readFrame(stream: Stream, timeoutMs: number, maxBytes: number): Promise<Uint8Array> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new NavigatorError('TIMEOUT', `no complete frame within ${timeoutMs} ms`)), timeoutMs);
  });
  const read = (async () => {
    try {
      for await (const frame of lp.decode(stream.source, { maxDataLength: maxBytes })) {
        return frame.subarray();
      }
    } catch (err) {
      const name = (err as Error | undefined)?.name ?? '';
      if (name === 'InvalidDataLengthError' || name === 'InvalidDataLengthLengthError') {
        throw new NavigatorError('MESSAGE_TOO_LARGE', `frame larger than ${maxBytes} bytes`);
      }
      throw new NavigatorError('BAD_REQUEST', `unreadable frame: ${errorMessage(err)}`);
    }
    throw new NavigatorError('BAD_REQUEST', 'stream ended before a complete frame');
  })();
  try {
    return await Promise.race([read, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Encode one frame. */
export function frame(bytes: Uint8Array): Uint8Array {
  return lp.encode.single(bytes).subarray();
}
