// How Node runs a depot process. Everything that starts `navigator depot run` (the systemd unit,
// the demo, the lab, the integration tests and benchmarks) puts these flags before the entry
// script, so the depot that is measured is the depot that is deployed.

/**
 * Node/V8 flags of a depot process.
 * --max-semi-space-size=1: the young generation is at most 3 × 1 MB instead of growing to
 *   3 × 16 MB while modules load at start and then staying there. An idle depot allocates little;
 *   under load, young collections get more frequent but stay below a millisecond each.
 */
export const DEPOT_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=1'];

/** The argv of a depot process: NODE FLAGS ENTRY depot run ARGS. */
export function depotArgv(nodeBinary: string, entry: string, args: readonly string[] = []): string[] {
  return [nodeBinary, ...DEPOT_NODE_FLAGS, entry, 'depot', 'run', ...args];
}
