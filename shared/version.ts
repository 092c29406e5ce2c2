import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from './repo-root.ts';

// Read once at load: the version goes into every heartbeat so mixed-version clusters are visible.
const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string };

export const VERSION: string = pkg.version;
