import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { REPO_ROOT } from '../shared/repo-root.ts';
import { stringify } from 'yaml';
import { ContainerManifest } from '../depot/containers/drivers/process.ts';

// The demo's sample service as a `process` container image: a private mariadbd per copy (start
// commands: initialise the data folder once, then run the server) and the monitor, which runs
// only while the copy is primary (`primary:` commands). The programs are demo/service/*.ts of
// this checkout; the image holds the manifest, the database init file and the password file.

export const SERVICE = 'monitor';
export const MONITOR_PORT = 8080;
export const DB_NAME = 'navdemo';
export const DB_USER = 'navigator';
export const PASSWORD_FILE = 'db.password';

export interface DemoImage {
  dir: string;
  /** Port of each copy's mariadbd. */
  dbPort: number;
  /** Whether the monitor is a `primary:` command (else, until the driver knows `primary:`, it runs on every copy). */
  primaryOnly: boolean;
  manifest: Record<string, unknown>;
}

/** Does this checkout's process driver know `primary:` commands? */
function driverHasPrimaryCommands(): boolean {
  return 'primary' in (ContainerManifest as unknown as { shape: Record<string, unknown> }).shape;
}

/**
 * Writes the image folder. `dbHostIp`: where each copy's mariadbd is reached from its own host —
 * 127.0.0.1 in namespaces (mariadbd listens on all of the namespace's addresses); in loopback
 * mode every workstation shares this machine's stack, so each listens on its own 127.0.0.x (the
 * depot passes it in NAVIGATOR_DEMO_DB_HOST) on a port away from the system server's 3306.
 */
export async function writeDemoImage(dir: string, mode: 'netns' | 'loopback'): Promise<DemoImage> {
  await mkdir(dir, { recursive: true });
  const dbPort = mode === 'netns' ? 3306 : 13306;
  const password = randomBytes(18).toString('base64url');
  await writeFile(join(dir, PASSWORD_FILE), `${password}\n`, { mode: 0o600 });
  const sql = [
    // Each copy sets itself up at every start: not binary-logged (standbys replicate the primary).
    'SET SESSION sql_log_bin = 0;',
    `CREATE USER IF NOT EXISTS '${DB_USER}'@'%' IDENTIFIED BY '${password}';`,
    `CREATE USER IF NOT EXISTS '${DB_USER}'@'localhost' IDENTIFIED BY '${password}';`,
    `GRANT ALL PRIVILEGES ON *.* TO '${DB_USER}'@'%' WITH GRANT OPTION;`,
    `GRANT ALL PRIVILEGES ON *.* TO '${DB_USER}'@'localhost' WITH GRANT OPTION;`,
    `CREATE DATABASE IF NOT EXISTS ${DB_NAME};`,
    `CREATE TABLE IF NOT EXISTS ${DB_NAME}.history (id BIGINT AUTO_INCREMENT PRIMARY KEY, \`time\` DATETIME(3) NOT NULL, load_avg DOUBLE NOT NULL, host VARCHAR(64) NOT NULL, KEY (\`time\`)) ENGINE=InnoDB;`,
  ];
  await writeFile(join(dir, 'init.sql'), `${sql.join('\n')}\n`, { mode: 0o600 });
  const node = process.execPath;
  const db = join(REPO_ROOT, 'demo/service/db.ts');
  const monitor = {
    argv: [node, '--no-warnings', join(REPO_ROOT, 'demo/service/monitor.ts'), '--port', String(MONITOR_PORT), '--db-port', String(dbPort), '--password-file', `\${dir}/${PASSWORD_FILE}`],
  };
  const primaryOnly = driverHasPrimaryCommands();
  const manifest: Record<string, unknown> = {
    name: SERVICE,
    start: [{ argv: [node, '--no-warnings', db, '--datadir', '${dataDir}/db', '--port', String(dbPort), '--init-file', '${dir}/init.sql'] }, ...(primaryOnly ? [] : [monitor])],
    ...(primaryOnly ? { primary: [monitor] } : {}),
    // The copy is up when its database answers; the monitor (primary only) is what the pilots
    // probe at the service address.
    health:
      mode === 'netns'
        ? { tcp: { host: '127.0.0.1', port: dbPort, banner: true } }
        : { command: [node, '--no-warnings', db, '--check', '--port', String(dbPort)] },
    startTimeoutMs: 90_000,
  };
  await writeFile(join(dir, 'container.yaml'), stringify(manifest));
  return { dir, dbPort, primaryOnly, manifest };
}
