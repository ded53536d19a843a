// `--repeat N`: alternating order, medians, and in how many repeats each target had the lowest p99.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { median, repeatOrder, repeatSummary } from '../../load-tests/repeat';
import type { Run } from '../../load-tests/report';

function run(target: string, p99: number, cpu = 100): Run {
  return { name: `cluster-fanout/${target}`, target, metrics: { delivered_per_s: 1000, p50_ms: p99 / 4, p99_ms: p99, server_cpu_pct: cpu } };
}

test('medians of odd and even counts', () => {
  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([4, 1, 3, 2]), 2.5);
  assert.ok(Number.isNaN(median([])));
});

test('the order of the targets reverses on every repeat', () => {
  assert.deepEqual([0, 1, 2, 3].map((i) => repeatOrder(['a', 'b', 'c'], i).join('')), ['abc', 'cba', 'abc', 'cba']);
});

test('the summary gives medians and counts the repeats each target had the lowest p99', () => {
  const repeats = [
    [run('cluster', 20, 140), run('cluster-ref', 30, 142)],
    [run('cluster-ref', 25, 141), run('cluster', 22, 139)],
    [run('cluster', 40, 143), run('cluster-ref', 35, 140)],
    [run('cluster-ref', 50, 144), run('cluster', 50, 144)], // a tie counts for neither
  ];
  const [a, b] = repeatSummary('cluster-fanout', repeats);
  assert.equal(a.name, 'cluster-fanout-median/cluster');
  assert.equal(b.name, 'cluster-fanout-median/cluster-ref');
  assert.deepEqual(
    [a.metrics.repeats, a.metrics.lowest_p99_repeats, a.metrics.p99_ms, a.metrics.server_cpu_pct],
    [4, 2, 31, 141.5],
  );
  assert.deepEqual([b.metrics.repeats, b.metrics.lowest_p99_repeats, b.metrics.p99_ms, b.metrics.p50_ms], [4, 1, 32.5, 32.5 / 4]);
  assert.equal(b.metrics.delivered_per_s, 1000);
});
