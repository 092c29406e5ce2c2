import { createHmac } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { NavigatorError } from '../shared/errors.ts';
import { fingerprint } from '../depot/ssh-trust/ssh-keys.ts';

// Host key checks for SFTP shipping. By default the target's sshd must present the key whose
// fingerprint the target depot announced in its heartbeats and this depot pinned
// (depot/ssh-trust/): hostVerifierForPin. With ship.knownHostsFile set, an OpenSSH known_hosts
// file (plain or hashed host names) decides instead: hostVerifierFromFile. An unknown or changed
// key is refused either way.

export { fingerprint };

export interface KnownHostEntry {
  /** Host patterns as written: "host", "[host]:port", or a hashed "|1|salt|hash". */
  patterns: string[];
  keyType: string;
  /** Raw public key blob. */
  key: Buffer;
}

/** Parse known_hosts text; comments, blank lines, markers (@revoked/@cert-authority) are skipped. */
export function parseKnownHosts(text: string): KnownHostEntry[] {
  const out: KnownHostEntry[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#') || line.startsWith('@')) continue;
    const parts = line.split(/\s+/);
    if (parts.length < 3) continue;
    const [hosts, keyType, b64] = parts as [string, string, string];
    const key = Buffer.from(b64, 'base64');
    if (key.length === 0) continue;
    out.push({ patterns: hosts.split(','), keyType, key });
  }
  return out;
}

/** The name under which OpenSSH records host:port ("host" for port 22, else "[host]:port"). */
export function knownHostName(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`;
}

function patternMatches(pattern: string, name: string): boolean {
  if (pattern.startsWith('|1|')) {
    const [, , salt, hash] = pattern.split('|');
    if (!salt || !hash) return false;
    const h = createHmac('sha1', Buffer.from(salt, 'base64')).update(name).digest('base64');
    return h === hash;
  }
  return pattern === name;
}

export type HostKeyCheck = { ok: true } | { ok: false; reason: 'unknown' | 'changed'; message: string };

/** Decide whether `key` presented by host:port matches a pinned entry. */
export function checkHostKey(entries: KnownHostEntry[], host: string, port: number, key: Buffer, source: string): HostKeyCheck {
  const name = knownHostName(host, port);
  const forHost = entries.filter((e) => e.patterns.some((p) => patternMatches(p, name)));
  if (forHost.some((e) => e.key.equals(key))) return { ok: true };
  const fp = fingerprint(key);
  if (forHost.length === 0) {
    return { ok: false, reason: 'unknown', message: `host key of ${name} (${fp}) is not pinned in ${source}: add it with ssh-keyscan after checking the fingerprint` };
  }
  const pinned = forHost.map((e) => `${e.keyType} ${fingerprint(e.key)}`).join(', ');
  return { ok: false, reason: 'changed', message: `HOST KEY CHANGED for ${name}: it presented ${fp} but ${source} pins ${pinned}; refusing to connect` };
}

/**
 * An ssh2 hostVerifier bound to one host. The last refusal is kept so the caller can turn
 * ssh2's generic "verification failed" into an error that names host and fingerprint.
 */
export async function hostVerifierFromFile(file: string, host: string, port: number): Promise<{ verify: (key: Buffer) => boolean; refusal: () => NavigatorError | undefined }> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new NavigatorError('HOST_KEY_MISMATCH', `cannot read known_hosts file ${file}: ${(err as Error).message}`);
  }
  const entries = parseKnownHosts(text);
  let refused: NavigatorError | undefined;
  return {
    verify: (key: Buffer) => {
      const r = checkHostKey(entries, host, port, key, file);
      if (!r.ok) refused = new NavigatorError('HOST_KEY_MISMATCH', r.message, { host, port, reason: r.reason, fingerprint: fingerprint(key) });
      return r.ok;
    },
    refusal: () => refused,
  };
}

/** A pinned host key as the sender gets it: the fingerprint the target depot announced, and its name. */
export interface PinnedHostKey {
  fingerprint: string;
  depot: string;
}

/** An ssh2 hostVerifier that accepts exactly the pinned fingerprint (see hostVerifierFromFile for `refusal`). */
export function hostVerifierForPin(pin: PinnedHostKey, host: string, port: number): { verify: (key: Buffer) => boolean; refusal: () => NavigatorError | undefined } {
  let refused: NavigatorError | undefined;
  return {
    verify: (key: Buffer) => {
      const fp = fingerprint(key);
      if (fp === pin.fingerprint) return true;
      refused = new NavigatorError(
        'HOST_KEY_MISMATCH',
        `HOST KEY CHANGED for depot ${pin.depot} (${knownHostName(host, port)}): its sshd presented ${fp} but ${pin.fingerprint} is pinned from its heartbeats; refusing to connect`,
        { host, port, reason: 'changed', fingerprint: fp, pinned: pin.fingerprint },
      );
      return false;
    },
    refusal: () => refused,
  };
}
