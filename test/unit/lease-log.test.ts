import { describe, expect, it } from 'vitest';
import { createLogger } from '../../shared/logger.ts';
import { logLeaseLapsed, logRenewalReply } from '../../pilot/lease-log.ts';
import type { LeaseAck } from '../../shared/wire.ts';

function capture() {
  const lines: Array<Record<string, unknown>> = [];
  const log = createLogger({ level: 'debug', destination: { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) } });
  return { log, lines };
}

const ack = (granted: boolean, reason?: string) => ({ type: 'lease-ack', granted, ...(reason ? { reason } : {}) }) as unknown as LeaseAck;
const base = { voter: '12D3KooWvoterAAAAAAAA', rttMs: 40, slowMs: 500, term: 7, leaseLeftMs: 900 };

describe('lease log (why a primary lost its lease, from its own lines)', () => {
  it('says nothing of a prompt grant; logs a slow grant, a refusal with its reason (info) and silence (warn)', () => {
    const { log, lines } = capture();
    logRenewalReply(log, { ...base, reply: ack(true) });
    expect(lines).toEqual([]);
    logRenewalReply(log, { ...base, reply: ack(true), rttMs: 930 });
    logRenewalReply(log, { ...base, reply: ack(false, 'voted-other') });
    logRenewalReply(log, { ...base, reply: undefined, rttMs: 3000 });
    expect(lines.map((l) => [l.event, l.level, l.reason ?? null, l.rttMs])).toEqual([
      ['renewal-slow', 30, null, 930],
      ['renewal-unacknowledged', 30, 'voted-other', 40],
      ['renewal-unacknowledged', 40, null, 3000],
    ]);
    expect(lines[2]!.msg).toContain('AAAAAAAA did not answer a renewal within 3000 ms');
  });

  it('a lapse lists how old each voter\'s last acknowledgement was', () => {
    const { log, lines } = capture();
    logLeaseLapsed(log, { term: 3, acks: { '12D3KooWvoter11111111': 1000, '12D3KooWvoter22222222': 1400 }, now: 2600, voters: 5 });
    expect(lines[0]).toMatchObject({ event: 'lease-lapsed', level: 40, term: 3, voters: 5, acksAgeMs: { '11111111': 1600, '22222222': 1200 } });
  });
});
