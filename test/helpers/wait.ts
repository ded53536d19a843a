/** Polling helpers: tests wait for a condition with a bound, never for a fixed time. */

export interface WaitOptions {
  /** Pause between polls (default 5 ms). */
  intervalMs?: number;
  /**
   * Treat an exception from `cond` as "not yet" and poll again (the last one is quoted in the
   * timeout error), e.g. for probes of a component that is still starting. Default false: an
   * exception fails the wait at once.
   */
  retryErrors?: boolean;
}

/**
 * Poll `cond` until it returns a truthy value (which is returned) or the timeout expires.
 * The fourth argument is the poll interval in ms, or WaitOptions.
 */
export async function waitFor<T>(
  cond: () => T | Promise<T>,
  timeoutMs = 5000,
  what = 'condition',
  opts: number | WaitOptions = {},
): Promise<NonNullable<T>> {
  const { intervalMs = 5, retryErrors = false } = typeof opts === 'number' ? { intervalMs: opts } : opts;
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await cond();
      if (v) return v as NonNullable<T>;
    } catch (err) {
      if (!retryErrors) throw err;
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last === undefined ? '' : `: ${String(last)}`}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Resolve on the next turn of the event loop (lets queued I/O callbacks run). */
export function tick(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}
