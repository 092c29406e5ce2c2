// The 10 ms prober, run as its own process inside the client namespace (the "external prober on
// its own host" of the OpenSAF study): every interval it opens a TCP connection to the service
// address, reads the one-line reply (the answering host's name) and records success or failure.
// Results stream to stdout as JSON lines, batched every 100 ms; SIGTERM flushes and exits.
//   node --import tsx lab/prober-main.ts --target 10.77.3.100 --port 7000
import { connect } from 'node:net';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    target: { type: 'string' },
    port: { type: 'string', default: '7000' },
    interval: { type: 'string', default: '10' },
    timeout: { type: 'string', default: '50' },
  },
});
const target = values.target;
const port = Number(values.port);
const intervalMs = Number(values.interval);
const timeoutMs = Number(values.timeout);
if (!target || !/^\d+\.\d+\.\d+\.\d+$/.test(target)) fail(`--target must be an IPv4 address, got ${target}`);
if (!Number.isInteger(port) || port < 1 || port > 65535) fail(`--port ${values.port} is not a TCP port`);
if (!(intervalMs >= 1 && timeoutMs >= 1)) fail('--interval and --timeout must be positive ms');

function fail(msg: string): never {
  process.stderr.write(`prober: ${msg}\n`);
  process.exit(2);
}

const now = (): number => performance.timeOrigin + performance.now();
/** [attempt start, reply time, server name] */
let ok: Array<[number, number, string]> = [];
/** [attempt start, reason] */
let bad: Array<[number, string]> = [];
let inFlight = 0;
let stopping = false;
const maxInFlight = Math.ceil(timeoutMs / intervalMs) + 2;

function attempt(): void {
  if (inFlight >= maxInFlight) {
    bad.push([now(), 'busy']);
    return;
  }
  inFlight++;
  const start = now();
  let data = '';
  let settled = false;
  const sock = connect({ host: target!, port });
  const finish = (reason: string | undefined): void => {
    if (settled) return;
    settled = true;
    clearTimeout(timer);
    sock.destroy();
    inFlight--;
    if (reason === undefined) ok.push([start, now(), data.trim()]);
    else bad.push([start, reason]);
  };
  const timer = setTimeout(() => finish('timeout'), timeoutMs);
  sock.setEncoding('utf8');
  sock.on('data', (chunk: string) => {
    data += chunk;
    if (data.includes('\n')) finish(undefined);
  });
  sock.on('end', () => finish(data.trim() ? undefined : 'empty'));
  sock.on('error', (err: NodeJS.ErrnoException) => finish(err.code ?? 'error'));
}

function flush(): void {
  if (ok.length === 0 && bad.length === 0) return;
  process.stdout.write(`${JSON.stringify({ type: 'batch', ok, fail: bad })}\n`);
  ok = [];
  bad = [];
}

// Self-correcting schedule: attempt k starts at t0 + k*interval even if a tick runs late.
const t0 = now();
let k = 0;
function tick(): void {
  if (stopping) return;
  attempt();
  k++;
  const next = t0 + k * intervalMs;
  setTimeout(tick, Math.max(0, next - now()));
}
const flusher = setInterval(flush, 100);
process.stdout.write(`${JSON.stringify({ type: 'ready', target, port, intervalMs, timeoutMs, t: t0 })}\n`);
tick();

const stop = (): void => {
  if (stopping) return;
  stopping = true;
  // Let attempts in flight settle, then report everything.
  setTimeout(() => {
    clearInterval(flusher);
    flush();
    process.stdout.write(`${JSON.stringify({ type: 'end', t: now() })}\n`, () => process.exit(0));
  }, timeoutMs + 10);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
