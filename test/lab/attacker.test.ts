import { describe, it, expect, afterEach } from 'vitest';
import { join } from 'node:path';
import { Lab } from '../../lab/lab.ts';
import { Prober } from '../../lab/prober.ts';
import { P2P_PORT, SERVICE, api, bootstrap, placement, startCluster, waitFor } from '../../lab/cluster.ts';
import { REPO_ROOT } from '../../shared/repo-root.ts';
import { PilotSection } from '../../shared/config.ts';
import type { AttackPlan } from '../../lab/attacker.ts';

// A compromised swarm member against a running lab cluster: a real libp2p node with the swarm
// key (lab/attacker.ts, in the client namespace) tries every control and election method on
// every depot — exec, starting, stopping, assigning, retiring, campaigning, resigning, image
// receives, forged lease releases and renewals, vote requests in another's name, path names —
// and gossips fake heartbeat claims (a primary in a far later term, a standby synced in the
// future). Every attempt is refused and counted in /metrics; the service keeps answering from the
// same primary in the same term, with the same copies.

let lab: Lab | undefined;
afterEach(async () => {
  await lab?.destroy();
  lab = undefined;
});

interface Outcome {
  what: string;
  target: string;
  method?: string;
  outcome: string;
  code?: string;
}

describe('attacker with the swarm key', () => {
  it('every control and election method, forged message, fake heartbeat claim and path name is refused and counted; the service is untouched', async () => {
    lab = await Lab.create({ workstations: 3 });
    const c = await startCluster(lab, 3);
    await bootstrap(c, 'w1', 2);
    const prober = await Prober.start(lab, { target: c.ip, port: 7000 });
    try {
      await prober.waitForServer('w1', 10_000);
      await waitFor(async () => (await placement(c, 'w1')).standbys.length === 2, 20_000, 'two standbys');
      const before = await placement(c, 'w1');
      const depots = await api<{ depots: Array<{ name: string; peerId: string; images: string[]; containers: Array<{ id: string; service: string; role: string }> }> }>(c, 'w1', '/api/depots');
      const rows = depots!.depots.filter((d) => c.hosts.includes(d.name));
      const plan: AttackPlan = {
        swarmKeyFile: c.swarmKeyFile,
        listen: `/ip4/${c.lab.client.ip}/tcp/7499`,
        service: SERVICE,
        term: before.term,
        image: rows[0]!.images[0]!,
        address: c.address,
        depots: rows.map((d) => {
          const copy = d.containers.find((x) => x.service === SERVICE)!;
          return { name: d.name, peerId: d.peerId, addr: `/ip4/${c.lab.host(d.name).ip}/tcp/${P2P_PORT}/p2p/${d.peerId}`, container: copy.id, role: copy.role as 'primary' | 'standby' };
        }),
      };
      const copiesBefore = plan.depots.map((d) => `${d.name}/${d.container}/${d.role}`).sort();
      const t0 = Date.now();
      const r = await c.lab.exec('client', [process.execPath, '--import', 'tsx', '--no-warnings', join(REPO_ROOT, 'lab/attacker.ts'), JSON.stringify(plan)], { reject: false, timeoutMs: 120_000 });
      const lines = r.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Outcome & { done?: boolean });
      expect(lines.at(-1)?.done, `attacker did not finish: ${r.stderr.slice(-2000)}`).toBe(true);
      const attempts = lines.filter((l) => !l.done && l.target !== 'gossip');
      expect(attempts.length).toBe(3 * 20);
      // Nothing was accepted; exec is not even a method.
      expect(attempts.filter((a) => a.outcome !== 'refused')).toEqual([]);
      expect(attempts.filter((a) => a.method === 'container.exec').every((a) => a.code === 'UNKNOWN_METHOD')).toBe(true);
      const paths = attempts.filter((a) => a.what.includes('path'));
      expect(paths.every((a) => a.code === 'BAD_REQUEST' || a.code === 'no-reply')).toBe(true);
      const control = attempts.filter((a) => a.method && a.method !== 'container.exec' && !a.what.includes('path'));
      expect(control.every((a) => a.code === 'UNAUTHORIZED'), JSON.stringify(control.filter((a) => a.code !== 'UNAUTHORIZED'))).toBe(true);
      // Refusals are counted on every depot.
      for (const d of rows) {
        const metrics = (await c.lab.exec('client', ['curl', '-sf', '--max-time', '2', `http://${c.lab.host(d.name).ip}:7480/metrics`], { reject: false })).stdout;
        const refused = [...metrics.matchAll(/^navigator_peer_refused_total\{kind="([^"]+)"\} (\d+)/gm)].reduce((n, m) => n + Number(m[2]), 0);
        // 12 control methods refused by role and term, 3 election messages forged in another's name.
        expect(refused, `${d.name}: ${metrics.split('\n').filter((l) => l.startsWith('navigator_peer_refused')).join('; ')}`).toBeGreaterThanOrEqual(15);
      }
      // Let the fake heartbeats spread and the pilots probe a few times.
      await new Promise((res) => setTimeout(res, 3000));
      const after = await placement(c, 'w1');
      expect(after).toEqual(before);
      const depotsAfter = await api<{ depots: Array<{ name: string; containers: Array<{ id: string; service: string; role: string }> }> }>(c, 'w1', '/api/depots');
      const copiesAfter = depotsAfter!.depots.filter((d) => c.hosts.includes(d.name)).flatMap((d) => d.containers.filter((x) => x.service === SERVICE).map((x) => `${d.name}/${x.id}/${x.role}`)).sort();
      expect(copiesAfter).toEqual(copiesBefore);
      expect(await c.lab.holders(c.ip)).toEqual(['w1']);
      // No fence, no failover: a lost lease would show as a gap of a lease or more. Shorter gaps
      // are the prober's stalls while the attacker (tsx compiling at its start) and the depots
      // share the machine's two cores.
      expect(prober.outage(t0).outageMs).toBeLessThan(PilotSection.parse({}).leaseMs);
      expect(prober.serverTimeline().filter((s) => s.since >= t0).every((s) => s.server === 'w1')).toBe(true);
    } finally {
      await prober.stop();
    }
  }, 180_000);
});
