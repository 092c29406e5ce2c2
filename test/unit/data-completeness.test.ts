import { describe, expect, it } from 'vitest';
import { campaignWithheld, seededAfterReading } from '../../pilot/data-completeness.ts';

describe('data completeness of a standby copy', () => {
  it('the seed mark decides when present: a seed under way or cut off reads as not seeded, whatever came before', () => {
    for (const before of [true, false]) {
      expect(seededAfterReading(before, { seedMark: 'seeding' })).toBe(false);
      // A heartbeat still held from before the reseed does not make a half-loaded copy whole.
      expect(seededAfterReading(before, { seedMark: 'seeding', lastSyncAt: 1_700_000_000_000 })).toBe(false);
      expect(seededAfterReading(before, { seedMark: 'complete' })).toBe(true);
    }
  });

  it('unmarked: a good sync reading proves a completed seed; no reading or no sync keeps what was known', () => {
    expect(seededAfterReading(false, { lastSyncAt: 5 })).toBe(true);
    expect(seededAfterReading(false, {})).toBe(false);
    expect(seededAfterReading(true, {})).toBe(true);
    // An unreadable server is no news: neither promotes nor demotes the copy.
    expect(seededAfterReading(false, undefined)).toBe(false);
    expect(seededAfterReading(true, undefined)).toBe(true);
  });

  it('only a copy of a service with a database, not seeded, is withheld from the election', () => {
    expect(campaignWithheld({ hasDatabase: true, seeded: false })).toMatch(/never received a complete copy/);
    expect(campaignWithheld({ hasDatabase: true, seeded: true })).toBeUndefined();
    // A service without a database has no data to lose: its standbys always stand.
    expect(campaignWithheld({ hasDatabase: false, seeded: false })).toBeUndefined();
  });
});
