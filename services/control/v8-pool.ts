/**
 * How many threads V8 may use beside the main thread for garbage collection (parallel scavenges,
 * concurrent marking) and other background work: its worker pool, sized to the CPU the process
 * may use.
 *
 * Node sizes that pool from the machine (up to four threads), not from the CPU share a process
 * really has. Where several processes share a few cores (a gateway, a broadcast worker and Redis
 * on one small node, or any pod with a CPU limit below the machine's core count), each
 * collection's helper threads then wait for CPU that the other processes hold, and a young
 * generation collection that takes 1-2 ms alone takes 5-20 ms (docs/performance.md, "Seventh
 * session"). A process whose CPU budget is `cpus` gets one thread less than that, and at least
 * one: the main thread and its helpers together never ask for more CPU than the budget.
 *
 * The pool size is a Node option (`--v8-pool-size`), read at startup only, so it is set where the
 * process is launched: the operator puts it in every pod's NODE_OPTIONS (operator/resources.ts),
 * the load tests do the same for every process they start (load-tests/targets.ts).
 */

/** Pool threads for a CPU budget of `cpus` (fractions round up: 250m is a budget of one CPU). */
export function v8PoolSize(cpus: number): number {
  return Math.max(1, Math.ceil(cpus) - 1);
}

/** The NODE_OPTIONS value that sets the pool for a budget of `cpus`. */
export function v8PoolOption(cpus: number): string {
  return `--v8-pool-size=${v8PoolSize(cpus)}`;
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
