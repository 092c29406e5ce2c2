import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import type { Logger } from '../../../shared/logger.ts';
import { NavigatorError, errorMessage } from '../../../shared/errors.ts';
import { driverTiming, type ContainerDriver, type ContainerStateName, type DriverContext, type ExecResult, type StopOptions, type StopResult, type VmrunSpec } from './driver.ts';
import { insideDir } from './paths.ts';

// VMware Workstation / Player through its command-line tool. vmrun's conventions: host-type and
// guest credentials come before the command (`vmrun -T ws -gu U -gp P COMMAND VMX ...`); a
// failure prints `Error: <text>` (on stdout) and exits non-zero; `list` prints
// `Total running VMs: N` then one .vmx path per line. The guest password has to travel on
// vmrun's command line (vmrun has no other way to take it), so it is added only to the one
// command that needs it and is kept out of every log line and error message.

export const GuestCredentials = z
  .object({
    user: z.string().min(1).max(256).describe('Guest OS account for runProgramInGuest'),
    password: z.string().max(1024).describe('Its password (never logged)'),
  })
  .strict();
export type GuestCredentials = z.infer<typeof GuestCredentials>;

export type ToolsState = 'running' | 'installed' | 'unknown';

export class VmrunDriver implements ContainerDriver {
  readonly kind = 'vmrun' as const;
  private readonly vmx: string;
  private readonly bin: string;
  private readonly log: Logger;

  constructor(
    private readonly spec: VmrunSpec,
    private readonly ctx: DriverContext,
  ) {
    this.vmx = insideDir(ctx.dir, spec.vmx, 'vmx');
    this.bin = ctx.vmrunPath ?? 'vmrun';
    this.log = ctx.logger.child({ component: 'vmrun', container: ctx.id });
  }

  async start(): Promise<void> {
    if ((await this.status()) === 'running') return;
    await this.run('start', [this.vmx, 'nogui']);
  }

  /** `stop soft` (guest shutdown through VMware Tools) within timeoutMs, else `stop hard`. */
  async stop(opts: StopOptions = {}): Promise<StopResult> {
    const timeoutMs = opts.timeoutMs ?? 60_000;
    if ((await this.status()) === 'stopped') return { forced: false };
    if (timeoutMs > 0) {
      try {
        await this.run('stop', [this.vmx, 'soft'], { timeoutMs });
        return { forced: false };
      } catch (err) {
        this.log.warn({ event: 'vmrun-soft-stop-failed', err: errorMessage(err) }, 'soft stop failed, powering off hard');
      }
    }
    await this.run('stop', [this.vmx, 'hard']);
    return { forced: true };
  }

  async status(): Promise<ContainerStateName> {
    const running = await this.list();
    const me = resolve(this.vmx);
    return running.some((p) => resolve(p) === me) ? 'running' : 'stopped';
  }

  /** Paths of the running VMs (`vmrun list`). */
  async list(): Promise<string[]> {
    const out = await this.run('list', []);
    return parseList(out);
  }

  /**
   * Run a program in the guest with the guest account from the credentials file. vmrun does not
   * return the program's output, only whether it exited non-zero.
   */
  async exec(cmd: string, args: string[], opts: { timeoutMs?: number } = {}): Promise<ExecResult> {
    const creds = await this.credentials();
    try {
      const stdout = await this.run('runProgramInGuest', [this.vmx, cmd, ...args], {
        timeoutMs: opts.timeoutMs,
        auth: creds,
      });
      return { exitCode: 0, stdout, stderr: '' };
    } catch (err) {
      // "Guest program exited with non-zero exit code: N" is the program's result, not a vmrun failure.
      const m = /exited with non-zero exit code:\s*(\d+)/i.exec(errorMessage(err));
      if (m) return { exitCode: Number(m[1]), stdout: '', stderr: errorMessage(err) };
      throw err;
    }
  }

  async guestAddress(): Promise<string | undefined> {
    const out = (await this.run('getGuestIPAddress', [this.vmx, '-wait'])).trim();
    if (isIP(out) === 0) {
      throw new NavigatorError('DRIVER_FAILED', `vmrun getGuestIPAddress returned no IP address for ${this.spec.vmx}: ${out.slice(0, 200)}`);
    }
    return out;
  }

  async toolsState(): Promise<ToolsState> {
    const out = (await this.run('checkToolsState', [this.vmx])).trim().toLowerCase();
    return out === 'running' || out === 'installed' ? out : 'unknown';
  }

  private async credentials(): Promise<GuestCredentials> {
    if (!this.spec.credentialsFile) {
      throw new NavigatorError('DRIVER_FAILED', `container ${this.ctx.id}: runProgramInGuest needs guest credentials; set credentialsFile in the vmrun spec`);
    }
    const path = insideDir(this.ctx.dir, this.spec.credentialsFile, 'credentialsFile');
    let raw: unknown;
    try {
      raw = parseYaml(await readFile(path, 'utf8'));
    } catch (err) {
      throw new NavigatorError('DRIVER_FAILED', `cannot read guest credentials file ${this.spec.credentialsFile}: ${(err as NodeJS.ErrnoException).code ?? 'not valid YAML'}`);
    }
    const parsed = GuestCredentials.safeParse(raw);
    if (!parsed.success) {
      // Name the fields that are wrong, never their values.
      const fields = parsed.error.issues.map((i) => i.path.join('.') || '(root)').join(', ');
      throw new NavigatorError('DRIVER_FAILED', `guest credentials file ${this.spec.credentialsFile} is invalid (fields: ${fields}); expected YAML with user and password`);
    }
    return parsed.data;
  }

  /** One vmrun call; non-zero exit or `Error:` output becomes a NavigatorError carrying vmrun's text. */
  private async run(command: string, params: string[], opts: { timeoutMs?: number; auth?: GuestCredentials } = {}): Promise<string> {
    const argv = ['-T', this.spec.hostType];
    if (opts.auth) argv.push('-gu', opts.auth.user, '-gp', opts.auth.password);
    argv.push(command, ...params);
    const timeoutMs = opts.timeoutMs ?? driverTiming(this.ctx).vmrunCommandTimeoutMs;
    const started = Date.now();
    const { execa } = await import('execa');
    const r = await execa(this.bin, argv, {
      reject: false,
      timeout: timeoutMs,
      forceKillAfterDelay: 2000,
      stdin: 'ignore',
      all: true,
    });
    const durationMs = Date.now() - started;
    const text = scrub(String(r.all ?? ''), opts.auth?.password);
    if (r.timedOut) {
      this.log.warn({ event: 'vmrun-timeout', command, durationMs }, 'vmrun timed out');
      throw new NavigatorError('TIMEOUT', `vmrun ${command} did not finish within ${timeoutMs} ms`, { command });
    }
    if (r.exitCode === undefined) {
      const code = (r.cause as NodeJS.ErrnoException | undefined)?.code ?? 'spawn failed';
      throw new NavigatorError('DRIVER_FAILED', `cannot run vmrun (${this.bin}): ${code}`, { command });
    }
    const errorLine = text.split(/\r?\n/).find((l) => l.startsWith('Error:'));
    if (r.exitCode !== 0 || errorLine) {
      const detail = (errorLine ?? text.trim()).slice(0, 1000) || `exit code ${r.exitCode}`;
      this.log.warn({ event: 'vmrun-failed', command, exitCode: r.exitCode, durationMs, detail }, 'vmrun failed');
      throw new NavigatorError('DRIVER_FAILED', `vmrun ${command} failed: ${detail}`, { command, exitCode: r.exitCode });
    }
    this.log.debug({ event: 'vmrun', command, durationMs }, 'vmrun ok');
    return String(r.stdout ?? '');
  }
}

/** `Total running VMs: N` followed by N paths. */
export function parseList(out: string): string[] {
  const lines = out.split(/\r?\n/).map((l) => l.trim()).filter(Boolean);
  const header = lines[0] ? /^Total running VMs:\s*(\d+)$/i.exec(lines[0]) : null;
  if (!header) throw new NavigatorError('DRIVER_FAILED', `unexpected vmrun list output: ${out.slice(0, 200)}`);
  return lines.slice(1);
}

function scrub(text: string, secret: string | undefined): string {
  return secret ? text.split(secret).join('[redacted]') : text;
}
