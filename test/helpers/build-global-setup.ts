import { resolve } from 'node:path';
import { execa } from 'execa';

// Vitest global setup: bring the bundled build (bin/build.mjs) up to date once, before test files
// start depot processes in parallel (each would otherwise build the same thing at its start).
export default async function buildOnce(): Promise<void> {
  const root = resolve(import.meta.dirname, '../..');
  const r = await execa(process.execPath, [resolve(root, 'bin/build.mjs')], { cwd: root, reject: false });
  if (r.exitCode !== 0) throw new Error(`bin/build.mjs failed: ${String(r.stderr).slice(0, 2000)}`);
}
