/**
 * `--repeat N`: the same fixed-rate step N times for each target, the order of the targets
 * reversed on every repeat, then one summary run per target of the medians.
 *
 * On a shared machine, one step of one target against one step of another says little: the
 * machine's speed moves between steps as much as a change does. Repeats in alternating order,
 * and counting in how many of them each target had the lowest p99, show whether a difference
 * holds or is noise (docs/performance.md, "Seventh session").
 */
import type { Run } from './report';

/** The metrics summarised: medians over the repeats. */
const MEDIAN_OF = ['delivered_per_s', 'p50_ms', 'p99_ms', 'p999_ms', 'server_cpu_pct', 'generator_cpu_pct'] as const;

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** The order of the targets in repeat `i` (0-based): as given, then reversed, and so on. */
export function repeatOrder<T>(targets: readonly T[], i: number): T[] {
  return i % 2 === 0 ? [...targets] : [...targets].reverse();
}

/**
 * One summary run per target (`<name>-median/<target>`) from `repeats`, each repeat holding one
 * step run per target: the medians, how many repeats there were, and in how many of them the
 * target had the lowest p99 (ties count for none).
 */
export function repeatSummary(name: string, repeats: readonly (readonly Run[])[]): Run[] {
  const targets = [...new Set(repeats.flatMap((rs) => rs.map((r) => r.target)))];
  const lowest = new Map<string, number>(targets.map((t) => [t, 0]));
  for (const rs of repeats) {
    const p99s = rs.map((r) => r.metrics.p99_ms);
    const best = Math.min(...p99s);
    const winners = rs.filter((r) => r.metrics.p99_ms === best);
    if (winners.length === 1) lowest.set(winners[0].target, lowest.get(winners[0].target)! + 1);
  }
  return targets.map((target) => {
    const runs = repeats.flatMap((rs) => rs.filter((r) => r.target === target));
    const metrics: Record<string, number> = { repeats: runs.length, lowest_p99_repeats: lowest.get(target)! };
    for (const k of MEDIAN_OF) {
      const xs = runs.map((r) => r.metrics[k]).filter((v): v is number => typeof v === 'number');
      if (xs.length > 0) metrics[k] = median(xs);
    }
    return { name: `${name}-median/${target}`, target, metrics };
  });
}
