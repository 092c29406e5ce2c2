import { describe, expect, it } from 'vitest';
import { handOverPrimaries } from '../../pilot/hand-over.ts';
import type { CopyView } from '../../pilot/pilot.ts';
import { silentLogger } from '../../shared/logger.ts';

// The hand-over at a clean stop, on a fake clock: each primary is switched over, the depot waits
// until another depot reports the new primary, and nothing it does can hold the stop past its
// budget or throw into it.

function copy(peerId: string, role: 'primary' | 'standby'): CopyView {
  return { peerId, host: peerId, depotState: 'alive', incarnation: 1, address: undefined, report: { id: 'c', service: 's', driver: 'process', state: 'running', role, term: 1, image: '', syncFailing: false } };
}

function fakeTime() {
  let t = 0;
  return { now: () => t, sleep: async (ms: number) => void (t += ms), advance: (ms: number) => void (t += ms) };
}

describe('hand-over at a clean stop', () => {
  it('switches each primary over and returns once another depot reports the new primary', async () => {
    const clock = fakeTime();
    const moved: string[] = [];
    const res = await handOverPrimaries({
      primaries: () => ['a', 'b'],
      switchover: async (service) => {
        moved.push(service);
        clock.advance(200);
        return { from: 'me', to: 'w2' };
      },
      // The new primary shows up in a heartbeat 300 ms after the switchover returned.
      copies: () => [copy('me', 'standby'), copy('w2', clock.now() >= 500 ? 'primary' : 'standby')],
      selfId: 'me',
      timeoutMs: 30_000,
      logger: silentLogger(),
      ...clock,
    });
    expect(moved).toEqual(['a', 'b']);
    expect(res[0]).toEqual({ service: 'a', to: 'w2', ok: true, durationMs: 500 });
    expect(res[1]).toMatchObject({ service: 'b', to: 'w2', ok: true });
  });

  it('a failed switchover (no standby) or one that runs out of time is reported, never thrown, and stays within the budget', async () => {
    const clock = fakeTime();
    const res = await handOverPrimaries({
      primaries: () => ['lonely', 'slow'],
      switchover: async (service) => {
        if (service === 'lonely') throw new Error('service lonely has no running standby');
        return { from: 'me', to: 'w2' };
      },
      copies: () => [copy('me', 'standby'), copy('w2', 'standby')],
      selfId: 'me',
      timeoutMs: 2000,
      logger: silentLogger(),
      ...clock,
    });
    expect(res).toEqual([
      { service: 'lonely', ok: false, durationMs: 0 },
      { service: 'slow', to: 'w2', ok: false, durationMs: 2000 },
    ]);
    expect(clock.now()).toBe(2000);
  });
});
