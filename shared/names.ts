import { z } from 'zod';

// The one pattern every name that ends up in a file or folder name must match: service names,
// container ids, the service of an election message (DATADIR/voters/<service>.json), the copy a
// retire names (DATADIR/pilots/<container>.json). No dot, no slash, no leading dash: a name can
// never climb out of its folder or hide as a dot file, whatever a peer sends.

export const SAFE_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;

/** A name that becomes a path component; checked wherever such a name enters (zod schemas). */
export const SafeName = z
  .string()
  .regex(SAFE_NAME_PATTERN, 'a name that becomes a file name is 1-64 letters, digits, dash or underscore, starting with a letter or digit');

/** True when `name` may become a path component. */
export function isSafeName(name: string): boolean {
  return SAFE_NAME_PATTERN.test(name);
}
