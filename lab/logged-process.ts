import { createWriteStream, type WriteStream } from 'node:fs';
import { createInterface } from 'node:readline';
import type { ResultPromise } from 'execa';

// A long-running child process (a depot, an echo service, a prober) whose output goes to a log
// file and to line listeners, so a caller can wait for "started" and name the last lines in an
// error. The lab's processes and the demo's depots are both this.

export type LineListener = (line: string, stream: 'stdout' | 'stderr') => void;

export interface ProcessExit {
  exitCode: number | undefined;
  signal: string | undefined;
}

export interface LoggedProcessOptions {
  /** Names the process in error messages. */
  label: string;
  /** Log file for stdout and stderr (appended to). */
  logPath: string;
  /** How many of the last lines to keep for error messages. */
  tailLines: number;
  /** Mark stderr lines in the log file with `[stderr] `. */
  markStderr: boolean;
}

export class LoggedProcess {
  readonly label: string;
  readonly exited: Promise<ProcessExit>;
  protected readonly child: ResultPromise;
  private readonly listeners = new Set<LineListener>();
  private readonly log: WriteStream;
  private readonly tail: string[] = [];
  private done = false;

  constructor(child: ResultPromise, opts: LoggedProcessOptions) {
    this.label = opts.label;
    this.child = child;
    this.log = createWriteStream(opts.logPath, { flags: 'a' });
    for (const stream of ['stdout', 'stderr'] as const) {
      const src = child[stream];
      if (!src) continue;
      createInterface({ input: src, crlfDelay: Infinity }).on('line', (line) => {
        this.log.write(stream === 'stderr' && opts.markStderr ? `[stderr] ${line}\n` : `${line}\n`);
        this.tail.push(line);
        if (this.tail.length > opts.tailLines) this.tail.shift();
        for (const l of this.listeners) l(line, stream);
      });
    }
    this.exited = Promise.resolve(child).then(
      (r) => ({ exitCode: r.exitCode, signal: r.signal }),
      (err: unknown) => ({ exitCode: undefined, signal: String((err as { signal?: string }).signal ?? 'error') }),
    ).finally(() => {
      this.done = true;
      this.log.end();
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get running(): boolean {
    return !this.done;
  }

  /** The last lines of output, for error messages. */
  lastLines(): string {
    return this.tail.join('\n');
  }

  onLine(listener: LineListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Resolves with the first line (stdout or stderr) matching `re`; rejects on timeout or exit. */
  waitForLine(re: RegExp, timeoutMs = 10_000): Promise<string> {
    return new Promise((resolveLine, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(new Error(`${this.label}: no line matching ${re} within ${timeoutMs} ms; last output:\n${this.lastLines()}`));
      }, timeoutMs);
      const off = this.onLine((line) => {
        if (re.test(line)) {
          clearTimeout(timer);
          off();
          resolveLine(line);
        }
      });
      void this.exited.then((r) => {
        clearTimeout(timer);
        off();
        reject(new Error(`${this.label} exited (code ${r.exitCode}, signal ${r.signal}) before printing ${re}; last output:\n${this.lastLines()}`));
      });
    });
  }

  kill(signal: NodeJS.Signals = 'SIGTERM'): void {
    if (!this.done) this.signal(signal);
  }

  /** SIGTERM, then SIGKILL after `graceMs`. */
  async stop(graceMs = 2000): Promise<void> {
    if (this.done) return;
    this.signal('SIGTERM');
    const timer = setTimeout(() => this.signal('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }

  /** How a signal reaches the process (a subclass may signal its whole group). */
  protected signal(signal: NodeJS.Signals): void {
    this.child.kill(signal);
  }
}
