import { describe, expect, it } from 'vitest';
import { redialGapMs } from '../../depot/connections.ts';

describe('redialGapMs (how often a depot that cannot be reached is dialled again)', () => {
  const t = { redialMs: 5000, redialMaxMs: 30_000 };
  it('retries once after redialMs, then doubles after each further failed dial of a depot not heard alive, up to redialMaxMs', () => {
    expect([0, 1, 2, 3, 4, 50].map((f) => redialGapMs(f, false, t))).toEqual([5000, 5000, 10_000, 20_000, 30_000, 30_000]);
  });
  it('keeps redialMs for a depot heard alive (its heartbeats arrive through others)', () => {
    expect(redialGapMs(7, true, t)).toBe(5000);
  });
  it('never goes below redialMs, even with redialMaxMs set lower', () => {
    expect(redialGapMs(3, false, { redialMs: 5000, redialMaxMs: 1000 })).toBe(5000);
  });
});
