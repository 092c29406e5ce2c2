import type { Lab, LabProcess } from './lab.ts';

// The writer of lab/db-writer-main.ts as a test holds it: its process in a lab namespace and the
// outcome of every write, collected as they come.

export interface WriteResult {
  seq: number;
  start: number;
  end: number;
  ok: boolean;
  /** Acknowledged writes: who committed it, in which term, when (the front's clock after COMMIT). */
  host?: string;
  serverId?: number;
  term?: number;
  committedMs?: number;
  error?: string;
}

export class DbWriter {
  readonly results: WriteResult[] = [];
  private constructor(readonly proc: LabProcess) {
    proc.onLine((line, stream) => {
      if (stream !== 'stdout' || !line.startsWith('{')) return;
      const msg = JSON.parse(line) as { type: string } & WriteResult;
      if (msg.type !== 'write') return;
      const { type: _t, ...r } = msg;
      this.results.push(r);
    });
  }

  static async start(lab: Lab, opts: { target: string; port: number; intervalMs: number; timeoutMs?: number; host?: string }): Promise<DbWriter> {
    const proc = lab.spawnNode(opts.host ?? 'client', 'lab/db-writer-main.ts', [
      '--target', opts.target, '--port', String(opts.port), '--interval', String(opts.intervalMs), '--timeout', String(opts.timeoutMs ?? 2000),
    ], { name: 'db-writer' });
    const w = new DbWriter(proc);
    await proc.waitForLine(/"type":"ready"/, 15_000);
    return w;
  }

  acked(): WriteResult[] {
    return this.results.filter((r) => r.ok);
  }

  stop(): Promise<void> {
    return this.proc.stop(5000);
  }
}
