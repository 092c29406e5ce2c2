import { describe, it, expect } from 'vitest';
import { FakeClock } from '../../shared/clock.ts';

describe('FakeClock', () => {
  it('fires timeouts and intervals in time order only when advanced', () => {
    const clock = new FakeClock(0);
    const seen: string[] = [];
    clock.setTimeout(() => seen.push(`t@${clock.now()}`), 250);
    const iv = clock.setInterval(() => seen.push(`i@${clock.now()}`), 100);
    clock.advance(99);
    expect(seen).toEqual([]);
    clock.advance(201);
    expect(seen).toEqual(['i@100', 'i@200', 't@250', 'i@300']);
    clock.clear(iv);
    clock.advance(1000);
    expect(seen).toHaveLength(4);
    expect(clock.now()).toBe(1300);
  });
});
