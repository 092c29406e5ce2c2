import { EventEmitter } from 'node:events';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mysql from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startMariaDb, type MariaDbServer } from '../../lab/loopback/mariadb.ts';
import { RecoveryKits, type RecoveryKit } from '../../pilot/recovery-kits.ts';
import { LastResortRunner } from '../../pilot/last-resort-runner.ts';
import type { PilotSupervisor } from '../../pilot/supervisor.ts';
import type { PilotAssignment } from '../../pilot/service-spec.ts';
import type { ContainerManager } from '../../depot/containers/manager.ts';
import type { DepotComponents } from '../../depot/components.ts';
import { ConfigSchema } from '../../shared/config.ts';
import { silentLogger } from '../../shared/logger.ts';

// Recovery kits and the last-resort load of a VM-packed service, against real mariadbd servers
// standing in for the guests' MariaDB: each listens only on its "guest's" own address (the
// primary guest 127.0.0.2, the recovering host's new guest 127.0.0.3), nothing on the hosts'
// address (127.0.0.1), so a dump or a load aimed at a host instead of its guest fails. The holder
// dumps the primary guest's database at the guest address from the heartbeat; the runner starts
// the copy (a fake container manager whose guest's MariaDB only comes up seconds after the
// start, as under TCG) and loads the copy into the new guest's address once it answers.
// With real guests (QEMU, the Zabbix image) these paths are not run in CI: see the README.

const IMAGE = 'c'.repeat(64);
const PRIMARY_GUEST = '127.0.0.2';
const NEW_GUEST = '127.0.0.3';
const PASSWORD = `Guest"pw#${Date.now()}`;

let primary: MariaDbServer;
let target: MariaDbServer | undefined;
let dir: string;

beforeAll(async () => {
  primary = await startMariaDb({ name: 'guest-p', password: PASSWORD, extraArgs: [`--bind-address=${PRIMARY_GUEST}`] });
  dir = await mkdtemp(join(tmpdir(), 'nav-guest-kits-'));
  await mkdir(join(dir, 'image', 'secrets'), { recursive: true });
  await writeFile(join(dir, 'image', 'secrets', 'db.password'), `${PASSWORD}\n`, { mode: 0o600 });
  await primary.query('SELECT 1').then(
    () => {
      throw new Error('the primary answers on 127.0.0.1: the test would not tell a host address from a guest address');
    },
    () => undefined,
  );
  await sql(PRIMARY_GUEST, primary.port, 'CREATE DATABASE zabbix');
  await sql(PRIMARY_GUEST, primary.port, 'CREATE TABLE zabbix.history (itemid INT, clock INT, value DOUBLE, PRIMARY KEY (itemid, clock))');
  await sql(PRIMARY_GUEST, primary.port, 'INSERT INTO zabbix.history VALUES (1, 100, 0.5), (1, 160, 0.7), (2, 100, 42)');
}, 120_000);

afterAll(async () => {
  await Promise.all([primary?.stop(), target?.stop()]);
  if (dir) await rm(dir, { recursive: true, force: true });
}, 60_000);

async function sql<T = Record<string, unknown>>(host: string, port: number, q: string): Promise<T[]> {
  const c = await mysql.createConnection({ host, port, user: 'root', password: PASSWORD, connectTimeout: 2000 });
  try {
    const [rows] = await c.query(q);
    return rows as T[];
  } finally {
    await c.end().catch(() => undefined);
  }
}

function hb(name: string, extra: Record<string, unknown>) {
  return { name, addresses: [`/ip4/127.0.0.1/tcp/1/p2p/p-${name}`], uptimeS: 3600, load: [0.1, 0.1, 0.1], cpus: 2, memFreeBytes: 4e9, memTotalBytes: 8e9, diskFreeBytes: 1e11, images: [IMAGE], staging: [], containers: [], sentAt: Date.now(), incarnation: 1, ...extra };
}

function kit(): RecoveryKit {
  return {
    spec: {
      name: 'zbx',
      image: IMAGE,
      container: { driver: 'qemu', guestAgent: true, network: { bridge: 'navbr0', guestAddressOffset: 50 } } as unknown as RecoveryKit['spec']['container'],
      address: '10.9.9.9/24',
      iface: 'eth0',
      port: 10051,
      standbys: 1,
      memoryBytes: 0,
      diskBytes: 0,
      database: { database: 'zabbix', user: 'root', passwordFile: 'secrets/db.password', port: primary.port },
    },
    view: { voters: ['p-w1', 'p-w2', 'p-w3'], epoch: [1, 0] },
    term: 3,
    stagedBy: 'w1',
  } as RecoveryKit;
}

async function until(check: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('recovery kits and the last-resort load of a VM-packed service', () => {
  it("the kit holder dumps the primary guest's database at the guest's address; the recovering host loads it into its new guest once that guest's MariaDB answers", async () => {
    // w1 runs the primary copy (its guest at 127.0.0.2); w3 holds the kit.
    let w1State: 'alive' | 'dead' = 'alive';
    const lostAt = Date.now();
    const members = (guestAddress: string | undefined) =>
      ({
        view: () => [
          { peerId: 'p-w1', name: 'w1', state: w1State, incarnation: 1, seq: 1, lastHeardAt: w1State === 'alive' ? Date.now() : lostAt - 600_000, since: w1State === 'alive' ? 0 : lostAt - 600_000, reason: '', self: false, heartbeat: hb('w1', { containers: [{ id: 'zbx-1', service: 'zbx', role: 'primary', term: 3, state: 'running', ...(guestAddress ? { guestAddress } : {}) }] }) },
          { peerId: 'p-w3', name: 'w3', state: 'alive', incarnation: 1, seq: 1, lastHeardAt: Date.now(), since: 0, reason: '', self: true, heartbeat: hb('w3', { recoveryKits: holder.report() }) },
        ],
        get: () => undefined,
        countByState: () => ({}),
        events: new EventEmitter(),
      }) as unknown as DepotComponents['members'];
    const config = ConfigSchema.parse({ recovery: { dbCopyIntervalMs: 200 } });
    const self = { peerId: 'p-w3', name: 'w3' } as DepotComponents['self'];

    // The primary guest's address not known yet: no dump is tried at its host (nothing of the service runs there).
    let holder = new RecoveryKits({ dir: join(dir, 'recovery'), self, members: members(undefined), imageFilesDir: () => join(dir, 'image'), config, logger: silentLogger() });
    await holder.start();
    await holder.stage(kit());
    await new Promise((r) => setTimeout(r, 400));
    holder.tick();
    await new Promise((r) => setTimeout(r, 1500));
    expect(holder.dbCopy('zbx')).toBeUndefined();
    await holder.stop();

    // Known: the copy is taken from the guest.
    holder = new RecoveryKits({ dir: join(dir, 'recovery'), self, members: members(PRIMARY_GUEST), imageFilesDir: () => join(dir, 'image'), config, logger: silentLogger() });
    await holder.start();
    await new Promise((r) => setTimeout(r, 400));
    holder.tick();
    await until(() => holder.dbCopy('zbx') !== undefined, 60_000, 'the database copy from the primary guest');
    expect(holder.dbCopy('zbx')!.meta.fromHost).toBe('w1');

    // A write after the copy: the window the recovery says is lost.
    await sql(PRIMARY_GUEST, primary.port, 'INSERT INTO zabbix.history VALUES (3, 200, 1)');

    // w1 is lost for good. w3 recovers: its new guest's MariaDB (127.0.0.3, the same port as the
    // service's database) comes up only 4 s after the container start returned.
    w1State = 'dead';
    const started: string[] = [];
    const assigned: PilotAssignment[] = [];
    let startedAt = 0;
    const root = join(dir, 'containers');
    const containers = {
      root,
      list: () => [],
      startContainer: async (i: { id: string }) => {
        await mkdir(join(root, i.id, 'secrets'), { recursive: true });
        await writeFile(join(root, i.id, 'secrets', 'db.password'), `${PASSWORD}\n`, { mode: 0o600 });
        started.push(i.id);
        startedAt = Date.now();
        setTimeout(() => {
          void startMariaDb({ name: 'guest-t', password: PASSWORD, extraArgs: [`--bind-address=${NEW_GUEST}`, `--port=${primary.port}`] }).then((s) => (target = s));
        }, 4000);
      },
      guestAddress: async () => NEW_GUEST,
      removeContainer: async () => undefined,
    } as unknown as ContainerManager;
    const supervisor = { pilotFor: () => (assigned.length > 0 ? {} : undefined), assign: async (a: PilotAssignment) => void assigned.push(a) } as unknown as PilotSupervisor;
    const runner = new LastResortRunner({ self, members: members(PRIMARY_GUEST), notices: { report: () => undefined } as unknown as DepotComponents['notices'], kits: holder, containers, supervisor, config, logger: silentLogger() });
    runner.check();
    await until(() => assigned.length === 1, 120_000, 'the recovered copy handed to a pilot');
    const loadedAt = Date.now();
    expect(started).toEqual([assigned[0]!.container]);
    expect(loadedAt - startedAt).toBeGreaterThan(4000);
    const rows = await sql<{ itemid: number; clock: number }>(NEW_GUEST, primary.port, 'SELECT itemid, clock FROM zabbix.history ORDER BY itemid, clock');
    expect(rows.map((r) => [r.itemid, r.clock])).toEqual([[1, 100], [1, 160], [2, 100]]);
    await holder.stop();
    await runner.stop();
  }, 180_000);
});
