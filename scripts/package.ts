// `npm run package [-- --version V] [--out DIR] [--compression gzip|xz|zstd|none]`: builds
// navigator_<version>_amd64.deb (depot/install/debian/build-deb.ts) into out/ by default.
import { parseArgs } from 'node:util';
import { join } from 'node:path';
import { buildDebianPackage } from '../depot/install/debian/build-deb.ts';
import { REPO_ROOT } from '../shared/repo-root.ts';
import { createLogger } from '../shared/logger.ts';

const { values } = parseArgs({
  options: {
    version: { type: 'string' },
    out: { type: 'string', default: join(REPO_ROOT, 'out') },
    compression: { type: 'string', default: 'gzip' },
  },
});
const compression = values.compression as 'gzip' | 'xz' | 'zstd' | 'none';
if (!['gzip', 'xz', 'zstd', 'none'].includes(compression)) {
  process.stderr.write(`package: --compression must be gzip, xz, zstd or none, not ${compression}\n`);
  process.exit(2);
}
try {
  const t0 = performance.now();
  const r = await buildDebianPackage({ outDir: values.out!, compression, ...(values.version ? { version: values.version } : {}), logger: createLogger({ level: 'warn' }) });
  process.stdout.write(`${r.path}  ${(r.bytes / 1e6).toFixed(1)} MB (installed ${(r.installedKiB / 1024).toFixed(0)} MiB), build ${r.build}, ${Math.round(performance.now() - t0)} ms${r.nativeCiphers ? '' : ' — WARNING: ssh2 native ciphers missing'}\n`);
} catch (err) {
  process.stderr.write(`package: ${(err as Error).message}\n`);
  process.exit(1);
}
