import { describe, expect, it } from 'vitest';
import { keepalivedConfig, keepalivedTrials } from '../../lab/keepalived.ts';

// The bench:failover yardstick must itself be right: real keepalived, real VRRP, real outage.
describe('keepalived yardstick', () => {
  it('writes a VRRP instance with the address, priority and advert interval', () => {
    const conf = keepalivedConfig({ routerId: 'navlab_w1', iface: 'eth0', vrid: 77, priority: 150, master: true, address: '10.77.3.100/24' });
    expect(conf).toContain('state MASTER');
    expect(conf).toContain('priority 150');
    expect(conf).toContain('advert_int 1');
    expect(conf).toContain('10.77.3.100/24 dev eth0');
  });

  it('a master power loss costs about 3 adverts plus skew, and the backup takes over', async () => {
    const { trials } = await keepalivedTrials(1);
    const t = trials[0]!;
    expect(t.recovered).toBe(true);
    expect(t.serverAfter).toBe('w2');
    // Master-down interval 3 × 1 s + (256 − 100)/256 s, less up to one advert interval already elapsed.
    expect(t.outageMs).toBeGreaterThan(2500);
    expect(t.outageMs).toBeLessThan(4200);
    expect(t.splitBrainEvents).toBe(0);
  }, 60_000);
});
