import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, readFile, rm, chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { silentLogger } from '../../shared/logger.ts';
import { ProcessSpec } from '../../depot/containers/drivers/driver.ts';
import { createDriver } from '../../depot/containers/drivers/factory.ts';
import type { ProcessDriver } from '../../depot/containers/drivers/process.ts';
import { tcpOpen } from '../../shared/tcp-probe.ts';
import { CLIENT, clientSql, copySql, prepareZabbixImage, sendValue, type ZabbixImage } from './zabbix-fixture.ts';
import { freePort } from '../../lab/loopback/ports.ts';

// The Zabbix example container (deploy/examples/zabbix) on its own, through the process driver
// as a depot runs it: first start creates MariaDB's data folder and loads the Zabbix schema; as
// a standby only MariaDB runs; promoted, zabbix_server starts and its trapper takes values;
// demoted, zabbix_server stops and MariaDB stays; a restart keeps the data and loads nothing.

let root: string;
let image: ZabbixImage;
let driver: ProcessDriver;

/** A free port in 20000-32767 (zabbix_server's ListenPort must be ≤ 32767). */

/** The container's own logs, for failure messages. */
async function logs(): Promise<string> {
  const tail = async (p: string) => `--- ${p}\n${(await readFile(join(image.dir, p), 'utf8').catch(() => '(none)')).split('\n').slice(-15).join('\n')}`;
  return (await Promise.all(['logs/primary-0.log', 'data/log/zabbix_server.log', 'data/log/mariadb.err'].map(tail))).join('\n');
}

async function waitFor(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<number> {
  const t0 = Date.now();
  for (;;) {
    if (await check()) return Date.now() - t0;
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}\n${await logs()}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Processes of the server whose pid file is `pidFile` in the copy's run folder: its whole process group. */
async function serverProcesses(pidFile: string): Promise<number> {
  const runDir = (await readFile(join(image.dir, 'data/.run-dir'), 'utf8')).trim();
  const pid = Number((await readFile(join(runDir, pidFile), 'utf8').catch(() => '')).trim());
  if (!pid) return 0;
  const pgid = await execa('ps', ['-o', 'pgid=', '-p', String(pid)], { reject: false });
  if (pgid.exitCode !== 0) return 0;
  const r = await execa('pgrep', ['-c', '-g', String(pgid.stdout).trim()], { reject: false });
  return Number(String(r.stdout).trim() || '0');
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'navzbx-test-'));
  await chmod(root, 0o755);
  image = await prepareZabbixImage(join(root, 'c'), { dbPort: await freePort(), zbxPort: await freePort(), cacheUpdateS: 1 });
  driver = createDriver(ProcessSpec.parse({ driver: 'process' }), { id: 'zabbix-test', dir: image.dir, logger: silentLogger() }) as ProcessDriver;
});

afterAll(async () => {
  await driver?.stop({ timeoutMs: 10_000 }).catch(() => undefined);
  if (root) await rm(root, { recursive: true, force: true });
});

describe('Zabbix example container (process driver)', () => {
  it('starts as a standby copy: MariaDB with the Zabbix schema, no zabbix_server', async () => {
    const t0 = Date.now();
    await driver.start();
    const startMs = Date.now() - t0;
    expect(await driver.status()).toBe('running');
    // The stock Zabbix 6.0 data: thousands of template items, schema version 6.0.
    const [[items]] = (await copySql(image.dir, 'SELECT COUNT(*) FROM items')) as [[string]];
    expect(Number(items)).toBeGreaterThan(10_000);
    const [[mandatory]] = (await copySql(image.dir, 'SELECT mandatory FROM dbversion')) as [[string]];
    expect(mandatory).toBe('6000000');
    const [[collation]] = (await copySql(image.dir, "SELECT DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'zabbix'")) as [[string]];
    expect(collation).toBe('utf8mb4_bin');
    expect(await tcpOpen('127.0.0.1', image.zbxPort, 500)).toBe(false);
    expect(await serverProcesses('zabbix_server.pid')).toBe(0);
    console.log(`zabbix container: first start (data folder + schema load) ${(startMs / 1000).toFixed(1)} s`);
  }, 240_000);

  it('the sync account can reach the database over TCP with the image\'s password', async () => {
    const password = (await readFile(join(image.dir, image.database.passwordFile), 'utf8')).trim();
    const mysql = await import('mysql2/promise');
    const c = await mysql.createConnection({ host: '127.0.0.1', port: image.dbPort, user: image.database.user, password, database: image.database.database });
    try {
      const [rows] = await c.query('SELECT COUNT(*) AS n FROM hosts');
      expect(Number((rows as Array<{ n: number }>)[0]!.n)).toBeGreaterThan(0);
      // It may create the sync's staging schema (pilot/dbsync.ts needs ALL on DB__nav_*).
      await c.query('CREATE DATABASE IF NOT EXISTS zabbix__nav_staging');
      await c.query('DROP DATABASE zabbix__nav_staging');
    } finally {
      await c.end();
    }
  });

  it('promoted: zabbix_server starts and its trapper takes values; demoted: it stops, MariaDB stays', async () => {
    await copySql(image.dir, clientSql());
    const t0 = Date.now();
    // Promotion returns once the trapper listens (the manifest's zabbix-wait.sh step).
    await driver.setRole!('primary');
    const promoteMs = Date.now() - t0;
    expect(await tcpOpen('127.0.0.1', image.zbxPort, 500)).toBe(true);
    // The server reads the new host from its configuration cache (reloaded every second here).
    let seq = 0;
    await waitFor(() => sendValue({ server: '127.0.0.1', port: image.zbxPort, value: ++seq }), 30_000, 'the trapper to accept a value');
    console.log(`zabbix container: promotion (zabbix_server listening) ${promoteMs} ms, first value accepted ${Date.now() - t0} ms after it began`);
    // The history syncer writes it to the database within seconds.
    await waitFor(async () => (await copySql(image.dir, `SELECT COUNT(*) FROM history_uint WHERE itemid = ${CLIENT.trapItemId} AND value = ${seq}`))[0]![0] === '1', 15_000, 'the value in history_uint');
    expect(await serverProcesses('zabbix_server.pid')).toBeGreaterThan(5);

    await driver.setRole!('standby');
    expect(await serverProcesses('zabbix_server.pid')).toBe(0);
    expect(await tcpOpen('127.0.0.1', image.zbxPort, 500)).toBe(false);
    expect(await driver.status()).toBe('running');
    // Promoting again (a copy can be primary, standby, primary...) works the same.
    await driver.setRole!('primary');
    await waitFor(() => sendValue({ server: '127.0.0.1', port: image.zbxPort, value: ++seq }), 30_000, 'the trapper after a second promotion');
    await driver.setRole!('standby');
  }, 120_000);

  it('a restart keeps the data and does not load the schema again', async () => {
    await driver.stop({ timeoutMs: 20_000 });
    expect(await driver.status()).toBe('stopped');
    expect(await serverProcesses('mysqld.pid')).toBe(0);
    const t0 = Date.now();
    await driver.start();
    const restartMs = Date.now() - t0;
    const [[host]] = (await copySql(image.dir, `SELECT host FROM hosts WHERE hostid = ${CLIENT.hostId}`)) as [[string]];
    expect(host).toBe(CLIENT.host);
    const log = await readFile(join(image.dir, 'logs/start-2.log'), 'utf8');
    expect(log.match(/loading the Zabbix schema/g)?.length).toBe(1);
    expect(log).toContain('schema already loaded');
    console.log(`zabbix container: restart ${(restartMs / 1000).toFixed(1)} s`);
  }, 120_000);
});
