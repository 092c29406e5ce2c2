import { afterAll, describe, expect, it } from 'vitest';
import { Lab } from '../../lab/lab.ts';
import { waitFor } from '../../lab/cluster.ts';
import { CLIENT, clientSql } from './zabbix-fixture.ts';
import { SenderLoop, bootstrapZabbix, movements, sqlOn, startZabbixCluster, startZabbixDepot, zabbixPlacement, type ZabbixCluster } from './zabbix-lab.ts';

// The lab's evening and morning: the Zabbix example on three workstations (one standby, its
// database a replica), a zabbix_sender loop through the service address; then every workstation
// loses power within a second (the switch of the room), and all come back within a minute, their
// depots started as systemd would at boot. With no admin action the service comes back: a primary
// is elected among the restarted copies once a majority of the last voter group is back, the
// trapper answers again, and every value Zabbix acknowledged more than 2 s before the cut is in the
// new primary's database. The movement is recorded.

const OPTS = { syncIntervalMs: 2000 };
let lab: Lab | undefined;
let cluster: ZabbixCluster | undefined;
let sender: SenderLoop | undefined;

afterAll(async () => {
  await sender?.stop().catch(() => undefined);
  await lab?.destroy();
  await cluster?.cleanup();
});

describe('the morning boot', () => {
  it('every workstation off, then all on again within a minute: the service comes back with its data, no admin action', async () => {
    const t0 = Date.now();
    const step = (what: string) => console.log(`[morning boot +${((Date.now() - t0) / 1000).toFixed(1)} s] ${what}`);
    lab = await Lab.create({ workstations: 3 });
    const c = (cluster = await startZabbixCluster(lab, 3, OPTS));
    await bootstrapZabbix(c, 'w1', 1);
    await waitFor(async () => {
      const p = await zabbixPlacement(c, 'w1');
      return p.primary === 'w1' && p.standbys.length === 1 && p.standbys[0]!.lastSyncAt !== undefined;
    }, 150_000, 'a primary on w1 and one replicating standby');
    const before = await zabbixPlacement(c, 'w1');
    await sqlOn(c, 'w1', clientSql());
    sender = await SenderLoop.start(c, { host: CLIENT.host, key: CLIENT.trapKey, intervalMs: 200 });
    await waitFor(async () => sender!.acked().length >= 40, 60_000, 'the trapper to take values');
    step(`primary w1 (term ${before.term}), standby ${before.standbys[0]!.host}; values flowing`);

    // 18:00: the room's switch. Every host loses power within a second.
    const cutAt = Date.now();
    await Promise.all(c.hosts.map((h) => lab!.powerOff(h)));
    await new Promise((r) => setTimeout(r, 5000));
    const ackedBefore = sender.acked().filter((r) => r.end < cutAt);
    step(`all off; ${ackedBefore.length} values acknowledged before the cut`);

    // The morning: the hosts come back one after another, each depot started by its boot.
    const firstOnAt = Date.now();
    for (const h of c.hosts) {
      await lab.powerOn(h);
      await startZabbixDepot(c, h, OPTS);
      await new Promise((r) => setTimeout(r, 2000));
    }
    const bootedAt = Date.now();
    step('all on again; waiting for a primary with no admin action');
    let primary: string | undefined;
    await waitFor(async () => {
      const p = await zabbixPlacement(c, 'w3').catch(() => undefined);
      primary = p?.primary;
      return primary !== undefined;
    }, 120_000, 'a primary after the morning boot');
    const after = await zabbixPlacement(c, primary!);
    expect(after.term).toBeGreaterThan(before.term);
    await waitFor(async () => sender!.acked().some((r) => r.start > bootedAt), 60_000, 'the trapper to answer again');
    const backMs = Date.now() - bootedAt;
    const backFromFirstMs = sender.acked().find((r) => r.start > firstOnAt)!.end - firstOnAt;
    step(`${primary} is primary (term ${after.term}); trapper answering ${backFromFirstMs} ms after the first host came back`);

    // The data: every value acknowledged more than 2 s before the cut is in the new primary's database.
    const present = new Set((await sqlOn(c, primary!, `SELECT value FROM history_uint WHERE itemid = ${CLIENT.trapItemId}`)).map((r) => Number(r[0])));
    const mustHave = ackedBefore.filter((r) => r.end < cutAt - 2000);
    expect(mustHave.length).toBeGreaterThan(0);
    expect(mustHave.filter((r) => !present.has(r.seq)).map((r) => r.seq)).toEqual([]);
    const lost = ackedBefore.filter((r) => !present.has(r.seq)).length;
    expect(Number((await sqlOn(c, primary!, "SELECT COUNT(*) FROM navigator_movements WHERE event = 'bootstrap'"))[0]![0])).toBe(1);
    await waitFor(async () => (await movements(c, primary!)).some((m) => m.host === primary && m.role === 'primary' && m.term === after.term), 30_000, 'the new primary recorded');
    console.log(`morning boot: trapper answering ${backFromFirstMs} ms after the first host came back (hosts 2 s apart; ${backMs} ms after the last); ${lost} of ${ackedBefore.length} values acknowledged before the cut missing (none older than 2 s)`);
  }, 420_000);
});
