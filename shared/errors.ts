// Errors that carry a stable code, so callers (CLI, control protocol, HTTP) can react to the
// kind of failure and users see what is wrong without a stack trace.
export type ErrorCode =
  | 'CONFIG_INVALID'
  | 'CONFIG_NOT_FOUND'
  | 'MESSAGE_INVALID'
  | 'MESSAGE_TOO_LARGE'
  | 'SWARM_KEY_INVALID'
  | 'NOT_FOUND'
  | 'BAD_REQUEST'
  | 'UNKNOWN_METHOD'
  | 'TIMEOUT'
  | 'PATH_OUTSIDE_STORE'
  | 'DISK_FULL'
  | 'IMAGE_CORRUPT'
  | 'DRIVER_FAILED'
  | 'COMMAND_FAILED'
  | 'HOST_KEY_MISMATCH'
  | 'SYNC_FAILED'
  | 'UNAUTHORIZED'
  | 'CONFLICT'
  | 'INTERNAL'
  | 'JOURNAL_CORRUPT'
  | 'TRANSFER_FAILED'
  | 'PEER_UNREACHABLE';

export class NavigatorError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, details?: Record<string, unknown>, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'NavigatorError';
    this.code = code;
    this.details = details;
  }
}

export function isNavigatorError(err: unknown, code?: ErrorCode): err is NavigatorError {
  return err instanceof NavigatorError && (code === undefined || err.code === code);
}

/** A message for logs and users from anything thrown. */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
