import { describe, expect, it } from 'vitest';
import type { MemberView } from '../../depot/membership/membership.ts';
import type { HeartbeatMessage } from '../../shared/wire.ts';
import { ALERT_PULL_MAX_PEERS, alertPullTargets } from '../../depot/alerts/pull-targets.ts';

function member(peerId: string, opts: { state?: MemberView['state']; self?: boolean; uptimeS?: number; copies?: number } = {}): MemberView {
  const heartbeat = { uptimeS: opts.uptimeS ?? 0, containers: Array.from({ length: opts.copies ?? 0 }, () => ({})) } as unknown as HeartbeatMessage;
  return { peerId, name: peerId, state: opts.state ?? 'alive', incarnation: 1, seq: 1, lastHeardAt: 0, since: 0, heartbeat, self: opts.self ?? false, reason: '' };
}

describe('alertPullTargets (which peers a new alert sender asks for their tables)', () => {
  it('asks the previous sender first, then depots with copies, then the longest-running hosts, at most a few', () => {
    const view = [
      member('self', { self: true, uptimeS: 99_999 }),
      ...Array.from({ length: 30 }, (_, i) => member(`p${String(i).padStart(2, '0')}`, { uptimeS: i * 10 })),
      member('copy', { copies: 1, uptimeS: 5 }),
      member('old', { uptimeS: 1 }),
      member('dead', { state: 'dead', uptimeS: 1e6 }),
      member('suspect', { state: 'suspect', uptimeS: 1e6 }),
    ];
    const peers = alertPullTargets(view, 'old');
    expect(peers).toHaveLength(ALERT_PULL_MAX_PEERS);
    expect(peers.slice(0, 4)).toEqual(['old', 'copy', 'p29', 'p28']);
    expect(peers).not.toContain('self');
    expect(peers).not.toContain('dead');
    expect(peers).not.toContain('suspect');
  });

  it('asks every live peer when there are fewer than the bound, and a dead previous sender is skipped', () => {
    const view = [member('self', { self: true }), member('a', { uptimeS: 2 }), member('b', { uptimeS: 3 }), member('gone', { state: 'dead' })];
    expect(alertPullTargets(view, 'gone')).toEqual(['b', 'a']);
    expect(alertPullTargets(view, undefined, 0)).toEqual([]);
  });
});
