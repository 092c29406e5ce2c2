// The primary's dead man's switch, and the only writer of the service address. The pilot starts
// this small process before it takes the service address and feeds it, on stdin, the absolute
// deadline of its lease on the host's monotonic clock ("deadline <ms>", CLOCK_MONOTONIC, the clock
// process.hrtime reads in every process alike: a pilot frozen between computing and writing it
// cannot stretch it). The address is added only by this process ("add <id>"), and only while
// that deadline lies ahead and no fence has begun: a pilot that wakes up from a pause can never
// put back an address the guard dropped.
//
// It fences when the deadline passes (pilot hung or paused), when stdin closes (depot killed,
// even with kill -9), when asked ("fence"), or on SIGTERM while it holds a lease: it deletes the
// address and checks it is gone, again and again until it is; then it stops the copy's
// primary-only processes (their process groups, SIGTERM then SIGKILL) and runs the stop
// commands; then it exits. "release" (a clean demotion: the pilot dropped the address itself)
// makes it exit without touching anything.
//
// Runs with Node's own type stripping (no tsx, no project imports but execa) so it starts in
// tens of milliseconds. Configuration is one JSON argument:
//   {"address":"10.0.0.10/24","iface":"eth0","netns":"","primaryPgidsFile":"/…/.navigator-primary-pgids.json",
//    "stop":[["argv",...]],"checkMs":50,"retryMs":100,"primaryStopMs":5000}
import { execa } from 'execa';
import { readdir, readFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';

interface GuardConfig {
  address: string;
  iface: string;
  netns?: string;
  /** JSON array of process-group ids of the copy's primary-only processes (process driver). */
  primaryPgidsFile?: string;
  stop?: string[][];
  checkMs?: number;
  /** Pause between attempts to delete the address. */
  retryMs?: number;
  /** SIGTERM grace of the primary-only processes before SIGKILL. */
  primaryStopMs?: number;
  /** After our own SIGTERM with a lease held: wait this long for "release" before fencing (default 0). */
  sigtermGraceMs?: number;
}

const cfg = JSON.parse(process.argv[2] ?? '{}') as GuardConfig;
if (!cfg.address || !cfg.iface) {
  process.stderr.write('fence-guard: usage: fence-guard \'{"address":"IP/PREFIX","iface":"IF"}\'\n');
  process.exit(2);
}
const ip = cfg.address.split('/')[0]!;
const prefix = Number(cfg.address.split('/')[1]);

/** CLOCK_MONOTONIC in ms: the same clock in the pilot's process and here. */
const monoNow = (): number => Number(process.hrtime.bigint() / 1_000_000n);

let deadline = Number.NEGATIVE_INFINITY;
let everLeased = false;
let fencing = false;

// The depot reading our output may be gone (kill -9): a write to the closed pipe must never
// take the guard down before it has fenced.
process.stdout.on('error', () => undefined);
process.stderr.on('error', () => undefined);

function log(event: string, fields: Record<string, unknown> = {}): void {
  try {
    process.stdout.write(`${JSON.stringify({ time: Date.now(), component: 'fence-guard', event, ...fields })}\n`);
  } catch {
    // as above
  }
}

function ipArgs(args: string[]): string[] {
  return cfg.netns ? ['-n', cfg.netns, ...args] : args;
}

/**
 * Is the address on the interface? A missing interface holds nothing, nor does a network
 * namespace that no longer exists (the lab's host was torn down: retrying would spin forever).
 */
async function held(): Promise<boolean | 'unknown'> {
  const r = await execa('ip', ipArgs(['-j', 'addr', 'show', 'dev', cfg.iface]), { reject: false, timeout: 5000 });
  if (r.exitCode !== 0) return /does not exist|Cannot find device|Cannot open network namespace/i.test(r.stderr) ? false : 'unknown';
  try {
    const links = JSON.parse(r.stdout || '[]') as Array<{ addr_info?: Array<{ family?: string; local?: string; prefixlen?: number }> }>;
    return links.some((l) => (l.addr_info ?? []).some((a) => a.family === 'inet' && a.local === ip && a.prefixlen === prefix));
  } catch {
    return 'unknown';
  }
}

async function sleep(ms: number): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
}

/** Does process group `g` have a member that is not a zombie (a child of a paused depot is never reaped)? */
async function groupAlive(g: number): Promise<boolean> {
  try {
    process.kill(-g, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  for (const e of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(e)) continue;
    const stat = await readFile(`/proc/${e}/stat`, 'utf8').catch(() => '');
    // "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses, so parse after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(fields[2]) === g && fields[0] !== 'Z') return true;
  }
  return false;
}

async function anyAlive(groups: number[]): Promise<boolean> {
  for (const g of groups) if (await groupAlive(g)) return true;
  return false;
}

async function stopPrimaryProcesses(): Promise<number> {
  if (!cfg.primaryPgidsFile) return 0;
  let groups: number[] = [];
  try {
    const v = JSON.parse(await readFile(cfg.primaryPgidsFile, 'utf8')) as unknown;
    if (Array.isArray(v)) groups = v.filter((n): n is number => Number.isInteger(n) && n > 1);
  } catch {
    return 0;
  }
  const alive: number[] = [];
  for (const g of groups) if (await groupAlive(g)) alive.push(g);
  groups = alive;
  // Groups running in a container unit of their own (depot/containers/runner.ts, systemd) belong
  // to the service user: this process may not signal them, systemd may (`systemctl kill`, allowed
  // for navigator-ctr@*.service by the package's polkit rule).
  const units = new Set<string>();
  const own: number[] = [];
  for (const g of groups) {
    const unit = /\/(navigator-ctr(?:-once)?@[A-Za-z0-9_.:-]+\.service)(?:\/|$)/m.exec(await readFile(`/proc/${g}/cgroup`, 'utf8').catch(() => ''))?.[1];
    if (unit) units.add(unit);
    else own.push(g);
  }
  const signal = async (s: NodeJS.Signals) => {
    for (const g of own) {
      try {
        process.kill(-g, s);
      } catch {
        // gone already
      }
    }
    if (units.size > 0) await execa('systemctl', ['kill', '--no-ask-password', `--signal=${s}`, '--kill-who=all', ...units], { reject: false, timeout: 5000 });
  };
  await signal('SIGTERM');
  const until = monoNow() + (cfg.primaryStopMs ?? 5000);
  while ((await anyAlive(groups)) && monoNow() < until) await sleep(50);
  if (await anyAlive(groups)) await signal('SIGKILL');
  return groups.length;
}

async function fence(reason: string): Promise<void> {
  if (fencing) return;
  fencing = true;
  const started = monoNow();
  // Told to the pilot (if it still reads) so it stops asking for adds; the delete does not wait.
  log('fencing', { reason });
  // Until the address is gone: a failed `ip addr del` (busy netlink, a race with another
  // writer) is tried again, never given up on.
  let attempts = 0;
  let lastError = '';
  for (;;) {
    attempts++;
    const del = await execa('ip', ipArgs(['addr', 'del', cfg.address, 'dev', cfg.iface]), { reject: false, timeout: 5000 });
    if (del.exitCode !== 0) lastError = del.stderr;
    if ((await held()) === false) break;
    if (attempts === 1 || attempts % 50 === 0) log('address-still-held', { attempts, stderr: lastError.slice(0, 300) });
    await sleep(cfg.retryMs ?? 100);
  }
  const addressGoneMs = monoNow() - started;
  const primaryGroups = await stopPrimaryProcesses();
  for (const argv of cfg.stop ?? []) {
    const [file, ...args] = argv;
    if (file) await execa(file, args, { reject: false, timeout: 10_000 });
  }
  log('fenced', { reason, attempts, addressGoneMs, primaryGroups, durationMs: monoNow() - started });
  process.exit(0);
}

async function add(id: string): Promise<void> {
  // Checked right before the add, in the process that also deletes: no add can follow a fence.
  if (fencing || monoNow() >= deadline) {
    log('add', { id, ok: false, reason: fencing ? 'fencing' : 'no lease' });
    return;
  }
  const r = await execa('ip', ipArgs(['addr', 'add', cfg.address, 'dev', cfg.iface]), { reject: false, timeout: 5000 });
  const ok = r.exitCode === 0 || /File exists|Address already assigned/i.test(r.stderr);
  // The lease may have run out while `ip` ran: then the fence (already due) takes it away.
  if (ok && (fencing || monoNow() >= deadline)) void fence('lease expired during add');
  log('add', { id, ok, added: r.exitCode === 0, ...(ok ? {} : { reason: r.stderr.trim().slice(0, 300) }) });
}

const rl = createInterface({ input: process.stdin });
rl.on('line', (line) => {
  const [cmd, arg] = line.trim().split(/\s+/);
  if (cmd === 'deadline' && arg !== undefined && Number.isFinite(Number(arg))) {
    deadline = Number(arg);
    everLeased = true;
  } else if (cmd === 'add' && arg !== undefined) {
    void add(arg);
  } else if (cmd === 'release') {
    // A clean demotion: the pilot drops the address itself.
    if (fencing) return;
    log('released');
    process.exit(0);
  } else if (cmd === 'fence') {
    void fence('asked by pilot');
  }
});
rl.on('close', () => void fence('pilot gone (stdin closed)'));
// Stopped by the service manager: with a lease held, the address must not outlive the pilot.
// systemctl stop signals the depot and this process together (KillMode=control-group); with a
// grace the pilot may hand its service over and release us first. Its exit (stdin closed) and the
// lease deadline fence at once meanwhile, and the grace ends well before systemd's SIGKILL.
process.on('SIGTERM', () => {
  if (!everLeased) process.exit(0);
  const grace = cfg.sigtermGraceMs ?? 0;
  if (grace <= 0) return void fence('SIGTERM');
  log('sigterm', { graceMs: grace });
  setTimeout(() => void fence('SIGTERM, not released within the grace'), grace);
});

setInterval(() => {
  if (everLeased && monoNow() > deadline) void fence('lease expired without renewal');
}, cfg.checkMs ?? 50);
log('armed', { address: cfg.address, iface: cfg.iface, netns: cfg.netns ?? '', pid: process.pid });
