import * as lp from 'it-length-prefixed';
import type { PeerId } from '@libp2p/interface';
import type { Logger } from '../../shared/logger.ts';
import { JournalSection } from '../../shared/config.ts';
import { NavigatorError, errorMessage } from '../../shared/errors.ts';
import { JOURNAL_PROTOCOL, MAX_CONTROL_BYTES, encodeMessage } from '../../shared/wire.ts';
import type { NavigatorNode } from '../libp2p.ts';
import type { FillResult, Journal, JournalFetchFn } from './journal.ts';

// Gap filling: a small request/response protocol (/navigator/journal/1, one length-prefixed JSON
// frame each way per stream) through which a depot that was down fetches the movement records it
// missed from a peer (live records arrive as gossip: journal/movement-gossip.ts).

export interface JournalGapFillOptions {
  node: NavigatorNode;
  journal: Journal;
  logger: Logger;
  /** A request to a peer, and the answer to one, is given up after this long (config.journal.fetchTimeoutMs; default: its default). */
  timeoutMs?: number;
}

/** Serves /navigator/journal/1 and fetches from peers. start()/stop() register the handler. */
export class JournalGapFill {
  private readonly node: NavigatorNode;
  private readonly journal: Journal;
  private readonly log: Logger;
  private readonly timeoutMs: number;
  private started = false;

  constructor(opts: JournalGapFillOptions) {
    this.node = opts.node;
    this.journal = opts.journal;
    this.log = opts.logger.child({ component: 'journal-gap-fill' });
    this.timeoutMs = opts.timeoutMs ?? JournalSection.parse({}).fetchTimeoutMs;
  }

  async start(): Promise<void> {
    if (this.started) return;
    await this.node.handle(
      JOURNAL_PROTOCOL,
      ({ stream, connection }) => {
        void this.serve(stream, connection.remotePeer.toString());
      },
      { maxInboundStreams: 8 },
    );
    this.started = true;
  }

  async stop(): Promise<void> {
    if (!this.started) return;
    this.started = false;
    await this.node.unhandle(JOURNAL_PROTOCOL);
  }

  private async serve(stream: Parameters<Parameters<NavigatorNode['handle']>[1]>[0]['stream'], peer: string): Promise<void> {
    const signal = AbortSignal.timeout(this.timeoutMs);
    try {
      let answer: unknown;
      const frame = await firstFrame(stream.source, MAX_CONTROL_BYTES, signal);
      try {
        const req = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(frame));
        answer = this.journal.handleFetch(req);
      } catch (err) {
        answer = { type: 'journal.error', message: errorMessage(err).slice(0, 1000) };
      }
      await stream.sink([lp.encode.single(encodeMessage(answer, MAX_CONTROL_BYTES))]);
    } catch (err) {
      this.log.warn({ event: 'journal-serve-failed', peer, err: errorMessage(err) }, 'journal fetch from a peer failed');
      stream.abort(err as Error);
    }
  }

  /** A fetch function for Journal.fillGaps that asks `peer` over /navigator/journal/1. */
  fetcher(peer: PeerId): JournalFetchFn {
    return async (request) => {
      const signal = AbortSignal.timeout(this.timeoutMs);
      const stream = await this.node.dialProtocol(peer, JOURNAL_PROTOCOL, { signal });
      try {
        await stream.sink([lp.encode.single(encodeMessage(request, MAX_CONTROL_BYTES))]);
        const frame = await firstFrame(stream.source, MAX_CONTROL_BYTES, signal);
        const answer = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(frame)) as { type?: string; message?: string };
        if (answer?.type === 'journal.error') throw new NavigatorError('BAD_REQUEST', `peer refused journal.fetch: ${answer.message}`);
        return answer;
      } finally {
        await stream.close().catch(() => stream.abort(new Error('close failed')));
      }
    };
  }

  /** Fill gaps from the first of `peers` that answers; returns which peer served, or throws the last error. */
  async fillFromPeers(peers: PeerId[], opts: { slackMs?: number } = {}): Promise<FillResult & { peer: string }> {
    let lastErr: unknown = new NavigatorError('NOT_FOUND', 'no peer to fetch the journal from');
    for (const peer of peers) {
      try {
        const res = await this.journal.fillGaps(this.fetcher(peer), opts);
        return { ...res, peer: peer.toString() };
      } catch (err) {
        lastErr = err;
        this.log.warn({ event: 'journal-fill-peer-failed', peer: peer.toString(), err: errorMessage(err) }, 'journal gap filling from a peer failed; trying the next');
      }
    }
    throw lastErr;
  }
}

async function firstFrame(source: AsyncIterable<any>, maxDataLength: number, signal: AbortSignal): Promise<Uint8Array> {
  const onAbort = new Promise<never>((_, reject) => {
    if (signal.aborted) reject(new NavigatorError('TIMEOUT', 'journal stream timed out'));
    signal.addEventListener('abort', () => reject(new NavigatorError('TIMEOUT', 'journal stream timed out')), { once: true });
  });
  onAbort.catch(() => undefined);
  const read = (async () => {
    for await (const chunk of lp.decode(source, { maxDataLength })) return chunk.subarray();
    throw new NavigatorError('MESSAGE_INVALID', 'journal stream closed before a frame arrived');
  })();
  return Promise.race([read, onAbort]);
}
