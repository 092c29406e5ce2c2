import { afterAll, describe, expect, it } from 'vitest';
import { Lab } from '../../lab/lab.ts';
import { waitFor, observer } from '../../lab/cluster.ts';
import { CLIENT, clientSql } from './zabbix-fixture.ts';
import { SenderLoop, bootstrapZabbix, sqlOn, startZabbixCluster, zabbixPlacement, type ZabbixCluster } from './zabbix-lab.ts';

// A clean stop of the Zabbix primary's depot (SIGTERM, what systemd does at shutdown or a package
// upgrade) while zabbix_sender feeds a trapper item every 200 ms: the depot hands the service
// over before it goes — zabbix_server stops first (it stores what it acknowledged), writes stop,
// the standby's replica applies the primary's last GTID, then the standby takes over. Checked:
// every value Zabbix acknowledged, before and after the move, is in the new primary's database.

let lab: Lab | undefined;
let cluster: ZabbixCluster | undefined;
let sender: SenderLoop | undefined;

afterAll(async () => {
  await sender?.stop().catch(() => undefined);
  await lab?.destroy();
  await cluster?.cleanup();
});

describe('Zabbix through a clean stop of the primary depot', () => {
  it('SIGTERM: handed over, no acknowledged value lost', async () => {
    const t0 = Date.now();
    const step = (what: string) => console.log(`[zabbix clean stop +${((Date.now() - t0) / 1000).toFixed(1)} s] ${what}`);
    lab = await Lab.create({ workstations: 3 });
    const c = (cluster = await startZabbixCluster(lab, 3, { syncIntervalMs: 2000 }));
    await bootstrapZabbix(c, 'w1', 1);
    await waitFor(async () => {
      const p = await zabbixPlacement(c, 'w1');
      return p.primary === 'w1' && p.standbys.length === 1;
    }, 150_000, 'a primary on w1 and one running standby');
    const standby = (await zabbixPlacement(c, 'w1')).standbys[0]!.host;
    await sqlOn(c, 'w1', clientSql());
    sender = await SenderLoop.start(c, { host: CLIENT.host, key: CLIENT.trapKey, intervalMs: 200 });
    await waitFor(async () => sender!.acked().length > 0, 30_000, 'the trapper to accept the first value');
    // The standby replicates: it holds a primary heartbeat younger than 2 s.
    await waitFor(async () => Date.now() - ((await zabbixPlacement(c, 'w1')).standbys[0]?.lastSyncAt ?? 0) < 2000, 90_000, 'the standby to replicate');
    await new Promise((r) => setTimeout(r, 3000));
    step(`primary w1, standby ${standby} replicating; ${sender.acked().length} values acknowledged; SIGTERM to w1's depot`);

    const w1 = c.depots.get('w1')!;
    const handed = w1.waitForLine(/"event":"hand-over"/, 120_000);
    const cutAt = Date.now();
    w1.kill('SIGTERM');
    const line = JSON.parse(await handed) as { ok: boolean; to: string; durationMs: number };
    expect(line.ok).toBe(true);
    const obs = observer(c, ['w1']);
    await waitFor(async () => (await zabbixPlacement(c, obs)).primary === standby, 60_000, `${standby} to become primary`);
    await waitFor(async () => sender!.acked().some((r) => r.start > cutAt + line.durationMs), 60_000, 'the sender to be answered by the new primary');
    // Zabbix's history syncer stores within a second; give it a few.
    await new Promise((r) => setTimeout(r, 3000));
    await sender.stop();
    await new Promise((r) => setTimeout(r, 2000));
    const acked = sender.acked();
    const present = new Set((await sqlOn(c, standby, `SELECT value FROM history_uint WHERE itemid = ${CLIENT.trapItemId}`)).map((r) => Number(r[0])));
    const lost = acked.filter((r) => !present.has(r.seq)).map((r) => r.seq);
    const before = acked.filter((r) => r.end < cutAt);
    const lastBefore = acked.filter((r) => r.end < cutAt + line.durationMs).at(-1)!;
    const firstAfter = acked.find((r) => r.start > lastBefore.end)!;
    const figures = {
      ackedBeforeStop: before.length,
      ackedTotal: acked.length,
      lost: lost.length,
      handOverMs: line.durationMs,
      senderOutageMs: firstAfter.end - lastBefore.end,
      totalMs: Date.now() - t0,
    };
    console.log(`zabbix clean stop figures: ${JSON.stringify(figures)}`);
    expect(before.length).toBeGreaterThan(10);
    expect(lost).toEqual([]);
  }, 300_000);
});
