import { describe, it, expect } from 'vitest';
import { spawn } from 'node:child_process';
import { groupAlive, groupMembers } from '../../depot/containers/drivers/proc.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(check: () => boolean, timeoutMs = 5000): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (check()) return true;
    await sleep(20);
  }
  return check();
}

describe('groupAlive (is anything of a process group still running)', () => {
  it('answers from the leader while it runs, and from the other members once it is gone', async () => {
    // A shell (the group leader) that starts a sleep in its group, then exits on a signal.
    const leader = spawn('sh', ['-c', 'sleep 30 & trap "exit 0" TERM; while :; do sleep 0.05; done'], { detached: true, stdio: 'ignore' });
    const pgid = leader.pid!;
    try {
      expect(await until(() => groupMembers(pgid).length >= 2)).toBe(true);
      expect(groupAlive(pgid)).toBe(true);
      process.kill(pgid, 'SIGTERM');
      await new Promise((r) => leader.once('exit', r));
      expect(await until(() => !groupMembers(pgid).includes(pgid))).toBe(true);
      // Leader gone, its sleep still in the group: alive.
      expect(groupMembers(pgid).length).toBeGreaterThanOrEqual(1);
      expect(groupAlive(pgid)).toBe(true);
      process.kill(-pgid, 'SIGKILL');
      expect(await until(() => !groupAlive(pgid))).toBe(true);
      expect(groupMembers(pgid)).toEqual([]);
    } finally {
      try {
        process.kill(-pgid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  });

  it('is false for a group that never existed', () => {
    expect(groupAlive(2 ** 22 + 12345)).toBe(false);
  });
});
