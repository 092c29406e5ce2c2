import { execa } from 'execa';
import { LoggedProcess } from '../lab/logged-process.ts';

// A long-running process the demo started (a depot): its own process group, so a Ctrl-C aimed at
// the demo's terminal does not reach it before the demo stops it in order; output goes to a log
// file and to line listeners (to wait for "depot started").

export interface SpawnOptions {
  /** Log file for stdout and stderr. */
  logPath: string;
  env: Record<string, string>;
  cwd: string;
}

export class DemoProcess extends LoggedProcess {
  constructor(label: string, argv: readonly string[], opts: SpawnOptions) {
    const child = execa(argv[0]!, argv.slice(1), {
      reject: false,
      buffer: false,
      stdin: 'ignore',
      detached: true,
      cleanup: false,
      cwd: opts.cwd,
      env: opts.env,
      extendEnv: true,
    });
    super(child, { label, logPath: opts.logPath, tailLines: 30, markStderr: false });
  }

  /** Signals go to its whole group (the depot and what it started). */
  protected override signal(signal: NodeJS.Signals): void {
    const pid = this.child.pid;
    if (!pid) return;
    try {
      process.kill(-pid, signal);
    } catch {
      // already gone
    }
  }
}
