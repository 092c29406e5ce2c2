// The demo's monitoring service: runs only on the primary copy (a `primary:` command). Every
// second it writes a sample (time, load, host) into its database's `history` table and it serves
// a small status page on the service port — the port the pilots probe at the service address.
// Usage: node monitor.ts --port N --db-port N --password-file FILE
//   env NAVIGATOR_DEMO_DB_HOST (default 127.0.0.1), NAVIGATOR_DEMO_HOST (the workstation's name)
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import type { Pool } from 'mysql2/promise';

const { values } = parseArgs({
  options: { port: { type: 'string', default: '8080' }, 'db-port': { type: 'string', default: '3306' }, 'password-file': { type: 'string' } },
});
const host = process.env.NAVIGATOR_DEMO_HOST ?? 'unknown';
const since = new Date();
const password = values['password-file'] ? readFileSync(values['password-file'], 'utf8').trim() : '';
let pool: Pool | undefined;
const poolOptions = {
  host: process.env.NAVIGATOR_DEMO_DB_HOST ?? '127.0.0.1',
  port: Number(values['db-port']),
  user: 'navigator',
  password,
  database: 'navdemo',
  connectionLimit: 2,
  connectTimeout: 2000,
};
let written = 0;
let lastError = '';

async function sample(): Promise<void> {
  // A load that moves visibly: the host's 1-minute load plus a slow wave.
  const load = Number((loadavg()[0]! + 0.5 + 0.5 * Math.sin(Date.now() / 20_000)).toFixed(3));
  try {
    if (!pool) return;
    await pool.execute('INSERT INTO history (`time`, load_avg, host) VALUES (NOW(3), ?, ?)', [load, host]);
    written++;
    lastError = '';
  } catch (err) {
    lastError = (err as Error).message;
  }
}
setInterval(() => void sample(), 1000);

interface Summary {
  rows: number;
  first: string | null;
  last: string | null;
  byHost: Array<{ host: string; n: number }>;
}

async function summary(): Promise<Summary> {
  if (!pool) throw new Error('database client still loading');
  const [[tot]] = (await pool.query('SELECT COUNT(*) AS n, MIN(`time`) AS first, MAX(`time`) AS last FROM history')) as unknown as [[{ n: number; first: Date | null; last: Date | null }]];
  const [byHost] = (await pool.query('SELECT host, COUNT(*) AS n FROM history GROUP BY host ORDER BY MIN(`time`)')) as unknown as [Array<{ host: string; n: number }>];
  return { rows: Number(tot.n), first: tot.first?.toISOString() ?? null, last: tot.last?.toISOString() ?? null, byHost: byHost.map((r) => ({ host: r.host, n: Number(r.n) })) };
}

const esc = (s: string) => s.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);

createServer((req, res) => {
  void (async () => {
    let s: Summary | undefined;
    try {
      s = await summary();
    } catch (err) {
      lastError = (err as Error).message;
    }
    const status = { service: 'navigator-demo-monitor', host, since: since.toISOString(), written, lastError: lastError || undefined, history: s };
    if (req.url?.startsWith('/json')) {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(status));
      return;
    }
    const rows = (s?.byHost ?? []).map((r) => `<tr><td>${esc(r.host)}</td><td>${r.n}</td></tr>`).join('');
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(
      `<!doctype html><meta charset="utf-8"><meta http-equiv="refresh" content="2"><title>demo monitor on ${esc(host)}</title>` +
        `<h1>Demo monitor — primary on ${esc(host)}</h1><p>serving since ${since.toISOString()}; ${written} samples written here</p>` +
        `<p>history: ${s?.rows ?? '?'} rows, ${s?.first ?? '-'} … ${s?.last ?? '-'}</p>` +
        `<table><tr><th>written by</th><th>rows</th></tr>${rows}</table>${lastError ? `<p>last error: ${esc(lastError)}</p>` : ''}`,
    );
  })();
}).listen(Number(values.port), '0.0.0.0');

// The port first (the pilots probe it as soon as this copy is promoted), the database client after.
const mysql = (await import('mysql2/promise')).default;
pool = mysql.createPool(poolOptions);

for (const sig of ['SIGTERM', 'SIGINT'] as const) {
  process.on(sig, () => {
    void (pool?.end() ?? Promise.resolve()).finally(() => process.exit(0));
    setTimeout(() => process.exit(0), 1000).unref();
  });
}
