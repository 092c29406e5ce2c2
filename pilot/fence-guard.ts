import type { ResultPromise } from 'execa';
import { join } from 'node:path';
import { REPO_ROOT } from '../shared/repo-root.ts';
import type { Logger } from '../shared/logger.ts';

// Starts and feeds pilot/fence-guard-process.ts, the primary's dead man's switch and the only
// writer of the service address: a separate process that adds the address only while the lease
// it was given lies ahead, and drops it (retrying until it is gone, then stopping the copy's
// primary-only processes) if this process stops renewing it (hang, SIGSTOP) or dies (kill -9).
// Deadlines are absolute on CLOCK_MONOTONIC, which both processes read alike.

/** CLOCK_MONOTONIC in ms (process.hrtime): the clock the guard process compares deadlines with. */
export const monotonicMs = (): number => Number(process.hrtime.bigint() / 1_000_000n);

const GUARD = join(REPO_ROOT, 'pilot', 'fence-guard-process.ts');

export interface FenceGuardOptions {
  address: string;
  iface: string;
  netns?: string | undefined;
  logger: Logger;
  /** The guard dropped the address on its own (lease ran out first): the pilot must stop serving. */
  onFenced?: () => void;
  /** Process groups of the copy's primary-only processes (process driver): stopped by a fence. */
  primaryPgidsFile?: string | undefined;
  /**
   * After SIGTERM with a lease held, wait this long for the pilot to release the guard (a clean
   * stop hands over first) before fencing; the lease deadline and the pilot's exit still fence at
   * once. Default 0: fence at SIGTERM.
   */
  sigtermGraceMs?: number;
  /**
   * The address lives inside a QEMU guest (qemu driver with a network): the guard adds it through
   * the guest agent and fences by pausing the VM and unplugging its NIC (QMP), from the host.
   */
  guest?: { qmpSocket: string; qgaSocket: string; nic?: string } | undefined;
  /** How long the guard may take to report itself running (default 2000 ms). */
  readyTimeoutMs?: number;
}

export class FenceGuard {
  private child: ResultPromise | undefined;
  /** The running guard reported "armed"; a guard that never did protects nothing. */
  private ready = false;
  /** The guard began a fence: it adds nothing any more and exits. */
  private fenced = false;
  private nextAdd = 1;
  private readonly adds = new Map<string, (ok: boolean) => void>();
  private readonly log: Logger;

  constructor(private readonly opts: FenceGuardOptions) {
    this.log = opts.logger.child({ component: 'fence-guard' });
  }

  /** Process id of the running guard (tests, diagnostics). */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** A guard runs, reported itself ready, and has not begun a fence. */
  get armed(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.ready && !this.fenced;
  }

  /** Start the guard with `msLeft` of lease; resolves once it runs. */
  async arm(msLeft: number): Promise<void> {
    if (!this.armed) await this.prepare();
    this.lease(msLeft);
  }

  /**
   * Start the guard without a deadline, ahead of need: a standby keeps one ready so a takeover
   * does not wait for a Node process to start. Until it gets a lease it only acts if this
   * process dies, and then dropping an address we do not hold is harmless.
   */
  async prepare(): Promise<void> {
    // execa is imported here, not at load: only a pilot that may hold a service address needs it.
    // Before the check, so that the check and the spawn happen without a wait between them.
    const { execa } = await import('execa');
    if (this.armed) return;
    const config = JSON.stringify({
      address: this.opts.address,
      iface: this.opts.iface,
      ...(this.opts.netns ? { netns: this.opts.netns } : {}),
      ...(this.opts.primaryPgidsFile ? { primaryPgidsFile: this.opts.primaryPgidsFile } : {}),
      ...(this.opts.sigtermGraceMs ? { sigtermGraceMs: this.opts.sigtermGraceMs } : {}),
      ...(this.opts.guest ? { guest: this.opts.guest } : {}),
    });
    // process.execPath is the Node 22 running the depot; the guard needs no tsx (type stripping).
    const child = execa(process.execPath, ['--no-warnings', GUARD, config], {
      stdin: 'pipe',
      stdout: 'pipe',
      stderr: 'pipe',
      reject: false,
      // Own process group: a signal aimed at the depot's group does not take the guard with it.
      detached: true,
      cleanup: false,
    });
    this.child = child;
    this.ready = false;
    this.fenced = false;
    child.stdout?.on('data', (chunk: Buffer) => {
      for (const line of chunk.toString().split('\n').filter(Boolean)) {
        this.log.info({ event: 'fence-guard', line }, 'fence guard');
        if (this.child !== child) continue;
        if (line.includes('"event":"armed"')) this.ready = true;
        if (line.includes('"event":"add"')) this.settleAdd(line);
        if (line.includes('"event":"fencing"')) this.fenced = true;
        if (line.includes('"event":"fenced"')) this.opts.onFenced?.();
      }
    });
    void child.then((r) => {
      if (this.child === child) {
        this.child = undefined;
        for (const settle of this.adds.values()) settle(false);
        this.adds.clear();
      }
      if (r.exitCode !== 0) this.log.error({ event: 'fence-guard-exit', exitCode: r.exitCode, stderr: String(r.stderr).slice(0, 500) }, 'fence guard ended');
    });
    await new Promise<void>((resolve) => {
      const onData = (chunk: Buffer) => {
        if (chunk.toString().includes('"armed"')) {
          child.stdout?.off('data', onData);
          resolve();
        }
      };
      child.stdout?.on('data', onData);
      setTimeout(resolve, this.opts.readyTimeoutMs ?? 2000).unref();
    });
    if (!this.ready) this.log.error({ event: 'fence-guard-not-ready', timeoutMs: this.opts.readyTimeoutMs ?? 2000 }, 'fence guard did not report itself running');
  }

  /** The lease runs `msLeft` more ms from now: sent as an absolute CLOCK_MONOTONIC deadline. */
  lease(msLeft: number): void {
    this.child?.stdin?.write(`deadline ${monotonicMs() + Math.max(0, Math.floor(msLeft))}\n`);
  }

  /** Ask the guard to add the service address; false when it refuses (no lease, fencing) or is gone. */
  add(timeoutMs = 5000): Promise<boolean> {
    const child = this.child;
    if (!child || !this.armed) return Promise.resolve(false);
    const id = String(this.nextAdd++);
    return new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => settle(false), timeoutMs);
      const settle = (ok: boolean) => {
        clearTimeout(timer);
        this.adds.delete(id);
        resolve(ok);
      };
      this.adds.set(id, settle);
      child.stdin?.write(`add ${id}\n`);
    });
  }

  private settleAdd(line: string): void {
    try {
      const r = JSON.parse(line) as { id?: string; ok?: boolean };
      if (r.id) this.adds.get(r.id)?.(r.ok === true);
    } catch {
      // not a line of ours
    }
  }

  /**
   * Ask the guard to fence now (the pilot could not drop the address itself: a guest that does
   * not answer its agent) and wait for it to finish; resolves false if it did not within `timeoutMs`.
   */
  async fenceNow(timeoutMs = 30_000): Promise<boolean> {
    const child = this.child;
    if (!child) return false;
    this.child = undefined;
    this.ready = false;
    for (const settle of this.adds.values()) settle(false);
    child.stdin?.write('fence\n');
    child.stdin?.end();
    await Promise.race([child, new Promise((r) => setTimeout(r, timeoutMs))]);
    return child.exitCode !== null;
  }

  /** Clean demotion: the pilot drops the address itself; the guard just goes away. */
  async release(): Promise<void> {
    const child = this.child;
    if (!child) return;
    this.child = undefined;
    this.ready = false;
    for (const settle of this.adds.values()) settle(false);
    const fencing = this.fenced;
    child.stdin?.write('release\n');
    child.stdin?.end();
    // A fence under way (retrying the delete, stopping primary-only processes) is let finish.
    await Promise.race([child, new Promise((r) => setTimeout(r, fencing ? 30_000 : 2000))]);
    if (child.exitCode === null) child.kill('SIGKILL');
  }
}
