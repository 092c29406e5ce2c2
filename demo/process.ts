import { createWriteStream, type WriteStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { execa, type ResultPromise } from 'execa';

// A long-running process the demo started (a depot): its own process group, so a Ctrl-C aimed at
// the demo's terminal does not reach it before the demo stops it in order; output goes to a log
// file and to line listeners (to wait for "depot started").

type LineListener = (line: string) => void;

export interface SpawnOptions {
  /** Log file for stdout and stderr. */
  logPath: string;
  env: Record<string, string>;
  cwd: string;
}

export class DemoProcess {
  readonly exited: Promise<void>;
  private readonly child: ResultPromise;
  private readonly listeners = new Set<LineListener>();
  private readonly log: WriteStream;
  private readonly tail: string[] = [];
  private done = false;

  constructor(readonly label: string, argv: readonly string[], opts: SpawnOptions) {
    this.log = createWriteStream(opts.logPath, { flags: 'a' });
    this.child = execa(argv[0]!, argv.slice(1), {
      reject: false,
      buffer: false,
      stdin: 'ignore',
      detached: true,
      cleanup: false,
      cwd: opts.cwd,
      env: opts.env,
      extendEnv: true,
    });
    for (const stream of [this.child.stdout, this.child.stderr]) {
      if (!stream) continue;
      createInterface({ input: stream, crlfDelay: Infinity }).on('line', (line) => {
        this.log.write(`${line}\n`);
        this.tail.push(line);
        if (this.tail.length > 30) this.tail.shift();
        for (const l of this.listeners) l(line);
      });
    }
    this.exited = Promise.resolve(this.child).then(
      () => undefined,
      () => undefined,
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

  lastLines(): string {
    return this.tail.join('\n');
  }

  /** Resolves with the first output line matching `re`; rejects on timeout or exit. */
  waitForLine(re: RegExp, timeoutMs: number): Promise<string> {
    return new Promise((resolve, reject) => {
      const finish = (fn: () => void) => {
        clearTimeout(timer);
        this.listeners.delete(onLine);
        fn();
      };
      const onLine = (line: string) => {
        if (re.test(line)) finish(() => resolve(line));
      };
      const timer = setTimeout(() => finish(() => reject(new Error(`${this.label}: nothing matching ${re} within ${timeoutMs} ms; last output:\n${this.lastLines()}`))), timeoutMs);
      this.listeners.add(onLine);
      void this.exited.then(() => finish(() => reject(new Error(`${this.label} exited before ${re}; last output:\n${this.lastLines()}`))));
    });
  }

  /** SIGTERM to its group, SIGKILL after `graceMs`. */
  async stop(graceMs: number): Promise<void> {
    if (this.done) return;
    signalGroup(this.child.pid, 'SIGTERM');
    const timer = setTimeout(() => signalGroup(this.child.pid, 'SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }
}

function signalGroup(pid: number | undefined, signal: NodeJS.Signals): void {
  if (!pid) return;
  try {
    process.kill(-pid, signal);
  } catch {
    // already gone
  }
}
