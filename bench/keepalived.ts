// The keepalived yardstick alone: power-loss trials of the VRRP master in the namespace lab.
//   node --import tsx bench/keepalived.ts [--trials N]        (root; Debian keepalived 2.2.7)
// Prints one row per trial, then the summary as the last line (one JSON object).
import { parseArgs } from 'node:util';
import { keepalivedTrials } from '../lab/keepalived.ts';
import { percentile } from '../lab/stats.ts';

const { values } = parseArgs({ options: { trials: { type: 'string', default: '3' } } });
const n = Number(values.trials);
if (!Number.isInteger(n) || n < 1) {
  process.stderr.write(`--trials must be a positive integer, got ${values.trials}\n`);
  process.exit(2);
}

console.log('keepalived 2.2.7, VRRP advert_int 1, priorities 150/100; trial = power loss of the master host');
console.log('trial  outage_ms  recovered  split_brain  answered_after');
const result = await keepalivedTrials(n, {
  onTrial: (i, t) => console.log(`${String(i + 1).padStart(5)}  ${t.outageMs.toFixed(1).padStart(9)}  ${String(t.recovered).padStart(9)}  ${String(t.splitBrainEvents).padStart(11)}  ${t.serverAfter ?? '-'}`),
});
const outages = result.outages;
const summary = {
  trials: outages.length,
  keepalived_outage_ms_p50: Math.round(percentile(outages, 50)),
  keepalived_outage_ms_p95: Math.round(percentile(outages, 95)),
  keepalived_outage_ms_min: Math.round(Math.min(...outages)),
  keepalived_outage_ms_max: Math.round(Math.max(...outages)),
  keepalived_split_brain_events: result.trials.reduce((a, t) => a + t.splitBrainEvents, 0),
};
console.log(`p50 ${summary.keepalived_outage_ms_p50} ms, p95 ${summary.keepalived_outage_ms_p95} ms, min ${summary.keepalived_outage_ms_min} ms, max ${summary.keepalived_outage_ms_max} ms`);
console.log(JSON.stringify(summary));
