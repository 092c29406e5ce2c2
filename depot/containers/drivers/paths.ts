import { isAbsolute, relative, resolve } from 'node:path';
import { NavigatorError } from '../../../shared/errors.ts';

/**
 * Resolve a spec path against the container folder, refusing anything that leaves it
 * (absolute paths, `..`). The check is lexical: the folder is a private clone made by the depot.
 */
export function insideDir(dir: string, rel: string, what: string): string {
  if (isAbsolute(rel)) {
    throw new NavigatorError('PATH_OUTSIDE_STORE', `${what} must be relative to the container folder, got absolute path ${rel}`);
  }
  const full = resolve(dir, rel);
  const r = relative(resolve(dir), full);
  if (r === '' || r.startsWith('..') || isAbsolute(r)) {
    throw new NavigatorError('PATH_OUTSIDE_STORE', `${what} ${rel} points outside the container folder`);
  }
  return full;
}

