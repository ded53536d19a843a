/**
 * JSON-lines logger on stderr, on pino, behind a small interface of our own. The hot path never
 * logs per message, and fields are passed as objects so that secrets are kept out by
 * construction (configs are redacted first); pino's `redact` is a second line of defence.
 *
 * A line is one JSON object: `level` as its name ("info"), `ts` (ISO time), the child's fields,
 * the call's fields, `msg`. An `err` field that is an Error is written as `{ message, name }`,
 * never with its stack. Lines go to fd 2 with synchronous writes, so a line logged just before
 * `process.exit` (the roles exit right after shutdown) is not lost.
 */
import pino, { type DestinationStream, type Logger as PinoLogger } from 'pino';

/** LOG_LEVEL's values; pino's own names, so they pass through unchanged. */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error' | 'silent';

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(fields: Record<string, unknown>): Logger;
}

/** Keys whose values are never written: at the top level of a line, or one or two objects down. */
export const REDACTED_KEYS = ['authSecret', 'apiKey', 'token', 'password', 'authorization'] as const;
export const REDACTED = '[redacted]';

/**
 * What replaces a secret-looking value. `redactedConfig` already masks the config's secrets as
 * '<set>' or '' (unset), which says whether one is configured without saying what it is: those
 * markers are kept, anything else is censored.
 */
function censor(value: unknown): unknown {
  return value === '' || value === '<set>' ? value : REDACTED;
}

const REDACT_PATHS = REDACTED_KEYS.flatMap((k) => [k, `*.${k}`, `*.*.${k}`]);

function serializeErr(err: unknown): unknown {
  return err instanceof Error ? { message: err.message, name: err.name } : err;
}

let stderr: DestinationStream | undefined;
/** One synchronous fd-2 destination for every logger of the process (created on first use). */
function stderrDestination(): DestinationStream {
  stderr ??= pino.destination({ dest: 2, sync: true });
  return stderr;
}

/**
 * Our interface over one pino logger. Child fields are kept here and merged into each call's
 * fields (the call's win) rather than bound with pino's child(): pino writes bindings and call
 * fields side by side, so a key in both (a gateway's `role`, say) would appear twice in a line,
 * which some log stores refuse.
 */
class PinoAdapter implements Logger {
  constructor(
    private readonly p: PinoLogger,
    private readonly base: Record<string, unknown>,
  ) {}
  private write(level: Exclude<LogLevel, 'silent'>, msg: string, fields?: Record<string, unknown>): void {
    if (!this.p.isLevelEnabled(level)) return;
    this.p[level](fields === undefined ? this.base : { ...this.base, ...fields }, msg);
  }
  debug(msg: string, fields?: Record<string, unknown>): void {
    this.write('debug', msg, fields);
  }
  info(msg: string, fields?: Record<string, unknown>): void {
    this.write('info', msg, fields);
  }
  warn(msg: string, fields?: Record<string, unknown>): void {
    this.write('warn', msg, fields);
  }
  error(msg: string, fields?: Record<string, unknown>): void {
    this.write('error', msg, fields);
  }
  child(fields: Record<string, unknown>): Logger {
    return new PinoAdapter(this.p, { ...this.base, ...fields });
  }
}

/**
 * A logger at `level` with `base` fields on every line. `out` receives each line (with its
 * newline) instead of stderr: tests capture lines that way.
 */
export function createLogger(level: LogLevel = 'info', base: Record<string, unknown> = {}, out?: (line: string) => void): Logger {
  const p = pino(
    {
      level,
      base: null, // no pid/hostname: the pod and the process are known to whoever reads the logs
      messageKey: 'msg',
      timestamp: () => `,"ts":"${new Date().toISOString()}"`,
      formatters: { level: (label) => ({ level: label }) },
      serializers: { err: serializeErr },
      redact: { paths: REDACT_PATHS, censor },
    },
    out !== undefined ? { write: out } : level === 'silent' ? { write: () => undefined } : stderrDestination(),
  );
  return new PinoAdapter(p, { ...base });
}

export const silentLogger: Logger = createLogger('silent');
