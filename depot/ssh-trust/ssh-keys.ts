import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import { writeFileDurable } from '../../shared/durable-file.ts';
import { dirname } from 'node:path';
import { NavigatorError, errorMessage } from '../../shared/errors.ts';

// OpenSSH key formats for the depot's own SFTP key pair and the host keys it announces and pins,
// written with node:crypto alone: an idle depot must not load ssh2 (~20 modules and a 16 MB
// WebAssembly reservation) just to make or read a key, and no ssh-keygen is ever run.
//
// Only Ed25519: every Debian sshd has an Ed25519 host key, and the depots make their own keys.

const KEY_TYPE = 'ssh-ed25519';
const BEGIN = '-----BEGIN OPENSSH PRIVATE KEY-----';
const END = '-----END OPENSSH PRIVATE KEY-----';

/** "ssh-ed25519 " + base64 of the 51-byte public key blob. */
export const PUBLIC_KEY_RE = /^ssh-ed25519 [A-Za-z0-9+/]{68}$/;
/** OpenSSH's fingerprint form: "SHA256:" + unpadded base64 of the blob's SHA-256. */
export const FINGERPRINT_RE = /^SHA256:[A-Za-z0-9+/]{43}$/;

function sshString(b: Buffer | string): Buffer {
  const body = typeof b === 'string' ? Buffer.from(b) : b;
  const len = Buffer.alloc(4);
  len.writeUInt32BE(body.length);
  return Buffer.concat([len, body]);
}

function uint32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}

/** The SSH wire blob of an Ed25519 public key (what known_hosts and authorized_keys hold in base64). */
export function ed25519Blob(publicKey: Buffer): Buffer {
  if (publicKey.length !== 32) throw new RangeError(`an Ed25519 public key is 32 bytes, got ${publicKey.length}`);
  return Buffer.concat([sshString(KEY_TYPE), sshString(publicKey)]);
}

/** "SHA256:…" of a public key blob, as `ssh-keygen -l` prints it. */
export function fingerprint(blob: Buffer): string {
  return `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
}

/** The blob of a one-line OpenSSH public key ("ssh-ed25519 AAAA… [comment]"); undefined if it is not one. */
export function parsePublicKeyLine(line: string): Buffer | undefined {
  const [type, b64] = line.trim().split(/\s+/);
  if (type !== KEY_TYPE || !b64 || !/^[A-Za-z0-9+/]+=*$/.test(b64)) return undefined;
  const blob = Buffer.from(b64, 'base64');
  // The blob names its own type: a line whose label and blob disagree is not trusted.
  if (blob.length !== 51 || !blob.subarray(0, 15).equals(sshString(KEY_TYPE))) return undefined;
  return blob;
}

/** "ssh-ed25519 AAAA…" (no comment) of a blob. */
export function publicKeyLine(blob: Buffer): string {
  return `${KEY_TYPE} ${blob.toString('base64')}`;
}

export interface SshKeyPair {
  /** OpenSSH private key file text (unencrypted). */
  privateKey: string;
  /** "ssh-ed25519 AAAA…" without comment. */
  publicKey: string;
}

/** A new Ed25519 key pair in OpenSSH's formats (ssh2 and OpenSSH both read the private key). */
export function makeSshKeyPair(comment = 'navigator'): SshKeyPair {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  const jwk = privateKey.export({ format: 'jwk' });
  const pub = Buffer.from(publicKey.export({ format: 'jwk' }).x!, 'base64url');
  const seed = Buffer.from(jwk.d!, 'base64url');
  const blob = ed25519Blob(pub);
  const check = randomBytes(4).readUInt32BE();
  let priv = Buffer.concat([uint32(check), uint32(check), sshString(KEY_TYPE), sshString(pub), sshString(Buffer.concat([seed, pub])), sshString(comment)]);
  // Padded with 1, 2, 3, … to the cipher block size (8 for "none").
  const pad = (8 - (priv.length % 8)) % 8;
  priv = Buffer.concat([priv, Buffer.from(Array.from({ length: pad }, (_, i) => i + 1))]);
  const body = Buffer.concat([Buffer.from('openssh-key-v1\0'), sshString('none'), sshString('none'), sshString(''), uint32(1), sshString(blob), sshString(priv)]);
  const b64 = body.toString('base64').match(/.{1,70}/g)!.join('\n');
  return { privateKey: `${BEGIN}\n${b64}\n${END}\n`, publicKey: publicKeyLine(blob) };
}

/** The public key of an unencrypted OpenSSH Ed25519 private key file's text. */
export function publicKeyOfPrivate(text: string, source: string): string {
  const bad = (why: string) => new NavigatorError('CONFIG_INVALID', `SSH key ${source} is not an unencrypted OpenSSH Ed25519 private key (${why})`);
  const t = text.trim();
  if (!t.startsWith(BEGIN) || !t.endsWith(END)) throw bad('no OPENSSH PRIVATE KEY block');
  const body = Buffer.from(t.slice(BEGIN.length, -END.length).replace(/\s+/g, ''), 'base64');
  const magic = 'openssh-key-v1\0';
  if (body.subarray(0, magic.length).toString('latin1') !== magic) throw bad('bad magic');
  let off = magic.length;
  const str = (): Buffer => {
    if (off + 4 > body.length) throw bad('truncated');
    const n = body.readUInt32BE(off);
    if (off + 4 + n > body.length) throw bad('truncated');
    const s = body.subarray(off + 4, off + 4 + n);
    off += 4 + n;
    return s;
  };
  if (str().toString() !== 'none') throw bad('encrypted');
  str(); // kdf name
  str(); // kdf options
  if (body.readUInt32BE(off) !== 1) throw bad('more than one key');
  off += 4;
  const blob = str();
  if (!parsePublicKeyLine(publicKeyLine(blob))) throw bad('not Ed25519');
  return publicKeyLine(blob);
}

/**
 * The depot's SFTP key at `path` (made, 0600, if missing; with `owner` when run by the installer as
 * root): its public key line. A file that exists but is not such a key is an error, never replaced.
 */
export async function loadOrCreateSshKey(path: string, owner?: { uid: number; gid: number }): Promise<{ publicKey: string; created: boolean }> {
  let text: string | undefined;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new NavigatorError('CONFIG_INVALID', `cannot read SSH key ${path}: ${errorMessage(err)}`);
    }
  }
  if (text !== undefined) return { publicKey: publicKeyOfPrivate(text, path), created: false };
  const pair = makeSshKeyPair();
  await mkdir(dirname(path), { recursive: true, mode: 0o750 });
  await writeFileDurable(path, pair.privateKey, { mode: 0o600, ...(owner ? { owner } : {}) });
  await writeFileDurable(`${path}.pub`, `${pair.publicKey} navigator\n`, { mode: 0o644, ...(owner ? { owner } : {}) });
  return { publicKey: pair.publicKey, created: true };
}

/** Fingerprint of the host key in an OpenSSH .pub file; undefined when the file is absent. */
export async function hostKeyFingerprint(pubFile: string): Promise<string | undefined> {
  let text: string;
  try {
    text = await readFile(pubFile, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new NavigatorError('CONFIG_INVALID', `cannot read sshd host key ${pubFile}: ${errorMessage(err)}`);
  }
  const blob = parsePublicKeyLine(text);
  if (!blob) throw new NavigatorError('CONFIG_INVALID', `sshd host key ${pubFile} is not an OpenSSH Ed25519 public key`);
  return fingerprint(blob);
}
