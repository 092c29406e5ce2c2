// The write front of the lab's DB service (lab/db-service.ts): a TCP server on 0.0.0.0 that the
// service image runs on the primary only (a primary-only process: started after promotion, stopped
// by demotion and by the fence guard). Each request line `SEQ WRITER_MS` becomes one committed row
// in the local MariaDB's `writes` table, tagged with this copy's host, server_id and the term of
// the copy's term fence (DB__nav_sync.term_fence, raised by the pilot when the copy was promoted),
// read in the same transaction. The reply, one JSON line, is sent only after COMMIT returned:
//   {"ok":true,"seq":7,"host":"w2","serverId":…,"term":3,"committedMs":…}
// so an acknowledged write is a committed one, and the writer knows who committed it in which term.
// Any error gives {"ok":false,…}: nothing is acknowledged that was not committed.
//   node lab/db-service/front.ts --port 7000 --db-port 3307 --database nemesis --user writer --password-file F
import { createServer } from 'node:net';
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { parseArgs } from 'node:util';
import { createPool } from 'mysql2/promise';

const { values } = parseArgs({
  options: {
    port: { type: 'string', default: '7000' },
    'db-port': { type: 'string', default: '3307' },
    database: { type: 'string' },
    user: { type: 'string' },
    'password-file': { type: 'string' },
  },
});

function fail(msg: string): never {
  process.stderr.write(`db-service front: ${msg}\n`);
  process.exit(2);
}

const port = Number(values.port);
const dbPort = Number(values['db-port']);
if (!Number.isInteger(port) || port < 1 || port > 65535) fail(`--port ${values.port} is not a TCP port`);
if (!Number.isInteger(dbPort) || dbPort < 1 || dbPort > 65535) fail(`--db-port ${values['db-port']} is not a TCP port`);
const database = values.database ?? fail('--database is required');
if (!/^[A-Za-z0-9_]{1,32}$/.test(database)) fail(`--database ${database}: letters, digits and _ only`);
const user = values.user ?? fail('--user is required');
const passwordFile = values['password-file'] ?? fail('--password-file is required');
const password = readFileSync(passwordFile, 'utf8').split('\n')[0]!;
// Every copy runs the same image: the host's name comes from the depot's environment (the lab
// passes ECHO_NAME to containers), else from the host name.
const host = process.env.ECHO_NAME ?? hostname();

const pool = createPool({ host: '127.0.0.1', port: dbPort, user, password, database, connectionLimit: 4, connectTimeout: 2000 });
const fenceTable = `\`${database}__nav_sync\`.term_fence`;

async function write(seq: number, writerMs: number): Promise<Record<string, unknown>> {
  const conn = await pool.getConnection();
  try {
    await conn.beginTransaction();
    const [rows] = await conn.query(`SELECT @@server_id AS serverId, (SELECT term FROM ${fenceTable} WHERE id = 1) AS term`);
    const r = (rows as Array<{ serverId: number; term: number | string | null }>)[0]!;
    if (r.term === null) throw new Error('no term fence in this copy: not promoted');
    const term = Number(r.term);
    await conn.query('INSERT INTO writes (seq, writer_ms, host, server_id, term, committed_at) VALUES (?, ?, ?, ?, ?, NOW(6))', [seq, writerMs, host, r.serverId, term]);
    await conn.commit();
    return { ok: true, seq, host, serverId: Number(r.serverId), term, committedMs: Date.now() };
  } catch (err) {
    await conn.rollback().catch(() => undefined);
    return { ok: false, seq, host, error: (err as Error).message };
  } finally {
    conn.release();
  }
}

const server = createServer((sock) => {
  sock.on('error', () => sock.destroy());
  let buf = '';
  sock.on('data', (chunk) => {
    buf += chunk.toString('utf8');
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      const m = /^(\d{1,15}) (\d{1,15})$/.exec(line);
      if (!m) {
        sock.end(`${JSON.stringify({ ok: false, error: 'request must be "SEQ WRITER_MS"' })}\n`);
        return;
      }
      void write(Number(m[1]), Number(m[2])).then((reply) => {
        if (!sock.destroyed) sock.write(`${JSON.stringify(reply)}\n`);
      });
    }
  });
});
server.on('error', (err) => {
  process.stderr.write(`db-service front: ${err.message}\n`);
  process.exit(1);
});
server.listen({ port, host: '0.0.0.0', backlog: 1024 }, () => {
  process.stdout.write(`${JSON.stringify({ event: 'listening', host, port })}\n`);
});
const stop = (): void => {
  server.close();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
