// Which folders of node_modules an installed depot needs at run time. The bundle (bin/build.mjs)
// holds everything but what it leaves external — ssh2 and mysql2 (native addons, loaded only by a
// transfer or a database sync) and cpu-features — and the fence guard, a separate small process
// (pilot/fence-guard-process.ts), imports execa. Their dependency closure is read from
// package-lock.json the way Node resolves a require: from the requiring package's own
// node_modules up to the top.

export const RUNTIME_ROOTS = ['ssh2', 'mysql2', 'execa'];

interface LockPackage {
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
  dev?: boolean;
}

export interface Lockfile {
  packages: Record<string, LockPackage>;
}

/** Lock paths ("node_modules/a", "node_modules/a/node_modules/b") of `roots` and all they depend on, sorted. */
export function runtimeClosure(lock: Lockfile, roots: readonly string[], present: (lockPath: string) => boolean = () => true): string[] {
  const seen = new Set<string>();
  const resolveFrom = (from: string, name: string): string | undefined => {
    // from = "" (the project) or "node_modules/x[/node_modules/y]"
    let base = from;
    for (;;) {
      const candidate = base ? `${base}/node_modules/${name}` : `node_modules/${name}`;
      if (lock.packages[candidate] && present(candidate)) return candidate;
      if (!base) return undefined;
      const i = base.lastIndexOf('/node_modules/');
      base = i < 0 ? '' : base.slice(0, i);
    }
  };
  const visit = (path: string): void => {
    if (seen.has(path)) return;
    seen.add(path);
    const pkg = lock.packages[path]!;
    for (const [name, optional] of [...Object.keys(pkg.dependencies ?? {}).map((n) => [n, false] as const), ...Object.keys(pkg.optionalDependencies ?? {}).map((n) => [n, true] as const)]) {
      const dep = resolveFrom(path, name);
      if (dep) visit(dep);
      else if (!optional) throw new Error(`package-lock.json: ${path} needs ${name}, which is not installed`);
    }
  };
  for (const root of roots) {
    const path = resolveFrom('', root);
    if (!path) throw new Error(`package-lock.json: ${root} is not installed`);
    visit(path);
  }
  return [...seen].sort();
}
