import { describe, it, expect } from 'vitest';
import { formatHistory } from '../../cli/commands/history.ts';
import { MovementRecord } from '../../shared/movement.ts';

describe('navigator history table', () => {
  const records = [
    MovementRecord.parse({ id: 'b', time: Date.UTC(2026, 10, 21, 10, 0, 5), service: 'zabbix', role: 'primary', host: 'ws-2', address: '10.0.0.50/24', fromHost: 'ws-1', event: 'failover', failover: true, reason: 'primary on ws-1 missing', term: 3, timings: { detect: 300, elect: 900, takeover: 40 } }),
    MovementRecord.parse({ id: 'a', time: Date.UTC(2026, 10, 21, 9, 0, 0), service: 'zabbix', role: 'primary', host: 'ws-1', address: '10.0.0.50/24', event: 'bootstrap', failover: false, reason: 'service bootstrapped', term: 1 }),
  ];

  it('aligns columns, shows timings and marks failovers only when colour is on', () => {
    const plain = formatHistory(records, false).split('\n');
    expect(plain).toHaveLength(3);
    expect(plain[0]).toMatch(/^TIME\s+SERVICE\s+EVENT/);
    expect(plain[1]).toContain('2026-11-21 10:00:05');
    expect(plain[1]).toContain('detect 300, elect 900, takeover 40');
    expect(plain[2]).toMatch(/bootstrap\s+primary\s+ws-1\s+-\s+no/);
    expect(plain[1]!.indexOf('failover')).toBe(plain[2]!.indexOf('bootstrap'));
    expect(plain.join('\n')).not.toContain('\u001b[');
    const coloured = formatHistory(records, true).split('\n');
    expect(coloured[1]).toMatch(/^\u001b\[31m/);
    expect(coloured[2]).not.toContain('\u001b[31m');
  });
});
