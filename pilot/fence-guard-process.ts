// The primary's dead man's switch. The pilot starts this small process before it takes the
// service address and feeds it the time left on its lease on stdin ("lease <msLeft>"). If the
// deadline passes without renewal (pilot hung) or stdin closes (depot killed, even with
// kill -9), the guard drops the address and runs the service's stop commands, then exits.
// A primary therefore fences itself even when the process that held the lease is gone.
//
// Runs with Node's own type stripping (no tsx, no project imports but execa) so it starts in
// tens of milliseconds. Configuration is one JSON argument:
//   {"address":"10.0.0.10/24","iface":"eth0","netns":"", "stop":[["argv",...]], "checkMs":50}
import { execa } from 'execa';
import { createInterface } from 'node:readline';

interface GuardConfig {
  address: string;
  iface: string;
  netns?: string;
  stop?: string[][];
  checkMs?: number;
}

const cfg = JSON.parse(process.argv[2] ?? '{}') as GuardConfig;
if (!cfg.address || !cfg.iface) {
  process.stderr.write('fence-guard: usage: fence-guard \'{"address":"IP/PREFIX","iface":"IF"}\'\n');
  process.exit(2);
}

let deadline = Number.POSITIVE_INFINITY;
let fencing = false;

function log(event: string, fields: Record<string, unknown> = {}): void {
  process.stdout.write(`${JSON.stringify({ time: Date.now(), component: 'fence-guard', event, ...fields })}\n`);
}

function ipArgs(args: string[]): string[] {
  return cfg.netns ? ['-n', cfg.netns, ...args] : args;
}

async function fence(reason: string): Promise<void> {
  if (fencing) return;
  fencing = true;
  const started = Date.now();
  const del = await execa('ip', ipArgs(['addr', 'del', cfg.address, 'dev', cfg.iface]), { reject: false });
  const gone = del.exitCode === 0 || /Cannot assign requested address/.test(del.stderr);
  for (const argv of cfg.stop ?? []) {
    const [file, ...args] = argv;
    if (file) await execa(file, args, { reject: false, timeout: 10_000 });
  }
  log('fenced', { reason, addressDropped: gone, stderr: gone ? undefined : del.stderr, durationMs: Date.now() - started });
  process.exit(0);
}

const rl = createInterface({ input: process.stdin });
rl.on('line', (line) => {
  const [cmd, arg] = line.trim().split(/\s+/);
  if (cmd === 'lease' && arg !== undefined && Number.isFinite(Number(arg))) {
    // Relative, measured on this process's monotonic clock: no wall-clock jumps involved.
    deadline = performance.now() + Number(arg);
  } else if (cmd === 'release') {
    // A clean demotion: the pilot drops the address itself.
    log('released');
    process.exit(0);
  } else if (cmd === 'fence') {
    void fence('asked by pilot');
  }
});
rl.on('close', () => void fence('pilot gone (stdin closed)'));

setInterval(() => {
  if (performance.now() > deadline) void fence('lease expired without renewal');
}, cfg.checkMs ?? 50);
log('armed', { address: cfg.address, iface: cfg.iface, netns: cfg.netns ?? '' });
