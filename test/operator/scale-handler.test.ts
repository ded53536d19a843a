// The scale handler without an API server or Prometheus: a fake metrics source, a hand-run
// timer and a clock the test moves. The metrics loop's decisions, the threshold hold period,
// the Events it records and the reconciles it asks for (issue 15 item 4).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LOOP_INTERVAL_MS, MetricsScaleHandler, breachesOf, loopInterval, nextOverload, scalingInputs, type MetricsScaleHandlerDeps } from '../../operator/scaling/handler';
import { keyString, type ObjectKey } from '../../operator/kube/key';
import { OperatorMetrics } from '../../operator/metrics';
import { MetricsError, type ClusterMetrics } from '../../operator/prometheus';
import { silentLogger } from '../../services/telemetry/log';
import { EventLog, ManualTimers, metricsFixture, sbFixture } from './fixtures';

const KEY: ObjectKey = { namespace: 'ns', name: 'chat' };
const thresholds = sbFixture().spec.thresholds;

function harness(answer: () => Promise<ClusterMetrics | null> | ClusterMetrics | null, over: Partial<MetricsScaleHandlerDeps> = {}) {
  const events = new EventLog();
  const timers = new ManualTimers();
  const metrics = new OperatorMetrics();
  const updates: string[] = [];
  const overloadChanges: string[] = [];
  const clock = { now: 1_000_000 };
  const queries: string[] = [];
  const h = new MetricsScaleHandler({
    log: silentLogger,
    events,
    metrics,
    onUpdate: (k) => updates.push(keyString(k)),
    onOverloadChange: (k) => overloadChanges.push(keyString(k)),
    query: async (sb) => {
      queries.push(keyString(sb.metadata));
      return answer();
    },
    now: () => clock.now,
    every: timers.every,
    ...over,
  });
  return { h, events, timers, metrics, updates, overloadChanges, clock, queries };
}

test('thresholds: each breach is named; overloaded at once, clear only after the hold period', () => {
  assert.deepEqual(breachesOf(thresholds, metricsFixture()), []);
  assert.deepEqual(breachesOf(thresholds, metricsFixture({ p99LatencyMs: 80.123, memoryMiB: 2048, errorRate: 0.05 })), [
    'p99 latency 80.12 ms > 50 ms', 'memory 2048 MiB > 1024 MiB', 'error rate 0.05 > 0.01',
  ]);
  const t = { ...thresholds, minThroughput: 5000 };
  assert.deepEqual(breachesOf(t, metricsFixture({ deliveredPerSecond: 100 })), ['throughput 100 msg/s < 5000 msg/s']);
  assert.deepEqual(breachesOf(t, metricsFixture({ deliveredPerSecond: 100, receivedPerSecond: 0 })), [], 'no traffic in: throughput is not a breach');

  const hold = 10_000;
  const cases: Array<[string, { overloaded: boolean; lastBreachAt: number }, string[], number, { overloaded: boolean; lastBreachAt: number }]> = [
    ['a breach: overloaded now', { overloaded: false, lastBreachAt: 0 }, ['x'], 50_000, { overloaded: true, lastBreachAt: 50_000 }],
    ['clear inside the hold: still overloaded', { overloaded: true, lastBreachAt: 50_000 }, [], 59_999, { overloaded: true, lastBreachAt: 50_000 }],
    ['clear for the hold: recovered', { overloaded: true, lastBreachAt: 50_000 }, [], 60_000, { overloaded: false, lastBreachAt: 50_000 }],
    ['clear and not overloaded: stays so', { overloaded: false, lastBreachAt: 0 }, [], 60_000, { overloaded: false, lastBreachAt: 0 }],
  ];
  for (const [name, prev, breaches, now, want] of cases) assert.deepEqual(nextOverload(prev, breaches, now, hold), want, name);
});

test('scaling inputs: gateways on deliveries and connections, broadcast on ingress; no broadcast pods is no data', () => {
  const spec = sbFixture().spec;
  const i = scalingInputs(spec, metricsFixture());
  assert.deepEqual(i.gateway.metrics?.map((m) => `${m.name}:${m.total}/${m.targetPerPod}`), ['messagesPerPod:2000/1000', 'connectionsPerPod:100/500']);
  assert.deepEqual(i.broadcast.metrics?.map((m) => `${m.name}:${m.total}`), ['ingressPerPod:200']);
  assert.equal(scalingInputs(spec, metricsFixture({ broadcastPods: 0 })).broadcast.metrics, null);
  assert.equal(scalingInputs(spec, null).gateway.metrics, null);
});

test('a new Switchboard starts from its Deployments\' replicas, bounded by the spec; one loop per Switchboard', async () => {
  const { h, timers, queries, updates } = harness(() => metricsFixture({ gatewayPods: 3, deliveredPerSecond: 3000 }));
  assert.equal(h.has(KEY), false);
  const s = h.handle(sbFixture(), { gateway: 3, broadcast: 9 });
  assert.deepEqual(s.desired, { gateway: 3, broadcast: 2 }, 'seeded, then bounded by maxReplicas');
  assert.equal(s.metrics, 'unknown');
  assert.equal(h.has(KEY), true);
  await h.poll(KEY); // the round handle() started
  assert.deepEqual(queries, ['ns/chat']);
  assert.deepEqual(updates, ['ns/chat'], 'every round asks for a reconcile (status shows it)');
  assert.equal(h.state(KEY)!.metrics, 'available');

  // The same spec again: the loop keeps running, the seed is ignored now.
  h.handle(sbFixture(), { gateway: 1 });
  assert.equal(timers.started.length, 1);
  assert.equal(h.state(KEY)!.desired.gateway, 3);
  // A new interval restarts the loop; a lowered max bounds the decision at once.
  const s2 = h.handle(sbFixture('chat', 'ns', { prometheus: { interval: '5s' }, gateway: { maxReplicas: 2 } }));
  assert.deepEqual(timers.started.map((t) => [t.ms, t.cancelled]), [[1000, true], [5000, false]]);
  assert.equal(s2.desired.gateway, 2);
});

test('scale up on load, with an Event that says why; down again when idle', async () => {
  let m = metricsFixture({ gatewayPods: 1, deliveredPerSecond: 3000, connections: 10 });
  const { h, events, metrics, clock } = harness(() => m);
  h.handle(sbFixture(), { gateway: 1, broadcast: 1 });
  await h.poll(KEY);
  const s = h.state(KEY)!;
  assert.equal(s.desired.gateway, 3, '3000 msg/s on one pod against 1000 per pod');
  assert.equal(s.lastDirection, 'up');
  assert.equal(s.lastScaleTime, new Date(1_000_000).toISOString());
  assert.deepEqual(events.events.filter((e) => e.reason === 'ScaledUp').map((e) => e.message), ['gateway 1 -> 3: messagesPerPod 3000.0/pod vs target 1000']);
  assert.equal(events.events[0].object, 'Switchboard/ns/chat');
  const up = (await metrics.decisions.get()).values.find((v) => v.labels.tier === 'gateway' && v.labels.direction === 'up');
  assert.equal(up?.value, 1);

  m = metricsFixture({ gatewayPods: 3, deliveredPerSecond: 0, connections: 0 });
  clock.now += 1000; // past the (zero) scale-down window of the last recommendation
  await h.poll(KEY);
  assert.equal(h.state(KEY)!.desired.gateway, 1);
  assert.equal(h.state(KEY)!.lastDirection, 'down');
  assert.ok(events.reasons().includes('Normal ScaledDown'));
});

test('a threshold breach sheds until it has been clear for holdSeconds, and says so in Events', async () => {
  let m = metricsFixture({ p99LatencyMs: 120 });
  const { h, events, clock, overloadChanges } = harness(() => m);
  h.handle(sbFixture(), {});
  await h.poll(KEY);
  assert.equal(h.overloaded(KEY), true);
  assert.deepEqual(h.state(KEY)!.breaches, ['p99 latency 120 ms > 50 ms']);
  assert.equal(h.state(KEY)!.lastBreachAt, 1_000_000);
  assert.deepEqual(overloadChanges, ['ns/chat'], 'the flags are republished when it flips');
  assert.deepEqual(events.events.find((e) => e.reason === 'ThresholdBreached'), {
    object: 'Switchboard/ns/chat', type: 'Warning', reason: 'ThresholdBreached', message: 'p99 latency 120 ms > 50 ms: shedding nonCritical flags',
  });

  m = metricsFixture();
  clock.now += 9_999;
  await h.poll(KEY);
  assert.equal(h.overloaded(KEY), true, 'inside the 10 s hold');
  assert.deepEqual(h.state(KEY)!.breaches, []);
  assert.deepEqual(overloadChanges, ['ns/chat']);
  clock.now += 1;
  await h.poll(KEY);
  assert.equal(h.overloaded(KEY), false);
  assert.deepEqual(overloadChanges, ['ns/chat', 'ns/chat']);
  assert.ok(events.events.some((e) => e.type === 'Normal' && e.reason === 'Recovered' && e.message === 'thresholds clear for 10s: flags restored'));
  assert.equal(h.overloaded({ namespace: 'ns', name: 'other' }), false, 'untracked: not overloaded');
});

test('missing data: replicas stay, MetricsUnavailable once with the reason, counted; MetricsAvailable when back', async () => {
  let answer: () => ClusterMetrics | null = () => {
    throw new MetricsError('prometheus unreachable at http://prometheus.invalid:9090: ECONNREFUSED');
  };
  const { h, events, metrics } = harness(() => answer());
  h.handle(sbFixture('chat', 'ns', { gateway: { minReplicas: 1 } }), { gateway: 4 });
  await h.poll(KEY);
  await h.poll(KEY);
  const s = h.state(KEY)!;
  assert.equal(s.metrics, 'unavailable');
  assert.match(s.metricsMessage, /unreachable/);
  assert.equal(s.desired.gateway, 4, 'never scaled down on missing data');
  assert.deepEqual(events.reasons(), ['Warning MetricsUnavailable'], 'recorded once, not every round');
  const errs = (await metrics.queryErrors.get()).values.find((v) => v.labels.switchboard === 'chat');
  assert.equal(errs?.value, 2);

  answer = () => null; // Prometheus answers, but has no series for these pods
  await h.poll(KEY);
  assert.equal(h.state(KEY)!.metricsMessage, 'Prometheus has no data for this Switchboard\'s pods');
  answer = () => metricsFixture({ gatewayPods: 4, deliveredPerSecond: 4000, connections: 0 });
  await h.poll(KEY);
  assert.equal(h.state(KEY)!.metrics, 'available');
  assert.deepEqual(events.reasons(), ['Warning MetricsUnavailable', 'Normal MetricsAvailable']);
});

test('without spec.prometheus: unavailable (NoPrometheus), no query, replicas at minReplicas', async () => {
  const { h, queries, events } = harness(() => metricsFixture());
  h.handle(sbFixture('chat', 'ns', { prometheus: undefined, gateway: { minReplicas: 2 } }), {});
  await h.poll(KEY);
  assert.deepEqual(queries, []);
  assert.equal(h.state(KEY)!.metrics, 'unavailable');
  assert.match(h.state(KEY)!.metricsMessage, /spec.prometheus is not set/);
  assert.equal(h.state(KEY)!.desired.gateway, 2);
  assert.deepEqual(events.reasons(), ['Warning MetricsUnavailable']);
});

test('delete stops the loop; a round that was in flight changes nothing after it', async () => {
  let release!: (m: ClusterMetrics) => void;
  const { h, timers, updates, events } = harness(() => new Promise<ClusterMetrics>((r) => (release = r)));
  h.handle(sbFixture(), {});
  const inflight = h.poll(KEY); // the same round handle() started
  h.delete(KEY);
  assert.equal(timers.active, 0);
  assert.equal(h.has(KEY), false);
  release(metricsFixture({ gatewayPods: 1, deliveredPerSecond: 9000, p99LatencyMs: 500 }));
  await inflight;
  assert.deepEqual(updates, [], 'no reconcile asked for a deleted Switchboard');
  assert.deepEqual(events.events, []);
  assert.equal(h.state(KEY), undefined);

  h.handle(sbFixture('a'), {});
  h.handle(sbFixture('b'), {});
  assert.equal(timers.active, 2);
  h.stopAll();
  assert.equal(timers.active, 0);
});

test('a failing round is logged, never thrown', async () => {
  const { h } = harness(() => metricsFixture(), {
    onUpdate: () => {
      throw new Error('queue gone');
    },
  });
  h.handle(sbFixture(), {});
  await h.poll(KEY); // resolves
  await h.poll(KEY);
});

test('an interval of 597h or more runs the loop hourly, not every millisecond (a timer past 2^31-1 ms fires at once)', async () => {
  assert.equal(loopInterval(undefined), 15_000, 'no spec.prometheus: the CRD default');
  assert.equal(loopInterval(15_000), 15_000);
  assert.equal(loopInterval(0), LOOP_INTERVAL_MS.min);
  assert.equal(loopInterval(3_600_000), 3_600_000);
  assert.equal(loopInterval(3_600_001), LOOP_INTERVAL_MS.max);
  assert.equal(loopInterval(597 * 3_600_000), LOOP_INTERVAL_MS.max, 'past 2^31-1 ms');
  assert.equal(loopInterval(Number.POSITIVE_INFINITY), LOOP_INTERVAL_MS.max);

  const manual = harness(() => metricsFixture());
  manual.h.handle(sbFixture('chat', 'ns', { prometheus: { interval: '597h' } }), {});
  manual.h.handle(sbFixture('other', 'ns', { prometheus: { interval: '10ms' } }), {});
  assert.deepEqual(manual.timers.started.map((t) => t.ms), [3_600_000, 1000], '10ms is raised to a second');
  manual.h.stopAll();

  // With the real timer: the round handle() starts, then nothing for an hour.
  const real = harness(() => metricsFixture(), { every: undefined });
  real.h.handle(sbFixture('chat', 'ns', { prometheus: { interval: '600h' } }), {});
  try {
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(real.queries, ['ns/chat'], 'one query, not one a millisecond');
  } finally {
    real.h.stopAll();
  }
});
