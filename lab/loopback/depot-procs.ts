import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { writeSwarmKey } from '../../depot/swarm-key.ts';
import { DEPOT_ENV, DEPOT_NODE_FLAGS } from '../../depot/runtime-flags.ts';
import type { DepotsResponse } from '../../shared/api/depots.ts';

// Real depot processes on loopback for integration tests and bench/gossip.ts:
// `node bin/navigator.mjs depot run` with mDNS off, TCP and HTTP on free ports, a temp data dir.

const ROOT = resolve(import.meta.dirname, '../..');

export interface DepotProc {
  name: string;
  proc: ResultPromise;
  pid: number;
  peerId: string;
  /** libp2p address with /p2p/ID, to bootstrap others. */
  addr: string;
  api: string;
  startedAt: number;
  /** Every stdout line (JSON log events). */
  lines: string[];
  exited: boolean;
}

export class DepotCluster {
  readonly procs: DepotProc[] = [];
  private dirs: string[] = [];

  private constructor(readonly dir: string) {}

  static async create(prefix = 'nav-depots-'): Promise<DepotCluster> {
    return new DepotCluster(await mkdtemp(join(tmpdir(), prefix)));
  }

  /** Write a swarm key under the cluster's dir and return its path. */
  async swarmKey(name = 'swarm.key'): Promise<string> {
    const path = join(this.dir, name);
    await writeSwarmKey(path, true);
    return path;
  }

  async start(
    name: string,
    opts: {
      swarmKey: string;
      bootstrap?: string[];
      env?: Record<string, string>;
      timeoutMs?: number;
      logLevel?: string;
      /** Node flags of the depot process; default: those of a deployed depot (depot/runtime-flags.ts). */
      nodeArgs?: readonly string[];
    },
  ): Promise<DepotProc> {
    const dataDir = join(this.dir, name);
    this.dirs.push(dataDir);
    const args = [
      ...(opts.nodeArgs ?? DEPOT_NODE_FLAGS),
      join(ROOT, 'bin/navigator.mjs'),
      'depot',
      'run',
      '--name', name,
      '--data-dir', dataDir,
      '--listen', '/ip4/127.0.0.1/tcp/0',
      '--swarm-key', opts.swarmKey,
      '--no-mdns',
      '--http-host', '127.0.0.1',
      '--http-port', '0',
      '--log-level', opts.logLevel ?? 'info',
    ];
    for (const b of opts.bootstrap ?? []) args.push('--bootstrap', b);
    const proc = execa(process.execPath, args, {
      cwd: ROOT,
      reject: false,
      buffer: false,
      stdin: 'ignore',
      stdout: 'pipe',
      stderr: 'pipe',
      env: { ...DEPOT_ENV, NAVIGATOR_LOG_LEVEL: opts.logLevel ?? 'info', ...opts.env },
    });
    const lines: string[] = [];
    const stderr: string[] = [];
    let partial = '';
    const entry: Partial<DepotProc> & { lines: string[]; exited: boolean } = { name, proc, pid: proc.pid!, lines, exited: false };
    const started = new Promise<void>((resolveStarted, reject) => {
      proc.stdout!.on('data', (chunk: Buffer) => {
        const text = partial + chunk.toString('utf8');
        const parts = text.split('\n');
        partial = parts.pop() ?? '';
        for (const line of parts) {
          lines.push(line);
          if (entry.peerId === undefined && line.includes('"depot-started"')) {
            const ev = JSON.parse(line) as { peerId: string; listen: string[]; httpPort: number; time: string };
            entry.peerId = ev.peerId;
            entry.addr = ev.listen[0]!;
            entry.api = `http://127.0.0.1:${ev.httpPort}`;
            entry.startedAt = Date.parse(ev.time);
            resolveStarted();
          }
        }
      });
      proc.stderr!.on('data', (c: Buffer) => stderr.push(c.toString('utf8')));
      void proc.then((r) => {
        entry.exited = true;
        reject(new Error(`depot ${name} exited (${r.exitCode ?? r.signal}) before it started: ${stderr.join('').slice(0, 2000)}`));
      });
    });
    const timeoutMs = opts.timeoutMs ?? 30_000;
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([started, new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`depot ${name} did not start within ${timeoutMs} ms`)), timeoutMs)))]);
    } catch (err) {
      proc.kill('SIGKILL');
      throw err;
    } finally {
      clearTimeout(timer);
    }
    const d = entry as DepotProc;
    void proc.then(() => (d.exited = true));
    this.procs.push(d);
    return d;
  }

  /** Send a signal to one depot (kill -9 or a clean SIGTERM) and wait for it to exit. */
  async signal(d: DepotProc, signal: 'SIGKILL' | 'SIGTERM'): Promise<{ exitCode: number | undefined }> {
    d.proc.kill(signal);
    const r = await d.proc;
    d.exited = true;
    return { exitCode: r.exitCode };
  }

  async stopAll(): Promise<void> {
    for (const d of this.procs) if (!d.exited) d.proc.kill('SIGKILL');
    await Promise.allSettled(this.procs.map((d) => d.proc));
    await rm(this.dir, { recursive: true, force: true });
  }
}

export async function getDepots(api: string, timeoutMs = 2000): Promise<DepotsResponse> {
  const res = await fetch(`${api}/api/depots`, { signal: AbortSignal.timeout(timeoutMs) });
  if (!res.ok) throw new Error(`${api}/api/depots: HTTP ${res.status}`);
  return (await res.json()) as DepotsResponse;
}

/**
 * When depot `d` logged that `peer` entered state `to` (its own clock, ms), the first time at or
 * after `since`. Log times are taken when the depot decided, so a busy test host polling HTTP
 * does not stretch the measurement.
 */
export function transitionAt(d: DepotProc, peer: string, to: string, since = 0): number | undefined {
  for (const line of d.lines) {
    if (!line.includes('"member-transition"') || !line.includes(peer) || !line.includes(`"to":"${to}"`)) continue;
    const ev = JSON.parse(line) as { peer: string; to: string; time: string };
    const t = Date.parse(ev.time);
    if (ev.peer === peer && ev.to === to && t >= since) return t;
  }
  return undefined;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Poll `fn` every `everyMs` until it returns a value other than undefined, or time out. */
export async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs: number, everyMs = 100): Promise<T> {
  const end = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastErr ? ` (last error: ${(lastErr as Error).message})` : ''}`);
    await sleep(everyMs);
  }
}
