// The runnable build of Navigator: cli/main.ts and everything it imports, bundled and minified by
// esbuild into dist/<fingerprint>/ (code-split, so what a command loads lazily stays out of the
// start-up chunk). Depots run from it: compared with compiling the TypeScript through tsx at start,
// an idle depot in a 32-depot cluster holds ~15 MB less (module sources, tsx's loader, source
// maps; bench:gossip) and starts faster.
//
// The fingerprint is a hash of the sources and the lockfile, so a stale build is never used: an
// edited checkout gets a new build at the next start (~1 s), an unchanged one reuses it.
// `node bin/build.mjs` (npm run build) builds ahead; `navigator depot install` does, because the
// systemd unit's ProtectSystem=strict leaves the checkout read-only at run time.
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = resolve(fileURLToPath(new URL('..', import.meta.url)));
export const DIST = join(ROOT, 'dist');
/** Everything cli/main.ts can reach. */
const SOURCE_DIRS = ['cli', 'shared', 'web', 'depot', 'ship', 'pilot', 'plugins', 'lab', 'demo'];
/** Builds kept besides the newest: a depot still running an older build may load a lazy chunk. */
const KEEP_BUILDS = 3;
/**
 * In an installed package (depot/install/debian/) there are no sources to hash: the package
 * ships one build and names it in this file, and nothing is ever built there.
 */
export const PACKAGED = join(DIST, 'PACKAGED');

async function sourceFiles(dir) {
  const out = [];
  const entries = await readdir(dir, { withFileTypes: true }).catch((err) => {
    if (err.code === 'ENOENT') return []; // an install may leave out a folder (lab/ in the package)
    throw err;
  });
  for (const entry of entries) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await sourceFiles(path)));
    else if (/\.(ts|mjs|js|json)$/.test(entry.name)) out.push(path);
  }
  return out;
}

/** Hash of every source file's path and content, the lockfile and this file (the build options). */
export async function fingerprint(root = ROOT) {
  const files = (await Promise.all(SOURCE_DIRS.map((d) => sourceFiles(join(root, d))))).flat().sort();
  files.push(join(root, 'package.json'), join(root, 'package-lock.json'), fileURLToPath(import.meta.url));
  const hash = createHash('sha256').update(`node ${process.versions.node}\n`);
  for (const file of files) {
    const content = await readFile(file).catch(() => undefined);
    if (content === undefined) continue; // no lockfile in some installs
    hash.update(`${relative(root, file)}\0${content.length}\0`).update(content);
  }
  return hash.digest('hex').slice(0, 16);
}

async function exists(path) {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** Bundle into a private directory, then move it into place in one rename (readers never see half a build). */
async function build(fp) {
  const { build: esbuild, stop } = await import('esbuild');
  const tmp = join(DIST, `.tmp-${process.pid}-${Date.now()}`);
  await mkdir(tmp, { recursive: true });
  try {
    const result = await esbuild({
      absWorkingDir: ROOT,
      entryPoints: { main: 'cli/main.ts' },
      outdir: tmp,
      bundle: true,
      splitting: true,
      format: 'esm',
      platform: 'node',
      target: 'node22',
      minify: true,
      // Error classes and log fields keep their names (err.name, constructor names in messages).
      keepNames: true,
      // Linked, not inline: Node reads the map only under --enable-source-maps (TypeScript lines
      // in stack traces when debugging), so an idle depot does not hold it.
      sourcemap: 'linked',
      // Native addons and what only a pilot's transfer or database sync loads stay in node_modules.
      external: ['ssh2', 'mysql2', 'cpu-features'],
      // CommonJS dependencies call require(); ESM output has none of its own.
      banner: { js: "import{createRequire as __navigatorRequire}from'node:module';const require=__navigatorRequire(import.meta.url);" },
      metafile: true,
      logLevel: 'silent',
    });
    // Which sources each chunk holds (tests check what an idle depot loaded), named by file.
    const outputs = Object.fromEntries(Object.entries(result.metafile.outputs).map(([file, o]) => [file.slice(file.lastIndexOf('/') + 1), o]));
    await writeFile(join(tmp, 'meta.json'), JSON.stringify({ inputs: result.metafile.inputs, outputs }));
    try {
      await rename(tmp, join(DIST, fp));
    } catch (err) {
      // Another process finished the same build first: use that one.
      if (!(await exists(join(DIST, fp, 'main.js')))) throw err;
    }
  } finally {
    await rm(tmp, { recursive: true, force: true });
    await stop();
  }
  // Old builds are only clutter: failing to remove them must not fail the build.
  await prune(fp).catch(() => {});
}

async function prune(current) {
  const builds = [];
  for (const entry of await readdir(DIST, { withFileTypes: true })) {
    if (!entry.isDirectory() || entry.name === current || entry.name.startsWith('.')) continue;
    builds.push({ name: entry.name, mtime: (await stat(join(DIST, entry.name))).mtimeMs });
  }
  builds.sort((a, b) => b.mtime - a.mtime);
  for (const old of builds.slice(KEEP_BUILDS)) await rm(join(DIST, old.name), { recursive: true, force: true });
}

/**
 * The entry module of the current build, building it first if the sources changed.
 * Returns { main, dir, built } or { error } (e.g. a read-only checkout): the caller then runs the
 * TypeScript sources through tsx instead.
 */
export async function ensureBuild() {
  try {
    const packaged = await readFile(PACKAGED, 'utf8').catch(() => undefined);
    if (packaged !== undefined) {
      const id = packaged.trim();
      if (!/^[0-9a-f]{16}$/.test(id)) return { error: `${PACKAGED} does not name a build` };
      const dir = join(DIST, id);
      return { main: join(dir, 'main.js'), dir, built: false };
    }
    const fp = await fingerprint();
    const dir = join(DIST, fp);
    const main = join(dir, 'main.js');
    if (await exists(main)) return { main, dir, built: false };
    await mkdir(DIST, { recursive: true });
    await build(fp);
    return { main, dir, built: true };
  } catch (err) {
    return { error: err instanceof Error ? err.message : String(err) };
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const r = await ensureBuild();
  if (r.error) {
    process.stderr.write(`navigator build failed: ${r.error}\n`);
    process.exit(1);
  }
  process.stdout.write(`${r.built ? 'built' : 'up to date:'} ${relative(ROOT, r.main)}\n`);
}
