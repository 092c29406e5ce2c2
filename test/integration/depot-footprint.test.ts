import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { readFile, readdir } from 'node:fs/promises';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DepotCluster, waitFor, type DepotProc } from '../../lab/loopback/depot-procs.ts';
import { DEPOT_ENV, DEPOT_NODE_FLAGS } from '../../depot/runtime-flags.ts';

// What an idle depot process holds (issue 2: an idle depot stays small). It runs from the
// bundled build (bin/build.mjs), not from TypeScript compiled at start; modules that only some
// depots need, at their first use, are in chunks it has not loaded; the process runs with the
// Node flags every launcher uses and keeps no compiler process.

const ROOT = resolve(import.meta.dirname, '../..');
const HOOK = resolve(import.meta.dirname, '../helpers/record-modules.mjs');
/** Loaded only when a depot ships an image, syncs a database, runs a container or a command, sends mail (bundle inputs). */
const NOT_AT_IDLE = [/^node_modules\/ssh2\//, /^node_modules\/mysql2\//, /^node_modules\/execa\//, /^node_modules\/nodemailer\//, /^ship\/(shipper|ssh-connection|block-streaming)\.ts$/, /^pilot\/db\/(dbsync|movements-table)\.ts$/, /^depot\/install\/install\.ts$/, /^demo\//];

/** dist/<build>/meta.json: esbuild's metafile, outputs named by file name. */
interface Metafile {
  outputs: Record<string, { inputs: Record<string, unknown> }>;
}

let cluster: DepotCluster;
let depot: DepotProc;
let modulesFile: string;

beforeAll(async () => {
  cluster = await DepotCluster.create('nav-footprint-');
  modulesFile = join(cluster.dir, 'modules.txt');
  depot = await cluster.start('idle', {
    swarmKey: await cluster.swarmKey(),
    env: { NODE_OPTIONS: `--import=${HOOK}`, NAVIGATOR_TEST_MODULES_FILE: modulesFile },
    timeoutMs: 60_000,
  });
}, 90_000);

afterAll(async () => {
  await cluster?.stopAll();
});

async function childrenOf(pid: number): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(fields[1]) === pid && fields[0] !== 'Z') out.push(stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')));
  }
  return out;
}

describe('idle depot footprint', () => {
  it('runs from the bundled build and has not loaded what only some depots need', async () => {
    const loaded = (await readFile(modulesFile, 'utf8')).split('\n').filter(Boolean);
    const files = loaded.filter((u) => u.startsWith('file:')).map((u) => fileURLToPath(u));
    // The bundle's entry, and not one TypeScript source of ours (tsx compiles nothing at start).
    const entry = files.find((f) => /\/dist\/[0-9a-f]{16}\/main\.js$/.test(f));
    expect(entry, `loaded: ${files.join(', ')}`).toBeDefined();
    expect(files.filter((f) => f.endsWith('.ts') && !f.includes('/node_modules/'))).toEqual([]);
    // Which sources the loaded chunks hold, from the build's metafile.
    const buildDir = dirname(entry!);
    const meta = JSON.parse(await readFile(join(buildDir, 'meta.json'), 'utf8')) as Metafile;
    const inputsOf = (outputs: string[]) => outputs.flatMap((o) => Object.keys(meta.outputs[o]?.inputs ?? {}));
    const loadedOutputs = files.filter((f) => dirname(f) === buildDir).map((f) => basename(f));
    const loadedInputs = [...inputsOf(loadedOutputs), ...files.filter((f) => f.includes('/node_modules/')).map((f) => relative(ROOT, f))];
    expect(loadedInputs.some((i) => i === 'depot/depot.ts')).toBe(true);
    expect(loadedInputs.some((i) => i.startsWith('node_modules/libp2p/'))).toBe(true);
    expect(loadedInputs.filter((i) => NOT_AT_IDLE.some((re) => re.test(i)))).toEqual([]);
    // The lazy parts are in the build (else the check above proves nothing), in other chunks.
    const allInputs = inputsOf(Object.keys(meta.outputs));
    for (const re of NOT_AT_IDLE.filter((r) => !/ssh2|mysql2/.test(r.source))) expect(allInputs.some((i) => re.test(i)), re.source).toBe(true);
  });

  it('runs with the deployed Node flags and environment', async () => {
    const argv = (await readFile(`/proc/${depot.pid}/cmdline`, 'utf8')).split('\0');
    const entry = argv.findIndex((a) => a.endsWith('bin/navigator.mjs'));
    expect(entry).toBeGreaterThan(0);
    expect(argv.slice(1, entry)).toEqual([...DEPOT_NODE_FLAGS]);
    const env = Object.fromEntries((await readFile(`/proc/${depot.pid}/environ`, 'utf8')).split('\0').filter(Boolean).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
    expect(Object.keys(DEPOT_ENV).length).toBeGreaterThan(0);
    for (const [k, v] of Object.entries(DEPOT_ENV)) expect(env[k], k).toBe(v);
  });

  it('keeps no compiler process once started', async () => {
    await waitFor('no child processes', async () => ((await childrenOf(depot.pid)).length === 0 ? true : undefined), 10_000, 100).catch(async () => {
      throw new Error(`the depot still has child processes: ${(await childrenOf(depot.pid)).join(', ')}`);
    });
  });
});
