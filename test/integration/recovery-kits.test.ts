import { EventEmitter } from 'node:events';
import { mkdir, mkdtemp, readdir, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startMariaDb, type MariaDbServer } from '../../lab/loopback/mariadb.ts';
import { RecoveryKits, type RecoveryKit } from '../../pilot/recovery-kits.ts';
import { loadDatabaseGz } from '../../pilot/db/db-copy.ts';
import { ConfigSchema } from '../../shared/config.ts';
import { silentLogger } from '../../shared/logger.ts';
import type { DepotComponents } from '../../depot/components.ts';

// A kit holder's database copy against real mariadbd servers: the holder dumps the primary's
// database over TCP with the password read from the image, writes it durably, reports its time,
// finds it again after a restart (and ignores a torn one), keeps the previous copy when a dump
// fails, and the copy loads into another server with every row.

let primary: MariaDbServer;
let target: MariaDbServer;
let dir: string;
const IMAGE = 'a'.repeat(64);

beforeAll(async () => {
  [primary, target] = await Promise.all([startMariaDb({ name: 'kits-p', password: `Kit"pw#${Date.now()}` }), startMariaDb({ name: 'kits-t' })]);
  dir = await mkdtemp(join(tmpdir(), 'nav-kits-'));
  await mkdir(join(dir, 'image', 'secrets'), { recursive: true });
  await writeFile(join(dir, 'image', 'secrets', 'db.password'), `${primary.password}\n`, { mode: 0o600 });
  await primary.query('CREATE DATABASE shop');
  await primary.query('CREATE TABLE shop.orders (id INT PRIMARY KEY, what VARCHAR(64))');
  await primary.query("INSERT INTO shop.orders VALUES (1, 'bread'), (2, 'milk'), (3, 'tea')");
}, 120_000);

afterAll(async () => {
  await Promise.all([primary?.stop(), target?.stop()]);
  if (dir) await rm(dir, { recursive: true, force: true });
}, 60_000);

function members(): DepotComponents['members'] {
  const view = [
    {
      peerId: 'p-primary',
      name: 'w1',
      state: 'alive' as const,
      incarnation: 1,
      seq: 1,
      lastHeardAt: Date.now(),
      since: 0,
      reason: '',
      self: false,
      heartbeat: { addresses: ['/ip4/127.0.0.1/tcp/1/p2p/p-primary'], containers: [{ id: 'shop-1', service: 'shop', role: 'primary', term: 3, state: 'running' }] },
    },
  ];
  return { view: () => view, get: () => undefined, countByState: () => ({ alive: 1, suspect: 0, dead: 0, left: 0 }), events: new EventEmitter() } as unknown as DepotComponents['members'];
}

function kit(): RecoveryKit {
  return {
    spec: {
      name: 'shop',
      image: IMAGE,
      container: { driver: 'process' } as RecoveryKit['spec']['container'],
      address: '10.9.9.9/24',
      iface: 'eth0',
      port: 8080,
      standbys: 1,
      memoryBytes: 0,
      diskBytes: 0,
      database: { database: 'shop', user: primary.user, passwordFile: 'secrets/db.password', port: primary.port },
    },
    view: { voters: ['p-primary'], epoch: [1, 0] },
    term: 3,
    stagedBy: 'w1',
  } as RecoveryKit;
}

function holder(): RecoveryKits {
  const config = ConfigSchema.parse({ recovery: { dbCopyIntervalMs: 200 } });
  return new RecoveryKits({ dir: join(dir, 'recovery'), self: { peerId: 'p-holder', name: 'w4' } as DepotComponents['self'], members: members(), imageFilesDir: () => join(dir, 'image'), config, logger: silentLogger() });
}

async function until(check: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('recovery kits: the database copy', () => {
  it('dumps the primary durably, reports its time, survives a restart, keeps the last good copy, and loads with every row', async () => {
    const a = holder();
    await a.start();
    const before = Date.now();
    expect(await a.stage(kit())).toEqual({ dbAt: undefined });
    a.tick();
    await until(() => a.dbCopy('shop') !== undefined, 60_000, 'the first database copy');
    const first = a.dbCopy('shop')!;
    expect(first.meta.at).toBeGreaterThanOrEqual(before);
    expect(first.meta.fromHost).toBe('w1');
    expect(a.report()).toEqual([{ service: 'shop', image: IMAGE, dbAt: first.meta.at }]);
    expect(a.report(() => 'shop-prep')).toEqual([{ service: 'shop', image: IMAGE, dbAt: first.meta.at, preparing: 'shop-prep' }]);

    // A write after the copy is not in it; the next copy has it and replaces the old file.
    await primary.query("INSERT INTO shop.orders VALUES (4, 'jam')");
    await new Promise((r) => setTimeout(r, 250));
    a.tick();
    await until(() => (a.dbCopy('shop')?.meta.at ?? 0) > first.meta.at, 60_000, 'a newer copy');
    const second = a.dbCopy('shop')!;
    expect((await readdir(join(dir, 'recovery', 'shop'))).filter((f) => f.endsWith('.gz'))).toEqual([second.meta.file]);

    // The primary's server goes away: the dump fails, the last good copy stays.
    await primary.halt();
    await new Promise((r) => setTimeout(r, 250));
    a.tick();
    await new Promise((r) => setTimeout(r, 3000));
    expect(a.dbCopy('shop')?.meta.at).toBe(second.meta.at);
    await a.stop();

    // A restarted depot finds its kit and copy again.
    const b = holder();
    await b.start();
    expect(b.kit('shop')?.term).toBe(3);
    expect(b.dbCopy('shop')?.meta).toEqual(second.meta);

    // The copy loads into another server with every row, the write after the first copy included.
    await loadDatabaseGz({ file: b.dbCopy('shop')!.file, target: { host: target.host, port: target.port, user: target.user, password: target.password }, timeoutMs: 60_000 });
    const rows = await target.query<{ id: number; what: string }>('SELECT id, what FROM shop.orders ORDER BY id');
    expect(rows.map((r) => [r.id, r.what])).toEqual([[1, 'bread'], [2, 'milk'], [3, 'tea'], [4, 'jam']]);
    await b.stop();

    // A torn copy (shorter than its record) is not offered for a recovery.
    await truncate(b.dbCopy('shop')!.file, 10);
    const c = holder();
    await c.start();
    expect(c.kit('shop')).toBeDefined();
    expect(c.dbCopy('shop')).toBeUndefined();
    expect(c.report()).toEqual([{ service: 'shop', image: IMAGE }]);
    await c.stop();
    await primary.restart();
  }, 180_000);
});
