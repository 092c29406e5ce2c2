import { mkdir, readFile, rm } from 'node:fs/promises';
import { writeFileDurable } from '../../../shared/durable-file.ts';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import type { Logger } from '../../../shared/logger.ts';
import { NavigatorError, errorMessage } from '../../../shared/errors.ts';
import { driverTiming, type ContainerDriver, type ContainerStateName, type DriverContext, type DriverTiming, type ExecResult, type ProcessSpec, type StopOptions, type StopResult } from './driver.ts';
import { insideDir } from './paths.ts';
import { createRunner, type ContainerRunner, type Launch } from '../runner.ts';
import { tcpOpen } from '../../../shared/tcp-probe.ts';
import { groupAlive, groupMembers } from './proc.ts';

// A service container made of ordinary host processes, described by container.yaml. Each start
// command runs as the leader of its own process group (setsid), so stopping the container
// signals the whole group, children included. With `netns`, every command, the health check and
// exec run through `ip netns exec NS`. The group ids are written to a file in the container
// folder so a restarted depot can still see and stop the container. How a command is launched
// (a transient systemd unit as the service user, or a child of the depot) is the runner's
// choice (../runner.ts); this file only decides what runs when.
// execa is imported where a command runs (here and in the other drivers and the image store):
// most depots host no container, and an idle depot should not hold modules it does not use.

const relPath = z.string().min(1).max(512);
const argv = z.array(z.string().max(4096)).min(1).max(256);

export const ProcessCommand = z
  .object({
    argv: argv.describe('Program and arguments; ${dir} and ${dataDir} are replaced by the container and data folders'),
    env: z.record(z.string(), z.string().max(4096)).default({}).describe('Environment of the command, besides PATH, HOME (the service user\'s) and LANG; the depot\'s own environment is never passed'),
    cwd: relPath.optional().describe('Working folder relative to the container folder (default: the container folder)'),
    wait: z.boolean().default(false).describe('A one-shot step (e.g. initialising the data folder): wait for it to exit 0 before the next command'),
  })
  .strict();
export type ProcessCommand = z.infer<typeof ProcessCommand>;

export const HealthCheck = z.union([
  z
    .object({
      tcp: z
        .object({
          host: z.string().min(1).max(255).default('127.0.0.1'),
          port: z.number().int().min(1).max(65535),
          banner: z
            .boolean()
            .default(false)
            .describe('Healthy only once the server sends its first bytes (MySQL/MariaDB, SSH): an open port alone can come before the service is ready'),
        })
        .strict(),
    })
    .strict(),
  z.object({ command: argv.describe('Healthy when it exits 0') }).strict(),
]);
export type HealthCheck = z.infer<typeof HealthCheck>;

export const ContainerManifest = z
  .object({
    name: z.string().regex(/^[a-zA-Z0-9._-]{1,64}$/).describe('Name of the container'),
    start: z.array(ProcessCommand).min(1).max(32).describe('Commands started in order; each long-running one is a process group'),
    stop: ProcessCommand.optional().describe('Graceful stop command; without it the groups get SIGTERM. SIGKILL follows after the timeout'),
    primary: z
      .array(ProcessCommand)
      .max(16)
      .default([])
      .describe('Commands run only while this copy is primary (started on promotion, stopped on demotion), e.g. zabbix_server; `wait` steps run to completion first'),
    health: HealthCheck.describe('TCP port that must accept connections, or a command that must exit 0'),
    dataDir: relPath.default('data').describe('Data folder, relative to the container folder; created at start'),
    netns: z.string().regex(/^[a-zA-Z0-9_.-]{1,64}$/).optional().describe('Run everything inside this network namespace (ip netns)'),
    address: z.string().max(64).optional().describe('Address of the service (default: the TCP health-check host)'),
    startTimeoutMs: z.number().int().positive().default(60_000).describe('Longest wait for the health check to pass at start'),
    healthTimeoutMs: z.number().int().positive().default(2000).describe('Timeout of one health check'),
  })
  .strict();
export type ContainerManifest = z.infer<typeof ContainerManifest>;
export type ContainerManifestInput = z.input<typeof ContainerManifest>;

const PIDS_FILE = '.navigator-pgids.json';
/** Process groups of the primary-only commands, kept apart so a standby's health ignores them. */
export const PRIMARY_PIDS_FILE = '.navigator-primary-pgids.json';

async function readManifest(path: string): Promise<ContainerManifest> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new NavigatorError('NOT_FOUND', `container manifest ${path} cannot be read: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (err) {
    throw new NavigatorError('BAD_REQUEST', `container manifest ${path} is not valid YAML: ${errorMessage(err)}`);
  }
  const r = ContainerManifest.safeParse(raw);
  if (!r.success) {
    const lines = r.error.issues.map((i) => `  ${i.path.join('.') || '(top level)'}: ${i.message}`);
    throw new NavigatorError('BAD_REQUEST', `invalid container manifest ${path}:\n${lines.join('\n')}`);
  }
  return r.data;
}

export class ProcessDriver implements ContainerDriver {
  readonly kind = 'process' as const;
  private manifest: ContainerManifest | undefined;
  private readonly log: Logger;
  private readonly manifestPath: string;
  private readonly timing: DriverTiming;
  private readonly runner: ContainerRunner;

  constructor(
    spec: ProcessSpec,
    private readonly ctx: DriverContext,
  ) {
    this.manifestPath = insideDir(ctx.dir, spec.manifest, 'manifest');
    this.log = ctx.logger.child({ component: 'process-driver', container: ctx.id });
    this.timing = driverTiming(ctx);
    this.runner = ctx.runner ?? createRunner({ kind: 'direct', id: ctx.id, dir: ctx.dir, logger: ctx.logger, ...(ctx.cgroup ? { cgroup: ctx.cgroup } : {}) });
  }

  async load(): Promise<ContainerManifest> {
    this.manifest ??= await readManifest(this.manifestPath);
    return this.manifest;
  }

  async start(): Promise<void> {
    const m = await this.load();
    const alive = (await this.groups()).filter(groupAlive);
    if (alive.length > 0) {
      if (await this.healthy(m)) return;
      throw new NavigatorError('CONFLICT', `container ${this.ctx.id}: processes are still running (groups ${alive.join(', ')}) but not healthy; stop it first`);
    }
    const dataDir = insideDir(this.ctx.dir, m.dataDir, 'dataDir');
    await mkdir(dataDir, { recursive: true });
    await mkdir(join(this.ctx.dir, 'logs'), { recursive: true });
    await this.runner.prepare();
    const started = Date.now();
    const groups: number[] = [];
    const spawned: { exitCode(): number | null }[] = [];
    try {
      for (const [i, c] of m.start.entries()) {
        const cmd = this.prepare(m, c, `start${i}`);
        const logPath = join(this.ctx.dir, 'logs', `start-${i}.log`);
        if (c.wait) {
          const r = await this.runner.run(cmd, { timeoutMs: m.startTimeoutMs, logPath });
          if (r.exitCode !== 0) {
            throw new NavigatorError('COMMAND_FAILED', `start step ${i} (${c.argv[0]}) exited with ${r.timedOut ? 'a timeout' : (r.exitCode ?? r.signal ?? r.spawnError ?? 'spawn failure')}: ${await tail(logPath)}`);
          }
          continue;
        }
        const child = await this.runner.spawn(cmd, logPath);
        spawned.push(child);
        groups.push(child.pid);
        await this.saveGroups(groups);
      }
      // Healthy before the deadline, or a start process died, or time is up.
      for (;;) {
        for (const [i, child] of spawned.entries()) {
          const code = child.exitCode();
          if (code !== null) {
            throw new NavigatorError('COMMAND_FAILED', `start command ${i} exited (code ${code < 0 ? 'signal' : code}) before the container became healthy: ${await tail(join(this.ctx.dir, 'logs', `start-${i}.log`))}`);
          }
        }
        if (await this.healthy(m)) break;
        if (Date.now() - started > m.startTimeoutMs) {
          throw new NavigatorError('TIMEOUT', `container ${this.ctx.id} not healthy within ${m.startTimeoutMs} ms`);
        }
        await sleep(100);
      }
    } catch (err) {
      await this.killGroups(groups, 0);
      await rm(join(this.ctx.dir, PIDS_FILE), { force: true });
      throw err;
    }
    this.log.info({ event: 'container-started', durationMs: Date.now() - started, groups }, 'process container healthy');
  }

  async stop(opts: StopOptions = {}): Promise<StopResult> {
    const timeoutMs = opts.timeoutMs ?? 30_000;
    const m = await this.load();
    const primaryGroups = (await this.groups(PRIMARY_PIDS_FILE)).filter(groupAlive);
    if (primaryGroups.length > 0) await this.killGroups(primaryGroups, Math.min(timeoutMs, this.timing.processPrimaryStopMs));
    await rm(join(this.ctx.dir, PRIMARY_PIDS_FILE), { force: true });
    const groups = (await this.groups()).filter(groupAlive);
    if (groups.length === 0) {
      await rm(join(this.ctx.dir, PIDS_FILE), { force: true });
      await this.runner.release();
      return { forced: false };
    }
    const started = Date.now();
    let forced = true;
    if (timeoutMs > 0) {
      if (m.stop) {
        const r = await this.runner.run(this.prepare(m, m.stop, 'stop'), { timeoutMs });
        if (r.exitCode !== 0) this.log.warn({ event: 'stop-command-failed', exitCode: r.exitCode, stderr: String(r.stderr ?? '').slice(0, 500) }, 'stop command failed');
        forced = !(await waitGroupsGone(groups, Math.max(0, timeoutMs - (Date.now() - started))));
      } else {
        // Repeat SIGTERM: a service still starting up may not act on the first one. (mariadbd
        // can even hang on a SIGTERM that comes after its port opens but before it is ready
        // for connections: use a `banner` health check for it. The deadline then forces.)
        for (;;) {
          await this.runner.signal(groups, 'SIGTERM');
          const left = timeoutMs - (Date.now() - started);
          const repeatMs = this.timing.processTermRepeatMs;
          if (await waitGroupsGone(groups, Math.min(repeatMs, Math.max(0, left)))) {
            forced = false;
            break;
          }
          if (left <= repeatMs) break;
        }
      }
    }
    if (forced) await this.killGroups(groups, 0);
    await rm(join(this.ctx.dir, PIDS_FILE), { force: true });
    await this.runner.release();
    this.log.info({ event: 'container-stopped', forced, durationMs: Date.now() - started }, 'process container stopped');
    return { forced };
  }

  /**
   * Primary: start the manifest's `primary` commands (each long-running one its own process
   * group). Any other role: stop them (SIGTERM, SIGKILL after containers.processPrimaryStopMs). Idempotent.
   */
  async setRole(role: 'primary' | 'standby' | 'none'): Promise<void> {
    const m = await this.load();
    const running = (await this.groups(PRIMARY_PIDS_FILE)).filter(groupAlive);
    if (role !== 'primary') {
      if (running.length > 0) {
        await this.killGroups(running, this.timing.processPrimaryStopMs);
        this.log.info({ event: 'primary-processes-stopped', groups: running }, 'primary-only processes stopped');
      }
      await rm(join(this.ctx.dir, PRIMARY_PIDS_FILE), { force: true });
      return;
    }
    if (running.length > 0 || m.primary.length === 0) return;
    await mkdir(join(this.ctx.dir, 'logs'), { recursive: true });
    // The folder was handed to the service user at start; a promotion does not walk it again.
    await this.runner.prepare({ folder: false });
    const started = Date.now();
    const groups: number[] = [];
    for (const [i, c] of m.primary.entries()) {
      const cmd = this.prepare(m, c, `primary${i}`);
      const logPath = join(this.ctx.dir, 'logs', `primary-${i}.log`);
      if (c.wait) {
        const r = await this.runner.run(cmd, { timeoutMs: m.startTimeoutMs, logPath });
        if (r.exitCode !== 0) {
          await this.killGroups(groups, 0);
          throw new NavigatorError('COMMAND_FAILED', `primary step ${i} (${c.argv[0]}) exited with ${r.timedOut ? 'a timeout' : (r.exitCode ?? r.signal ?? r.spawnError ?? 'spawn failure')}: ${await tail(logPath)}`);
        }
        continue;
      }
      let child;
      try {
        child = await this.runner.spawn(cmd, logPath);
      } catch (err) {
        await this.killGroups(groups, 0);
        throw err;
      }
      groups.push(child.pid);
      await writeFileDurable(join(this.ctx.dir, PRIMARY_PIDS_FILE), JSON.stringify(groups), { mode: 0o644 });
    }
    this.log.info({ event: 'primary-processes-started', groups, durationMs: Date.now() - started }, 'primary-only processes started');
  }

  /** stopped: no process left; running: processes up and healthy; failed: some died or unhealthy. */
  async status(): Promise<ContainerStateName> {
    const m = await this.load();
    const groups = await this.groups();
    const alive = groups.filter(groupAlive);
    if (alive.length === 0) return 'stopped';
    if (alive.length < groups.length) return 'failed';
    return (await this.healthy(m)) ? 'running' : 'failed';
  }

  async exec(cmd: string, args: string[], opts: { timeoutMs?: number } = {}): Promise<ExecResult> {
    const m = await this.load();
    const r = await this.runner.run(this.prepare(m, { argv: [cmd, ...args], env: {}, wait: true }, 'exec'), { timeoutMs: opts.timeoutMs ?? 30_000 });
    if (r.timedOut) throw new NavigatorError('TIMEOUT', `${cmd} did not finish within ${opts.timeoutMs ?? 30_000} ms`);
    if (r.exitCode === undefined) throw new NavigatorError('COMMAND_FAILED', `cannot run ${cmd}: ${r.spawnError ?? r.signal ?? 'spawn failed'}`);
    return { exitCode: r.exitCode, stdout: String(r.stdout ?? ''), stderr: String(r.stderr ?? '') };
  }

  async guestAddress(): Promise<string | undefined> {
    const m = await this.load();
    return m.address ?? ('tcp' in m.health ? m.health.tcp.host : undefined);
  }

  /** One health check, inside the namespace when there is one. */
  async healthy(m: ContainerManifest): Promise<boolean> {
    if ('tcp' in m.health) {
      const { host, port, banner } = m.health.tcp;
      if (!m.netns) return tcpOpen(host, port, m.healthTimeoutMs, banner);
      // Node cannot enter a namespace itself; bash's /dev/tcp does the connect in there.
      // The script is constant, host and port travel as positional arguments.
      const script = banner ? 'exec 3<>"/dev/tcp/$1/$2" && read -r -n 1 -t "$3" _ <&3' : 'exec 3<>"/dev/tcp/$1/$2"';
      const waitS = String(Math.max(1, Math.ceil(m.healthTimeoutMs / 1000)));
      const { execa } = await import('execa');
      const r = await execa('ip', ['netns', 'exec', m.netns, 'bash', '-c', script, 'health', host, String(port), waitS], {
        reject: false,
        timeout: m.healthTimeoutMs,
        stdin: 'ignore',
      });
      return r.exitCode === 0;
    }
    const r = await this.runner.run(this.prepare(m, { argv: m.health.command, env: {}, wait: true }, 'health'), { timeoutMs: m.healthTimeoutMs });
    return r.exitCode === 0;
  }

  /** What one manifest command runs: ${dir}/${dataDir} replaced, inside the netns when there is one. */
  private prepare(m: ContainerManifest, c: ProcessCommand, step: string): Launch {
    const dataDir = insideDir(this.ctx.dir, m.dataDir, 'dataDir');
    const sub = (s: string) => s.replaceAll('${dir}', this.ctx.dir).replaceAll('${dataDir}', dataDir);
    const full = c.argv.map(sub);
    if (m.netns) full.unshift('ip', 'netns', 'exec', m.netns);
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(c.env)) env[k] = sub(v);
    return { step, file: full[0]!, args: full.slice(1), cwd: c.cwd ? insideDir(this.ctx.dir, c.cwd, 'cwd') : this.ctx.dir, env };
  }

  private async groups(file = PIDS_FILE): Promise<number[]> {
    const text = await readFile(join(this.ctx.dir, file), 'utf8').catch(() => '');
    if (!text) return [];
    try {
      const v = JSON.parse(text) as unknown;
      return Array.isArray(v) ? v.filter((n): n is number => Number.isInteger(n) && n > 1) : [];
    } catch {
      return [];
    }
  }

  private async saveGroups(groups: number[]): Promise<void> {
    await writeFileDurable(join(this.ctx.dir, PIDS_FILE), JSON.stringify(groups), { mode: 0o644 });
  }

  private async killGroups(groups: number[], graceMs: number): Promise<void> {
    if (graceMs > 0) {
      await this.runner.signal(groups, 'SIGTERM');
      if (await waitGroupsGone(groups, graceMs)) return;
    }
    await this.runner.signal(groups, 'SIGKILL');
    if (!(await waitGroupsGone(groups, 5000))) {
      throw new NavigatorError('DRIVER_FAILED', `container ${this.ctx.id}: processes of groups ${groups.join(', ')} survived SIGKILL`);
    }
  }
}

async function waitGroupsGone(groups: number[], timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!groups.some((g) => groupMembers(g).length > 0)) return true;
    if (Date.now() >= deadline) return false;
    await sleep(50);
  }
}

async function tail(path: string): Promise<string> {
  const text = await readFile(path, 'utf8').catch(() => '');
  return text.split('\n').filter(Boolean).slice(-5).join(' | ').slice(-1000);
}
