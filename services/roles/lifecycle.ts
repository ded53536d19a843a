/**
 * The process lifecycle every role shares: start, then on SIGTERM or SIGINT stop once (drain,
 * release, step down: whatever the role's `stop` does), flush traces, and exit 0, or 1 when the
 * stop failed. One place, so every role drains the same way and a second signal changes nothing.
 */
import type { Logger } from '../telemetry';
import { shutdownTracing } from '../telemetry/tracing';

export interface Lifecycle {
  start(): Promise<unknown>;
  stop(): Promise<void>;
}

/** Start `role` and stop it on the first SIGTERM or SIGINT; `what` names the stop in the log. */
export async function runUntilSignal(role: Lifecycle, log: Logger, what: string): Promise<void> {
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info(`signal received, ${what}`, { signal });
    role
      .stop()
      .then(() => shutdownTracing())
      .then(
        () => process.exit(0),
        (err: unknown) => {
          log.error('shutdown failed', { err });
          process.exit(1);
        },
      );
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  await role.start();
}
