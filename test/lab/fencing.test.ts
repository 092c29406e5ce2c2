import { describe, it, expect, afterEach } from 'vitest';
import { readFile } from 'node:fs/promises';
import { Lab } from '../../lab/lab.ts';
import { Prober } from '../../lab/prober.ts';
import { PRIMARY_ONLY_MARKER, bootstrap, placement, startCluster, waitFor } from '../../lab/cluster.ts';
import { PilotSection } from '../../shared/config.ts';

// A paused primary: SIGSTOP of the primary's depot for 10 s. Its fence guard (a process of its
// own) drops the address within the lease and stops the copy's primary-only process; a standby
// takes over; on SIGCONT the old primary puts nothing back (its guard is gone, and the guard is
// the only writer of the address). At no moment do two hosts hold the address.

const LEASE_MS = PilotSection.parse({}).leaseMs;
let lab: Lab | undefined;

afterEach(async () => {
  await lab?.destroy();
  lab = undefined;
});

async function pidWith(l: Lab, host: string, marker: string): Promise<number | undefined> {
  for (const pid of await l.pids(host)) {
    const cmd = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (cmd.includes(marker)) return pid;
  }
  return undefined;
}

describe('fencing a paused primary', () => {
  it('SIGSTOP of the primary\'s depot for 10 s: the address leaves within the lease, primary-only processes stop, the standby takes over; after SIGCONT nothing comes back', async () => {
    lab = await Lab.create({ workstations: 3 });
    const c = await startCluster(lab, 3, { primaryOnly: true });
    await bootstrap(c, 'w1', 1);
    const prober = await Prober.start(lab, { target: c.ip, port: 7000 });
    try {
      await prober.waitForServer('w1', 10_000);
      await waitFor(async () => (await pidWith(c.lab, 'w1', PRIMARY_ONLY_MARKER)) !== undefined, 10_000, 'the primary-only process on w1');
      await waitFor(async () => (await placement(c, 'w2')).standbys.length === 1, 10_000, 'a standby');
      const before = await placement(c, 'w2');
      const standby = before.standbys[0]!;

      let maxHolders = 0;
      let w1HeldAfterFence = false;
      let fencedAt: number | undefined;
      let polling = true;
      const poll = (async () => {
        while (polling) {
          const holders = await c.lab.holders(c.ip);
          maxHolders = Math.max(maxHolders, holders.length);
          if (fencedAt === undefined && !holders.includes('w1')) fencedAt = Date.now();
          else if (fencedAt !== undefined && holders.includes('w1')) w1HeldAfterFence = true;
          await new Promise((r) => setTimeout(r, 25));
        }
      })();

      const depot = c.depots.get('w1')!;
      const t0 = Date.now();
      depot.kill('SIGSTOP');
      await waitFor(async () => fencedAt !== undefined, 10_000, 'the address off w1');
      const addressGoneMs = fencedAt! - t0;
      await waitFor(async () => (await pidWith(c.lab, 'w1', PRIMARY_ONLY_MARKER)) === undefined, 8000, 'the primary-only process on w1 stopped');
      await prober.waitForServer(standby, 15_000);
      const takeoverMs = Date.now() - t0;
      await new Promise((r) => setTimeout(r, Math.max(0, 10_000 - (Date.now() - t0))));
      const tCont = Date.now();
      depot.kill('SIGCONT');
      // The old primary wakes up: it must learn it lost, and put nothing back.
      await new Promise((r) => setTimeout(r, 6000));
      polling = false;
      await poll;

      expect(addressGoneMs, `address left w1 after ${addressGoneMs} ms`).toBeLessThan(LEASE_MS + 1000);
      expect(maxHolders).toBe(1);
      expect(w1HeldAfterFence).toBe(false);
      expect(await c.lab.holders(c.ip)).toEqual([standby]);
      expect(prober.successes.filter((s) => s.t > tCont && s.server === 'w1')).toEqual([]);
      expect(await pidWith(c.lab, 'w1', PRIMARY_ONLY_MARKER)).toBeUndefined();
      // The standby is primary in a newer term; w1 claims nothing (the new primary may retire its
      // copy as surplus: it placed another standby while w1 was away, which w1 had to allow).
      const after = await placement(c, standby);
      expect(after.primary).toBe(standby);
      expect(after.term).toBeGreaterThan(before.term);
      console.log(`SIGSTOP fencing: address off w1 after ${addressGoneMs} ms (lease ${LEASE_MS} ms); standby serving after ${takeoverMs} ms`);
    } finally {
      await prober.stop();
    }
  }, 120_000);
});
