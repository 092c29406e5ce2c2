// The layer check: imports point one way (shared ← web ← depot ← ship ← pilot ← plugins ← cli/demo,
// lab beside them for tests, benchmarks and the demo), no source folder imports test/, and no
// module imports itself through a cycle. Run: node scripts/check-layers.mjs (exit 1 on a breach);
// test/unit/layers.test.ts runs it in the suite.
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** Folders each folder must not import from. */
export const FORBIDDEN = {
  shared: ['web', 'depot', 'ship', 'pilot', 'plugins', 'cli', 'demo', 'lab', 'bench', 'test'],
  web: ['depot', 'ship', 'pilot', 'plugins', 'cli', 'demo', 'lab', 'bench', 'test'],
  depot: ['ship', 'pilot', 'plugins', 'cli', 'demo', 'lab', 'bench', 'test'],
  ship: ['pilot', 'plugins', 'cli', 'demo', 'lab', 'bench', 'test'],
  pilot: ['plugins', 'cli', 'demo', 'lab', 'bench', 'test'],
  plugins: ['cli', 'demo', 'lab', 'bench', 'test'],
  lab: ['pilot', 'plugins', 'cli', 'demo', 'bench', 'test'],
  cli: ['bench', 'test'],
  demo: ['cli', 'bench', 'test'],
  bench: ['test'],
};

function sources(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...sources(p));
    else if (/\.(ts|mts)$/.test(name) && !name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

/** Every relative import (static, dynamic, type-only, re-export) of every source file: file → files. */
export function importGraph(root = ROOT) {
  const graph = new Map();
  for (const folder of Object.keys(FORBIDDEN)) {
    let files;
    try {
      files = sources(join(root, folder));
    } catch {
      continue;
    }
    for (const file of files) {
      const info = ts.preProcessFile(readFileSync(file, 'utf8'), true, true);
      const targets = info.importedFiles.map((f) => f.fileName).filter((s) => s.startsWith('.')).map((s) => relative(root, resolve(dirname(file), s)));
      graph.set(relative(root, file), targets);
    }
  }
  return graph;
}

const topFolder = (file) => file.split('/')[0];

/** Imports that run against the layers: "from → to (folder rule)". */
export function layerBreaches(graph) {
  const out = [];
  for (const [from, targets] of graph) {
    const forbidden = FORBIDDEN[topFolder(from)] ?? [];
    for (const to of targets) if (forbidden.includes(topFolder(to))) out.push(`${from} → ${to} (${topFolder(from)}/ must not import ${topFolder(to)}/)`);
  }
  return out;
}

/** Import cycles (Tarjan's strongly connected components with more than one file, or a file importing itself). */
export function importCycles(graph) {
  let index = 0;
  const stack = [];
  const on = new Set();
  const idx = new Map();
  const low = new Map();
  const cycles = [];
  const visit = (v) => {
    idx.set(v, index);
    low.set(v, index++);
    stack.push(v);
    on.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!graph.has(w)) continue;
      if (!idx.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v), low.get(w)));
      } else if (on.has(w)) low.set(v, Math.min(low.get(v), idx.get(w)));
    }
    if (low.get(v) === idx.get(v)) {
      const scc = [];
      let w;
      do {
        w = stack.pop();
        on.delete(w);
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1 || (graph.get(v) ?? []).includes(v)) cycles.push(scc.sort());
    }
  };
  for (const v of graph.keys()) if (!idx.has(v)) visit(v);
  return cycles;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const graph = importGraph();
  const breaches = layerBreaches(graph);
  const cycles = importCycles(graph);
  for (const b of breaches) console.log(`layer: ${b}`);
  for (const c of cycles) console.log(`cycle: ${c.join(' ↔ ')}`);
  console.log(`${graph.size} files, ${breaches.length} layer breaches, ${cycles.length} cycles`);
  process.exit(breaches.length || cycles.length ? 1 : 0);
}
