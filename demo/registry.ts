import { existsSync } from 'node:fs';
import { mkdir, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { killMarked } from './marked-processes.ts';

// What a running demo has made, written down before it makes it: if the demo is killed
// (SIGKILL, a crash, a closed terminal) the next demo finds the record of a dead owner and
// removes what it left behind — processes, namespaces, the root-namespace link, a loopback
// address, the temp folder.

export interface DemoRecord {
  id: string;
  pid: number;
  /** The owner's start time (from /proc), so a reused pid is not mistaken for the owner. */
  startTime: string;
  dir: string;
  namespaces: string[];
  /** Link in the root namespace (deleting it deletes its veth peer). */
  rootLink?: string;
  /** Address added to lo in loopback mode (CIDR). */
  loAddress?: string;
}

export function registryDir(): string {
  return process.getuid?.() === 0 ? '/run/navdemo' : join(tmpdir(), `navdemo-run-${process.getuid?.() ?? 'x'}`);
}

export async function procStartTime(pid: number): Promise<string> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? '';
  } catch {
    return '';
  }
}

export async function writeRecord(rec: DemoRecord): Promise<void> {
  const dir = registryDir();
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const file = join(dir, `${rec.id}.json`);
  await writeFile(`${file}.tmp`, JSON.stringify(rec));
  await rename(`${file}.tmp`, file);
}

export async function removeRecord(id: string): Promise<void> {
  await rm(join(registryDir(), `${id}.json`), { force: true });
}

/** Removes everything a record lists (the owner is gone or is cleaning up); errors are collected. */
export async function removeAll(rec: DemoRecord): Promise<string[]> {
  const errors: string[] = [];
  const step = async (what: string, fn: () => Promise<unknown>) => {
    try {
      await fn();
    } catch (err) {
      errors.push(`${what}: ${(err as Error).message}`);
    }
  };
  await step('processes', () => killMarked(rec.id));
  for (const ns of rec.namespaces) await step(`namespace ${ns}`, () => deleteNamespace(ns));
  if (rec.rootLink) {
    const link = rec.rootLink;
    await step(`link ${link}`, async () => {
      const r = await execa('ip', ['link', 'del', link], { reject: false });
      if (r.exitCode !== 0 && !/Cannot find device/i.test(r.stderr)) throw new Error(r.stderr.trim());
    });
  }
  if (rec.loAddress) {
    const addr = rec.loAddress;
    await step(`address ${addr}`, async () => {
      const r = await execa('ip', ['addr', 'del', addr, 'dev', 'lo'], { reject: false });
      if (r.exitCode !== 0 && !/Cannot assign requested address|Address not found/i.test(r.stderr)) throw new Error(r.stderr.trim());
    });
  }
  if (rec.dir.startsWith(join(tmpdir(), 'navdemo-'))) await step('temp folder', () => rm(rec.dir, { recursive: true, force: true }));
  return errors;
}

async function deleteNamespace(ns: string): Promise<void> {
  if (!existsSync(`/run/netns/${ns}`)) return;
  // Anything still inside (not marked: started by hand in there) goes too, or the delete leaves it.
  const pids = await execa('ip', ['netns', 'pids', ns], { reject: false });
  for (const p of pids.stdout.split(/\s+/).filter(Boolean).map(Number)) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      // gone
    }
  }
  const r = await execa('ip', ['netns', 'del', ns], { reject: false });
  if (r.exitCode !== 0 && !/No such file/i.test(r.stderr)) throw new Error(r.stderr.trim());
}

/** Cleans up after demos whose owner process is gone. Returns the ids swept. */
export async function sweepStaleDemos(): Promise<string[]> {
  const swept: string[] = [];
  let files: string[] = [];
  try {
    files = await readdir(registryDir());
  } catch {
    return swept;
  }
  for (const f of files.filter((x) => x.endsWith('.json'))) {
    let rec: DemoRecord;
    try {
      rec = JSON.parse(await readFile(join(registryDir(), f), 'utf8')) as DemoRecord;
    } catch {
      await rm(join(registryDir(), f), { force: true });
      continue;
    }
    const st = await procStartTime(rec.pid);
    if (st !== '' && st === rec.startTime) continue; // its demo still runs
    await removeAll(rec);
    await removeRecord(rec.id);
    swept.push(rec.id);
  }
  return swept;
}
