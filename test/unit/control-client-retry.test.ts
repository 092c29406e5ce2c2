import { describe, it, expect } from 'vitest';
import { peerIdFromString } from '@libp2p/peer-id';
import { ControlClient } from '../../depot/control/client.ts';
import type { NavigatorNode } from '../../depot/libp2p.ts';

// The control client's one retry on a fresh connection: a connection whose other end went away
// without a word takes streams that never open. Driven with a node whose first stream never opens
// (what a real dead TCP connection does), to check the rule: a third of the time on the old
// connection, then hang up and dial again within what is left.

const PEER = peerIdFromString('12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK');

function fakeNode(opts: { connections: number }) {
  const calls: Array<{ at: number; aborted: () => boolean }> = [];
  let hangUps = 0;
  const t0 = Date.now();
  const node = {
    getConnections: () => Array.from({ length: opts.connections }),
    hangUp: async () => {
      hangUps++;
    },
    dialProtocol: (_peer: unknown, _proto: string, o: { signal: AbortSignal }) =>
      new Promise((_, reject) => {
        calls.push({ at: Date.now() - t0, aborted: () => o.signal.aborted });
        o.signal.addEventListener('abort', () => reject(new Error('aborted')), { once: true });
      }),
  } as unknown as NavigatorNode;
  return { node, calls, hangUps: () => hangUps };
}

describe('control client: a stream that does not open', () => {
  it('gives the existing connection a third of the time, then hangs up and dials afresh; the error names the whole timeout', async () => {
    const f = fakeNode({ connections: 1 });
    const client = new ControlClient({ node: f.node });
    const t0 = Date.now();
    await expect(client.call(PEER, 'pilot.campaign', {}, { timeoutMs: 1500 })).rejects.toThrow('pilot.campaign: could not open a control stream within 1500 ms');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1400);
    expect(f.calls).toHaveLength(2);
    expect(f.calls[1]!.at).toBeGreaterThanOrEqual(450);
    expect(f.calls[1]!.at).toBeLessThan(1000);
    expect(f.hangUps()).toBe(1);
  });

  it('with no connection yet, one dial gets the whole time (nothing to hang up)', async () => {
    const f = fakeNode({ connections: 0 });
    const client = new ControlClient({ node: f.node });
    await expect(client.call(PEER, 'x', {}, { timeoutMs: 600 })).rejects.toThrow(/within 600 ms/);
    expect(f.calls).toHaveLength(1);
    expect(f.hangUps()).toBe(0);
  });
});
