import { execa, type ResultPromise } from 'execa';
import { chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import mysql from 'mysql2/promise';
import { freePort } from './ports.ts';

// A private, throwaway MariaDB server for tests, the lab and the demo: its own data directory,
// socket and TCP port on 127.0.0.1, never the system server. Started in about a second with small
// buffers; everything it creates is removed by stop(), and a process exit hook kills what a crashed
// test left behind.

export interface StartMariaDbOptions {
  /** Password for root (set on root@localhost, root@127.0.0.1, root@::1). Default: random. */
  password?: string;
  /** Put the data directory on a tmpfs of this size (MiB) — for disk-full tests; needs root. */
  tmpfsMb?: number;
  /** InnoDB buffer pool in MiB (default 32). */
  bufferPoolMb?: number;
  /** Extra mariadbd options, e.g. ['--innodb-flush-log-at-trx-commit=1']. */
  extraArgs?: string[];
  /** Label used in the temp dir name (helps when reading leftovers). */
  name?: string;
  /** Longest wait for the server to accept connections (default 60 s: CI machines can be busy). */
  readyTimeoutMs?: number;
}

export interface MariaDbServer {
  readonly host: string;
  readonly port: number;
  readonly socket: string;
  readonly user: string;
  readonly password: string;
  readonly dir: string;
  readonly datadir: string;
  /** Is mariadbd running now (started and not stopped/killed)? */
  readonly running: boolean;
  /** Process id of the running mariadbd, if any. */
  pid(): number | undefined;
  /** Run one statement as root on a fresh connection; returns rows (or the result header). */
  query<T = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<T[]>;
  /** A new root connection over TCP (the caller ends it). */
  connect(database?: string): Promise<mysql.Connection>;
  /** Graceful shutdown, data kept (server down; restart() brings it back). */
  halt(): Promise<void>;
  /** SIGKILL, data kept (crash; restart() runs InnoDB recovery). */
  kill(): Promise<void>;
  /** Start again on the same port and data directory (halts first if running). */
  restart(): Promise<void>;
  /** Stop for good: kill the server, unmount a tmpfs, remove the directory. Idempotent. */
  stop(): Promise<void>;
  /** The tail of the server's error log (for failure messages). */
  errorLog(lines?: number): string;
}

const live = new Set<{ pid(): number | undefined; dir: string; tmpfs: boolean }>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const s of live) {
      const pid = s.pid();
      if (pid) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* already gone */
        }
      }
      try {
        if (s.tmpfs) execFileSync('umount', ['-l', join(s.dir, 'data')], { stdio: 'ignore' });
      } catch {
        /* not mounted */
      }
      rmSync(s.dir, { recursive: true, force: true });
    }
    if (templateDir) rmSync(templateDir, { recursive: true, force: true });
  });
}

let templatePromise: Promise<string> | undefined;
let templateDir: string | undefined;

function installTemplate(innodbArgs: string[], userArgs: string[]): Promise<string> {
  templatePromise ??= (async () => {
    const base = mkdtempSync(join(tmpdir(), 'navigator-mariadb-template-'));
    templateDir = base;
    chmodSync(base, 0o755);
    const data = join(base, 'data');
    // A private tmpdir: the bootstrap's temporary tables must not meet anything else in /tmp.
    const tmp = join(base, 'tmp');
    const ids = mysqlIds();
    let lastOutput = '';
    for (let attempt = 1; attempt <= 2; attempt++) {
      rmSync(data, { recursive: true, force: true });
      mkdirSync(data);
      mkdirSync(tmp, { recursive: true });
      if (ids) {
        chownSync(data, ids.uid, ids.gid);
        chownSync(tmp, ids.uid, ids.gid);
      }
      const install = await execa(
        'mariadb-install-db',
        [
          '--no-defaults',
          ...userArgs,
          `--datadir=${data}`,
          `--tmpdir=${tmp}`,
          '--auth-root-authentication-method=normal',
          '--skip-test-db',
          '--skip-name-resolve',
          ...innodbArgs,
        ],
        { reject: false, all: true },
      );
      if (install.exitCode === 0) return data;
      lastOutput = `exit ${install.exitCode}: ${String(install.all).slice(-2000)}`;
    }
    templatePromise = undefined;
    templateDir = undefined;
    rmSync(base, { recursive: true, force: true });
    throw new Error(`mariadb-install-db failed twice (${lastOutput})`);
  })();
  return templatePromise;
}

/** The template lives while servers do: when the last one stops, it goes too (workers may be killed without an exit event). */
function releaseTemplateIfIdle(): void {
  if (live.size > 0 || !templateDir) return;
  const dir = templateDir;
  templateDir = undefined;
  templatePromise = undefined;
  rmSync(dir, { recursive: true, force: true });
}

function mysqlIds(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  try {
    const line = readFileSync('/etc/passwd', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('mysql:'));
    if (!line) return undefined;
    const f = line.split(':');
    return { uid: Number(f[2]), gid: Number(f[3]) };
  } catch {
    return undefined;
  }
}

function chownTree(path: string, ids: { uid: number; gid: number }): void {
  chownSync(path, ids.uid, ids.gid);
}

export async function startMariaDb(opts: StartMariaDbOptions = {}): Promise<MariaDbServer> {
  installExitHook();
  const password = opts.password ?? `pw-${Math.random().toString(36).slice(2)}-${Date.now().toString(36)}`;
  const dir = mkdtempSync(join(tmpdir(), `navigator-mariadb-${opts.name ?? 'test'}-`));
  chmodSync(dir, 0o755);
  const datadir = join(dir, 'data');
  const socket = join(dir, 'mysqld.sock');
  const pidFile = join(dir, 'mysqld.pid');
  const errLog = join(dir, 'error.log');
  const serverTmp = join(dir, 'tmp');
  const ids = mysqlIds();
  const tmpfs = opts.tmpfsMb !== undefined;
  mkdirSync(datadir);
  const userArgs = ids ? ['--user=mysql'] : [];
  const bufferPool = `--innodb-buffer-pool-size=${opts.bufferPoolMb ?? 32}M`;
  // Small redo log and pool: starts fast and light. Durability relaxed (tests only): a killed
  // mariadbd still loses nothing committed (flush at commit 2 writes to the OS at every commit).
  // nosync: no fsync at all — a killed mariadbd loses nothing (the OS keeps the pages), only a
  // host crash would, and these servers do not outlive the test. Benchmarks may override.
  const innodbArgs = ['--innodb-log-file-size=16M', '--innodb-flush-log-at-trx-commit=2', '--skip-innodb-doublewrite', '--innodb-flush-method=nosync'];

  let proc: ResultPromise | undefined;
  let port = 0;
  let stopped = false;
  const handle = { pid: () => proc?.pid, dir, tmpfs };
  live.add(handle);

  const cleanupDir = async () => {
    if (tmpfs) {
      await execa('umount', ['-l', datadir], { reject: false });
    }
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    if (tmpfs) {
      await execa('mount', ['-t', 'tmpfs', '-o', `size=${opts.tmpfsMb}m,mode=0755`, 'tmpfs', datadir]);
    }
    if (ids) {
      chownTree(dir, ids);
      chownTree(datadir, ids);
    }
    mkdirSync(serverTmp);
    if (ids) chownTree(serverTmp, ids);
    // One mariadb-install-db per process, copied for each server: installing costs 1-3 s on a
    // busy disk, a copy a tenth of that.
    const template = await installTemplate(innodbArgs, userArgs);
    await execa('cp', ['-a', `${template}/.`, datadir]);
  } catch (err) {
    live.delete(handle);
    await cleanupDir();
    releaseTemplateIfIdle();
    throw err;
  }

  const errorLog = (lines = 20): string => {
    try {
      return readFileSync(errLog, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
    } catch {
      return '(no error log)';
    }
  };

  const launch = async (): Promise<void> => {
    const deadline = Date.now() + (opts.readyTimeoutMs ?? 60_000);
    for (let attempt = 0; ; attempt++) {
      if (port === 0 || attempt > 0) port = await freePort();
      const p = execa(
        'mariadbd',
        [
          '--no-defaults',
          ...userArgs,
          `--datadir=${datadir}`,
          `--socket=${socket}`,
          `--port=${port}`,
          '--bind-address=127.0.0.1',
          `--pid-file=${pidFile}`,
          `--log-error=${errLog}`,
          `--tmpdir=${serverTmp}`,
          '--skip-name-resolve',
          '--max-connections=200',
          bufferPool,
          ...innodbArgs,
          ...(opts.extraArgs ?? []),
        ],
        { reject: false, stdio: 'ignore', cleanup: true },
      );
      proc = p;
      let exited = false;
      void p.then(() => {
        exited = true;
      });
      // Wait until it answers on the socket, or dies (port taken: retry with another port).
      for (;;) {
        if (exited) break;
        if (await canConnect()) return;
        if (Date.now() > deadline) {
          p.kill('SIGKILL');
          await p;
          throw new Error(`mariadbd did not become ready in time; error log:\n${errorLog()}`);
        }
        await new Promise((r) => setTimeout(r, 25));
      }
      proc = undefined;
      const log = errorLog(10);
      if (/Bind on TCP\/IP port|Address already in use/i.test(log) && attempt < 5) continue;
      throw new Error(`mariadbd exited during start; error log:\n${log}`);
    }
  };

  let passwordSet = false;
  const canConnect = async (): Promise<boolean> => {
    try {
      const c = await mysql.createConnection({
        socketPath: socket,
        user: 'root',
        ...(passwordSet ? { password } : {}),
        connectTimeout: 1000,
      });
      await c.end();
      return true;
    } catch {
      return false;
    }
  };

  const waitExit = async (ms: number): Promise<boolean> => {
    const p = proc;
    if (!p) return true;
    const done = await Promise.race([p.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms))]);
    return done;
  };

  const server: MariaDbServer = {
    host: '127.0.0.1',
    get port() {
      return port;
    },
    socket,
    user: 'root',
    password,
    dir,
    datadir,
    get running() {
      return proc !== undefined && proc.exitCode === null && proc.signalCode === null;
    },
    pid: () => proc?.pid,
    async query<T>(sql: string, params?: unknown[]): Promise<T[]> {
      const c = await mysql.createConnection({ host: '127.0.0.1', port, user: 'root', password, multipleStatements: false });
      try {
        const [rows] = await c.query(sql, params);
        return (Array.isArray(rows) ? rows : [rows]) as T[];
      } finally {
        await c.end().catch(() => undefined);
      }
    },
    async connect(database?: string) {
      return mysql.createConnection({ host: '127.0.0.1', port, user: 'root', password, ...(database ? { database } : {}) });
    },
    async halt() {
      const p = proc;
      if (!p) return;
      p.kill('SIGTERM');
      if (!(await waitExit(30_000))) {
        p.kill('SIGKILL');
        await p;
      }
      proc = undefined;
    },
    async kill() {
      const p = proc;
      if (!p) return;
      p.kill('SIGKILL');
      await p;
      proc = undefined;
    },
    async restart() {
      if (stopped) throw new Error('server was stopped for good');
      await server.halt();
      await launch();
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      const p = proc;
      if (p) {
        p.kill('SIGKILL');
        await p;
        proc = undefined;
      }
      live.delete(handle);
      await cleanupDir();
      releaseTemplateIfIdle();
    },
    errorLog,
  };

  try {
    await launch();
    // Root gets a password so tests can check it never shows in `ps` or logs; TCP logins only.
    const c = await mysql.createConnection({ socketPath: socket, user: 'root' });
    try {
      await c.query("DROP USER IF EXISTS 'root'@'vm'");
      const [hosts] = await c.query("SELECT Host FROM mysql.user WHERE User = 'root'");
      for (const row of hosts as Array<{ Host: string }>) {
        if (row.Host === 'localhost' || row.Host === '127.0.0.1' || row.Host === '::1') {
          await c.query('ALTER USER ?@? IDENTIFIED BY ?', ['root', row.Host, password]);
        } else {
          await c.query('DROP USER ?@?', ['root', row.Host]);
        }
      }
      await c.query('FLUSH PRIVILEGES');
    } finally {
      await c.end();
    }
    passwordSet = true;
  } catch (err) {
    await server.stop();
    throw err;
  }
  if (!existsSync(socket)) {
    await server.stop();
    throw new Error('mariadbd started but its socket is missing');
  }
  return server;
}
