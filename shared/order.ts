// Ordering of names (hosts, depots, services) in views and API answers.

/**
 * Code-point order. Not String.prototype.localeCompare: that loads ICU's collation data into
 * every depot process (~3 MB of resident memory) and orders differently under different
 * locales, while every depot should list the cluster the same way.
 */
export function compareNames(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
