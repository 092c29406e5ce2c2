import type { z } from 'zod';
import { NavigatorError } from './errors.ts';

/** Check a request's params against its method's schema; the error names the method and the first bad field. */
export function parseParams<T>(method: string, schema: z.ZodType<T>, params: unknown): T {
  const r = schema.safeParse(params);
  if (r.success) return r.data;
  const first = r.error.issues[0];
  throw new NavigatorError('BAD_REQUEST', `${method}: ${first ? `${first.path.join('.') || '(params)'}: ${first.message}` : 'invalid params'}`);
}
