import { mkdtemp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { freePort } from './ports.ts';

// A real OpenSSH sshd on a loopback port, with a throwaway host key and user key, for tests and
// benchmarks (image shipping, the lab). Key authentication only; everything lives in one temp
// folder that stop() removes.

export interface TestSshd {
  host: string;
  port: number;
  user: string;
  /** Temp folder holding keys, config and known_hosts. */
  dir: string;
  /** Private key file of the user key (ed25519, no passphrase). */
  userKeyFile: string;
  /** Host public key line as in known_hosts ("ssh-ed25519 AAAA..."). */
  hostPublicKey: string;
  /** A known_hosts file pinning this server's host key ("[127.0.0.1]:PORT ssh-ed25519 ..."). */
  knownHostsFile: string;
  /** sshd process id. */
  pid: number;
  /** OpenSSH client options (-o ...) for ssh/scp with the same key and pinned host key. */
  clientOptions(): string[];
  stop(): Promise<void>;
}

export interface StartSshdOptions {
  /** Extra sshd_config lines (e.g. "Ciphers aes128-gcm@openssh.com"). */
  extraConfig?: string[];
  /** Temp parent folder (default os.tmpdir()). */
  parentDir?: string;
}

const SSHD = '/usr/sbin/sshd';

/** Resolves once the port answers with an SSH banner; rejects when the deadline passes. */
async function waitForBanner(port: number, deadlineMs: number, exited: () => boolean): Promise<void> {
  const until = Date.now() + deadlineMs;
  for (;;) {
    if (exited()) throw new Error('sshd exited during start');
    const ok = await new Promise<boolean>((resolve) => {
      const sock = connect({ host: '127.0.0.1', port });
      let data = '';
      const done = (v: boolean) => {
        sock.destroy();
        resolve(v);
      };
      sock.setTimeout(500, () => done(false));
      sock.on('data', (d) => {
        data += d.toString('latin1');
        if (data.includes('SSH-2.0')) done(true);
      });
      sock.on('error', () => done(false));
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`sshd did not answer on 127.0.0.1:${port}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function keygen(file: string): Promise<void> {
  await execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'navigator-test', '-f', file]);
}

export async function startSshd(opts: StartSshdOptions = {}): Promise<TestSshd> {
  const dir = await mkdtemp(join(opts.parentDir ?? tmpdir(), 'nav-sshd-'));
  let proc: ResultPromise | undefined;
  try {
    // sshd refuses to start without its privilege separation folder.
    await mkdir('/run/sshd', { recursive: true, mode: 0o755 });
    const hostKey = join(dir, 'host_ed25519');
    const userKey = join(dir, 'user_ed25519');
    await Promise.all([keygen(hostKey), keygen(userKey)]);
    await writeFile(join(dir, 'authorized_keys'), await readFile(`${userKey}.pub`), { mode: 0o600 });
    const hostPub = (await readFile(`${hostKey}.pub`, 'utf8')).trim().split(/\s+/).slice(0, 2).join(' ');

    for (let attempt = 0; ; attempt++) {
      const port = await freePort();
      const config = [
        ...sshdConfig({ port, listen: '127.0.0.1', hostKey, pidFile: join(dir, 'sshd.pid'), authorizedKeys: join(dir, 'authorized_keys'), logLevel: 'ERROR' }),
        ...(opts.extraConfig ?? []),
      ];
      const configFile = join(dir, 'sshd_config');
      await writeFile(configFile, config.join('\n') + '\n');
      let exited = false;
      const p = execa(SSHD, ['-D', '-e', '-f', configFile], { reject: false, stdin: 'ignore', buffer: false, stdout: 'ignore', stderr: 'pipe' });
      let stderr = '';
      p.stderr?.on('data', (d: Buffer) => {
        stderr += d.toString();
      });
      void p.then(() => {
        exited = true;
      });
      try {
        await waitForBanner(port, 10_000, () => exited);
      } catch (err) {
        p.kill('SIGKILL');
        await p;
        // Another process may have taken the port between freePort() and bind: try another.
        if (attempt < 4 && /Address already in use|Bind to port/i.test(stderr)) continue;
        throw new Error(`sshd failed to start: ${(err as Error).message}: ${stderr.trim()}`);
      }
      proc = p;
      const knownHostsFile = join(dir, 'known_hosts');
      await writeFile(knownHostsFile, `[127.0.0.1]:${port} ${hostPub}\n`);
      const stop = async () => {
        if (proc && proc.exitCode === null && !exited) {
          proc.kill('SIGTERM');
          const timer = setTimeout(() => proc?.kill('SIGKILL'), 3000);
          await proc;
          clearTimeout(timer);
        }
        await rm(dir, { recursive: true, force: true });
      };
      return {
        host: '127.0.0.1',
        port,
        user: 'root',
        dir,
        userKeyFile: userKey,
        hostPublicKey: hostPub,
        knownHostsFile,
        pid: p.pid ?? 0,
        clientOptions: () => [
          '-o', `UserKnownHostsFile=${knownHostsFile}`,
          '-o', 'StrictHostKeyChecking=yes',
          '-o', 'BatchMode=yes',
          '-o', 'PasswordAuthentication=no',
          '-o', `IdentityFile=${userKey}`,
          '-o', 'IdentitiesOnly=yes',
          '-o', 'GlobalKnownHostsFile=/dev/null',
          '-o', 'LogLevel=ERROR',
        ],
        stop,
      };
    }
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

/** sshd_config lines of a test sshd: key login only, SFTP in-process, no PAM (loopback and lab namespaces). */
export function sshdConfig(o: { port: number; listen: string; hostKey: string; pidFile: string; authorizedKeys: string; logLevel: 'ERROR' | 'INFO' }): string[] {
  return [
    `Port ${o.port}`,
    `ListenAddress ${o.listen}`,
    `HostKey ${o.hostKey}`,
    `PidFile ${o.pidFile}`,
    `AuthorizedKeysFile ${o.authorizedKeys}`,
    'PasswordAuthentication no',
    'KbdInteractiveAuthentication no',
    'PubkeyAuthentication yes',
    'PermitRootLogin prohibit-password',
    'StrictModes no',
    'UsePAM no',
    'Subsystem sftp internal-sftp',
    `LogLevel ${o.logLevel}`,
  ];
}
