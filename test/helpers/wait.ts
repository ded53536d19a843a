/** Polling helpers: tests wait for a condition with a bound, never for a fixed time. */

/** Poll `cond` until it returns a truthy value (which is returned) or the timeout expires. */
export async function waitFor<T>(cond: () => T | Promise<T>, timeoutMs = 5000, what = 'condition', intervalMs = 5): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Resolve on the next turn of the event loop (lets queued I/O callbacks run). */
export function tick(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}
