import { readFile, mkdir } from 'node:fs/promises';
import { writeFileDurable } from '../shared/durable-file.ts';
import { dirname } from 'node:path';
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys';
import type { PrivateKey } from '@libp2p/interface';

// A depot keeps its peer id across restarts so the others recognise it (journal gap filling,
// membership incarnations). The key file is created on first start with mode 0600.
export async function loadOrCreateIdentity(path: string): Promise<PrivateKey> {
  try {
    return privateKeyFromProtobuf(await readFile(path));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new Error(`cannot read depot identity ${path}: ${(err as Error).message} (delete it to make a new identity)`);
    }
  }
  const key = await generateKeyPair('Ed25519');
  await mkdir(dirname(path), { recursive: true });
  // Whole or absent after a crash (never an empty key file that blocks the next start).
  await writeFileDurable(path, privateKeyToProtobuf(key), { mode: 0o600, exclusive: true });
  return key;
}
