/**
 * JSON-lines logger on stderr. Small on purpose: the hot path never logs per message, and fields
 * are passed as objects so that secrets are kept out by construction (configs are redacted first).
 */
const LEVELS = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 } as const;
export type LogLevel = keyof typeof LEVELS;

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(fields: Record<string, unknown>): Logger;
}

class JsonLogger implements Logger {
  constructor(
    private readonly min: number,
    private readonly base: Record<string, unknown>,
    private readonly out: (line: string) => void,
  ) {}
  private write(level: LogLevel, msg: string, fields?: Record<string, unknown>): void {
    if (LEVELS[level] < this.min) return;
    const rec: Record<string, unknown> = { ts: new Date().toISOString(), level, msg, ...this.base, ...fields };
    if (rec.err instanceof Error) rec.err = { message: rec.err.message, name: rec.err.name };
    this.out(JSON.stringify(rec) + '\n');
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
    return new JsonLogger(this.min, { ...this.base, ...fields }, this.out);
  }
}

export function createLogger(level: LogLevel = 'info', base: Record<string, unknown> = {}, out?: (line: string) => void): Logger {
  return new JsonLogger(LEVELS[level], base, out ?? ((line) => process.stderr.write(line)));
}

export const silentLogger: Logger = createLogger('silent');
