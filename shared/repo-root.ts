import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

// The Navigator checkout (or install) directory: where bin/navigator.mjs, the tracking page and
// the scripts the depot starts live. Found by walking up, because this module runs either from
// shared/ (TypeScript sources) or from a bundle chunk in dist/<build>/ (bin/build.mjs).
function findRoot(from: string): string {
  for (let dir = from; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'bin', 'navigator.mjs'))) return dir;
    if (dirname(dir) === dir) throw new Error(`no Navigator checkout (package.json and bin/navigator.mjs) above ${from}`);
  }
}

export const REPO_ROOT: string = findRoot(dirname(fileURLToPath(import.meta.url)));
