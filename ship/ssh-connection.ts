import { readFile } from 'node:fs/promises';
import { connect as netConnect } from 'node:net';
import { Client, type SFTPWrapper } from 'ssh2';
import type { Logger } from '../shared/logger.ts';
import { NavigatorError, errorMessage } from '../shared/errors.ts';
import { hostVerifierForPin, hostVerifierFromFile, type PinnedHostKey } from './ssh-known-hosts.ts';
import { tuneSender, type SenderStats } from './ssh2-sender.ts';

// The sender's SSH connections to a target depot's sshd: key authentication only, the host key
// pinned (from the target's heartbeats, or a known_hosts file: ssh-known-hosts.ts), our own socket so that the sender tuning (ssh2-sender.ts) can
// batch its writes, and one SFTP session per connection.

export interface SshAuth {
  user: string;
  /** Private key file (key authentication only; no passwords, no agent). */
  keyFile: string;
  /** Pinned host keys (OpenSSH known_hosts format); empty: the target's pin from its heartbeats. */
  knownHostsFile: string;
  /** Cipher preference (default: AES-GCM first, it is the fastest in both ssh2 and OpenSSH here). */
  ciphers?: string[];
  readyTimeoutMs?: number;
}

const DEFAULT_CIPHERS = ['aes128-gcm@openssh.com', 'chacha20-poly1305@openssh.com', 'aes256-gcm@openssh.com', 'aes128-ctr', 'aes256-ctr'];

/** Packet recycling counts of the connections this module opened (tests check the pool is used). */
export const senderStats = new WeakMap<Client, SenderStats>();

/** Where to connect, and (unless ssh.knownHostsFile decides) the host key its sshd must present. */
export interface SshTarget {
  host: string;
  port: number;
  hostKey?: () => Promise<PinnedHostKey>;
}

/** Open an SSH connection with key authentication and the pinned host key. */
export async function connectSsh(ssh: SshAuth, target: SshTarget, log: Logger, signal?: AbortSignal): Promise<Client> {
  const where = `${target.host}:${target.port}`;
  let pinned = false;
  let verifier: Awaited<ReturnType<typeof hostVerifierFromFile>>;
  if (ssh.knownHostsFile) verifier = await hostVerifierFromFile(ssh.knownHostsFile, target.host, target.port);
  else if (target.hostKey) {
    // Throws a clear HOST_KEY_MISMATCH when the target announces another key than the pinned one.
    verifier = hostVerifierForPin(await target.hostKey(), target.host, target.port);
    pinned = true;
  } else throw new NavigatorError('HOST_KEY_MISMATCH', `no pinned host key for ${where}: set ship.knownHostsFile or ship to a depot that announces its sshd host key`);
  let privateKey: Buffer;
  try {
    privateKey = await readFile(ssh.keyFile);
  } catch (err) {
    throw new NavigatorError('TRANSFER_FAILED', `cannot read SSH key ${ssh.keyFile}: ${errorMessage(err)}`);
  }
  const conn = new Client();
  // Our own socket, so that the sender tuning (ssh2-sender.ts) can batch its writes.
  const sock = netConnect({ host: target.host, port: target.port, noDelay: true });
  await new Promise<void>((resolve, reject) => {
    const onAbort = () => {
      conn.destroy();
      sock.destroy();
      reject(new NavigatorError('TRANSFER_FAILED', `connection to ${where} aborted`));
    };
    if (signal?.aborted) return onAbort();
    signal?.addEventListener('abort', onAbort, { once: true });
    conn.once('ready', () => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    });
    conn.once('error', (err) => {
      signal?.removeEventListener('abort', onAbort);
      sock.destroy();
      const refused = verifier.refusal();
      if (refused) return reject(refused);
      reject(new NavigatorError('TRANSFER_FAILED', `cannot open SSH to ${ssh.user}@${where}: ${errorMessage(err)}`));
    });
    conn.connect({
      sock,
      username: ssh.user,
      privateKey,
      hostVerifier: (key: Buffer) => verifier.verify(key),
      tryKeyboard: false,
      readyTimeout: ssh.readyTimeoutMs ?? 10_000,
      keepaliveInterval: 5000,
      keepaliveCountMax: 3,
      // A pin is an Ed25519 fingerprint: ask the sshd for that key (it may hold others too).
      algorithms: { cipher: (ssh.ciphers ?? DEFAULT_CIPHERS) as never, compress: ['none'], ...(pinned ? { serverHostKey: ['ssh-ed25519'] } : {}) },
    });
    senderStats.set(conn, tuneSender(conn, sock));
  });
  if (signal) {
    const onAbort = () => conn.destroy();
    signal.addEventListener('abort', onAbort, { once: true });
    conn.once('close', () => signal.removeEventListener('abort', onAbort));
  }
  // Errors after ready surface through the pending SFTP requests; keep the emitter quiet.
  conn.on('error', (err) => log.debug({ event: 'ssh-error', target: where, err: errorMessage(err) }, 'ssh connection error'));
  return conn;
}

/** Open `n` more connections with their SFTP sessions; those that fail are logged and left out. */
export async function connectMore(connect: () => Promise<Client>, target: { host: string; port: number }, n: number, log: Logger): Promise<Client[]> {
  const settled = await Promise.allSettled(
    Array.from({ length: n }, async () => {
      const c = await connect();
      try {
        await sftpOf(c);
        return c;
      } catch (err) {
        c.end();
        throw err;
      }
    }),
  );
  const ok: Client[] = [];
  for (const s of settled) {
    if (s.status === 'fulfilled') ok.push(s.value);
    else log.warn({ event: 'ship-connect-extra-failed', target: `${target.host}:${target.port}`, err: errorMessage(s.reason) }, 'extra SSH connection failed; shipping with fewer');
  }
  return ok;
}

/** The connection's SFTP session, started at the first call. */
export function sftpOf(conn: Client): Promise<SFTPWrapper> {
  const cached = (conn as unknown as { __navSftp?: Promise<SFTPWrapper> }).__navSftp;
  if (cached) return cached;
  const p = new Promise<SFTPWrapper>((resolve, reject) =>
    conn.sftp((err, sftp) => (err ? reject(new NavigatorError('TRANSFER_FAILED', `cannot start SFTP: ${errorMessage(err)}`)) : resolve(sftp))),
  );
  (conn as unknown as { __navSftp?: Promise<SFTPWrapper> }).__navSftp = p;
  return p;
}

/** An ssh2 SFTP call with a callback, as a promise. */
export function sftpCall<T>(fn: (cb: (err: Error | null | undefined, v: T) => void) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => fn((err, v) => (err ? reject(err) : resolve(v))));
}
