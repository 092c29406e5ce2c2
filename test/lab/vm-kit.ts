import { EventEmitter } from 'node:events';
import { copyFile, mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createConnection, type Connection } from 'mysql2/promise';
import { ConfigSchema } from '../../shared/config.ts';
import { createLogger } from '../../shared/logger.ts';
import type { NoticeInput } from '../../shared/alert.ts';
import type { DepotComponents } from '../../depot/components.ts';
import type { ContainerManager } from '../../depot/containers/manager.ts';
import { RecoveryKits, type RecoveryKit } from '../../pilot/recovery-kits.ts';
import { LastResortRunner } from '../../pilot/last-resort-runner.ts';
import type { PilotSupervisor } from '../../pilot/supervisor.ts';
import type { PilotAssignment } from '../../pilot/service-spec.ts';

// A recovery kit and the last-resort load of the VM-packed service against real guests, run in a
// lab namespace (the guests are on the lab LAN): the kit holder's own code (RecoveryKits) dumps
// the primary guest's MariaDB at the guest address its depot reports (nothing of the service
// listens at the primary's host address), then the last-resort runner (LastResortRunner), every
// copy lost, loads that copy into the new copy's guest at its address. The membership view, the
// supervisor and the container manager are plain objects: the "new copy" is a guest already booted
// (a real start would add a TCG boot of a minute or more), its address what guestAddress reports.
//   node --import tsx test/lab/vm-kit.ts '{"primaryGuest":"10.77.3.52","primaryHost":"10.77.3.12","newGuest":"10.77.3.51","image":"/var/tmp/navigator-vm/…","dir":"/tmp/…","rows":300}'

interface Args {
  primaryGuest: string;
  primaryHost: string;
  newGuest: string;
  image: string;
  dir: string;
  rows: number;
}
const a = JSON.parse(process.argv[2] ?? '{}') as Args;
const PORT = 3307;
const USER = 'navsync';
const ITEM = 990002;
const IMAGE = 'd'.repeat(64);
const password = (await readFile(join(a.image, 'secrets', 'sync.password'), 'utf8')).trim();
const log = createLogger({ level: 'warn' });
const out = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o)}\n`);
const conn = (host: string): Promise<Connection> => createConnection({ host, port: PORT, user: USER, password, connectTimeout: 10_000 });
async function rowsOn(host: string): Promise<number> {
  const c = await conn(host);
  try {
    const [r] = await c.query('SELECT COUNT(*) AS n FROM zabbix.history_uint WHERE itemid = ?', [ITEM]);
    return Number((r as Array<{ n: number }>)[0]!.n);
  } finally {
    await c.end();
  }
}
async function until(check: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

// History on the primary guest that the new guest does not have.
{
  const c = await conn(a.primaryGuest);
  const now = Math.floor(Date.now() / 1000);
  await c.query('INSERT INTO zabbix.history_uint (itemid, clock, value, ns) VALUES ?', [Array.from({ length: a.rows }, (_, i) => [ITEM, now - a.rows + i, i, 0])]);
  await c.end();
}
const newBefore = await rowsOn(a.newGuest);

const kit = {
  spec: {
    name: 'zabbix',
    image: IMAGE,
    // What makes it a VM-packed service for the kit holder and the runner: a qemu guest on the LAN with an agent.
    container: { driver: 'qemu', guestAgent: true, network: { bridge: 'navbr0', guestAddressOffset: 40 } },
    address: '10.9.9.9/24',
    iface: 'eth0',
    port: 10051,
    standbys: 1,
    memoryBytes: 0,
    diskBytes: 0,
    database: { database: 'zabbix', user: USER, passwordFile: 'secrets/sync.password', port: PORT },
  },
  view: { voters: ['p-w1', 'p-w2', 'p-w3'], epoch: [1, 0] },
  term: 3,
  stagedBy: 'w2',
} as unknown as RecoveryKit;

let primaryState: 'alive' | 'dead' = 'alive';
const lostAt = Date.now();
const hb = (name: string, ip: string, extra: Record<string, unknown>) => ({ name, addresses: [`/ip4/${ip}/tcp/7470/p2p/p-${name}`], uptimeS: 3600, load: [0.1, 0.1, 0.1], cpus: 2, memFreeBytes: 4e9, memTotalBytes: 8e9, diskFreeBytes: 1e11, images: [IMAGE], staging: [], containers: [], sentAt: Date.now(), incarnation: 1, ...extra });
const members = {
  view: () => [
    {
      peerId: 'p-w2', name: 'w2', state: primaryState, incarnation: 1, seq: 1, reason: '', self: false,
      lastHeardAt: primaryState === 'alive' ? Date.now() : lostAt - 600_000,
      since: primaryState === 'alive' ? 0 : lostAt - 600_000,
      heartbeat: hb('w2', a.primaryHost, { containers: [{ id: 'zabbix-w2', service: 'zabbix', role: 'primary', term: 3, state: 'running', guestAddress: a.primaryGuest }] }),
    },
    { peerId: 'p-w1', name: 'w1', state: 'alive', incarnation: 1, seq: 1, reason: '', self: true, lastHeardAt: Date.now(), since: 0, heartbeat: hb('w1', '127.0.0.1', { recoveryKits: kits.report() }) },
  ],
  get: () => undefined,
  countByState: () => ({}),
  events: new EventEmitter(),
} as unknown as DepotComponents['members'];
const config = ConfigSchema.parse({ recovery: { dbCopyIntervalMs: 200 } });
const self = { peerId: 'p-w1', name: 'w1' } as DepotComponents['self'];

// The kit holder's database copy, from the primary's guest.
const kits = new RecoveryKits({ dir: join(a.dir, 'recovery'), self, members, imageFilesDir: () => a.image, config, logger: log });
await kits.start();
await kits.stage(kit);
await new Promise((r) => setTimeout(r, 400));
kits.tick();
await until(() => kits.dbCopy('zabbix') !== undefined, 300_000, "the kit holder's database copy of the primary guest");
const copy = kits.dbCopy('zabbix')!.meta;

// Every copy lost: the runner recovers into the new copy's guest.
primaryState = 'dead';
const root = join(a.dir, 'containers');
const assigned: PilotAssignment[] = [];
const notices: NoticeInput[] = [];
const containers = {
  root,
  list: () => [],
  startContainer: async (i: { id: string }) => {
    // The copy's folder holds the image's files, as the depot lays it out.
    await mkdir(join(root, i.id, 'secrets'), { recursive: true });
    await copyFile(join(a.image, 'secrets', 'sync.password'), join(root, i.id, 'secrets', 'sync.password'));
  },
  guestAddress: async () => a.newGuest,
  removeContainer: async () => undefined,
} as unknown as ContainerManager;
const supervisor = { pilotFor: () => (assigned.length > 0 ? {} : undefined), assign: async (x: PilotAssignment) => void assigned.push(x) } as unknown as PilotSupervisor;
const runner = new LastResortRunner({ self, members, notices: { report: (n: NoticeInput) => void notices.push(n) } as unknown as DepotComponents['notices'], kits, containers, supervisor, config, logger: log });
runner.check();
await until(() => assigned.length === 1, 600_000, 'the recovered copy handed to a pilot');
const details = notices[0]?.details as { loadMs?: number } | undefined;
out({ event: 'recovered', copyBytes: copy.bytes, sqlBytes: copy.sqlBytes, dumpMs: copy.durationMs, fromHost: copy.fromHost, loadMs: details?.loadMs ?? null, rows: a.rows, newBefore, newAfter: await rowsOn(a.newGuest), primaryRows: await rowsOn(a.primaryGuest) });
await runner.stop();
await kits.stop();
