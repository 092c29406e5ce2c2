import { mkdtemp, rm, writeFile, chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { NavigatorError } from '../../shared/errors.ts';

// The MySQL command-line tools take the password from an option file, never from argv (where `ps`
// shows it to every user) nor from the environment (readable in /proc by the same user and
// inherited by children). Each sync writes its files in a fresh private directory (0700, files
// 0600) and removes them when the commands have ended.

/** How to reach one MariaDB/MySQL server. */
export const MySqlEndpoint = z.object({
  host: z.string().min(1).default('127.0.0.1').describe('Server host name or address (TCP)'),
  port: z.number().int().min(1).max(65535).default(3306).describe('Server TCP port'),
  socket: z.string().optional().describe('Unix socket path; used instead of host/port when set'),
  user: z.string().min(1).max(128).describe('Account used by Navigator'),
  password: z.string().default('').describe('Password of that account (only ever written to 0600 option files)'),
});
export type MySqlEndpoint = z.infer<typeof MySqlEndpoint>;
export type MySqlEndpointInput = z.input<typeof MySqlEndpoint>;

/** A label for logs and records: host:port or the socket path, never credentials. */
export function endpointLabel(ep: MySqlEndpoint): string {
  return ep.socket ? `unix:${ep.socket}` : `${ep.host}:${ep.port}`;
}

/** Quote a value for a MySQL option file (double quotes; \\ and \" escaped). */
export function optionFileValue(field: string, value: string): string {
  if (/[\n\r\0]/.test(value)) {
    throw new NavigatorError('BAD_REQUEST', `${field} contains a line break or NUL, which MySQL option files cannot hold`);
  }
  return `"${value.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

/** Text of a [client] option file for one endpoint (also read by mysqldump and mysql). */
export function optionFileText(ep: MySqlEndpoint, extra: Record<string, string | number> = {}): string {
  const lines = ['[client]', `user=${optionFileValue('user', ep.user)}`, `password=${optionFileValue('password', ep.password)}`];
  if (ep.socket) {
    lines.push(`socket=${optionFileValue('socket', ep.socket)}`, 'protocol=SOCKET');
  } else {
    // protocol=TCP: "localhost" would otherwise silently mean the local socket.
    lines.push(`host=${optionFileValue('host', ep.host)}`, `port=${ep.port}`, 'protocol=TCP');
  }
  for (const [k, v] of Object.entries(extra)) lines.push(`${k}=${v}`);
  return `${lines.join('\n')}\n`;
}

/** A private directory of option files; dispose() removes it (always call it, in finally). */
export class CredentialFiles {
  private constructor(readonly dir: string) {}

  static async create(prefix = 'navigator-dbsync-'): Promise<CredentialFiles> {
    const dir = await mkdtemp(join(tmpdir(), prefix));
    await chmod(dir, 0o700);
    return new CredentialFiles(dir);
  }

  /** Write `<name>.cnf` (mode 0600, created with that mode so it is never readable by others). */
  async write(name: string, ep: MySqlEndpoint, extra?: Record<string, string | number>): Promise<string> {
    if (!/^[a-z0-9-]+$/.test(name)) throw new NavigatorError('BAD_REQUEST', `bad option file name ${name}`);
    const path = join(this.dir, `${name}.cnf`);
    await writeFile(path, optionFileText(ep, extra), { mode: 0o600, flag: 'wx' });
    return path;
  }

  async dispose(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }
}
