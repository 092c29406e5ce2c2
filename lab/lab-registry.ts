import { existsSync } from 'node:fs';
import { readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import type { Logger } from '../shared/logger.ts';
import { silentLogger } from '../shared/logger.ts';
import { errorMessage } from '../shared/errors.ts';
import { listNamespaces, removeNamespace } from './lan/namespaces.ts';
import { NETEM_PROBE_PREFIX } from './lan/netem.ts';
import { OwnerRegistry, ownerAlive, type OwnerRecord } from './lan/owner-registry.ts';

// Where the lab's LANs are recorded (/run/navlab/<id>.json, written before anything is made) and
// how a later run removes what a crashed or killed run left behind.

/** Namespace prefix of every lab LAN: `navlab-<id>-<host>`. */
export const LAB_NS_PREFIX = 'navlab-';
export const labRegistry = new OwnerRegistry<OwnerRecord>('/run/navlab');

/**
 * Removes labs whose owning process is gone (a crashed or killed earlier run): kills their
 * processes, deletes their namespaces and temp dirs. Labs of live processes are left alone, so
 * parallel test files never sweep each other. Returns the namespaces removed.
 */
export async function sweepLabs(log: Logger = silentLogger()): Promise<string[]> {
  const removed: string[] = [];
  // Namespaces first, registry second: a lab registers before it creates namespaces, so every
  // namespace listed here already has its owner record on disk when we read the registry.
  const names = await listNamespaces();
  const owners = await labRegistry.records();
  const byId = new Map<string, string[]>();
  const probe = new RegExp(`^${NETEM_PROBE_PREFIX}(\\d+)-`);
  const lab = new RegExp(`^${LAB_NS_PREFIX}([0-9a-z]+)-`);
  for (const name of names) {
    const p = probe.exec(name);
    if (p && !existsSync(`/proc/${p[1]}`)) await execa('ip', ['netns', 'del', name], { reject: false });
    const m = lab.exec(name);
    if (!m) continue;
    const arr = byId.get(m[1]!) ?? [];
    arr.push(name);
    byId.set(m[1]!, arr);
  }
  for (const id of new Set([...byId.keys(), ...owners.keys()])) {
    const rec = owners.get(id);
    if (await ownerAlive(rec)) continue;
    // A lab without a registry entry is being created only if its entry was written first — so it is stale.
    for (const ns of byId.get(id) ?? []) {
      try {
        await removeNamespace(ns);
        removed.push(ns);
      } catch (e) {
        log.warn({ event: 'lab-sweep-failed', ns, err: errorMessage(e) }, 'could not remove a leftover lab namespace');
      }
    }
    if (rec?.dir && rec.dir.startsWith(join(tmpdir(), 'navlab-'))) {
      // The workstations' user cgroups are bind-mounted into the lab folder (Lab.userCgroup): unmount first.
      for (const host of await readdir(join(rec.dir, 'cgroup')).catch(() => [] as string[])) await execa('umount', ['-l', join(rec.dir, 'cgroup', host)], { reject: false });
      await rm(rec.dir, { recursive: true, force: true });
    }
    await labRegistry.remove(id);
  }
  if (removed.length > 0) log.info({ event: 'lab-swept', namespaces: removed }, 'removed leftover lab namespaces');
  return removed;
}
