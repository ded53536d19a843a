// bench:compare applies the origin's regression rules: throughput -5%, memory +20%, latency +10%.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { compare, isRegression, metricKind } from '../../load-tests/compare';
import type { ResultFile } from '../../load-tests/report';

function file(metrics: Record<string, number>): ResultFile {
  return { version: 1, date: '', machine: {}, command: '', env: {}, notes: [], runs: [{ name: 'fanout-max/switchboard', target: 'switchboard', metrics }] };
}

describe('bench:compare rules', () => {
  test('metric kinds come from the name suffix', () => {
    assert.equal(metricKind('max_delivered_per_s'), 'throughput');
    assert.equal(metricKind('server_rss_mb'), 'memory');
    assert.equal(metricKind('bytes_per_connection_bytes'), 'memory');
    assert.equal(metricKind('p99_ms'), 'latency');
    assert.equal(metricKind('delivery_ratio'), null);
  });

  test('thresholds: just inside passes, just outside regresses', () => {
    assert.equal(isRegression('throughput', 1000, 951), false);
    assert.equal(isRegression('throughput', 1000, 949), true);
    assert.equal(isRegression('memory', 100, 119), false);
    assert.equal(isRegression('memory', 100, 121), true);
    assert.equal(isRegression('latency', 10, 10.9), false);
    assert.equal(isRegression('latency', 10, 11.1), true);
    assert.equal(isRegression('latency', 10, 5), false);
  });

  test('compares runs of the same name, metric by metric', () => {
    const rows = compare(file({ max_delivered_per_s: 1_000_000, p99_ms: 4, server_rss_mb: 100, delivery_ratio: 1 }), file({ max_delivered_per_s: 900_000, p99_ms: 4.2, server_rss_mb: 90, delivery_ratio: 1 }));
    assert.deepEqual(
      rows.map((r) => [r.metric, r.regression]),
      [
        ['max_delivered_per_s', true],
        ['p99_ms', false],
        ['server_rss_mb', false],
      ],
    );
  });
});
