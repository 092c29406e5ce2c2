import { chmod, copyFile, cp, mkdir, mkdtemp, readdir, readFile, realpath, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { execa } from 'execa';
import type { Logger } from '../../../shared/logger.ts';
import { NavigatorError } from '../../../shared/errors.ts';
import { REPO_ROOT } from '../../../shared/repo-root.ts';
import { renderDefaultConfig } from '../../../shared/config-file.ts';
import { ensureBuild } from '../../../bin/build.mjs';
import { DEFAULT_LAYOUT, configOverrides, writablePaths } from '../layout.ts';
import { CTR_UNIT_NAMES, UNIT_NAME, renderContainerUnit, renderUnit } from '../systemd-unit.ts';
import { PACKAGE_POLKIT_PATH, SSHD_DROPIN_PATH, renderCliWrapper, renderPolkitRule, renderSshdDropIn } from '../system-files.ts';
import { PREFIX, renderConffiles, renderControl, renderPostinst, renderPostrm, renderPrerm } from './maintainer-scripts.ts';
import { RUNTIME_ROOTS, runtimeClosure, type Lockfile } from './runtime-modules.ts';

// `npm run package`: navigator_<version>_amd64.deb from this checkout, with no network: the pinned
// Node 22 binary from node_modules, the bundled build (bin/build.mjs), the few node_modules the
// bundle leaves external, the tracking page, the systemd unit, the sshd drop-in, the polkit rule,
// the maintainer scripts (maintainer-scripts.ts), docs and the Zabbix example. dpkg-deb makes
// the archive with every file owned by root.

/** Debian 12's systemd: the unit is rendered for it (no RestartSteps before 254). */
export const TARGET_SYSTEMD = 252;

export interface DebOptions {
  outDir: string;
  /** Package version (default: package.json's). */
  version?: string;
  /** dpkg-deb compression (default gzip: fast, and every dpkg reads it). */
  compression?: 'gzip' | 'xz' | 'zstd' | 'none';
  logger?: Logger;
}

export interface DebResult {
  path: string;
  version: string;
  bytes: number;
  installedKiB: number;
  /** The bundled build it holds (dist/<id>). */
  build: string;
  /** ssh2's native ciphers load in the packaged Node (else transfers use its slower JavaScript ones). */
  nativeCiphers: boolean;
}

const VERSION_RE = /^[0-9][A-Za-z0-9.+~-]*$/;

export async function buildDebianPackage(o: DebOptions): Promise<DebResult> {
  const pkg = JSON.parse(await readFile(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string; description: string; license: string };
  const version = o.version ?? pkg.version;
  if (!VERSION_RE.test(version)) throw new NavigatorError('BAD_REQUEST', `package version ${JSON.stringify(version)} is not a Debian version (digits first, then letters, digits, . + ~ -)`);
  const build = await ensureBuild();
  if (!build.main) throw new NavigatorError('COMMAND_FAILED', `the bundled build could not be made: ${build.error}`);
  const buildId = build.dir.split('/').pop()!;

  const stage = await mkdtemp(join(tmpdir(), 'navigator-deb-'));
  await chmod(stage, 0o755); // the archive's ./ entry
  try {
    const at = (p: string) => join(stage, p);
    const prefix = at(PREFIX);
    const put = async (path: string, text: string, mode = 0o644) => {
      await mkdir(dirname(at(path)), { recursive: true });
      await writeFile(at(path), text, { mode });
    };

    // The runtime: Node 22 (the real file behind node_modules/.bin/node) and the entry scripts.
    await mkdir(join(prefix, 'bin'), { recursive: true });
    await copyFile(await realpath(join(REPO_ROOT, 'node_modules', '.bin', 'node')), join(prefix, 'bin', 'node'));
    for (const f of ['navigator.mjs', 'build.mjs']) await copyFile(join(REPO_ROOT, 'bin', f), join(prefix, 'bin', f));
    // The build, named in dist/PACKAGED (what the test suite's chunk map needs stays out).
    await cp(build.dir, join(prefix, 'dist', buildId), { recursive: true, filter: (src) => !src.endsWith('/meta.json') });
    await writeFile(join(prefix, 'dist', 'PACKAGED'), `${buildId}\n`);
    await writeFile(join(prefix, 'package.json'), `${JSON.stringify({ name: 'navigator', version, description: pkg.description, license: pkg.license, type: 'module', private: true }, null, 2)}\n`);
    // What the depot reads or starts besides the bundle.
    await cp(join(REPO_ROOT, 'web', 'page'), join(prefix, 'web', 'page'), { recursive: true });
    await mkdir(join(prefix, 'pilot'), { recursive: true });
    await copyFile(join(REPO_ROOT, 'pilot', 'fence-guard-process.ts'), join(prefix, 'pilot', 'fence-guard-process.ts'));
    const lock = JSON.parse(await readFile(join(REPO_ROOT, 'package-lock.json'), 'utf8')) as Lockfile;
    const present = new Set<string>();
    for (const p of Object.keys(lock.packages)) if (p && (await stat(join(REPO_ROOT, p)).catch(() => undefined))) present.add(p);
    for (const p of runtimeClosure(lock, RUNTIME_ROOTS, (x) => present.has(x))) {
      // Nested node_modules are entries of their own; build intermediates are not needed.
      await cp(join(REPO_ROOT, p), join(prefix, p), { recursive: true, filter: (src) => !/\/(node_modules|obj\.target|\.deps)$/.test(src.slice(join(REPO_ROOT, p).length)) });
    }

    await put('/usr/bin/navigator', renderCliWrapper(PREFIX), 0o755);
    await put(
      `/lib/systemd/system/${UNIT_NAME}`,
      renderUnit({
        nodeBinary: `${PREFIX}/bin/node`,
        entry: `${PREFIX}/bin/navigator.mjs`,
        configPath: DEFAULT_LAYOUT.configPath,
        user: DEFAULT_LAYOUT.depotUser,
        writablePaths: writablePaths(DEFAULT_LAYOUT),
        systemdVersion: TARGET_SYSTEMD,
      }),
    );
    for (const name of CTR_UNIT_NAMES) {
      await put(`/lib/systemd/system/${name}`, renderContainerUnit({ serviceUser: DEFAULT_LAYOUT.serviceUser, containersDir: join(DEFAULT_LAYOUT.storeDir, 'containers'), once: name.includes('-once@') }));
    }
    await put(SSHD_DROPIN_PATH, renderSshdDropIn(DEFAULT_LAYOUT));
    await put(PACKAGE_POLKIT_PATH, renderPolkitRule(DEFAULT_LAYOUT));
    await put('/usr/share/navigator/navigator.yaml', renderDefaultConfig(configOverrides(DEFAULT_LAYOUT)));
    await put('/usr/share/doc/navigator/README.md', await readFile(join(REPO_ROOT, 'README.md'), 'utf8'));
    await put('/usr/share/doc/navigator/copyright', `Navigator\nLicense: ${pkg.license}\n\nThe Node.js runtime in ${PREFIX}/bin/node is Node.js ${process.versions.node} (MIT and bundled licenses: https://github.com/nodejs/node/blob/main/LICENSE).\n`);
    await cp(join(REPO_ROOT, 'deploy', 'examples'), at('/usr/share/doc/navigator/examples'), { recursive: true });

    await normalizeModes(stage);
    const installedKiB = Math.ceil((await treeBytes(stage)) / 1024);
    await put('/DEBIAN/control', renderControl({ version, installedKiB }));
    await put('/DEBIAN/conffiles', renderConffiles());
    await put('/DEBIAN/postinst', renderPostinst(), 0o755);
    await put('/DEBIAN/prerm', renderPrerm(DEFAULT_LAYOUT), 0o755);
    await put('/DEBIAN/postrm', renderPostrm(DEFAULT_LAYOUT), 0o755);

    // ssh2's native ciphers were built for this Node (scripts/ssh2-native.sh); say if they were not.
    const check = await execa(join(prefix, 'bin', 'node'), ['-e', "process.exit(require('ssh2/lib/protocol/crypto.js').bindingAvailable ? 0 : 1)"], { cwd: prefix, reject: false });
    const nativeCiphers = check.exitCode === 0;
    if (!nativeCiphers) o.logger?.warn({ event: 'package-no-native-ciphers' }, "ssh2's native ciphers do not load in the packaged Node: run scripts/ssh2-native.sh first for full shipping speed");

    await mkdir(o.outDir, { recursive: true });
    const path = join(o.outDir, `navigator_${version}_amd64.deb`);
    await execa('dpkg-deb', ['--root-owner-group', `-Z${o.compression ?? 'gzip'}`, '--build', stage, path]);
    const bytes = (await stat(path)).size;
    o.logger?.info({ event: 'package-built', path, version, bytes, installedKiB, build: buildId }, `built ${path}`);
    return { path, version, bytes, installedKiB, build: buildId, nativeCiphers };
  } finally {
    await rm(stage, { recursive: true, force: true });
  }
}

/** Folders 0755, files 0755 when any execute bit is set, else 0644 (node_modules come with all sorts). */
async function normalizeModes(dir: string): Promise<void> {
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) {
      await chmod(p, 0o755);
      await normalizeModes(p);
    } else if (e.isFile()) {
      await chmod(p, (await stat(p)).mode & 0o111 ? 0o755 : 0o644);
    }
  }
}

async function treeBytes(dir: string): Promise<number> {
  let n = 0;
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) n += await treeBytes(p);
    else if (e.isFile()) n += (await stat(p)).size;
  }
  return n;
}
