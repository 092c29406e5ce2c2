import { describe, it, expect } from 'vitest';
import {
  DEFAULT_WEIGHTS,
  FACTORS,
  expectedRemainingMs,
  formatRanking,
  rankHosts,
  type FactorName,
  type PlacementCandidate,
  type PlacementRequirements,
} from '../../pilot/placement.ts';
import { mulberry32 } from '../helpers/election-sim.ts';

const GiB = 1024 ** 3;
const HOUR = 3_600_000;
// 2026-11-20 (a Friday) 17:00 UTC.
const NOW = Date.UTC(2026, 10, 20, 17, 0, 0);

function host(name: string, over: Partial<PlacementCandidate> = {}): PlacementCandidate {
  return {
    name,
    state: 'alive',
    uptimeS: 86_400,
    load: [0.5, 0.5, 0.5],
    cpus: 4,
    memFreeBytes: 8 * GiB,
    memTotalBytes: 16 * GiB,
    diskFreeBytes: 100 * GiB,
    images: [],
    copies: [],
    ...over,
  };
}

const req: PlacementRequirements = { service: 'zabbix', memBytes: 2 * GiB, diskBytes: 20 * GiB, image: 'sha256-abc' };

function factor(name: string, f: FactorName, candidates: PlacementCandidate[], r = req) {
  const result = rankHosts(candidates, r, NOW);
  return result.ranking.find((h) => h.name === name)!.factors.find((x) => x.name === f)!;
}

/** Lab machine sessions: 08:00–18:00 UTC on each of the last `days` days. */
function labDays(days: number, endHour = 18): { startMs: number; endMs: number }[] {
  const out = [];
  for (let d = 1; d <= days; d++) {
    const day = Date.UTC(2026, 10, 20 - d);
    out.push({ startMs: day + 8 * HOUR, endMs: day + endHour * HOUR });
  }
  return out;
}

describe('placement exclusions', () => {
  it('excludes each unfit host with its reason and never ranks it', () => {
    const result = rankHosts(
      [
        host('dead', { state: 'dead' }),
        host('suspect', { state: 'suspect' }),
        host('left', { state: 'left' }),
        host('holder', { copies: ['zabbix'] }),
        host('small-mem', { memFreeBytes: 1 * GiB }),
        host('small-disk', { diskFreeBytes: 10 * GiB }),
        host('rack-a', { group: 'rack-a' }),
        host('broken', { cpus: 0 }),
        host('ok'),
      ],
      { ...req, avoidGroups: ['rack-a'] },
      NOW,
    );
    expect(result.ranking.map((r) => r.name)).toEqual(['ok']);
    expect(result.best).toBe('ok');
    const why = Object.fromEntries(result.excluded.map((e) => [e.name, e.reasons.join('; ')]));
    expect(why).toEqual({
      broken: 'unusable resource report',
      dead: 'depot is dead',
      holder: 'already holds a copy of zabbix',
      left: 'depot is left',
      'rack-a': 'group rack-a already holds a copy',
      'small-disk': 'free disk 10.0 GiB < needed 20.0 GiB',
      'small-mem': 'free memory 1.0 GiB < needed 2.0 GiB',
      suspect: 'depot is suspect',
    });
  });

  it('lists every reason of a host that fails several checks, and best is null when nobody fits', () => {
    const result = rankHosts([host('x', { state: 'dead', copies: ['zabbix'], memFreeBytes: 0 })], req, NOW);
    expect(result.best).toBeNull();
    expect(result.excluded[0]!.reasons).toHaveLength(3);
    expect(formatRanking(result)).toContain('no eligible host');
  });
});

describe('placement factors', () => {
  it('every factor is in 0..1 and the total is the weighted mean', () => {
    const r = rankHosts([host('a', { images: ['sha256-abc'] })], req, NOW).ranking[0]!;
    for (const f of r.factors) {
      expect(f.value).toBeGreaterThanOrEqual(0);
      expect(f.value).toBeLessThanOrEqual(1);
    }
    const sumW = FACTORS.reduce((a, f) => a + DEFAULT_WEIGHTS[f], 0);
    expect(r.total).toBeCloseTo(r.factors.reduce((a, f) => a + f.weight * f.value, 0) / sumW, 12);
    expect(r.factors.map((f) => f.name)).toEqual([...FACTORS]);
  });

  it('longer uptime scores higher (monotonic)', () => {
    const vals = [0, 600, 3600, 86_400, 864_000].map((u) => factor('a', 'uptime', [host('a', { uptimeS: u })]).value);
    for (let i = 1; i < vals.length; i++) expect(vals[i]!).toBeGreaterThan(vals[i - 1]!);
  });

  it('more free memory scores higher', () => {
    const vals = [2, 4, 8, 15].map((g) => factor('a', 'memory', [host('a', { memFreeBytes: g * GiB })]).value);
    expect(vals[0]).toBe(0); // nothing left after the copy starts
    for (let i = 1; i < vals.length; i++) expect(vals[i]!).toBeGreaterThan(vals[i - 1]!);
  });

  it('lower load per cpu scores higher', () => {
    const vals = [4, 2, 1, 0].map((l) => factor('a', 'cpu', [host('a', { load: [l, l, l] })]).value);
    expect(vals[0]).toBe(0);
    expect(vals[3]).toBe(1);
    for (let i = 1; i < vals.length; i++) expect(vals[i]!).toBeGreaterThan(vals[i - 1]!);
    expect(factor('a', 'cpu', [host('a', { load: [2, 2, 2], cpus: 8 })]).value).toBeGreaterThan(factor('a', 'cpu', [host('a', { load: [2, 2, 2], cpus: 4 })]).value);
  });

  it('an already staged image scores 1, a missing one 0', () => {
    expect(factor('a', 'image', [host('a', { images: ['sha256-abc'] })]).value).toBe(1);
    expect(factor('a', 'image', [host('a', { images: ['other'] })]).value).toBe(0);
  });

  it('learns from host history: a lab machine switched off at 6 pm scores low at 5 pm', () => {
    expect(expectedRemainingMs(labDays(5), NOW)).toBe(1 * HOUR);
    expect(expectedRemainingMs(labDays(5, 22), NOW)).toBe(5 * HOUR);
    expect(expectedRemainingMs(undefined, NOW)).toBeUndefined();
    // Sessions that never run at 17:00: the host is usually off by now.
    const mornings = labDays(3, 12);
    expect(expectedRemainingMs(mornings, NOW)).toBe(0);
    // Sessions of different lengths: the median.
    expect(expectedRemainingMs([...labDays(1, 18), ...labDays(2, 20).slice(1), ...labDays(3, 23).slice(2)], NOW)).toBe(3 * HOUR);
    // Monotonic: later shutdowns score higher; no history is neutral.
    const vals = [12, 18, 20, 23].map((h) => factor('a', 'session', [host('a', { history: labDays(5, h) })]).value);
    for (let i = 1; i < vals.length; i++) expect(vals[i]!).toBeGreaterThan(vals[i - 1]!);
    expect(factor('a', 'session', [host('a')]).value).toBe(0.5);
    const server = [{ startMs: NOW - 30 * 24 * HOUR, endMs: NOW - 1 * HOUR }];
    expect(factor('a', 'session', [host('a', { history: server })]).value).toBeGreaterThan(0.9);
  });

  it('prefers the always-on server over a fresher lab machine at 5 pm, and says why', () => {
    const result = rankHosts(
      [
        host('lab-07', { uptimeS: 9 * 3600, history: labDays(10), images: ['sha256-abc'] }),
        host('server', { uptimeS: 9 * 3600, history: [{ startMs: NOW - 60 * 24 * HOUR, endMs: NOW - 10 * HOUR }] }),
      ],
      req,
      NOW,
    );
    expect(result.ranking.map((r) => r.name)).toEqual(['server', 'lab-07']);
    const text = formatRanking(result);
    expect(text).toContain('lab-07');
    expect(text).toContain('expect 1h00 more');
  });
});

describe('placement ranking', () => {
  it('is deterministic and breaks ties by name', () => {
    const hosts = [host('c'), host('a'), host('b')];
    const r1 = rankHosts(hosts, req, NOW);
    const r2 = rankHosts([...hosts].reverse(), req, NOW);
    expect(r1).toEqual(r2);
    expect(r1.ranking.map((r) => r.name)).toEqual(['a', 'b', 'c']);
  });

  it('refuses negative weights and excludes duplicate names', () => {
    expect(() => rankHosts([host('a')], req, NOW, { weights: { cpu: -1 } })).toThrow(/weight cpu/);
    const r = rankHosts([host('a'), host('a', { uptimeS: 1 })], req, NOW);
    expect(r.ranking).toHaveLength(1);
    expect(r.excluded[0]!.reasons).toEqual(['duplicate host name in the input']);
  });

  it('weights move the ranking: all weight on the image picks the host that has it staged', () => {
    const hosts = [host('busy', { images: ['sha256-abc'], load: [4, 4, 4], uptimeS: 60 }), host('idle', { load: [0, 0, 0] })];
    expect(rankHosts(hosts, req, NOW).best).toBe('idle');
    expect(rankHosts(hosts, req, NOW, { weights: { uptime: 0, memory: 0, cpu: 0, session: 0, image: 1 } }).best).toBe('busy');
  });

  it('formats an aligned table with every factor, then the reasons', () => {
    const text = formatRanking(rankHosts([host('ws-01'), host('ws-002', { images: ['sha256-abc'] }), host('gone', { state: 'dead' })], req, NOW));
    const lines = text.split('\n');
    const head = lines.findIndex((l) => l.startsWith('rank'));
    expect(lines[head]).toMatch(/^rank\s+host\s+total\s+uptime\s+memory\s+cpu\s+session\s+image\s+decided by$/);
    // Columns line up: every row's total ends where the header's "total" ends.
    const end = lines[head]!.indexOf('total') + 'total'.length;
    for (const row of lines.slice(head + 1, head + 3)) expect(row.slice(end - 5, end)).toMatch(/^\d\.\d{3}$/);
    expect(lines[head + 1]).toMatch(/^\s*1\s+ws-002/);
    expect(text).toMatch(/excluded:\n\s+gone\s+depot is dead/);
  });

  it('property: over random inputs, never ranks an excluded host and the ranking is sorted', () => {
    const rnd = mulberry32(42);
    const states = ['alive', 'alive', 'alive', 'suspect', 'dead', 'left'] as const;
    for (let run = 0; run < 500; run++) {
      const n = 1 + Math.floor(rnd() * 12);
      const hosts: PlacementCandidate[] = Array.from({ length: n }, (_, i) =>
        host(`h${Math.floor(rnd() * 20)}-${i % 3}`, {
          state: states[Math.floor(rnd() * states.length)]!,
          uptimeS: rnd() * 1e6,
          load: [rnd() * 8, rnd() * 8, rnd() * 8],
          cpus: 1 + Math.floor(rnd() * 16),
          memFreeBytes: rnd() * 16 * GiB,
          memTotalBytes: 16 * GiB,
          diskFreeBytes: rnd() * 200 * GiB,
          images: rnd() < 0.3 ? ['sha256-abc'] : [],
          copies: rnd() < 0.2 ? ['zabbix'] : [],
          group: rnd() < 0.5 ? `g${Math.floor(rnd() * 3)}` : undefined,
          history: rnd() < 0.5 ? labDays(1 + Math.floor(rnd() * 5), 9 + Math.floor(rnd() * 15)) : undefined,
        }),
      );
      const r = { ...req, memBytes: rnd() * 8 * GiB, diskBytes: rnd() * 100 * GiB, avoidGroups: ['g0'] };
      const result = rankHosts(hosts, r, NOW);
      const ranked = new Set(result.ranking.map((x) => x.name));
      for (const e of result.excluded) {
        if (e.reasons[0] !== 'duplicate host name in the input') expect(ranked.has(e.name)).toBe(false);
      }
      for (const x of result.ranking) {
        const c = hosts.find((h) => h.name === x.name)!;
        expect(c.state).toBe('alive');
        expect(c.copies).not.toContain('zabbix');
        expect(c.group).not.toBe('g0');
        expect(c.memFreeBytes).toBeGreaterThanOrEqual(r.memBytes);
        expect(c.diskFreeBytes).toBeGreaterThanOrEqual(r.diskBytes);
        expect(x.total).toBeGreaterThanOrEqual(0);
        expect(x.total).toBeLessThanOrEqual(1);
      }
      for (let i = 1; i < result.ranking.length; i++) {
        const a = result.ranking[i - 1]!;
        const b = result.ranking[i]!;
        expect(a.total > b.total || (a.total === b.total && a.name < b.name)).toBe(true);
      }
      expect(result.ranking.length + result.excluded.length).toBe(hosts.length);
      expect(result.best).toBe(result.ranking[0]?.name ?? null);
    }
  });
});

describe('navigator placement (CLI against an HTTP /api/depots)', () => {
  const rows = [
    { name: 'ws-01', peerId: '12D3KooWAAAAAAAAAA', state: 'alive', uptimeS: 7200, load: [0.1, 0.2, 0.3], cpus: 4, memFreeBytes: 8 * GiB, memTotalBytes: 16 * GiB, diskFreeBytes: 200 * GiB, images: ['img-1'], containers: [{ id: 'c1', service: 'zabbix', role: 'primary', image: 'img-1' }], self: true },
    { name: 'ws-02', state: 'alive', uptimeS: 90_000, load: [0.5, 0.5, 0.5], cpus: 8, memFreeBytes: 12 * GiB, memTotalBytes: 16 * GiB, diskFreeBytes: 150 * GiB, images: ['img-1'], containers: [] },
    { name: 'ws-03', state: 'alive', uptimeS: 90_000, load: [0.5, 0.5, 0.5], cpus: 8, memFreeBytes: 12 * GiB, memTotalBytes: 16 * GiB, diskFreeBytes: 150 * GiB, images: [], containers: [] },
    { name: 'ws-04', state: 'dead', uptimeS: null, load: null, cpus: null, memFreeBytes: null, memTotalBytes: null, diskFreeBytes: null, images: [], containers: [] },
    { name: 'ws-05', state: 'alive', uptimeS: 90_000, load: [0, 0, 0], cpus: 8, memFreeBytes: 1 * GiB, memTotalBytes: 16 * GiB, diskFreeBytes: 150 * GiB, images: [], containers: [] },
  ];

  async function withApi(body: unknown, fn: (url: string) => Promise<void>, status = 200): Promise<void> {
    const { createServer } = await import('node:http');
    const server = createServer((req, res) => {
      if (req.url !== '/api/depots') {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(status, { 'content-type': 'application/json' }).end(typeof body === 'string' ? body : JSON.stringify(body));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as { port: number };
    try {
      await fn(`http://127.0.0.1:${port}`);
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  }

  it('ranks the depots of the API, takes the image from the running copy, prints the table', async () => {
    const { runPlacement } = await import('../../cli/commands/placement.ts');
    await withApi({ self: {}, counts: {}, dropped: {}, depots: rows }, async (api) => {
      const result = await runPlacement({ service: 'zabbix', api, memory: '2GiB', disk: '20GiB', now: NOW });
      expect(result.requirements).toMatchObject({ image: 'img-1', memBytes: 2 * GiB, diskBytes: 20 * GiB });
      expect(result.ranking.map((r) => r.name)).toEqual(['ws-02', 'ws-03']); // staged image wins the tie
      expect(Object.fromEntries(result.excluded.map((e) => [e.name, e.reasons[0]]))).toEqual({
        'ws-01': 'already holds a copy of zabbix',
        'ws-04': 'depot is dead',
        'ws-05': 'free memory 1.0 GiB < needed 2.0 GiB',
      });
    });
    // The brief's plain-array form works too.
    await withApi(rows, async (api) => {
      expect((await runPlacement({ service: 'zabbix', api, now: NOW })).best).toBe('ws-02');
    });
  });

  it('is registered as `navigator placement` and prints the ranking (and --json)', async () => {
    const { buildProgram } = await import('../../cli/main.ts');
    await withApi({ depots: rows }, async (api) => {
      const out: string[] = [];
      const write = process.stdout.write.bind(process.stdout);
      process.stdout.write = ((chunk: string) => (out.push(String(chunk)), true)) as typeof process.stdout.write;
      try {
        await buildProgram().parseAsync(['node', 'navigator', 'placement', '--service', 'zabbix', '--api', api, '--memory', '2G']);
        await buildProgram().parseAsync(['node', 'navigator', 'placement', '--service', 'zabbix', '--api', api, '--json']);
      } finally {
        process.stdout.write = write;
      }
      expect(out[0]).toMatch(/^placement of a new copy of zabbix \(needs memory 2\.0 GiB, disk 0 B, image img-1\)/);
      expect(out[0]).toMatch(/rank\s+host\s+total\s+uptime\s+memory\s+cpu\s+session\s+image/);
      expect(out[0]).toMatch(/\n\s+1\s+ws-02\s+0\.\d{3}/);
      expect(JSON.parse(out[1]!)).toMatchObject({ service: 'zabbix', best: 'ws-02' });
    });
  });

  it('says clearly what is wrong with an unreachable API, a bad answer or a bad size', async () => {
    const { runPlacement, parseSize } = await import('../../cli/commands/placement.ts');
    await expect(runPlacement({ service: 'z', api: 'http://127.0.0.1:1' })).rejects.toThrow(/cannot reach the depot at http:\/\/127\.0\.0\.1:1\/api\/depots/);
    await withApi({ depots: [{ name: 'x' }] }, async (api) => {
      await expect(runPlacement({ service: 'z', api })).rejects.toThrow(/did not return a depot list \(depots\.0\.state/);
    });
    await withApi('not json', async (api) => {
      await expect(runPlacement({ service: 'z', api })).rejects.toThrow(/did not return JSON/);
    });
    await withApi({}, async (api) => {
      await expect(runPlacement({ service: 'z', api })).rejects.toThrow(/HTTP 500/);
    }, 500);
    expect(parseSize('2GiB')).toBe(2 * GiB);
    expect(parseSize('512M')).toBe(512 * 1024 ** 2);
    expect(parseSize('1.5g')).toBe(1.5 * GiB);
    expect(parseSize('1024')).toBe(1024);
    expect(() => parseSize('lots')).toThrow(/not a size: "lots"/);
  });
});
