import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { readFile, readdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { DepotCluster, waitFor, type DepotProc } from '../helpers/depot-procs.ts';
import { DEPOT_NODE_FLAGS } from '../../depot/runtime-flags.ts';

// What an idle depot process holds (issue 2: an idle depot stays small). Modules that only some
// depots need, at their first use, are not loaded at start; the process runs with the Node
// flags every launcher uses; tsx's compiler process is gone once the depot has started.

const HOOK = resolve(import.meta.dirname, '../helpers/record-modules.mjs');
/** Loaded only when a depot ships an image, syncs a database, runs a container or a command. */
const NOT_AT_IDLE = [
  /\/node_modules\/ssh2\//,
  /\/node_modules\/mysql2\//,
  /\/node_modules\/execa\//,
  /\/pilot\/(ship|dbsync|movements)\.ts$/,
  /\/depot\/install\.ts$/,
  /\/demo\//,
];

let cluster: DepotCluster;
let depot: DepotProc;
let modulesFile: string;

beforeAll(async () => {
  cluster = await DepotCluster.create('nav-footprint-');
  modulesFile = join(cluster.dir, 'modules.txt');
  depot = await cluster.start('idle', {
    swarmKey: await cluster.swarmKey(),
    // No tsx cache, as under systemd (PrivateTmp): every module goes through esbuild at start.
    env: { NODE_OPTIONS: `--import=${HOOK}`, NAVIGATOR_TEST_MODULES_FILE: modulesFile, TSX_DISABLE_CACHE: '1' },
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
  it('has not loaded what only some depots need', async () => {
    const loaded = (await readFile(modulesFile, 'utf8')).split('\n').filter(Boolean);
    // The hook saw the depot itself (else the check below proves nothing).
    expect(loaded.some((u) => u.endsWith('/depot/daemon.ts'))).toBe(true);
    expect(loaded.some((u) => u.includes('/node_modules/libp2p/'))).toBe(true);
    expect(loaded.filter((u) => NOT_AT_IDLE.some((re) => re.test(u)))).toEqual([]);
  });

  it('runs with the deployed Node flags', async () => {
    const argv = (await readFile(`/proc/${depot.pid}/cmdline`, 'utf8')).split('\0');
    const entry = argv.findIndex((a) => a.endsWith('bin/navigator.mjs'));
    expect(entry).toBeGreaterThan(0);
    expect(argv.slice(1, entry)).toEqual([...DEPOT_NODE_FLAGS]);
  });

  it('keeps no compiler process once started', async () => {
    await waitFor('no child processes', async () => ((await childrenOf(depot.pid)).length === 0 ? true : undefined), 10_000, 100).catch(async () => {
      throw new Error(`the depot still has child processes: ${(await childrenOf(depot.pid)).join(', ')}`);
    });
  });
});
