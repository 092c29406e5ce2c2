import { isNavigatorError, type NavigatorError } from '../../shared/errors.ts';

/** The NavigatorError `p` rejects with; anything else (or success) fails the test. */
export async function failure(p: Promise<unknown>): Promise<NavigatorError> {
  try {
    await p;
  } catch (err) {
    if (isNavigatorError(err)) return err;
    throw err;
  }
  throw new Error('expected a failure, it succeeded');
}
