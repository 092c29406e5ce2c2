import type { ResultPromise } from 'execa';
import { join } from 'node:path';
import { REPO_ROOT } from '../shared/repo-root.ts';
import type { Logger } from '../shared/logger.ts';

// Starts and feeds pilot/fence-guard-process.ts, the primary's dead man's switch: a separate process
// that drops the service address if this process stops renewing it (hang) or dies (kill -9).

const GUARD = join(REPO_ROOT, 'pilot', 'fence-guard-process.ts');

export interface FenceGuardOptions {
  address: string;
  iface: string;
  netns?: string | undefined;
  logger: Logger;
  /** The guard dropped the address on its own (lease ran out first): the pilot must stop serving. */
  onFenced?: () => void;
}

export class FenceGuard {
  private child: ResultPromise | undefined;
  private readonly log: Logger;

  constructor(private readonly opts: FenceGuardOptions) {
    this.log = opts.logger.child({ component: 'fence-guard' });
  }

  get armed(): boolean {
    return this.child !== undefined && this.child.exitCode === null;
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
    const config = JSON.stringify({ address: this.opts.address, iface: this.opts.iface, ...(this.opts.netns ? { netns: this.opts.netns } : {}) });
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
    child.stdout?.on('data', (chunk: Buffer) => {
      for (const line of chunk.toString().split('\n').filter(Boolean)) {
        this.log.info({ event: 'fence-guard', line }, 'fence guard');
        if (line.includes('"event":"fenced"')) this.opts.onFenced?.();
      }
    });
    void child.then((r) => {
      if (this.child === child) this.child = undefined;
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
      setTimeout(resolve, 2000).unref();
    });
  }

  lease(msLeft: number): void {
    this.child?.stdin?.write(`lease ${Math.max(0, Math.floor(msLeft))}\n`);
  }

  /** Clean demotion: the pilot drops the address itself; the guard just goes away. */
  async release(): Promise<void> {
    const child = this.child;
    if (!child) return;
    this.child = undefined;
    child.stdin?.write('release\n');
    child.stdin?.end();
    await Promise.race([child, new Promise((r) => setTimeout(r, 2000))]);
    if (child.exitCode === null) child.kill('SIGKILL');
  }
}
