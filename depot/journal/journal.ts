import { EventEmitter } from 'node:events';
import { mkdir, open, readFile, truncate, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Logger } from '../../shared/logger.ts';
import { JournalSection } from '../../shared/config.ts';
import { NavigatorError } from '../../shared/errors.ts';
import {
  JournalFetchRequest,
  JournalFetchResponse,
  MovementRecord,
  type JournalEntry,
  type MovementEvent,
  type MovementRecordInput,
} from '../../shared/movement.ts';

// The movement journal of one depot: an append-only file of movement records, one JSON object
// per line, fsync'd before an append is reported done. Every record gets a local sequence number
// (its line number). Ids are unique: a record seen again (gossip and gap filling overlap by
// design) is ignored. The tracking page reads it newest first through `page()`.

export interface JournalOptions {
  path: string;
  logger: Logger;
  /** Gap filling asks for records from the newest held minus this (config.journal.gapSlackMs; default: its default). */
  gapSlackMs?: number;
}

export interface PageQuery {
  service?: string | undefined;
  /** Matches the host the copy is on or the host it moved away from. */
  host?: string | undefined;
  event?: MovementEvent | undefined;
  /** Cursor from a previous page (`nextBefore`), or a time in ms: only records older than it. */
  before?: string | number | undefined;
  limit?: number | undefined;
}

export interface Page {
  records: MovementRecord[];
  /** Pass as `before` for the next (older) page; null when this is the last page. */
  nextBefore: string | null;
  /** Records matching the filters in the whole journal. */
  total: number;
}

export interface SinceQuery {
  /** Only entries with a local sequence number above this. */
  afterSeq?: number;
  /** Only records whose time is at least this (ms). */
  sinceTime?: number;
  limit?: number;
}

export interface FillResult {
  /** Records received from the peer. */
  fetched: number;
  /** Of those, records that were new here. */
  added: number;
  pages: number;
}

export type JournalFetchFn = (request: JournalFetchRequest) => Promise<unknown>;

const MAX_PAGE = 500;

type OrderKey = { time: number; id: string };
const cmp = (a: OrderKey, b: OrderKey): number => a.time - b.time || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

export class Journal extends EventEmitter<{ movement: [MovementRecord, number] }> {
  readonly path: string;
  private readonly log: Logger;
  private readonly gapSlackMs: number;
  private fh: FileHandle | undefined;
  /** By local sequence number - 1. */
  private readonly entries: JournalEntry[] = [];
  private readonly byId = new Map<string, JournalEntry>();
  /** Sorted by (time, id) ascending, for pages newest first. */
  private readonly byTime: MovementRecord[] = [];
  /** Ids being written right now: a concurrent duplicate is refused at once. */
  private readonly pending = new Set<string>();
  private tail: Promise<unknown> = Promise.resolve();
  /** Bytes of the file that hold whole, acknowledged records: a failed append is cut back to this. */
  private committedBytes = 0;
  /** A failed append could not be rolled back: no record may follow it until the journal is opened again. */
  private broken: NavigatorError | undefined;

  constructor(opts: JournalOptions) {
    super();
    this.path = opts.path;
    this.log = opts.logger.child({ component: 'journal' });
    this.gapSlackMs = opts.gapSlackMs ?? JournalSection.parse({}).gapSlackMs;
  }

  /** Read the file (created if missing); a torn last line from a crash is cut off and logged. */
  async open(): Promise<void> {
    if (this.fh) return;
    await mkdir(dirname(this.path), { recursive: true });
    let text = '';
    try {
      text = await readFile(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    const { records, keepBytes, tornLine } = parseJournalText(text, this.path);
    if (tornLine !== undefined) {
      await truncate(this.path, keepBytes);
      this.log.warn({ event: 'journal-torn-line', line: tornLine, keptBytes: keepBytes }, 'cut off an incomplete last line (crash during a write)');
    }
    for (const r of records) {
      if (this.byId.has(r.id)) continue;
      this.index(r);
    }
    this.fh = await open(this.path, 'a');
    this.committedBytes = (await this.fh.stat()).size;
    this.broken = undefined;
    // Make the file's directory entry durable too when it was just created.
    const dir = await open(dirname(this.path), 'r');
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
    this.log.info({ event: 'journal-open', records: this.entries.length, path: this.path }, 'journal opened');
  }

  async close(): Promise<void> {
    await this.tail.catch(() => undefined);
    const fh = this.fh;
    this.fh = undefined;
    await fh?.close();
  }

  get isOpen(): boolean {
    return this.fh !== undefined;
  }

  get size(): number {
    return this.entries.length;
  }

  /** Local sequence number of the last record, 0 when empty. */
  get lastSeq(): number {
    return this.entries.length;
  }

  /** Time of the newest record by its own time, undefined when empty. */
  get newestTime(): number | undefined {
    return this.byTime[this.byTime.length - 1]?.time;
  }

  has(id: string): boolean {
    return this.byId.has(id) || this.pending.has(id);
  }

  get(id: string): MovementRecord | undefined {
    return this.byId.get(id)?.record;
  }

  /**
   * Validate, write and fsync one record. Resolves true when it was new, false when a record
   * with the same id is already held (or being written). Bad records throw BAD_REQUEST naming
   * the field; nothing is written then.
   */
  async append(input: MovementRecordInput | MovementRecord): Promise<boolean> {
    return (await this.appendMany([input])) === 1;
  }

  /**
   * Validate all, then write the new ones with one write and one fsync (gap filling brings
   * hundreds at once). Resolves the number of records that were new. A bad record throws
   * BAD_REQUEST naming it and the field, and nothing is written.
   */
  async appendMany(inputs: ReadonlyArray<MovementRecordInput | MovementRecord>): Promise<number> {
    const records: MovementRecord[] = [];
    for (let k = 0; k < inputs.length; k++) {
      const parsed = MovementRecord.safeParse(inputs[k]);
      if (!parsed.success) {
        const i = parsed.error.issues[0];
        const which = inputs.length > 1 ? ` #${k}` : '';
        throw new NavigatorError('BAD_REQUEST', `invalid movement record${which}: ${i ? `${i.path.join('.') || '(root)'}: ${i.message}` : 'invalid'}`);
      }
      records.push(parsed.data);
    }
    if (!this.fh) throw new NavigatorError('INTERNAL', 'journal is not open');
    const fresh: MovementRecord[] = [];
    for (const r of records) {
      if (this.has(r.id)) continue;
      this.pending.add(r.id);
      fresh.push(r);
    }
    if (fresh.length === 0) return 0;
    const text = fresh.map((r) => `${JSON.stringify(r)}\n`).join('');
    const write = this.tail.then(async () => {
      const fh = this.fh;
      if (!fh) throw new NavigatorError('INTERNAL', 'journal closed during a write');
      if (this.broken) throw this.broken;
      await this.writeChecked(fh, Buffer.from(text, 'utf8'), fresh.length);
    });
    this.tail = write.catch(() => undefined);
    try {
      await write;
    } catch (err) {
      for (const r of fresh) this.pending.delete(r.id);
      this.log.error({ event: 'journal-write-failed', records: fresh.length, err: (err as Error).message }, 'journal write failed');
      throw err;
    }
    for (const r of fresh) {
      this.pending.delete(r.id);
      const entry = this.index(r);
      this.emit('movement', r, entry.seq);
    }
    return fresh.length;
  }

  /**
   * Append `buf` whole and fsync it, or leave the file as it was: a short write or an error
   * (a full disk) is cut back to the last whole record, so no partial line is ever followed by
   * another record (which would make the next start refuse the journal).
   */
  private async writeChecked(fh: FileHandle, buf: Buffer, records: number): Promise<void> {
    let written = 0;
    try {
      while (written < buf.length) {
        const { bytesWritten } = await fh.write(buf, written, buf.length - written);
        if (bytesWritten <= 0) throw Object.assign(new Error('no bytes written (short write)'), { code: 'ENOSPC' });
        written += bytesWritten;
      }
      await fh.datasync();
      this.committedBytes += buf.length;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const full = code === 'ENOSPC' || code === 'EDQUOT';
      const failure = new NavigatorError(
        full ? 'DISK_FULL' : 'INTERNAL',
        `journal ${this.path}: could not append ${records} record(s) (${buf.length} bytes, ${written} written): ${(err as Error).message}${full ? ' — the disk is full; free space, the depot keeps running' : ''}`,
        { path: this.path, code },
      );
      try {
        await fh.truncate(this.committedBytes);
        await fh.datasync();
        this.log.warn({ event: 'journal-append-rolled-back', bytes: written, keptBytes: this.committedBytes }, 'journal append failed; cut back to the last whole record');
      } catch (cut) {
        // Cannot cut it back: refuse further appends, so the partial line stays the last one
        // (the next start cuts a torn last line off by itself).
        this.broken = new NavigatorError('INTERNAL', `journal ${this.path}: an append failed and could not be rolled back (${(cut as Error).message}); no more records until the depot restarts`);
      }
      throw failure;
    }
  }

  /** Entries in local sequence order, filtered by sequence cursor and record time. */
  since(q: SinceQuery = {}): JournalEntry[] {
    const afterSeq = q.afterSeq ?? 0;
    const sinceTime = q.sinceTime ?? 0;
    const limit = q.limit ?? Number.POSITIVE_INFINITY;
    const out: JournalEntry[] = [];
    for (let i = afterSeq; i < this.entries.length && out.length < limit; i++) {
      const e = this.entries[i]!;
      if (e.record.time >= sinceTime) out.push(e);
    }
    return out;
  }

  /** Every record, oldest first by record time. */
  all(): readonly MovementRecord[] {
    return this.byTime;
  }

  /** Newest first, filtered, paged with an opaque `before` cursor. */
  page(q: PageQuery = {}): Page {
    const limit = Math.min(Math.max(1, Math.floor(q.limit ?? 50)), MAX_PAGE);
    const cursor = parseCursor(q.before);
    const match = (r: MovementRecord) =>
      (!q.service || r.service === q.service) &&
      (!q.host || r.host === q.host || r.fromHost === q.host) &&
      (!q.event || r.event === q.event);
    let start = this.byTime.length - 1;
    if (cursor) {
      // First record strictly older than the cursor (binary search over the sorted index).
      let lo = 0;
      let hi = this.byTime.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (cmp(this.byTime[mid]!, cursor) < 0) lo = mid + 1;
        else hi = mid;
      }
      start = lo - 1;
    }
    const records: MovementRecord[] = [];
    let i = start;
    for (; i >= 0 && records.length < limit; i--) {
      const r = this.byTime[i]!;
      if (match(r)) records.push(r);
    }
    let more = false;
    for (; i >= 0; i--) {
      if (match(this.byTime[i]!)) {
        more = true;
        break;
      }
    }
    let total = 0;
    if (!q.service && !q.host && !q.event) total = this.byTime.length;
    else for (const r of this.byTime) if (match(r)) total++;
    const last = records[records.length - 1];
    return { records, nextBefore: more && last ? `${last.time}_${last.id}` : null, total };
  }

  /** Answer a peer's journal.fetch (also what the control protocol's `journal.fetch` method calls). */
  handleFetch(params: unknown): JournalFetchResponse {
    const withType = params && typeof params === 'object' ? { type: 'journal.fetch', v: 1, ...(params as object) } : params;
    const parsed = JournalFetchRequest.safeParse(withType);
    if (!parsed.success) {
      const i = parsed.error.issues[0];
      throw new NavigatorError('BAD_REQUEST', `invalid journal.fetch request: ${i ? `${i.path.join('.') || '(root)'}: ${i.message}` : 'invalid'}`);
    }
    const req = parsed.data;
    const records: MovementRecord[] = [];
    let lastSeq = req.afterSeq;
    // Scan in sequence order so the cursor is exact even when times are out of order.
    for (let i = req.afterSeq; i < this.entries.length; i++) {
      const e = this.entries[i]!;
      lastSeq = e.seq;
      if (e.record.time >= req.sinceTime) {
        records.push(e.record);
        if (records.length >= req.limit) break;
      }
    }
    if (lastSeq < req.afterSeq) lastSeq = req.afterSeq;
    return { type: 'journal.records', v: 1, records, lastSeq, more: lastSeq < this.entries.length };
  }

  /**
   * Ask a peer (through `fetch`, e.g. JournalGapFill.fetcher(peer) or the control protocol) for
   * everything from our newest record time minus `slackMs` (default: the journal's gap slack,
   * which covers clock differences between hosts) on, page by page, and append what is new.
   * Validates every answer; a bad answer throws and keeps what was appended so far.
   */
  async fillGaps(fetch: JournalFetchFn, opts: { slackMs?: number; maxPages?: number } = {}): Promise<FillResult> {
    const slack = opts.slackMs ?? this.gapSlackMs;
    const newest = this.newestTime;
    const sinceTime = newest === undefined ? 0 : Math.max(0, newest - slack);
    const maxPages = opts.maxPages ?? 10_000;
    let afterSeq = 0;
    const result: FillResult = { fetched: 0, added: 0, pages: 0 };
    const started = Date.now();
    while (result.pages < maxPages) {
      const raw = await fetch({ type: 'journal.fetch', v: 1, sinceTime, afterSeq, limit: 256 });
      const parsed = JournalFetchResponse.safeParse(raw);
      if (!parsed.success) {
        const i = parsed.error.issues[0];
        throw new NavigatorError('MESSAGE_INVALID', `invalid journal.fetch answer: ${i ? `${i.path.join('.') || '(root)'}: ${i.message}` : 'invalid'}`);
      }
      const res = parsed.data;
      result.pages++;
      result.fetched += res.records.length;
      result.added += await this.appendMany(res.records);
      if (!res.more || res.lastSeq <= afterSeq) break;
      afterSeq = res.lastSeq;
    }
    this.log.info({ event: 'journal-gaps-filled', sinceTime, ...result, durationMs: Date.now() - started }, 'journal gap filling done');
    return result;
  }

  private index(record: MovementRecord): JournalEntry {
    const entry: JournalEntry = { seq: this.entries.length + 1, record };
    this.entries.push(entry);
    this.byId.set(record.id, entry);
    // Records mostly arrive in time order: search from the end.
    const arr = this.byTime;
    if (arr.length === 0 || cmp(arr[arr.length - 1]!, record) <= 0) {
      arr.push(record);
    } else {
      let lo = 0;
      let hi = arr.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (cmp(arr[mid]!, record) <= 0) lo = mid + 1;
        else hi = mid;
      }
      arr.splice(lo, 0, record);
    }
    return entry;
  }
}

function parseCursor(before: string | number | undefined): OrderKey | undefined {
  if (before === undefined || before === '') return undefined;
  if (typeof before === 'number') {
    if (!Number.isFinite(before)) throw new NavigatorError('BAD_REQUEST', 'before: not a number');
    return { time: before, id: '' };
  }
  const m = /^(\d{1,16})(?:_([A-Za-z0-9._:-]{1,128}))?$/.exec(before);
  if (!m) throw new NavigatorError('BAD_REQUEST', `before: expected a cursor from nextBefore or a time in ms, got ${JSON.stringify(before.slice(0, 40))}`);
  return { time: Number(m[1]), id: m[2] ?? '' };
}

/**
 * Parse journal file text. Only the last line may be damaged (a crash during the append): it is
 * reported as torn with the byte length to keep. A bad line anywhere else means the file was
 * changed by something else: refuse, naming the line.
 */
export function parseJournalText(text: string, path = 'journal'): { records: MovementRecord[]; keepBytes: number; tornLine?: number } {
  const records: MovementRecord[] = [];
  if (text.length === 0) return { records, keepBytes: 0 };
  const lines = text.split('\n');
  // text ending in '\n' gives a final empty element; anything else there is an unfinished write.
  const endsClean = lines[lines.length - 1] === '';
  if (endsClean) lines.pop();
  let offset = 0;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    const lineBytes = Buffer.byteLength(line, 'utf8');
    const isLast = i === lines.length - 1;
    const record = parseLine(line);
    if (!record || (isLast && !endsClean)) {
      if (isLast) return { records, keepBytes: offset, tornLine: i + 1 };
      throw new NavigatorError('JOURNAL_CORRUPT', `journal ${path} is damaged at line ${i + 1} of ${lines.length}: not a valid movement record; refusing to open it (move the file away to start a new journal)`, {
        path,
        line: i + 1,
      });
    }
    records.push(record);
    offset += lineBytes + 1;
  }
  return { records, keepBytes: offset };
}

function parseLine(line: string): MovementRecord | undefined {
  if (line.trim() === '') return undefined;
  try {
    const r = MovementRecord.safeParse(JSON.parse(line));
    return r.success ? r.data : undefined;
  } catch {
    return undefined;
  }
}
