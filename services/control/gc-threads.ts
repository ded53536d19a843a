/**
 * The garbage collector's threads, matched to the CPU a process may use.
 *
 * Node gives V8 a worker pool for parallel and concurrent garbage collection, sized from the
 * machine's cores (up to four threads), not from the CPU share a process really has. Under a CPU
 * quota below the machine's cores, each young-generation collection's parallel phase waits for
 * helper threads that the quota throttles: on the 2-core test machine, with each cluster process
 * under a quota of 0.5-1 CPU, the cluster's p99 was a median 35% lower with the collector on the
 * main thread (docs/performance.md, "Seventh session"). So, for a quota of:
 *
 * - one CPU or less: `--single-threaded-gc` (the main thread collects alone; with one CPU,
 *   helpers could only take turns with it);
 * - N CPUs: `--v8-pool-size=N-1` (the main thread and its helpers never ask for more than the
 *   quota).
 *
 * The budget is a CPU quota (a pod's CPU limit), as Go's automaxprocs reads it: a process without
 * one may use idle cores, and Node's own pool is right for it. These are node command-line flags,
 * read at startup only (NODE_OPTIONS refuses `--single-threaded-gc`, and setting it at run time
 * crashed V8). The image's `switchboard` launcher puts `SWITCHBOARD_NODE_FLAGS` on node's command
 * line; the operator sets that variable in every pod with a CPU limit (operator/resources.ts), and
 * load-tests/gc-quota.sh measures the cluster under such quotas.
 */

/** Node flags for a CPU budget of `cpus` (fractions round up for the pool: 1.5 CPUs is 2). */
export function gcFlags(cpus: number): string[] {
  if (cpus <= 1) return ['--single-threaded-gc'];
  return [`--v8-pool-size=${Math.ceil(cpus) - 1}`];
}

/**
 * A Kubernetes CPU quantity ('250m', '1', '1.5', 2) in CPUs; undefined when absent or not a CPU
 * quantity (the caller then leaves Node's default).
 */
export function cpuQuantity(q: string | number | undefined): number | undefined {
  if (q === undefined) return undefined;
  if (typeof q === 'number') return Number.isFinite(q) && q > 0 ? q : undefined;
  const m = /^(\d+(?:\.\d+)?)(m?)$/.exec(q.trim());
  if (m === null) return undefined;
  const v = Number(m[1]) / (m[2] === 'm' ? 1000 : 1);
  return v > 0 ? v : undefined;
}
