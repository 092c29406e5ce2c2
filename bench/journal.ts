// bench:journal — what the movement journal costs: fsync'd single appends (one per movement, as
// gossip delivers them), batched appends (gap filling), reopening a long journal (depot start),
// page queries with filters (the tracking page), and gap filling between two journals.
//
// Prints a table and, as the last line, one JSON object. Knobs (env): BENCH_RECORDS (100000),
// BENCH_SINGLE (300).

import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { Journal } from '../depot/journal/journal.ts';
import { silentLogger } from '../shared/logger.ts';
import { MOVEMENT_EVENTS, type MovementRecord } from '../shared/movement.ts';

const RECORDS = Number(process.env.BENCH_RECORDS ?? 100_000);
const SINGLE = Number(process.env.BENCH_SINGLE ?? 300);
const log = silentLogger();

function record(i: number): MovementRecord {
  return {
    id: randomUUID(),
    time: 1_700_000_000_000 + i * 1000,
    service: `svc-${i % 5}`,
    role: i % 3 === 0 ? 'primary' : 'standby',
    host: `ws-${String(i % 40).padStart(2, '0')}`,
    address: '10.0.0.50',
    fromHost: i % 7 === 0 ? 'ws-99' : '',
    event: MOVEMENT_EVENTS[i % MOVEMENT_EVENTS.length]!,
    failover: i % 8 === 3,
    reason: 'primary host stopped answering: service probe and host probe failed',
    term: i,
    timings: { detect: 900, elect: 250, takeover: 200 },
  };
}

const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'nav-bench-journal-'));
  try {
    // 1. Single fsync'd appends.
    const j1 = new Journal({ path: join(dir, 'single.jsonl'), logger: log });
    await j1.open();
    const lat: number[] = [];
    for (let i = 0; i < SINGLE; i++) {
      const t = performance.now();
      await j1.append(record(i));
      lat.push(performance.now() - t);
    }
    await j1.close();

    // 2. Batched appends (gap filling brings pages of 256).
    const path = join(dir, 'big.jsonl');
    const j2 = new Journal({ path, logger: log });
    await j2.open();
    const all = Array.from({ length: RECORDS }, (_, i) => record(i));
    let t = performance.now();
    for (let i = 0; i < all.length; i += 256) await j2.appendMany(all.slice(i, i + 256));
    const batchMs = performance.now() - t;
    await j2.close();
    const bytes = (await stat(path)).size;

    // 3. Reopen (depot start).
    const rssBefore = process.memoryUsage().rss;
    t = performance.now();
    const j3 = new Journal({ path, logger: log });
    await j3.open();
    const openMs = performance.now() - t;
    const rssAfter = process.memoryUsage().rss;

    // 4. Page queries as the page makes them.
    const q = (fn: () => unknown, n = 200) => {
      const xs: number[] = [];
      for (let i = 0; i < n; i++) {
        const s = performance.now();
        fn();
        xs.push(performance.now() - s);
      }
      return pct(xs, 50);
    };
    const firstPage = q(() => j3.page({ limit: 50 }));
    const filtered = q(() => j3.page({ service: 'svc-2', host: 'ws-07', event: 'failover', limit: 50 }), 50);
    const deep = j3.page({ limit: 50, before: all[Math.floor(RECORDS / 2)]!.time });
    const deepMs = q(() => j3.page({ limit: 50, before: deep.nextBefore! }));

    // 5. Gap filling: a journal with the first 90 % fetches the rest.
    const j4 = new Journal({ path: join(dir, 'behind.jsonl'), logger: log });
    await j4.open();
    for (let i = 0; i < Math.floor(RECORDS * 0.9); i += 1000) await j4.appendMany(all.slice(i, Math.min(i + 1000, Math.floor(RECORDS * 0.9))));
    t = performance.now();
    const filled = await j4.fillGaps(async (req) => JSON.parse(JSON.stringify(j3.handleFetch(req))));
    const fillMs = performance.now() - t;
    await j3.close();
    await j4.close();

    const rows: Array<[string, string]> = [
      [`single append + fsync (n=${SINGLE})`, `median ${pct(lat, 50).toFixed(2)} ms, p99 ${pct(lat, 99).toFixed(2)} ms`],
      [`batched append, ${RECORDS} records`, `${Math.round(RECORDS / (batchMs / 1000))} records/s (${(bytes / 1e6).toFixed(1)} MB file)`],
      [`open ${RECORDS} records`, `${openMs.toFixed(0)} ms, +${((rssAfter - rssBefore) / 2 ** 20).toFixed(0)} MiB RSS`],
      ['first page (50, no filter)', `${firstPage.toFixed(3)} ms`],
      ['page with 3 filters', `${filtered.toFixed(2)} ms`],
      ['page deep in history (cursor)', `${deepMs.toFixed(3)} ms`],
      [`gap fill ${filled.added} records`, `${fillMs.toFixed(0)} ms in ${filled.pages} pages`],
    ];
    const w = Math.max(...rows.map((r) => r[0].length));
    console.log('journal benchmark');
    for (const [k, v] of rows) console.log(`  ${k.padEnd(w)}  ${v}`);
    console.log(
      JSON.stringify({
        bench: 'journal',
        records: RECORDS,
        single_append_median_ms: +pct(lat, 50).toFixed(3),
        single_append_p99_ms: +pct(lat, 99).toFixed(3),
        batch_records_per_s: Math.round(RECORDS / (batchMs / 1000)),
        file_bytes: bytes,
        open_ms: Math.round(openMs),
        open_rss_mib: +((rssAfter - rssBefore) / 2 ** 20).toFixed(1),
        first_page_ms: +firstPage.toFixed(3),
        filtered_page_ms: +filtered.toFixed(3),
        deep_page_ms: +deepMs.toFixed(3),
        gap_fill_records: filled.added,
        gap_fill_ms: Math.round(fillMs),
      }),
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
