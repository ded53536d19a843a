/**
 * Wall-clock milliseconds with sub-millisecond resolution. Message accept times travel between
 * processes on one host (and across hosts with synchronised clocks), so they must be wall time;
 * Date.now()'s 1 ms steps would hide the sub-millisecond latencies we care about.
 */
import { performance } from 'node:perf_hooks';

const origin = performance.timeOrigin;

export function preciseNow(): number {
  return origin + performance.now();
}
