import { Transform, type TransformCallback } from 'node:stream';
import { NavigatorError } from '../../shared/errors.ts';

// Sits between mysqldump's stdout and the loading mysql client. It counts the bytes, keeps the
// tail so the caller can check the "-- Dump completed" trailer (a dump cut short has none), and
// makes sure the load can only touch the staging schema:
//  - a dump taken without --databases has no USE or CREATE DATABASE; a USE line fails the sync;
//  - mysqldump writes `ALTER DATABASE \`db\`` around routines whose collation differs from the
//    database's, and definitions (triggers, routines, events) keep the qualifiers their author
//    typed: references to the source database (`db`.t or db.t) are pointed at the staging
//    schema, and pointed back when the definitions are re-created in the live schema.
// Data lines (rows, INSERT statements) are passed through untouched and uncopied: a row value
// that happens to contain `db`. is data, not a reference.

const LF = 0x0a;
const OPEN_PAREN = 0x28;
const INSERT = Buffer.from('INSERT INTO ', 'latin1');
const TRAILER = '-- Dump completed';
/** Longest non-data line held back while waiting for its end; longer ones pass unchanged. */
const MAX_CARRY = 1 << 20;
const TAIL_BYTES = 256;

export interface DumpGuardStats {
  bytes: number;
  /** Lines that were rewritten to the staging schema. */
  rewrittenLines: number;
}

export class DumpGuard extends Transform {
  private readonly fromAlter: string;
  private readonly toAlter: string;
  /** A partial non-data line carried to the next chunk. */
  private carry: Buffer | undefined;
  /** The current partial line passes through as it comes (a data line, or an oversized one). */
  private inDataLine = false;
  private tail = Buffer.alloc(0);
  readonly stats: DumpGuardStats = { bytes: 0, rewrittenLines: 0 };

  constructor(
    readonly sourceDb: string,
    readonly stagingDb: string,
  ) {
    super();
    this.fromAlter = `ALTER DATABASE \`${sourceDb}\``;
    this.toAlter = `ALTER DATABASE \`${stagingDb}\``;
  }

  /** Did the stream end with mysqldump's completion trailer? */
  get complete(): boolean {
    const text = this.tail.toString('latin1').trimEnd();
    const lastLine = text.slice(text.lastIndexOf('\n') + 1);
    return lastLine.startsWith(TRAILER);
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.stats.bytes += chunk.length;
    this.remember(chunk);
    let buf = chunk;
    if (this.carry) {
      buf = Buffer.concat([this.carry, chunk]);
      this.carry = undefined;
    }
    const out: Buffer[] = [];
    let runStart = 0; // start of the current run of bytes passed unchanged
    let pos = 0;
    try {
      while (pos < buf.length) {
        const nl = buf.indexOf(LF, pos);
        const end = nl === -1 ? buf.length : nl + 1;
        if (this.inDataLine) {
          if (nl !== -1) this.inDataLine = false;
          pos = end;
          continue;
        }
        const kind = classify(buf, pos, end);
        if (kind === 'data') {
          if (nl === -1) this.inDataLine = true;
          pos = end;
          continue;
        }
        if (nl === -1 && buf.length - pos < MAX_CARRY) {
          // Partial definition line: hold it back until its end arrives.
          if (pos > runStart) out.push(buf.subarray(runStart, pos));
          this.carry = Buffer.from(buf.subarray(pos));
          runStart = buf.length;
          break;
        }
        // A whole definition line (or an oversized partial one: the rest then passes unchanged).
        if (nl === -1) this.inDataLine = true;
        const rewritten = this.rewrite(buf.subarray(pos, end));
        if (rewritten) {
          if (pos > runStart) out.push(buf.subarray(runStart, pos));
          out.push(rewritten);
          runStart = end;
        }
        pos = end;
      }
    } catch (err) {
      done(err as Error);
      return;
    }
    if (runStart < buf.length) out.push(buf.subarray(runStart));
    if (out.length === 1) this.push(out[0]);
    else if (out.length > 1) this.push(Buffer.concat(out));
    done();
  }

  override _flush(done: TransformCallback): void {
    try {
      if (this.carry) {
        const line = this.carry;
        this.carry = undefined;
        this.push(this.rewrite(line) ?? line);
      }
      done();
    } catch (err) {
      done(err as Error);
    }
  }

  private remember(chunk: Buffer): void {
    if (chunk.length >= TAIL_BYTES) this.tail = Buffer.from(chunk.subarray(chunk.length - TAIL_BYTES));
    else {
      const joined = Buffer.concat([this.tail, chunk]);
      this.tail = joined.length > TAIL_BYTES ? joined.subarray(joined.length - TAIL_BYTES) : joined;
    }
  }

  /** The line rewritten for the staging schema, or undefined when it stays as it is. */
  private rewrite(line: Buffer): Buffer | undefined {
    if (line[0] === 0x2d && line[1] === 0x2d) return undefined; // "--" comment
    const text = line.toString('latin1');
    if (/^\s*USE\s/i.test(text)) {
      throw new NavigatorError('SYNC_FAILED', 'the dump switches database (USE statement); refusing to load it outside the staging schema');
    }
    let next = text;
    if (next.startsWith(this.fromAlter)) next = this.toAlter + next.slice(this.fromAlter.length);
    if (next.includes(this.sourceDb)) next = requalify(next, this.sourceDb, this.stagingDb);
    if (next === text) return undefined;
    this.stats.rewrittenLines++;
    return Buffer.from(next, 'latin1');
  }
}

function classify(buf: Buffer, start: number, end: number): 'data' | 'other' {
  if (buf[start] === OPEN_PAREN) return 'data';
  if (end - start >= INSERT.length && buf.compare(INSERT, 0, INSERT.length, start, start + INSERT.length) === 0) return 'data';
  return 'other';
}

const escapeRe = (s: string) => s.replace(/[$.*+?^(){}|[\]\\]/g, '\\$&');

/**
 * Point references to schema `fromDb` at `toDb` in a definition text: `db`.x and db.x (not
 * other_db.x, not a column x.db.y). The same text may come back with requalify(to, from), so a
 * string literal that happens to match makes the round trip unchanged.
 */
export function requalify(sql: string, fromDb: string, toDb: string): string {
  const re = new RegExp(`(?<![\\w$.\`])(\`${escapeRe(fromDb)}\`|${escapeRe(fromDb)})\\.`, 'g');
  return sql.replace(re, (m) => (m.startsWith('`') ? `\`${toDb}\`.` : `${toDb}.`));
}
