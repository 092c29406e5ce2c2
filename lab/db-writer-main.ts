// The nemesis test's writer, run as its own process in the lab's client namespace: one write at a
// time through the service address to the DB service's write front (lab/db-service/front.ts):
// connect, send `SEQ WRITER_MS`, wait for the front's reply (sent after COMMIT), close. A write
// that gets no {"ok":true} reply within --timeout ms is not acknowledged (it may or may not have
// committed). Every outcome is one JSON line on stdout:
//   {"type":"write","seq":1,"start":…,"end":…,"ok":true,"host":"w1","serverId":…,"term":1,"committedMs":…}
// SIGTERM finishes the write in flight and exits.
//   node lab/db-writer-main.ts --target 10.77.3.100 --port 7000 --interval 100
import { connect } from 'node:net';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    target: { type: 'string' },
    port: { type: 'string', default: '7000' },
    interval: { type: 'string', default: '100' },
    timeout: { type: 'string', default: '2000' },
  },
});
function fail(msg: string): never {
  process.stderr.write(`db-writer: ${msg}\n`);
  process.exit(2);
}
const target = values.target;
if (!target || !/^\d+\.\d+\.\d+\.\d+$/.test(target)) fail(`--target must be an IPv4 address, got ${target}`);
const port = Number(values.port);
const intervalMs = Number(values.interval);
const timeoutMs = Number(values.timeout);
if (!Number.isInteger(port) || port < 1 || port > 65535) fail(`--port ${values.port} is not a TCP port`);
if (!(intervalMs >= 1 && timeoutMs >= 1)) fail('--interval and --timeout must be positive ms');

interface Reply {
  ok: boolean;
  seq?: number;
  host?: string;
  serverId?: number;
  term?: number;
  committedMs?: number;
  error?: string;
}

function writeOnce(seq: number): Promise<Reply> {
  return new Promise((resolve) => {
    let done = false;
    let buf = '';
    const finish = (r: Reply) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve(r);
    };
    const timer = setTimeout(() => finish({ ok: false, error: 'timeout' }), timeoutMs);
    const sock = connect({ host: target!, port }, () => sock.write(`${seq} ${Date.now()}\n`));
    sock.on('error', (err) => finish({ ok: false, error: (err as NodeJS.ErrnoException).code ?? err.message }));
    sock.on('data', (chunk) => {
      buf += chunk.toString('utf8');
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      try {
        const r = JSON.parse(buf.slice(0, nl)) as Reply;
        finish(r.ok === true && r.seq === seq ? r : { ok: false, error: r.error ?? 'bad reply' });
      } catch {
        finish({ ok: false, error: 'unparsable reply' });
      }
    });
    sock.on('close', () => finish({ ok: false, error: 'closed' }));
  });
}

let stopping = false;
process.on('SIGTERM', () => {
  stopping = true;
});
process.stdout.write(`${JSON.stringify({ type: 'ready' })}\n`);
for (let seq = 1; !stopping; seq++) {
  const start = Date.now();
  const r = await writeOnce(seq);
  const end = Date.now();
  process.stdout.write(`${JSON.stringify({ type: 'write', seq, start, end, ...r })}\n`);
  const wait = intervalMs - (end - start);
  if (wait > 0 && !stopping) await new Promise((res) => setTimeout(res, wait));
}
process.exit(0);
