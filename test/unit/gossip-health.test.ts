import { describe, expect, it } from 'vitest';
import { heartbeatChange } from '../../depot/heartbeat/change.ts';
import { gossipLinkHealth, judgeLinks } from '../../depot/gossip/links.ts';
import type { HeartbeatMessage } from '../../shared/wire.ts';
import type { PubSub } from '@libp2p/interface';

const base: HeartbeatMessage = {
  type: 'heartbeat', v: 1, peerId: '12D3KooWAaaa', name: 'a', seq: 1, incarnation: 5, sentAt: 1000,
  addresses: ['/ip4/10.0.0.1/tcp/1'], hostAddresses: ['10.0.0.1'], bootTime: 1, uptimeS: 100, load: [1, 1, 1], cpus: 4,
  memFreeBytes: 4e9, memTotalBytes: 8e9, diskFreeBytes: 100e9, images: [], staging: [], containers: [], version: '1',
};

describe('heartbeatChange: what is worth gossiping before the refresh', () => {
  it('nothing when only uptime, time and sequence moved, or the figures drifted a little', () => {
    expect(heartbeatChange(base, { ...base, seq: 9, sentAt: 9999, uptimeS: 200 })).toBeUndefined();
    expect(heartbeatChange(base, { ...base, load: [1.4, 1, 1], memFreeBytes: 4.3e9, diskFreeBytes: 99e9 })).toBeUndefined();
  });
  it('at once when what other depots act on changed, or a figure moved enough', () => {
    expect(heartbeatChange(undefined, base)).toBe('first');
    expect(heartbeatChange(base, { ...base, images: ['x'] })).toBe('content');
    expect(heartbeatChange(base, { ...base, staging: [{ image: 'x', bytes: 1, total: 2 }] })).toBe('content');
    expect(heartbeatChange(base, { ...base, containers: [{ id: 'c', service: 's', driver: 'process', state: 'running', role: 'standby', term: 1, image: '', syncFailing: false }] })).toBe('content');
    expect(heartbeatChange(base, { ...base, incarnation: 6 })).toBe('incarnation');
    expect(heartbeatChange(base, { ...base, load: [1.5, 1, 1] })).toBe('load');
    // On a busy host the step grows with the load: 20 -> 24 is drift, 20 -> 25 is news.
    expect(heartbeatChange({ ...base, load: [20, 1, 1] }, { ...base, load: [24, 1, 1] })).toBeUndefined();
    expect(heartbeatChange({ ...base, load: [20, 1, 1] }, { ...base, load: [25, 1, 1] })).toBe('load');
    expect(heartbeatChange(base, { ...base, memFreeBytes: 3.5e9 })).toBe('memory');
    expect(heartbeatChange(base, { ...base, diskFreeBytes: 97e9 })).toBe('disk');
  });
});

describe('judgeLinks: connections whose gossip streams are gone', () => {
  it('closes a link broken for the grace time, gives new connections the grace time, forgets healed ones', () => {
    const grace = 10_000;
    let j = judgeLinks([{ peer: 'a', healthy: false, openedAt: 0 }, { peer: 'b', healthy: true, openedAt: 0 }, { peer: 'c', healthy: false, openedAt: 95_000 }], new Map(), 100_000, grace);
    expect(j.close).toEqual([]); // first seen broken now (a) or opened 5 s ago (c): both get the grace time
    expect([...j.unhealthySince]).toEqual([['a', 100_000], ['c', 100_000]]);
    expect(judgeLinks([{ peer: 'a', healthy: false, openedAt: 0 }], j.unhealthySince, 110_000, grace).close).toEqual(['a']);
    j = judgeLinks([{ peer: 'c', healthy: false, openedAt: 95_000 }], new Map(), 100_000, grace);
    expect([...j.unhealthySince]).toEqual([['c', 100_000]]);
    j = { close: [], unhealthySince: new Map([['c', 95_000]]) }; // a connection unhealthy since it opened
    j = judgeLinks([{ peer: 'c', healthy: false, openedAt: 95_000 }], j.unhealthySince, 104_999, grace);
    expect(j.close).toEqual([]);
    j = judgeLinks([{ peer: 'c', healthy: false, openedAt: 95_000 }], j.unhealthySince, 105_000, grace);
    expect(j.close).toEqual(['c']);
    // Healthy again: the clock starts over next time.
    j = judgeLinks([{ peer: 'd', healthy: false, openedAt: 0 }], new Map(), 50_000, grace);
    j = judgeLinks([{ peer: 'd', healthy: true, openedAt: 0 }], j.unhealthySince, 55_000, grace);
    expect(j.unhealthySince.size).toBe(0);
    expect(judgeLinks([{ peer: 'd', healthy: false, openedAt: 0 }], j.unhealthySince, 56_000, grace).close).toEqual([]);
  });

  it('reads gossipsub streams: missing or closed ones are unhealthy; an unknown gossipsub shape is left alone', () => {
    const open = { rawStream: { status: 'open', writeStatus: 'writing', readStatus: 'ready' } };
    const g = (o: object) => o as unknown as PubSub;
    const healthy = g({ peers: new Map([['p', {}]]), streamsOutbound: new Map([['p', open]]), streamsInbound: new Map([['p', open]]) });
    expect(gossipLinkHealth(healthy, 'p')).toBe(true);
    expect(gossipLinkHealth(healthy, 'q')).toBe(false);
    const reset = g({ peers: new Map([['p', {}]]), streamsOutbound: new Map([['p', { rawStream: { status: 'reset' } }]]), streamsInbound: new Map([['p', open]]) });
    expect(gossipLinkHealth(reset, 'p')).toBe(false);
    const noInbound = g({ peers: new Map([['p', {}]]), streamsOutbound: new Map([['p', open]]), streamsInbound: new Map() });
    expect(gossipLinkHealth(noInbound, 'p')).toBe(false);
    expect(gossipLinkHealth(g({}), 'p')).toBe(true);
  });
});
