// How Node runs a depot process. Everything that starts `navigator depot run` (the systemd unit,
// the demo, the lab, the integration tests and benchmarks) puts these flags before the entry
// script and these variables in its environment, so the depot that is measured is the depot
// that is deployed. Figures: an idle depot in a 32-depot cluster (bench:gossip), each step
// measured against the others in one cluster.

/**
 * Node/V8 flags of a depot process (measured on a 32-depot cluster, bench:gossip).
 * --max-semi-space-size=1: the young generation is at most 3 × 1 MB instead of growing to
 *   3 × 16 MB while modules load at start and then staying there. An idle depot allocates little;
 *   under load, young collections get more frequent but stay below a millisecond each.
 * --single-threaded: no V8 helper threads for GC and compilation. An idle depot has nothing for
 *   them to do, but they kept their own malloc arenas (~4 MB) and their hand-offs cost CPU
 *   (~0.2 % of a core per depot); GC pauses of a ~35 MB heap stay in the tens of ms.
 * --heap-growing-percent=20: the old generation may grow 20 % past what survived the last full
 *   GC before the next one (V8 picks up to 100 % and more), so garbage does not sit in RSS.
 * --no-sparkplug --max-lazy --flush-code-based-on-time: no baseline machine code next to the
 *   bytecode, nothing compiled before it is first called, and bytecode of functions that have
 *   not run for a while (start-up, configuration) dropped: ~3.5 MB. Hot paths are still
 *   optimised by Maglev/TurboFan.
 */
export const DEPOT_NODE_FLAGS: readonly string[] = [
  '--max-semi-space-size=1',
  '--single-threaded',
  '--heap-growing-percent=20',
  '--no-sparkplug',
  '--max-lazy',
  '--flush-code-based-on-time',
];

/**
 * Environment of a depot process: glibc malloc tuning (~3.5 MB). One malloc arena instead of one
 * per thread that ever allocated; blocks of 64 KB and more in their own mappings, returned to
 * the system when freed; free memory at the top of the heap returned past 128 KB. Without these,
 * start-up's allocations left ~10 MB of fragmented, unused heap resident for the process's life.
 */
export const DEPOT_ENV: Readonly<Record<string, string>> = {
  MALLOC_ARENA_MAX: '1',
  MALLOC_MMAP_THRESHOLD_: '65536',
  MALLOC_TRIM_THRESHOLD_: '131072',
};

/** The argv of a depot process: NODE FLAGS ENTRY depot run ARGS. */
export function depotArgv(nodeBinary: string, entry: string, args: readonly string[] = []): string[] {
  return [nodeBinary, ...DEPOT_NODE_FLAGS, entry, 'depot', 'run', ...args];
}
