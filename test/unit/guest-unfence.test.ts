import { describe, it, expect } from 'vitest';
import { unfencePlan, unfenceGuest, type UnfenceSteps } from '../../pilot/guest-unfence.ts';
import { dbAddressOf } from '../../pilot/guest-mode.ts';
import { silentLogger } from '../../shared/logger.ts';

// Bringing a fenced guest back (pilot/guest-unfence.ts) with a fake guest: the order of the steps
// (NIC off before cont, plugged in only once the address is verified gone), the fallback to a cold
// boot, and where the pilots reach a copy's database. The real guest: test/lab/vm-failover.test.ts.

interface FakeGuest {
  state: string | undefined;
  linkUp: boolean;
  holds: boolean;
  primaryUnit: boolean;
  /** Agent calls that fail before the agent answers (a just-resumed guest). */
  agentFailures: number;
  /** The address comes back after every delete (a guest that cannot be cleaned). */
  sticky?: boolean;
}

function fake(g: FakeGuest): { steps: UnfenceSteps; log: string[] } {
  const log: string[] = [];
  const agent = () => {
    if (g.state !== 'running') throw new Error('guest agent: no answer (guest not running)');
    if (g.agentFailures > 0) {
      g.agentFailures--;
      throw new Error('guest agent: timeout');
    }
  };
  // Whatever the guest shows on the LAN at each step: it must never be the address with the NIC up.
  const check = (step: string) => {
    log.push(step);
    if (g.state === 'running' && g.linkUp && g.holds) log.push('VISIBLE-WITH-ADDRESS');
  };
  return {
    log,
    steps: {
      runState: async () => g.state,
      setLink: async (up) => {
        g.linkUp = up;
        check(`link ${up ? 'on' : 'off'}`);
      },
      resume: async () => {
        g.state = 'running';
        check('cont');
      },
      stopPrimaryUnit: async () => {
        agent();
        g.primaryUnit = false;
        check('stop unit');
      },
      releaseAddress: async () => {
        agent();
        g.holds = Boolean(g.sticky);
        check('ip addr del');
      },
      addressHeld: async () => {
        agent();
        return g.holds;
      },
      replace: async () => {
        g.state = 'running';
        g.linkUp = true;
        g.holds = false;
        g.primaryUnit = false;
        check('replace');
      },
    },
  };
}

const opts = { logger: silentLogger(), retryMs: 1 };

describe('unfencing a guest', () => {
  it('plans from the QEMU run state: no QEMU → absent; paused → resume; running → check; starting → leave; error states → replace', () => {
    expect(unfencePlan(undefined)).toBe('absent');
    expect(unfencePlan('paused')).toBe('resume');
    expect(unfencePlan('running')).toBe('check');
    expect(unfencePlan('prelaunch')).toBe('leave');
    for (const s of ['internal-error', 'io-error', 'guest-panicked', 'shutdown', 'suspended']) expect(unfencePlan(s)).toBe('replace');
  });

  it('a guest the guard fenced (paused, NIC off, holding the address, primary unit on) is resumed with its NIC off, cleaned, checked, then plugged in', async () => {
    const g: FakeGuest = { state: 'paused', linkUp: false, holds: true, primaryUnit: true, agentFailures: 2 };
    const { steps, log } = fake(g);
    const out = await unfenceGuest({ ...opts, steps });
    expect(out).toMatchObject({ kind: 'clean', resumed: true });
    expect(log).toEqual(['link off', 'cont', 'stop unit', 'ip addr del', 'link on']);
    expect(g).toMatchObject({ state: 'running', linkUp: true, holds: false, primaryUnit: false });
  });

  it('a running guest (not fenced) is checked; its NIC is plugged in only once the address is verified gone; a guest still booting is left as it is', async () => {
    const g: FakeGuest = { state: 'running', linkUp: false, holds: true, primaryUnit: false, agentFailures: 0 };
    const { steps, log } = fake(g);
    expect(await unfenceGuest({ ...opts, steps })).toMatchObject({ kind: 'clean', resumed: false });
    expect(log).toEqual(['ip addr del', 'link on']);
    const booting = fake({ state: 'running', linkUp: true, holds: false, primaryUnit: false, agentFailures: 1 });
    expect(await unfenceGuest({ ...opts, steps: booting.steps })).toMatchObject({ kind: 'unchecked' });
    expect(booting.log).toEqual([]);
    // Suspect (its pilot could not drop the address): unplugged and replaced, never left on the LAN.
    const suspect = fake({ state: 'running', linkUp: true, holds: true, primaryUnit: true, agentFailures: 1e9 });
    expect(await unfenceGuest({ ...opts, steps: suspect.steps, suspect: true })).toMatchObject({ kind: 'replaced' });
    expect(suspect.log).toEqual(['link off', 'replace']);
    const sticky = fake({ state: 'running', linkUp: false, holds: true, primaryUnit: false, agentFailures: 0, sticky: true });
    expect(await unfenceGuest({ ...opts, steps: sticky.steps })).toMatchObject({ kind: 'unchecked' });
    expect(sticky.log).not.toContain('link on');
  });

  it('a guest that keeps the address is replaced (cold boot), never plugged in with it', async () => {
    const g: FakeGuest = { state: 'paused', linkUp: false, holds: true, primaryUnit: true, agentFailures: 0, sticky: true };
    const { steps, log } = fake(g);
    const out = await unfenceGuest({ ...opts, steps, cleanTimeoutMs: 20 });
    expect(out.kind).toBe('replaced');
    expect(log).not.toContain('VISIBLE-WITH-ADDRESS');
    expect(log).not.toContain('link on');
    expect(log.at(-1)).toBe('replace');
  });

  it('a guest whose agent never answers is replaced; a guest in an error state is replaced at once; no QEMU: nothing to do', async () => {
    const hung = fake({ state: 'paused', linkUp: false, holds: true, primaryUnit: true, agentFailures: 1e9 });
    expect((await unfenceGuest({ ...opts, steps: hung.steps, cleanTimeoutMs: 20 })).kind).toBe('replaced');
    expect(hung.log).not.toContain('VISIBLE-WITH-ADDRESS');
    const broken = fake({ state: 'internal-error', linkUp: false, holds: true, primaryUnit: true, agentFailures: 0 });
    expect((await unfenceGuest({ ...opts, steps: broken.steps })).kind).toBe('replaced');
    expect(broken.log).toEqual(['replace']);
    const none = fake({ state: undefined, linkUp: false, holds: false, primaryUnit: false, agentFailures: 0 });
    expect(await unfenceGuest({ ...opts, steps: none.steps })).toEqual({ kind: 'absent' });
    expect(none.log).toEqual([]);
  });
});

describe("where the pilots reach a copy's database", () => {
  const copy = { address: '10.0.0.11', report: { guestAddress: '10.0.0.51' } };
  it("a process copy: its host's address; a guest: the guest's own, none while unknown", () => {
    expect(dbAddressOf(copy, false)).toBe('10.0.0.11');
    expect(dbAddressOf(copy, true)).toBe('10.0.0.51');
    expect(dbAddressOf({ address: '10.0.0.11', report: {} }, true)).toBeUndefined();
  });
});
