import { randomBytes } from 'node:crypto';
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { NavigatorError } from '../shared/errors.ts';

// The private-network pre-shared key in the go-ipfs swarm.key format that @libp2p/pnet reads.
const HEADER = '/key/swarm/psk/1.0.0/\n/base16/\n';

export function makeSwarmKey(): Uint8Array {
  return new TextEncoder().encode(HEADER + randomBytes(32).toString('hex'));
}

/** Check the format so a truncated or hand-edited key fails with a clear message. */
export function parseSwarmKey(bytes: Uint8Array, source: string): Uint8Array {
  const text = new TextDecoder().decode(bytes).trim();
  const lines = text.split(/\r?\n/);
  if (lines[0] !== '/key/swarm/psk/1.0.0/' || lines[1] !== '/base16/' || !/^[0-9a-fA-F]{64}$/.test(lines[2] ?? '')) {
    throw new NavigatorError(
      'SWARM_KEY_INVALID',
      `swarm key ${source} is not a valid private network key (expected the 3-line /key/swarm/psk/1.0.0/ format with 64 hex digits; make one with \`navigator keygen\`)`,
    );
  }
  return new TextEncoder().encode(`${lines[0]}\n${lines[1]}\n${lines[2]!.toLowerCase()}`);
}

export async function readSwarmKey(path: string): Promise<Uint8Array> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (err) {
    throw new NavigatorError(
      'SWARM_KEY_INVALID',
      `cannot read swarm key ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)} (make one with \`navigator keygen --out ${path}\` and copy it to every depot)`,
    );
  }
  return parseSwarmKey(bytes, path);
}

/** Write a new key with mode 0600; refuses to overwrite unless `force`. */
export async function writeSwarmKey(path: string, force = false): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  try {
    await writeFile(path, makeSwarmKey(), { mode: 0o600, flag: force ? 'w' : 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
      throw new NavigatorError('CONFLICT', `swarm key ${path} already exists; pass --force to replace it (every depot must then get the new key)`);
    }
    throw err;
  }
}
