import { describe, it, expect } from 'vitest';
// @ts-expect-error: a plain .mjs script without type declarations
import { importCycles, importGraph, layerBreaches } from '../../scripts/check-layers.mjs';

// Layers point one way (shared ← web ← depot ← ship ← pilot ← plugins ← cli/demo; lab beside
// them), no source folder imports test/, and there is no import cycle (scripts/check-layers.mjs).

type Graph = Map<string, string[]>;

describe('import layers', () => {
  it('the tree has no import against the layers and no cycle', () => {
    const graph = importGraph() as Graph;
    expect(graph.size).toBeGreaterThan(100);
    expect(layerBreaches(graph)).toEqual([]);
    expect(importCycles(graph)).toEqual([]);
  });

  it('the check itself finds a breach of each kind and a cycle', () => {
    const bad: Graph = new Map([
      ['shared/config.ts', ['pilot/election/settings.ts']],
      ['depot/depot.ts', ['plugins/pilots.ts']],
      ['web/tracking-routes.ts', ['depot/journal/journal.ts']],
      ['bench/ship.ts', ['test/helpers/failure.ts']],
      ['pilot/a.ts', ['pilot/b.ts']],
      ['pilot/b.ts', ['pilot/c.ts']],
      ['pilot/c.ts', ['pilot/a.ts']],
      ['cli/main.ts', ['plugins/workstation.ts', 'shared/config.ts']],
    ]);
    const breaches = layerBreaches(bad) as string[];
    expect(breaches).toHaveLength(4);
    expect(breaches[0]).toContain('shared/ must not import pilot/');
    expect(importCycles(bad)).toEqual([['pilot/a.ts', 'pilot/b.ts', 'pilot/c.ts']]);
  });
});
