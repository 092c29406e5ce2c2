import type { MemberView } from '../membership/membership.ts';

// Which peers a new alert sender asks for their alert tables (`alerts.state`). Tables travel by
// gossip (TOPICS.alerts); the pull only catches up what gossip missed, so a few well-informed
// peers are enough: the previous sender (it sent the messages), depots holding copies of a
// service (they watched the failover), then the longest-running hosts. Asking all N at once was
// N dials and Noise handshakes on a depot that had just become primary and must renew its lease
// (bench:scale at 32 depots: a new primary's first lease lapsed right as that pull finished).

export const ALERT_PULL_MAX_PEERS = 8;
/** How many `alerts.state` calls run at once. */
export const ALERT_PULL_CONCURRENCY = 3;

export function alertPullTargets(view: readonly MemberView[], previousSender: string | undefined, max = ALERT_PULL_MAX_PEERS): string[] {
  const alive = view.filter((m) => !m.self && m.state === 'alive');
  const rank = (m: MemberView): [number, number, string] => [
    m.peerId === previousSender ? 0 : (m.heartbeat?.containers.length ?? 0) > 0 ? 1 : 2,
    -(m.heartbeat?.uptimeS ?? 0),
    m.peerId,
  ];
  const cmp = (a: MemberView, b: MemberView): number => {
    const [ra, rb] = [rank(a), rank(b)];
    return ra[0] - rb[0] || ra[1] - rb[1] || (ra[2] < rb[2] ? -1 : ra[2] > rb[2] ? 1 : 0);
  };
  return [...alive].sort(cmp).slice(0, Math.max(0, max)).map((m) => m.peerId);
}
