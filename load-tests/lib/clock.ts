/**
 * The one clock of a load test: CLOCK_MONOTONIC in microseconds.
 *
 * The sender writes it into the payload and the receiver subtracts it from its own reading, so
 * both must use the same clock. process.hrtime() reads CLOCK_MONOTONIC, which is shared by every
 * thread and every process of the machine (unlike performance.now(), whose origin is per thread),
 * so generator workers in different threads or processes agree on it.
 */
export function nowUs(): number {
  const t = process.hrtime();
  return t[0] * 1e6 + Math.floor(t[1] / 1000);
}
