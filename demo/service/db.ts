// The demo service's database: a private mariadbd for this copy. Initialises the data folder on
// first start (mariadb-install-db, a one-shot), then runs mariadbd in the foreground with the
// image's init file (the service account, the schema, the `history` table), and exits with it.
// Listens on NAVIGATOR_DEMO_DB_BIND (default 0.0.0.0: this host's addresses and 127.0.0.1).
// Usage: node db.ts --datadir DIR --port N --init-file FILE [--check]
//   --check: exit 0 when the server at NAVIGATOR_DEMO_DB_HOST:port sends its handshake (health).
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { execa } from 'execa';

const { values } = parseArgs({
  options: { datadir: { type: 'string' }, port: { type: 'string', default: '3306' }, 'init-file': { type: 'string' }, check: { type: 'boolean', default: false } },
});
const port = Number(values.port);

if (values.check) {
  const s = createConnection({ host: process.env.NAVIGATOR_DEMO_DB_HOST ?? '127.0.0.1', port });
  const timer = setTimeout(() => process.exit(1), 1500);
  s.once('data', () => {
    clearTimeout(timer);
    s.destroy();
    process.exit(0);
  });
  s.once('error', () => process.exit(1));
} else {
  await run();
}

async function run(): Promise<void> {
  if (!values.datadir || !values['init-file']) {
    process.stderr.write('db.ts: --datadir and --init-file are required\n');
    process.exit(2);
  }
  const datadir = values.datadir;
  const tmp = join(datadir, '..', 'db-tmp');
  // mariadbd refuses to run as root unless told to; as anyone else it runs as that user.
  const user = process.getuid?.() === 0 ? ['--user=root'] : [];
  mkdirSync(tmp, { recursive: true });
  if (!existsSync(join(datadir, 'mysql'))) {
    rmSync(datadir, { recursive: true, force: true });
    mkdirSync(datadir, { recursive: true });
    const r = await execa(
      'mariadb-install-db',
      ['--no-defaults', ...user, `--datadir=${datadir}`, `--tmpdir=${tmp}`, '--auth-root-authentication-method=normal', '--skip-test-db', '--skip-name-resolve'],
      { reject: false, all: true },
    );
    if (r.exitCode !== 0) {
      process.stderr.write(`mariadb-install-db failed (${r.exitCode}): ${String(r.all).slice(-2000)}\n`);
      rmSync(datadir, { recursive: true, force: true });
      process.exit(1);
    }
  }
  const child = execa(
    'mariadbd',
    [
      '--no-defaults',
      ...user,
      `--datadir=${datadir}`,
      `--tmpdir=${tmp}`,
      `--socket=${join(datadir, '..', 'db.sock')}`,
      `--pid-file=${join(datadir, '..', 'db.pid')}`,
      `--port=${port}`,
      `--bind-address=${process.env.NAVIGATOR_DEMO_DB_BIND ?? '0.0.0.0'}`,
      `--init-file=${values['init-file']}`,
      '--skip-name-resolve',
      '--innodb-buffer-pool-size=16M',
      '--innodb-log-file-size=16M',
      '--performance-schema=OFF',
      // dbsync.mode replicate (the default): standbys are GTID replicas (Navigator sets server_id).
      '--log-bin=mysql-bin',
      '--log-slave-updates',
      '--binlog-format=ROW',
    ],
    { stdio: 'inherit', reject: false },
  );
  for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => child.kill(sig));
  const r = await child;
  process.exit(r.exitCode ?? 1);
}
