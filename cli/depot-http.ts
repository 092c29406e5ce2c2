import { NavigatorError } from '../shared/errors.ts';

// GET a JSON document from a depot's HTTP API for a CLI command, with errors an admin can act
// on: which URL could not be reached (and what to check), which answered what HTTP status, or
// which field of the answer was not what the CLI expects.

/** What `getDepotJson` checks the body with (a zod schema, or anything with the same safeParse). */
export interface BodyCheck<T> {
  safeParse(body: unknown): { success: true; data: T } | { success: false; error: { issues: ReadonlyArray<{ path: ReadonlyArray<PropertyKey>; message: string }> } };
}

export async function getDepotJson<T>(
  api: string,
  path: string,
  check: BodyCheck<T>,
  opts: { what: string; timeoutMs?: number; whenMissing?: T },
): Promise<T> {
  const url = `${api.replace(/\/+$/, '')}${path}`;
  let res: Response;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(opts.timeoutMs ?? 5000) });
  } catch (err) {
    const cause = (err as Error & { cause?: Error }).cause;
    throw new NavigatorError('COMMAND_FAILED', `cannot reach the depot at ${url}: ${cause?.message ?? (err as Error).message} (is \`navigator depot run\` running? use --api URL)`);
  }
  // An older depot without this endpoint has nothing to show, when the caller says so.
  if (res.status === 404 && opts.whenMissing !== undefined) return opts.whenMissing;
  if (!res.ok) throw new NavigatorError('COMMAND_FAILED', `${url} answered HTTP ${res.status}`);
  let body: unknown;
  try {
    body = await res.json();
  } catch {
    throw new NavigatorError('MESSAGE_INVALID', `${url} did not return JSON`);
  }
  const parsed = check.safeParse(body);
  if (!parsed.success) {
    const i = parsed.error.issues[0];
    throw new NavigatorError('MESSAGE_INVALID', `${url} did not return ${opts.what}${i ? ` (${i.path.join('.') || 'top level'}: ${i.message})` : ''}`);
  }
  return parsed.data;
}
