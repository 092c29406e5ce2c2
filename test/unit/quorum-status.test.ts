import { describe, it, expect } from 'vitest';
import { quorumOf } from '../../plugins/workstation.ts';
import type { PilotsPlugin } from '../../plugins/pilots.ts';
import type { DepotComponents } from '../../depot/components.ts';

// What the quorum alert is computed from: per service, the voter set with the least room to
// spare; two depots and a witness vote as three, the witness counting while it answers.

const members = (alive: string[]) => ({ view: () => alive.map((peerId) => ({ peerId, state: 'alive' })) }) as unknown as DepotComponents['members'];
const pilots = (voters: string[], witnessAnswers: boolean, prev?: string[]) =>
  ({ pilots: () => [{ spec: { name: 'zabbix' }, view: { voters, ...(prev ? { prev } : {}) } }], witnessAnswered: () => witnessAnswers }) as unknown as PilotsPlugin;
const lease = { leaseMs: 1500 };

describe('quorum status', () => {
  it('five voters, three alive: a majority, no room to spare', () => {
    expect(quorumOf(pilots(['a', 'b', 'c', 'd', 'e'], false), members(['a', 'b', 'c']), { ...lease, witness: '' })).toEqual([{ service: 'zabbix', voters: 5, alive: 3, needed: 3 }]);
  });

  it('two depots and an answering witness: one depot lost still holds a majority of three', () => {
    expect(quorumOf(pilots(['a', 'b'], true), members(['a']), { ...lease, witness: '/ip4/10.0.0.9/tcp/7471/p2p/x' })).toEqual([{ service: 'zabbix', voters: 3, alive: 2, needed: 2 }]);
    expect(quorumOf(pilots(['a', 'b'], false), members(['a']), { ...lease, witness: '/ip4/10.0.0.9/tcp/7471/p2p/x' })).toEqual([{ service: 'zabbix', voters: 3, alive: 1, needed: 2 }]);
    // Without a witness configured, two voters need both.
    expect(quorumOf(pilots(['a', 'b'], true), members(['a']), { ...lease, witness: '' })).toEqual([{ service: 'zabbix', voters: 2, alive: 1, needed: 2 }]);
  });

  it('during a group change the worse of the two sets decides', () => {
    expect(quorumOf(pilots(['a', 'b', 'd'], false, ['a', 'b', 'c']), members(['a', 'd']), { ...lease, witness: '' })).toEqual([{ service: 'zabbix', voters: 3, alive: 1, needed: 2 }]);
  });
});
