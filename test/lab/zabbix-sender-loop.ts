// Runs in the client namespace: sends an increasing sequence number to the Zabbix trapper item
// with the real zabbix_sender every --interval ms (one at a time), and prints one JSON line per
// attempt: {"type":"send","seq":N,"start":ms,"end":ms,"ok":bool}. "ok" means the server answered
// "processed: 1" (it knew the host and item and took the value). SIGTERM ends it.
//   node --import tsx test/lab/zabbix-sender-loop.ts --server 10.77.3.100 --port 10051 --host lab-client --key nav.seq
import { parseArgs } from 'node:util';
import { execa } from 'execa';

const { values } = parseArgs({
  options: {
    server: { type: 'string' },
    port: { type: 'string', default: '10051' },
    host: { type: 'string' },
    key: { type: 'string' },
    interval: { type: 'string', default: '200' },
    timeout: { type: 'string', default: '2' },
  },
});
const server = values.server ?? '';
const port = Number(values.port);
const intervalMs = Number(values.interval);
if (!/^\d+\.\d+\.\d+\.\d+$/.test(server)) fail(`--server must be an IPv4 address, got ${server}`);
if (!values.host || !values.key) fail('--host and --key are required');
if (!Number.isInteger(port) || !(intervalMs >= 10)) fail('bad --port or --interval');

function fail(msg: string): never {
  process.stderr.write(`zabbix-sender-loop: ${msg}\n`);
  process.exit(2);
}

let stopping = false;
process.on('SIGTERM', () => (stopping = true));
process.on('SIGINT', () => (stopping = true));

process.stdout.write(`${JSON.stringify({ type: 'ready' })}\n`);
let seq = 0;
while (!stopping) {
  seq++;
  const start = Date.now();
  const r = await execa('zabbix_sender', ['-z', server, '-p', String(port), '-s', values.host!, '-k', values.key!, '-o', String(seq), '-t', values.timeout!], { reject: false });
  const end = Date.now();
  const ok = r.exitCode === 0 && /processed: 1;/.test(String(r.stdout));
  process.stdout.write(`${JSON.stringify({ type: 'send', seq, start, end, ok })}\n`);
  const wait = start + intervalMs - Date.now();
  if (wait > 0) await new Promise((res) => setTimeout(res, wait));
}
process.stdout.write(`${JSON.stringify({ type: 'end', seq })}\n`);
