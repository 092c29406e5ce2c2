import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { NavigatorError } from '../shared/errors.ts';
import { OwnerRegistry, ownerAlive, type OwnerRecord } from '../lab/lan/owner-registry.ts';
import { removeNamespace, removeRootLink } from '../lab/lan/namespaces.ts';
import { killMarked } from './marked-processes.ts';

// What a running demo has made, written down before it makes it: if the demo is killed
// (SIGKILL, a crash, a closed terminal) the next demo (or `navigator demo --cleanup`) finds the
// record of a dead owner and removes what it left behind — processes, namespaces, the
// root-namespace link, a loopback address, the temp folder.

export interface DemoRecord extends OwnerRecord {
  id: string;
  /** Link in the root namespace (deleting it deletes its veth peer). */
  rootLink?: string;
  /** Address added to lo in loopback mode (CIDR). */
  loAddress?: string;
}

export function registryDir(): string {
  return process.getuid?.() === 0 ? '/run/navdemo' : join(tmpdir(), `navdemo-run-${process.getuid?.() ?? 'x'}`);
}

function registry(): OwnerRegistry<DemoRecord> {
  return new OwnerRegistry<DemoRecord>(registryDir(), 0o700);
}

export async function writeRecord(rec: DemoRecord): Promise<void> {
  await registry().write(rec.id, rec);
}

/** Removes everything a record lists (the owner is gone or is cleaning up); errors are collected. */
async function removeAll(rec: DemoRecord): Promise<string[]> {
  const errors: string[] = [];
  const step = async (what: string, fn: () => Promise<unknown>) => {
    try {
      await fn();
    } catch (err) {
      errors.push(`${what}: ${(err as Error).message}`);
    }
  };
  await step('processes', () => killMarked(rec.id));
  // Anything still inside (not marked: started by hand in there) goes too, or the delete leaves it.
  for (const ns of rec.namespaces) await step(`namespace ${ns}`, () => removeNamespace(ns));
  if (rec.rootLink) {
    const link = rec.rootLink;
    await step(`link ${link}`, () => removeRootLink(link));
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

/** A demo's own clean-up: everything its record lists, then the record. */
export async function removeDemo(rec: DemoRecord): Promise<void> {
  const errors = await removeAll(rec);
  await registry().remove(rec.id);
  if (errors.length > 0) throw new NavigatorError('INTERNAL', `demo cleanup: ${errors.join('; ')}`);
}

/** Cleans up after demos whose owner process is gone. Returns the ids swept. */
export async function sweepStaleDemos(): Promise<string[]> {
  const swept: string[] = [];
  const reg = registry();
  for (const [id, rec] of await reg.records()) {
    if (!rec) {
      await reg.remove(id);
      continue;
    }
    if (await ownerAlive(rec)) continue; // its demo still runs
    await removeAll(rec);
    await reg.remove(rec.id);
    swept.push(rec.id);
  }
  return swept;
}
