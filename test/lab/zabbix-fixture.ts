import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { parse as parseYaml, stringify as toYaml } from 'yaml';
import { REPO_ROOT } from '../../shared/repo-root.ts';

// The Zabbix example service (deploy/examples/zabbix) as tests use it: an image folder made by
// the example's own prepare-image.sh (fresh passwords), optionally on other ports, and the SQL
// that registers the monitored client (a host with an active-agent item and a trapper item) the
// way the frontend would, since no frontend is installed.

export const EXAMPLE_DIR = join(REPO_ROOT, 'deploy/examples/zabbix');

export interface ZabbixImageOptions {
  /** MariaDB port of every copy (settings.env DB_PORT and the manifest's health check). */
  dbPort?: number;
  /** Zabbix trapper port (settings.env ZBX_LISTEN_PORT). */
  zbxPort?: number;
  /** zabbix_server's configuration cache reload interval in s (settings.env ZBX_CACHE_UPDATE_S). */
  cacheUpdateS?: number;
}

export interface ZabbixImage {
  dir: string;
  dbPort: number;
  zbxPort: number;
  /** database spec for the service (bootstrap request). */
  database: { database: string; user: string; passwordFile: string; port: number };
}

/** Makes an image folder at `dest` (must not exist) with the example's prepare-image.sh. */
export async function prepareZabbixImage(dest: string, opts: ZabbixImageOptions = {}): Promise<ZabbixImage> {
  await execa('bash', [join(EXAMPLE_DIR, 'scripts/prepare-image.sh'), dest]);
  const settingsPath = join(dest, 'settings.env');
  let settings = await readFile(settingsPath, 'utf8');
  const set = (key: string, value: number | undefined) => {
    if (value === undefined) return;
    const re = new RegExp(`^${key}=.*$`, 'm');
    if (!re.test(settings)) throw new Error(`settings.env has no ${key}`);
    settings = settings.replace(re, `${key}=${value}`);
  };
  set('DB_PORT', opts.dbPort);
  set('ZBX_LISTEN_PORT', opts.zbxPort);
  set('ZBX_CACHE_UPDATE_S', opts.cacheUpdateS);
  await writeFile(settingsPath, settings);
  const manifestPath = join(dest, 'container.yaml');
  const manifest = parseYaml(await readFile(manifestPath, 'utf8')) as { health: { tcp: { port: number } } };
  const dbPort = opts.dbPort ?? manifest.health.tcp.port;
  manifest.health.tcp.port = dbPort;
  await writeFile(manifestPath, toYaml(manifest));
  const value = (key: string) => new RegExp(`^${key}=(.*)$`, 'm').exec(settings)?.[1] ?? '';
  return {
    dir: dest,
    dbPort,
    zbxPort: Number(value('ZBX_LISTEN_PORT')),
    database: { database: value('DB_NAME'), user: value('DB_SYNC_USER'), passwordFile: 'secrets/sync.password', port: dbPort },
  };
}

/** Ids of what clientSql creates (high, clear of the ids the stock data uses). */
export const CLIENT = {
  host: 'lab-client',
  hostId: 100100,
  /** Active agent item: system.localtime every second (its value is the agent's clock). */
  agentItemId: 100101,
  agentKey: 'system.localtime',
  /** Trapper item fed by zabbix_sender with a sequence number. */
  trapItemId: 100102,
  trapKey: 'nav.seq',
} as const;

/**
 * The monitored client as the Zabbix 6.0 frontend would store it: a host in "Linux servers"
 * (group 2 of the stock data), an active-agent item (type 7) and a trapper item (type 2), both
 * unsigned integers (history_uint), each with its item_rtdata row (the server's configuration
 * sync joins it). Active agent items need no host interface.
 */
export function clientSql(): string {
  const c = CLIENT;
  return `
INSERT INTO hosts (hostid, host, name, name_upper, status, description) VALUES (${c.hostId}, '${c.host}', '${c.host}', '${c.host.toUpperCase()}', 0, '');
INSERT INTO hosts_groups (hostgroupid, hostid, groupid) VALUES (${c.hostId}, ${c.hostId}, 2);
INSERT INTO items (itemid, type, hostid, name, name_upper, key_, delay, value_type, trends, params, description, posts, headers) VALUES
  (${c.agentItemId}, 7, ${c.hostId}, 'Agent clock', 'AGENT CLOCK', '${c.agentKey}', '1s', 3, '0', '', '', '', ''),
  (${c.trapItemId}, 2, ${c.hostId}, 'Navigator sequence', 'NAVIGATOR SEQUENCE', '${c.trapKey}', '0', 3, '0', '', '', '', '');
INSERT INTO item_rtdata (itemid) VALUES (${c.agentItemId}), (${c.trapItemId});
`;
}

/** zabbix_agentd configuration for the client: active checks only, sends every second. */
export function agentConfig(opts: { dir: string; serverActive: string }): string {
  return [
    `PidFile=${join(opts.dir, 'zabbix_agentd.pid')}`,
    'LogType=file',
    `LogFile=${join(opts.dir, 'zabbix_agentd.log')}`,
    // No passive checks: nothing listens on 10050.
    'StartAgents=0',
    `ServerActive=${opts.serverActive}`,
    `Hostname=${CLIENT.host}`,
    // Zabbix 6.0's minimum: the host must exist before the agent first asks for its checks.
    'RefreshActiveChecks=60',
    'BufferSend=1',
    'BufferSize=1000',
    // Generous: on a busy machine the server's first answer can take a few seconds, and a failed
    // configuration request is only retried after RefreshActiveChecks.
    'Timeout=10',
    'AllowRoot=1',
    '',
  ].join('\n');
}

/** zabbix_sender -o VALUE for the trapper item; true when the server processed it. */
export async function sendValue(opts: { server: string; port: number; value: number; timeoutS?: number; netns?: string }): Promise<boolean> {
  const argv = ['zabbix_sender', '-z', opts.server, '-p', String(opts.port), '-s', CLIENT.host, '-k', CLIENT.trapKey, '-o', String(opts.value), '-t', String(opts.timeoutS ?? 2)];
  const r = opts.netns ? await execa('ip', ['netns', 'exec', opts.netns, ...argv], { reject: false }) : await execa(argv[0]!, argv.slice(1), { reject: false });
  return r.exitCode === 0 && /processed: 1;/.test(String(r.stdout));
}

/** Runs SQL in a copy's Zabbix database with the example's sql.sh; rows as arrays of strings. */
export async function copySql(containerDir: string, sql: string, opts: { netns?: string; timeoutMs?: number } = {}): Promise<string[][]> {
  const argv = ['bash', join(containerDir, 'scripts/sql.sh'), containerDir, join(containerDir, 'data')];
  const full = opts.netns ? ['ip', 'netns', 'exec', opts.netns, ...argv] : argv;
  const r = await execa(full[0]!, full.slice(1), { input: sql, reject: false, timeout: opts.timeoutMs ?? 30_000 });
  if (r.exitCode !== 0) throw new Error(`sql.sh in ${containerDir} failed (${r.exitCode}): ${String(r.stderr).trim()}`);
  return String(r.stdout)
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => l.split('\t'));
}
