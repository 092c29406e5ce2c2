import { noColour, type Painter } from './colour.ts';

// Progress of long operations (bootstrap, image shipping, drain) for human output.
// The formatting functions are pure; ProgressBoard draws them: on a terminal it redraws one
// line per operation in place (at most every redrawMs), elsewhere (a pipe, a log file, a
// systemd journal) it writes plain lines only when something changes or every logEveryMs.

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** 512 B, 12.3 MiB, 512 MiB, 1.0 GiB (binary units; "?" for a value that is not a size). */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes) || bytes < 0) return '?';
  if (bytes < 1024) return `${Math.round(bytes)} B`;
  let v = bytes;
  let u = 0;
  while (v >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  // Rounding 1023.96 KiB to one decimal gives "1024.0": show it in the next unit.
  if (v >= 1023.95 && u < UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v < 100 ? v.toFixed(1) : Math.round(v).toString()} ${UNITS[u]}`;
}

/** 48.0 MiB/s; "-- B/s" when the rate is not known (before sending starts). */
export function formatRate(bytesPerSec: number | null | undefined): string {
  if (bytesPerSec === null || bytesPerSec === undefined || !Number.isFinite(bytesPerSec) || bytesPerSec < 0) return '-- B/s';
  return `${formatBytes(bytesPerSec)}/s`;
}

/** 42s, 3m05s, 1h02m, >99h; "--" when not known (no rate yet, or stalled). */
export function formatEta(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms) || ms < 0) return '--';
  const s = Math.ceil(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  const h = Math.floor(s / 3600);
  if (h > 99) return '>99h';
  return `${h}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** Elapsed time: 0.4s, 12s, 3m05s. */
export function formatElapsed(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '--';
  return ms < 10_000 ? `${(ms / 1000).toFixed(1)}s` : formatEta(ms);
}

/** done/total as a fraction in [0, 1]; undefined when the total is not known. */
export function fractionOf(done: number | undefined, total: number | undefined): number | undefined {
  if (done === undefined || total === undefined || !Number.isFinite(done) || !Number.isFinite(total) || total < 0) return undefined;
  if (total === 0) return done >= 0 ? 1 : undefined;
  return Math.min(1, Math.max(0, done / total));
}

/** " 42%"; "  ?%" when unknown (always 4 columns so lines do not jitter). */
export function formatPercent(fraction: number | undefined): string {
  return fraction === undefined ? '  ?%' : `${Math.floor(fraction * 100)}%`.padStart(4);
}

const EIGHTHS = ['', '▏', '▎', '▍', '▌', '▋', '▊', '▉'];

/**
 * A bar of exactly `width` columns. Unicode: full blocks with an eighth-block edge on a light
 * shade; ascii (pipes, dumb terminals): '#' on '.'. An unknown fraction draws an empty bar.
 */
export function formatBar(fraction: number | undefined, width: number, ascii = false): string {
  const w = Math.max(0, Math.floor(width));
  const f = fraction === undefined || !Number.isFinite(fraction) ? 0 : Math.min(1, Math.max(0, fraction));
  if (ascii) {
    const full = Math.floor(f * w);
    return '#'.repeat(full) + '.'.repeat(w - full);
  }
  const eighths = Math.floor(f * w * 8);
  const full = Math.floor(eighths / 8);
  const edge = full < w ? EIGHTHS[eighths % 8]! : '';
  return '█'.repeat(full) + edge + '░'.repeat(w - full - (edge ? 1 : 0));
}

/** A bar from formatBar in colour: done part green, the rest dim (all red when failed). */
export function paintBar(bar: string, paint: Painter, failed = false): string {
  if (failed) return paint('red', bar);
  // The done part is the run of '█' / '#' plus an eighth-block edge.
  const done = /^[█#]*[▏▎▍▌▋▊▉]?/u.exec(bar)![0];
  return paint('green', done) + paint('dim', bar.slice(done.length));
}

/** One operation on the board. */
export interface ProgressItem {
  /** What is being done: "ship zabbix → ws-2", "drain ws-1". */
  label: string;
  /** Current step in words: "sending (delta)", "switchover of zabbix". */
  phase?: string;
  /** Progress so far and the total, in `unit`s; no total: no bar, only the phase. */
  done?: number;
  total?: number;
  /** bytes: sizes, rate and ETA; count: "1/3". */
  unit?: 'bytes' | 'count';
  /** Bytes per second (unit bytes). */
  rateBps?: number;
  /** Milliseconds left; undefined: unknown. */
  etaMs?: number;
  /** Shown as elapsed time when there is no total (an operation of unknown length). */
  startedAt?: number;
  /** Draw in red: the operation failed. */
  failed?: boolean;
}

export interface LineOptions {
  /** Columns available; the line never exceeds columns - 1 (a full line would wrap on some terminals). */
  columns: number;
  ascii?: boolean;
  paint?: Painter;
  now?: number;
}

const MIN_BAR = 10;
const MAX_BAR = 30;

function amounts(item: ProgressItem, now: number, padPercent = false): string[] {
  const parts: string[] = [];
  const f = fractionOf(item.done, item.total);
  if (item.total !== undefined && item.done !== undefined) {
    // On a live line the percentage keeps 4 columns so the figures after it do not jump.
    parts.push(padPercent ? formatPercent(f) : formatPercent(f).trim());
    if ((item.unit ?? 'bytes') === 'bytes') {
      parts.push(`${formatBytes(item.done)}/${formatBytes(item.total)}`);
      if (item.rateBps !== undefined) parts.push(formatRate(item.rateBps));
      if (item.rateBps !== undefined || item.etaMs !== undefined) parts.push(`ETA ${formatEta(item.etaMs)}`);
    } else {
      parts.push(`${item.done}/${item.total}`);
      if (item.startedAt !== undefined) parts.push(formatElapsed(now - item.startedAt));
    }
  } else if (item.startedAt !== undefined) {
    parts.push(formatElapsed(now - item.startedAt));
  }
  return parts;
}

function truncate(text: string, width: number): string {
  const chars = [...text];
  if (chars.length <= width) return text;
  return width <= 1 ? chars.slice(0, Math.max(0, width)).join('') : `${chars.slice(0, width - 1).join('')}…`;
}

/**
 * The live line of one operation on a terminal:
 * `ship zabbix → ws-2  sending (delta)  [██████░░░░]  45%  1.2 GiB/2.7 GiB  48.0 MiB/s  ETA 32s`.
 * The bar shrinks (down to 10 columns, then goes) and the label is cut with "…" to fit.
 */
export function formatProgressLine(item: ProgressItem, opts: LineOptions): string {
  const paint = opts.paint ?? noColour;
  const limit = Math.max(1, Math.floor(opts.columns) - 1);
  const head = item.phase ? `${item.label}  ${item.phase}` : item.label;
  const tail = amounts(item, opts.now ?? Date.now(), true);
  const hasBar = item.total !== undefined && item.done !== undefined;
  const tailText = tail.join('  ');
  // Room for the bar once head and tail are in: "head  [bar] tail" (the tail starts with the padded percentage).
  const spare = limit - [...head].length - [...tailText].length - 5;
  const barWidth = hasBar ? Math.min(MAX_BAR, spare) : 0;
  const f = fractionOf(item.done, item.total);
  if (hasBar && barWidth >= MIN_BAR) {
    const barStyled = paintBar(formatBar(f, barWidth, opts.ascii), paint, item.failed);
    return `${paintHead(paint, item, head)}  [${barStyled}] ${tailText}`.trimEnd();
  }
  // No room for a bar (or nothing to measure): head and amounts, the head cut to fit.
  const shortTail = tailText.trimStart();
  // A terminal too narrow even for the figures: one cut line (a wrapped line would break the redraw).
  if ([...shortTail].length + 3 > limit) return paint(item.failed ? 'red' : undefined, truncate(`${head}  ${shortTail}`, limit));
  const headRoom = limit - [...shortTail].length - (shortTail ? 2 : 0);
  const cut = truncate(head, Math.max(1, headRoom));
  return shortTail ? `${paintHead(paint, item, cut)}  ${shortTail}` : paintHead(paint, item, truncate(head, limit));
}

function paintHead(paint: Painter, item: ProgressItem, head: string): string {
  if (item.failed) return paint('red', head);
  // Label bold, phase as it is (the label may have been cut into the phase).
  const label = [...item.label].length <= [...head].length ? item.label : head;
  return paint('bold', label) + head.slice(label.length);
}

/** The plain log line of one operation (no bar, no escape codes): `ship zabbix → ws-2: sending (delta) 45% 1.2 GiB/2.7 GiB 48.0 MiB/s ETA 32s`. */
export function formatProgressLog(item: ProgressItem, now = Date.now()): string {
  const tail = amounts(item, now).join(' ');
  return `${item.label}:${item.phase ? ` ${item.phase}` : ''}${tail ? ` ${tail}` : ''}${item.failed ? ' (failed)' : ''}`;
}

/** What ProgressBoard writes to: process.stdout or a test double. */
export interface ProgressStream {
  write(chunk: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

export interface ProgressBoardOptions {
  stream?: ProgressStream;
  /** Redraw in place (default: stream.isTTY). */
  tty?: boolean;
  paint?: Painter;
  /** Least time between two redraws on a terminal (default 250 ms: at most 4 a second). */
  redrawMs?: number;
  /** Without a terminal: repeat an unchanged operation's line this often (default 10 s). */
  logEveryMs?: number;
  ascii?: boolean;
  now?: () => number;
}

/**
 * Live progress of several operations, one line each, below the permanent output (note()).
 * On a terminal the lines are redrawn in place; without one, plain lines are appended when an
 * operation starts, changes phase, or has not been reported for logEveryMs.
 */
export class ProgressBoard {
  private readonly stream: ProgressStream;
  private readonly tty: boolean;
  private readonly paint: Painter;
  private readonly redrawMs: number;
  private readonly logEveryMs: number;
  private readonly ascii: boolean;
  private readonly now: () => number;
  private readonly items = new Map<string, ProgressItem>();
  private readonly logged = new Map<string, { at: number; head: string }>();
  private drawn = 0;
  private lastDraw = Number.NEGATIVE_INFINITY;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(opts: ProgressBoardOptions = {}) {
    this.stream = opts.stream ?? process.stdout;
    this.tty = opts.tty ?? this.stream.isTTY === true;
    this.paint = opts.paint ?? noColour;
    this.redrawMs = opts.redrawMs ?? 250;
    this.logEveryMs = opts.logEveryMs ?? 10_000;
    this.ascii = opts.ascii ?? false;
    this.now = opts.now ?? Date.now;
  }

  /** Add or update an operation. */
  set(key: string, item: ProgressItem): void {
    if (this.stopped) return;
    this.items.set(key, item);
    if (this.tty) this.schedule();
    else this.logIfDue(key, item);
  }

  /** The operation is over: its live line goes (say how it ended with note()). */
  remove(key: string): void {
    if (!this.items.delete(key)) return;
    this.logged.delete(key);
    if (this.tty && !this.stopped) this.schedule();
  }

  has(key: string): boolean {
    return this.items.has(key);
  }

  keys(): string[] {
    return [...this.items.keys()];
  }

  /** A permanent line, printed above the live lines. */
  note(line: string): void {
    if (!this.tty) {
      this.stream.write(`${line}\n`);
      return;
    }
    this.stream.write(`${this.clear()}${line}\n`);
    this.drawn = 0;
    if (!this.stopped) this.draw();
  }

  /** Final redraw; the last live lines stay on screen. Idempotent. */
  stop(): void {
    if (this.stopped) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.tty && (this.items.size > 0 || this.drawn > 0)) this.draw();
    this.stopped = true;
    // What is on screen now stays: later notes go below it.
    this.drawn = 0;
  }

  /** Remove the live lines (before printing a result that replaces them). */
  clearLines(): void {
    if (this.tty && this.drawn > 0) this.stream.write(this.clear());
    this.drawn = 0;
    this.items.clear();
  }

  private clear(): string {
    // Cursor up over the lines drawn last time, to column 0, erase to the end of the screen.
    return this.drawn > 0 ? `\u001b[${this.drawn}A\r\u001b[J` : '';
  }

  private schedule(): void {
    const wait = this.lastDraw + this.redrawMs - this.now();
    if (wait <= 0) {
      this.draw();
      return;
    }
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (!this.stopped) this.draw();
    }, wait);
    // A pending redraw must not keep a finished command alive.
    this.timer.unref();
  }

  private draw(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const now = this.now();
    const columns = this.stream.columns && this.stream.columns > 0 ? this.stream.columns : 80;
    const lines = [...this.items.values()].map((item) => formatProgressLine(item, { columns, ascii: this.ascii, paint: this.paint, now }));
    this.stream.write(this.clear() + lines.map((l) => `${l}\n`).join(''));
    this.drawn = lines.length;
    this.lastDraw = now;
  }

  private logIfDue(key: string, item: ProgressItem): void {
    const now = this.now();
    const head = `${item.label}\u0000${item.phase ?? ''}\u0000${item.failed ? 1 : 0}`;
    const last = this.logged.get(key);
    if (last && last.head === head && now - last.at < this.logEveryMs) return;
    this.logged.set(key, { at: now, head });
    this.stream.write(`${formatProgressLog(item, now)}\n`);
  }
}
