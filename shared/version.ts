import { readFileSync } from 'node:fs';

// Read once at load: the version goes into every heartbeat so mixed-version clusters are visible.
const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };

export const VERSION: string = pkg.version;
