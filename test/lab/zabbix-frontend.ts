import { cp, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { freePort } from '../../lab/loopback/ports.ts';

// The Zabbix 6.0 web frontend (Debian's zabbix-frontend-php) for tests: a private copy of it whose
// configuration file is its own (Debian's frontend reads /etc/zabbix/zabbix.conf.php, which a test
// must not write), served by PHP's built-in server on a free loopback port, and a small JSON-RPC
// client of its API (api_jsonrpc.php): what an admin's import of a template goes through.

export const FRONTEND_DIR = '/usr/share/zabbix';

export interface ZabbixFrontend {
  url: string;
  api<T = unknown>(method: string, params: unknown): Promise<T>;
  stop(): Promise<void>;
  log(): string;
}

export interface FrontendDb {
  port: number;
  database: string;
  user: string;
  password: string;
}

export async function startFrontend(dir: string, db: FrontendDb): Promise<ZabbixFrontend> {
  const ui = join(dir, 'ui');
  await cp(FRONTEND_DIR, ui, { recursive: true, dereference: false, verbatimSymlinks: true });
  const confPath = join(dir, 'zabbix.conf.php');
  const classFile = join(ui, 'include/classes/core/CConfigFile.php');
  const source = await readFile(classFile, 'utf8');
  if (!source.includes("'/etc/zabbix/zabbix.conf.php'")) throw new Error(`${classFile}: the configuration path to replace was not found`);
  await writeFile(classFile, source.replace("'/etc/zabbix/zabbix.conf.php'", `'${confPath}'`));
  const php = (s: string) => `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
  await writeFile(
    confPath,
    `<?php
$DB['TYPE'] = 'MYSQL';
$DB['SERVER'] = '127.0.0.1';
$DB['PORT'] = '${db.port}';
$DB['DATABASE'] = ${php(db.database)};
$DB['USER'] = ${php(db.user)};
$DB['PASSWORD'] = ${php(db.password)};
$DB['SCHEMA'] = '';
$DB['ENCRYPTION'] = false;
$DB['KEY_FILE'] = '';
$DB['CERT_FILE'] = '';
$DB['CA_FILE'] = '';
$DB['VERIFY_HOST'] = false;
$DB['CIPHER_LIST'] = '';
$DB['VAULT_URL'] = '';
$DB['VAULT_DB_PATH'] = '';
$DB['VAULT_TOKEN'] = '';
$DB['DOUBLE_IEEE754'] = true;
$ZBX_SERVER_NAME = 'navigator-test';
$IMAGE_FORMAT_DEFAULT = IMAGE_FORMAT_PNG;
`,
  );
  const port = await freePort();
  const out: string[] = [];
  const proc: ResultPromise = execa('php', ['-d', 'memory_limit=256M', '-d', 'max_execution_time=300', '-d', 'post_max_size=16M', '-S', `127.0.0.1:${port}`, '-t', ui], {
    reject: false,
    buffer: false,
    stdin: 'ignore',
  });
  proc.stdout?.on('data', (c: Buffer) => out.push(c.toString()));
  proc.stderr?.on('data', (c: Buffer) => out.push(c.toString()));
  const url = `http://127.0.0.1:${port}`;
  let auth: string | null = null;
  let id = 0;
  const call = async <T>(method: string, params: unknown): Promise<T> => {
    const res = await fetch(`${url}/api_jsonrpc.php`, {
      method: 'POST',
      headers: { 'content-type': 'application/json-rpc' },
      body: JSON.stringify({ jsonrpc: '2.0', method, params, id: ++id, auth: method === 'apiinfo.version' || method === 'user.login' ? null : auth }),
      signal: AbortSignal.timeout(120_000),
    });
    const body = (await res.json()) as { result?: T; error?: { message: string; data: string } };
    if (body.error) throw new Error(`${method}: ${body.error.message} ${body.error.data}`);
    return body.result as T;
  };
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      await call('apiinfo.version', []);
      break;
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`the Zabbix frontend did not answer: ${(err as Error).message}\n${out.join('')}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  auth = await call<string>('user.login', { username: 'Admin', password: 'zabbix' });
  return {
    url,
    api: call,
    log: () => out.join(''),
    async stop() {
      proc.kill('SIGTERM');
      await proc;
    },
  };
}

/** Run `php` at all? (Debian: php-cli, zabbix-frontend-php, php-mysql.) */
export async function frontendAvailable(): Promise<string | undefined> {
  const php = await execa('php', ['-m'], { reject: false });
  if (php.exitCode !== 0) return 'php is not installed (scripts/setup.sh installs php-cli)';
  if (!/mysqli/i.test(String(php.stdout))) return 'php has no mysqli (scripts/setup.sh installs php-mysql)';
  const f = await execa('test', ['-f', join(FRONTEND_DIR, 'api_jsonrpc.php')], { reject: false });
  if (f.exitCode !== 0) return `${FRONTEND_DIR} is missing (scripts/setup.sh installs zabbix-frontend-php)`;
  return undefined;
}
