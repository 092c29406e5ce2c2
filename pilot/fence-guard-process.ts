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
// A service packed as a QEMU guest (config "guest": the VM's QMP and guest-agent sockets): the
// address lives inside the guest. "add" runs `ip addr add` in the guest through the guest agent
// (guest-exec), with the same lease check; the fence pauses the VM (QMP `stop`: its CPUs halt, it
// answers nothing on any address and its zabbix_server writes nothing more) and then unplugs its
// NIC from the host side (QMP `set_link … off`), so a later `cont` cannot bring the stale address
// back onto the LAN before the depot has removed it. Both act from the host and need nothing of
// the guest, which is why they are the fence and an `ip addr del` in the guest is not.
//
// Runs with Node's own type stripping (no tsx, no project imports but execa) so it starts in
// tens of milliseconds. Configuration is one JSON argument:
//   {"address":"10.0.0.10/24","iface":"eth0","netns":"","primaryPgidsFile":"/…/.navigator-primary-pgids.json",
//    "stop":[["argv",...]],"checkMs":50,"retryMs":100,"primaryStopMs":5000}
import { execa } from 'execa';
import { readdir, readFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { createConnection } from 'node:net';

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
  /** The address lives in a QEMU guest: its QMP socket, guest-agent socket and NIC id (the qemu driver's lan0). */
  guest?: { qmpSocket: string; qgaSocket: string; nic?: string };
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

/**
 * One exchange with QEMU over a unix socket: QMP (greeting, qmp_capabilities) or the guest agent
 * (no greeting); runs `commands` in order and returns their "return" values. Fails on an error
 * reply, a closed socket or after `timeoutMs`.
 */
function qmpExchange(path: string, commands: Array<{ execute: string; arguments?: unknown }>, opts: { agent?: boolean; timeoutMs?: number } = {}): Promise<unknown[]> {
  return new Promise((resolve, reject) => {
    const sock = createConnection({ path });
    const results: unknown[] = [];
    const queue = opts.agent ? [...commands] : [{ execute: 'qmp_capabilities' }, ...commands];
    let buf = '';
    let greeted = opts.agent === true;
    let sent = 0;
    const timer = setTimeout(() => finish(new Error(`${path}: no answer within ${opts.timeoutMs ?? 3000} ms`)), opts.timeoutMs ?? 3000);
    const finish = (err?: Error) => {
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve(opts.agent ? results : results.slice(1));
    };
    const next = () => {
      if (sent >= queue.length) return finish();
      sock.write(`${JSON.stringify(queue[sent++])}\n`);
    };
    sock.setEncoding('utf8');
    sock.on('connect', () => {
      if (greeted) next();
    });
    sock.on('error', (e) => finish(e));
    sock.on('close', () => finish(new Error(`${path}: closed`)));
    sock.on('data', (chunk: string) => {
      buf += chunk;
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i).trim();
        buf = buf.slice(i + 1);
        if (!line) continue;
        let msg: { QMP?: unknown; return?: unknown; error?: { desc?: string }; event?: string };
        try {
          msg = JSON.parse(line);
        } catch {
          continue;
        }
        if (msg.QMP) {
          greeted = true;
          next();
        } else if (msg.error) finish(new Error(`${queue[sent - 1]?.execute}: ${msg.error.desc ?? 'error'}`));
        else if ('return' in msg) {
          results.push(msg.return);
          next();
        }
      }
    });
  });
}

/** Run a program in the guest through its agent and wait for it (guest-exec, guest-exec-status). */
async function guestExec(path: string, args: string[], timeoutMs = 25_000): Promise<{ exitCode: number; stderr: string }> {
  const g = cfg.guest!;
  const [started] = (await qmpExchange(g.qgaSocket, [{ execute: 'guest-exec', arguments: { path, arg: args, 'capture-output': true } }], { agent: true, timeoutMs })) as Array<{ pid: number }>;
  const until = monoNow() + timeoutMs;
  while (monoNow() < until) {
    const [st] = (await qmpExchange(g.qgaSocket, [{ execute: 'guest-exec-status', arguments: { pid: started!.pid } }], { agent: true, timeoutMs })) as Array<{ exited: boolean; exitcode?: number; 'err-data'?: string }>;
    if (st!.exited) return { exitCode: st!.exitcode ?? -1, stderr: Buffer.from(st!['err-data'] ?? '', 'base64').toString('utf8') };
    await sleep(50);
  }
  return { exitCode: -1, stderr: `guest program ${path} did not finish within ${timeoutMs} ms` };
}

/** Fence a guest: pause it, then unplug its NIC; true once QEMU reports it paused (or QEMU is gone). */
async function fenceGuest(): Promise<{ paused: boolean; unplugged: boolean; error?: string }> {
  const g = cfg.guest!;
  try {
    const [, , status] = (await qmpExchange(g.qmpSocket, [{ execute: 'stop' }, { execute: 'set_link', arguments: { name: g.nic ?? 'lan0', up: false } }, { execute: 'query-status' }])) as [unknown, unknown, { status?: string; running?: boolean }];
    return { paused: status?.running === false, unplugged: true };
  } catch (err) {
    const msg = (err as Error).message;
    // No QMP socket any more: QEMU is gone, and with it the guest and its address.
    if (/ENOENT|ECONNREFUSED/.test(msg)) return { paused: true, unplugged: true };
    // set_link may fail (no NIC of that name) after stop succeeded: ask for the state alone.
    try {
      const [status] = (await qmpExchange(g.qmpSocket, [{ execute: 'query-status' }])) as [{ running?: boolean }];
      return { paused: status?.running === false, unplugged: false, error: msg };
    } catch (err2) {
      return { paused: false, unplugged: false, error: `${msg}; ${(err2 as Error).message}` };
    }
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
  if (cfg.guest) {
    // Until QEMU reports the guest paused (or is gone); never given up on.
    for (;;) {
      attempts++;
      const r = await fenceGuest();
      if (r.paused) {
        log('guest-fenced', { attempts, unplugged: r.unplugged, ...(r.error ? { error: r.error.slice(0, 300) } : {}) });
        break;
      }
      if (attempts === 1 || attempts % 50 === 0) log('guest-still-running', { attempts, error: (r.error ?? '').slice(0, 300) });
      await sleep(cfg.retryMs ?? 100);
    }
  } else {
    for (;;) {
      attempts++;
      const del = await execa('ip', ipArgs(['addr', 'del', cfg.address, 'dev', cfg.iface]), { reject: false, timeout: 5000 });
      if (del.exitCode !== 0) lastError = del.stderr;
      if ((await held()) === false) break;
      if (attempts === 1 || attempts % 50 === 0) log('address-still-held', { attempts, stderr: lastError.slice(0, 300) });
      await sleep(cfg.retryMs ?? 100);
    }
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
  const r = cfg.guest
    ? await guestExec('/usr/sbin/ip', ['addr', 'add', cfg.address, 'dev', cfg.iface]).catch((err: Error) => ({ exitCode: -1, stderr: err.message }))
    : await execa('ip', ipArgs(['addr', 'add', cfg.address, 'dev', cfg.iface]), { reject: false, timeout: 5000 });
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
log('armed', { address: cfg.address, iface: cfg.iface, netns: cfg.netns ?? '', ...(cfg.guest ? { guest: cfg.guest.qmpSocket } : {}), pid: process.pid });
