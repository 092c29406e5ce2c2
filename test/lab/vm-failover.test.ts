import { describe, it, expect, afterEach } from 'vitest';
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { Lab } from '../../lab/lab.ts';
import { ADMIN_TOKEN, aliveSeenBy, api, depotArgs, serviceView, waitFor, type LabCluster } from '../../lab/cluster.ts';
import { Prober } from '../../lab/prober.ts';
import { ArpWatch } from '../../lab/arp-watch.ts';
import { GUEST_APPEND, GUEST_BRIDGE, GUEST_DB_PORT, GUEST_WHOAMI_PORT, bridgeWorkstation, guestImage, guestSql } from '../../lab/vm-guest.ts';
import { loadOrCreateIdentity } from '../../depot/identity.ts';
import { makeSwarmKey } from '../../depot/swarm-key.ts';
import { ImageStore } from '../../depot/images/catalog.ts';
import { DEPOT_ENV } from '../../depot/runtime-flags.ts';
import { silentLogger } from '../../shared/logger.ts';
import type { MovementRecord } from '../../shared/movement.ts';
import { PilotSection } from '../../shared/config.ts';
import { readdir } from 'node:fs/promises';
import { QmpClient } from '../../depot/containers/drivers/qmp.ts';

const LEASE_MS = PilotSection.parse({}).leaseMs;
/** The guard checks its deadline every 50 ms (stdin closing fences at once); QMP stop takes milliseconds; 1.5 s covers a loaded host. */
const FENCE_SLACK_MS = 1500;

// The VM-packed service bootstrapped through real depots and pilots: 3 workstations (bridged,
// navbr0), the service a QEMU guest (TCG) with its database (dbsync replicate, as the process
// example) and two warm standby guests (booted together, so the test waits for one boot, not
// two in turn), the prober on the service address (the guests' whoami port). History rows
// written into the primary guest's MariaDB reach both standby guests' through the pilots'
// replication, at the guests' own addresses. The primary's host loses power: a standby's pilot
// takes the address in ITS guest and promotes its database, which holds every row and takes
// writes; the other standby guest is made a replica of the new primary's; the movement is
// recorded (tracking API and the new primary guest's navigator_movements); never two MACs. Then
// kill -9 of the new primary's depot while its guest runs: the guest stops answering within the
// lease (paused, NIC unplugged). The depot restarts: its pilot resumes the guest with its NIC
// still unplugged, removes the address and stops zabbix_server in it, and plugs it in again only
// then: the guest never answers on the address until a pilot wins a later term and takes it
// again. Whichever guest serves in that later term takes writes and the other replicates them.
//
// Bounds, TCG on 2 shared cores: a copy starts (clone of a 620 MiB image + ~50-120 s boot, three
// guests at once) within 10 min; the failover within 90 s (detection ~1.5 s, then guest-agent
// round trips of 0.1-2 s each).

const SERVICE = 'zbxvm';
/** History rows written into the primary guest's database before the cut (an item id clear of the stock data's). */
const ROWS = 500;
const ITEM = 990001;

/** A guest's own address: its host's LAN address + the spec's guestAddressOffset (40). */
function guestIpOf(l: Lab, host: string): string {
  const parts = l.host(host).ip.split('.').map(Number);
  parts[3]! += 40;
  return parts.join('.');
}
const HTTP_PORT = 7480; // the lab depots' HTTP port (lab/cluster.ts)
let lab: Lab | undefined;
afterEach(async () => {
  await lab?.destroy();
  lab = undefined;
}, 120_000);

async function startDepot(c: LabCluster, host: string): Promise<void> {
  const p = c.lab.spawn(host, depotArgs(c, host), { name: 'depot', env: { ...DEPOT_ENV, NAVIGATOR__http__adminToken: ADMIN_TOKEN, NAVIGATOR_LOG_LEVEL: 'info' } });
  c.depots.set(host, p);
  await p.waitForLine(/"event":"depot-started"/, 60_000);
}

async function copies(c: LabCluster, host: string): Promise<Array<{ host: string; role: string; state: string; term: number }>> {
  return ((await serviceView(c, host, SERVICE))?.copies ?? []) as Array<{ host: string; role: string; state: string; term: number }>;
}

describe('a VM-packed service through depots and pilots (QEMU guests under TCG)', () => {
  it('primary host power loss: the standby guest answers on the service address, the move is recorded, never two MACs; kill -9 of its depot: the guest stops answering within the lease', async () => {
    const image = await guestImage();
    lab = await Lab.create({ workstations: 3 });
    const hosts = ['w1', 'w2', 'w3'];
    for (const h of hosts) await bridgeWorkstation(lab, h);
    const imageDir = join(lab.dir, 'image');
    await mkdir(imageDir, { recursive: true });
    for (const f of ['disk.qcow2', 'vmlinuz', 'initrd.img']) await copyFile(join(image, f), join(imageDir, f));
    // The navsync password baked into the image: the database spec's passwordFile.
    await mkdir(join(imageDir, 'secrets'), { mode: 0o700 });
    await copyFile(join(image, 'secrets', 'sync.password'), join(imageDir, 'secrets', 'sync.password'));
    await mkdir(join(lab.dir, 'vm'), { recursive: true });
    const swarmKeyFile = join(lab.dir, 'swarm.key');
    await writeFile(swarmKeyFile, makeSwarmKey(), { mode: 0o600 });
    const peerIds = new Map<string, string>();
    for (const host of hosts) {
      const dataDir = join(lab.dir, 'data', host);
      peerIds.set(host, peerIdFromPrivateKey(await loadOrCreateIdentity(join(dataDir, 'identity.key'))).toString());
      const store = new ImageStore({ dir: join(dataDir, 'images'), keepVersions: 3, logger: silentLogger() });
      await store.start();
      await store.import(imageDir, SERVICE);
      await store.stop();
    }
    const address = lab.serviceAddress(0);
    const ip = address.split('/')[0]!;
    const c: LabCluster = { lab, hosts, depots: new Map(), peerIds, swarmKeyFile, imageDir, address, ip, env: {} };
    await Promise.all(hosts.map((h) => startDepot(c, h)));
    await waitFor(async () => (await aliveSeenBy(c, 'w1')) === 3, 60_000, 'all depots alive');

    const body = {
      service: SERVICE,
      imagePath: imageDir,
      container: {
        driver: 'qemu', kernel: 'vmlinuz', initrd: 'initrd.img', append: GUEST_APPEND, disk: 'disk.qcow2', memoryMb: 512, kvm: 'off', tcgCacheMb: 128,
        guestAgent: true, primaryUnit: 'navigator-zabbix.service', bootTimeoutMs: 600_000, network: { bridge: GUEST_BRIDGE, guestAddressOffset: 40 },
      },
      address,
      iface: 'eth0',
      port: GUEST_WHOAMI_PORT,
      standbys: 2,
      database: { database: 'zabbix', user: 'navsync', passwordFile: 'secrets/sync.password', port: GUEST_DB_PORT },
    };
    const r = await lab.exec('w1', ['curl', '-sS', '--max-time', '590', '-w', '\n%{http_code}', '-H', 'content-type: application/json', '-H', `authorization: Bearer ${ADMIN_TOKEN}`, '--data-binary', '@-', `http://127.0.0.1:${HTTP_PORT}/api/bootstrap`], { input: JSON.stringify(body), reject: false, timeoutMs: 600_000 });
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines.pop(), `bootstrap: ${lines.join('\n')} ${r.stderr}`).toBe('200');

    const prober = await Prober.start(lab, { target: ip, port: GUEST_WHOAMI_PORT, intervalMs: 200, timeoutMs: 1500 });
    const arp = await ArpWatch.start(lab, { address: ip, intervalMs: 200 });
    try {
      await prober.waitForServer(/^navigator-guest /, 120_000);
      // w1's copy is primary once its takeover finished (zabbix_server started in its guest: tens of
      // seconds under TCG); a standby guest runs on each other host.
      const ready = (cs: Awaited<ReturnType<typeof copies>>) => cs.some((x) => x.host === 'w1' && x.role === 'primary' && x.state === 'running') && ['w2', 'w3'].every((h) => cs.some((x) => x.host === h && x.role === 'standby' && x.state === 'running'));
      await waitFor(async () => ready(await copies(c, 'w2')), 600_000, 'w1 primary and a running standby guest on w2 and on w3');
      const primaryMac = prober.successes.at(-1)!.server.split(' ')[1]!;
      // SQL goes to a guest from another workstation's namespace, never w1's (it loses power).
      const sql = (host: string, q: string) => guestSql(lab!, host === 'w2' ? 'w3' : 'w2', { ip: guestIpOf(lab!, host) }, imageDir, q);
      // The guest's MariaDB replicates (its seed loaded, replication started by the primary's pilot).
      const replicating = async (host: string) => (await sql(host, "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'SLAVE_RUNNING'").catch(() => '')) === 'ON';
      const rowsOn = async (host: string) => Number(await sql(host, `SELECT COUNT(*) FROM zabbix.history_uint WHERE itemid = ${ITEM}`).catch(() => '0'));

      // History written into the primary guest's database reaches the standby guests': the
      // pilots keep them GTID replicas at the guests' own addresses. Written once both replicate
      // (each seed, a dump of the ~15 MB Zabbix database under TCG, has loaded and replication
      // runs), so the rows arrive by replication, not in a seed's dump.
      for (const h of ['w2', 'w3']) await waitFor(async () => (await replicating(h)), 600_000, `the standby guest on ${h} replicating`);
      await sql('w1', `INSERT INTO zabbix.history_uint (itemid, clock, value, ns) SELECT ${ITEM}, UNIX_TIMESTAMP() - 1000 + seq, seq, 0 FROM zabbix.seq_1_to_${ROWS}`);
      for (const h of ['w2', 'w3']) await waitFor(async () => (await rowsOn(h)) === ROWS, 120_000, `the ${ROWS} rows in the standby guest's database on ${h}`);

      const cut = Date.now();
      await lab.powerOff('w1');
      const after = await prober.waitForServer(new RegExp(`^navigator-guest (?!${primaryMac})`), 90_000);
      const outage = prober.outage(cut, after.t);
      expect(outage.recovered).toBe(true);
      let failover: MovementRecord | undefined;
      await waitFor(async () => {
        const res = await api<{ records: MovementRecord[] }>(c, 'w2', `/api/movements?service=${SERVICE}&limit=100`);
        failover = (res?.records ?? []).find((m) => m.event === 'failover' && m.fromHost === 'w1' && (m.host === 'w2' || m.host === 'w3'));
        return failover !== undefined;
      }, 300_000, 'the failover recorded');
      // The standby that took over, and the one left a standby (the depot that stays up to the end).
      const standby = failover!.host;
      const observer = standby === 'w2' ? 'w3' : 'w2';
      // The new primary guest's database: every row written before the cut, writable, the move in its navigator_movements.
      expect(await rowsOn(standby)).toBe(ROWS);
      await waitFor(async () => (await sql(standby, 'SELECT @@read_only')) === '0', 60_000, 'the promoted guest database writable');
      await sql(standby, `INSERT INTO zabbix.history_uint (itemid, clock, value, ns) VALUES (${ITEM}, UNIX_TIMESTAMP(), ${ROWS + 1}, 0)`);
      await waitFor(async () => Number(await sql(standby, `SELECT COUNT(*) FROM zabbix.navigator_movements WHERE event = 'failover' AND host = '${standby}' AND term = ${failover!.term}`).catch(() => '0')) === 1, 60_000, "the failover in the new primary guest's navigator_movements");

      // The other standby guest follows the new primary: re-pointed (or reseeded), it holds the
      // row written after the failover.
      await waitFor(async () => (await copies(c, observer)).some((x) => x.host === observer && x.role === 'standby' && x.state === 'running'), 300_000, `the guest on ${observer} still a running standby`);
      await waitFor(async () => (await replicating(observer)) && (await rowsOn(observer)) === ROWS + 1, 600_000, `the standby guest on ${observer} a replica of the new primary`);

      // kill -9 of the new primary's depot while its guest keeps running: its fence guard (a
      // process of its own) pauses the guest, which stops answering within the lease.
      const newMac = after.server.split(' ')[1]!;
      const root = join(lab.dir, 'data', standby, 'images', 'containers');
      const dir = join(root, (await readdir(root)).find((d) => d.startsWith(`${SERVICE}-`))!);
      const killedAt = Date.now();
      c.depots.get(standby)!.kill('SIGKILL');
      await new Promise((res) => setTimeout(res, LEASE_MS + FENCE_SLACK_MS + 3000));
      expect(prober.successes.filter((s) => s.server.includes(newMac) && s.start > killedAt + LEASE_MS + FENCE_SLACK_MS)).toEqual([]);
      const q = await QmpClient.connect(join(dir, 'qmp.sock'), { timeoutMs: 5000 });
      const st = (await q.execute('query-status', undefined, 5000)) as { status: string };
      q.close();
      expect(st.status).toBe('paused');

      // The depot comes back: its pilot brings the fenced guest back clean (pilot/guest-unfence.ts).
      const unfenced: string[] = [];
      const restarted = c.lab.spawn(standby, depotArgs(c, standby), { name: 'depot-restarted', env: { ...DEPOT_ENV, NAVIGATOR__http__adminToken: ADMIN_TOKEN, NAVIGATOR_LOG_LEVEL: 'info' } });
      restarted.onLine((line) => {
        if (/"event":"guest-(unfenced|replaced)"/.test(line)) unfenced.push(line);
      });
      c.depots.set(standby, restarted);
      await waitFor(async () => unfenced.length > 0, 600_000, 'the fenced guest brought back by the restarted depot');
      const back = JSON.parse(unfenced[0]!) as { event: string; resumed?: boolean };
      // Resumed (paused → running, not booted again): the warm way back.
      expect(back).toMatchObject({ event: 'guest-unfenced', resumed: true });
      // The service again: a later term's primary (the restarted copy, or w3's if it had one).
      const served = await prober.waitForServer(/^navigator-guest /, 600_000);
      await waitFor(async () => {
        const res = await api<{ records: MovementRecord[] }>(c, observer, `/api/movements?service=${SERVICE}&limit=100`);
        return (res?.records ?? []).some((m) => m.role === 'primary' && m.term > failover!.term);
      }, 120_000, 'a later term recorded');
      const later = (await api<{ records: MovementRecord[] }>(c, observer, `/api/movements?service=${SERVICE}&limit=100`))!.records.filter((m) => m.role === 'primary' && m.term > failover!.term).sort((a, b) => a.time - b.time)[0]!;
      // The old guest answered on the address only after a pilot won that later term (its takeover began then).
      const wonAt = later.time - (later.timings.takeover ?? 0) - 1000;
      const early = prober.successes.filter((s) => s.server.includes(newMac) && s.start > killedAt + LEASE_MS + FENCE_SLACK_MS && s.start < wonAt);
      expect(early).toEqual([]);
      // Whoever serves now holds every row, takes writes, and the other guest (the resumed one,
      // or the standby that stayed) replicates them: the resumed guest is a warm standby again.
      const nowPrimary = later.host;
      expect(Number(await sql(nowPrimary, `SELECT COUNT(*) FROM zabbix.history_uint WHERE itemid = ${ITEM}`))).toBeGreaterThanOrEqual(ROWS + 1);
      await waitFor(async () => (await sql(nowPrimary, 'SELECT @@read_only').catch(() => '')) === '0', 120_000, 'the new primary guest database writable');
      await sql(nowPrimary, `INSERT INTO zabbix.history_uint (itemid, clock, value, ns) VALUES (${ITEM}, UNIX_TIMESTAMP() + 1, ${ROWS + 2}, 0)`);
      const other = nowPrimary === standby ? observer : standby;
      await waitFor(async () => Number(await sql(other, `SELECT COUNT(*) FROM zabbix.history_uint WHERE itemid = ${ITEM} AND value = ${ROWS + 2}`).catch(() => '0')) === 1, 600_000, `the guest on ${other} a replica of the primary on ${nowPrimary}`);
      console.log(JSON.stringify({ vmUnfence: { unfenced: back, servedAgainAfterMs: Math.round(served.t - killedAt), laterTerm: later.term, laterPrimary: later.host } }));

      expect(arp.splitBrainMoments()).toEqual([]);
      expect(arp.macs().length).toBeGreaterThanOrEqual(2);
      console.log(JSON.stringify({ vmClusterFailover: { outageMs: outage.outageMs, standby } }));
    } finally {
      await prober.stop();
      await arp.stop();
    }
  }, 2_400_000);
});
