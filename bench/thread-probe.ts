// bench:scale --thread-probe: one tiny process beside each depot in its namespace, as a thread of
// its own would be (the kernel schedules threads and processes alike; the lab runs both in one
// cgroup). It measures what a lease path off the depot's busy main thread would see on the same
// machine at the same moment: its own timer lateness, and "renewals" over UDP to the probes of
// the next 5 workstations (each answers at once) — how long until 2 of them answered, the
// majority of a group of 5 with the sender's own vote. Run with Node's type stripping (no tsx:
// 32 probes must start cheaply). One JSON line every 2 s on stdout.
//   node bench/thread-probe.ts <own address> <port> <peer address>...

import dgram from 'node:dgram';

const [self, portArg, ...peers] = process.argv.slice(2);
const port = Number(portArg);
if (!self || !Number.isInteger(port) || peers.length === 0) {
  process.stderr.write('usage: node bench/thread-probe.ts <own address> <port> <peer address>...\n');
  process.exit(2);
}
const TICK_MS = 100;
const RENEW_MS = 500;
/** A round with fewer answers after this counts as a lapse (the lease is 1500 ms). */
const ROUND_MS = 1500;
const NEEDED = 2;

const socket = dgram.createSocket('udp4');
const rounds = new Map<number, { at: number; answers: number[] }>();
let lateness: number[] = [];
let majorityMs: number[] = [];
let lapses = 0;

socket.on('message', (buf, from) => {
  let m: { t?: unknown; s?: unknown };
  try {
    m = JSON.parse(buf.toString()) as typeof m;
  } catch {
    return; // not a probe's datagram
  }
  if (m.t === 'renew') socket.send(JSON.stringify({ t: 'ack', s: m.s }), from.port, from.address);
  const round = m.t === 'ack' && typeof m.s === 'number' ? rounds.get(m.s) : undefined;
  round?.answers.push(performance.now() - round.at);
});
socket.bind(port, self);

let due = performance.now() + TICK_MS;
setInterval(() => {
  const now = performance.now();
  lateness.push(now - due);
  due = now + TICK_MS;
}, TICK_MS);

let seq = 0;
setInterval(() => {
  const now = performance.now();
  for (const [s, r] of rounds) {
    if (now - r.at < ROUND_MS) continue;
    const sorted = r.answers.sort((a, b) => a - b);
    if (sorted.length >= NEEDED) majorityMs.push(sorted[NEEDED - 1]!);
    else lapses++;
    rounds.delete(s);
  }
  rounds.set(++seq, { at: now, answers: [] });
  for (const p of peers) socket.send(JSON.stringify({ t: 'renew', s: seq }), port, p);
}, RENEW_MS);

setInterval(() => {
  const max = (xs: number[]) => (xs.length ? Math.round(Math.max(...xs)) : null);
  process.stdout.write(`${JSON.stringify({ event: 'thread-probe', at: Date.now(), lateMaxMs: max(lateness), majorityMs: majorityMs.map(Math.round), lapses })}\n`);
  lateness = [];
  majorityMs = [];
  lapses = 0;
}, 2000);
