import { pino, type Logger, type LevelWithSilent, type DestinationStream, type LoggerOptions as PinoOptions } from 'pino';

export type { Logger } from 'pino';

// Field names that must never reach a log line, whatever object carries them.
const REDACT = [
  'password',
  '*.password',
  '*.*.password',
  'adminToken',
  '*.adminToken',
  '*.*.adminToken',
  'privateKey',
  '*.privateKey',
  'passphrase',
  '*.passphrase',
  'guestPassword',
  '*.guestPassword',
  'token',
  '*.token',
  'smtpPassword',
  '*.smtpPassword',
  'webhookSecret',
  '*.webhookSecret',
  'pass',
  '*.pass',
  '*.*.pass',
  'headers.authorization',
  '*.headers.authorization',
];

export interface LoggerOptions {
  level?: LevelWithSilent;
  name?: string;
  /** Write to this fd/destination instead of stdout (tests pass a stream). */
  destination?: DestinationStream;
}

/** One JSON event per line on stdout; every module takes a child logger with its `component`. */
export function createLogger(opts: LoggerOptions = {}): Logger {
  const level = opts.level ?? (process.env.NAVIGATOR_LOG_LEVEL as LevelWithSilent | undefined) ?? 'info';
  const options: PinoOptions = {
    level,
    base: { pid: process.pid, ...(opts.name ? { name: opts.name } : {}) },
    redact: { paths: REDACT, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  return opts.destination ? pino(options, opts.destination) : pino(options);
}

/** A logger that drops everything, for tests and library use without a daemon. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
