// The scaling policy as a pure function: tolerance, bounds, step, stabilization windows and
// missing data, as table tests (issue #8, test 7).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decide, recommend, type Recommendation, type ScalingInput } from '../../operator/scaling/policy';

const base: ScalingInput = {
  now: 1_000_000,
  current: 4,
  readyPods: 4,
  minReplicas: 1,
  maxReplicas: 10,
  metrics: [{ name: 'messagesPerPod', total: 4000, targetPerPod: 1000 }],
  history: [],
  tolerance: 0.1,
  scaleUpWindowMs: 0,
  scaleDownWindowMs: 0,
  maxStep: 100,
};

const msgs = (total: number, target = 1000) => [{ name: 'messagesPerPod', total, targetPerPod: target }];

test('one metric: ceil(current x observed / target), with the 10% tolerance band', () => {
  const cases: Array<[string, Partial<ScalingInput>, number]> = [
    ['on target', { metrics: msgs(4000) }, 4],
    ['9% over: within tolerance', { metrics: msgs(4360) }, 4],
    ['10% over: still within', { metrics: msgs(4400) }, 4],
    ['11% over: scale to ceil(4 x 1.11)=5', { metrics: msgs(4440) }, 5],
    ['double: 8', { metrics: msgs(8000) }, 8],
    ['9% under: within tolerance', { metrics: msgs(3640) }, 4],
    ['half: 2', { metrics: msgs(2000) }, 2],
    ['idle: floor at minReplicas', { metrics: msgs(0) }, 1],
  ];
  for (const [name, over, want] of cases) assert.equal(decide({ ...base, ...over }).desired, want, name);
});

test('several metrics: the highest recommendation wins', () => {
  const d = decide({
    ...base,
    metrics: [
      { name: 'messagesPerPod', total: 2000, targetPerPod: 1000 },
      { name: 'connectionsPerPod', total: 3000, targetPerPod: 500 },
    ],
  });
  assert.equal(d.desired, 6);
  assert.match(d.reason, /connectionsPerPod/);
});

test('bounds: never below min or above max', () => {
  assert.equal(decide({ ...base, metrics: msgs(100_000) }).desired, 10);
  assert.equal(decide({ ...base, minReplicas: 3, metrics: msgs(0) }).desired, 3);
  assert.equal(decide({ ...base, current: 12, readyPods: 12, metrics: msgs(12_000) }).desired, 10, 'a lowered max applies');
});

test('maximum step per decision', () => {
  assert.equal(decide({ ...base, maxStep: 2, metrics: msgs(40_000) }).desired, 6);
  assert.equal(decide({ ...base, current: 8, readyPods: 8, maxStep: 3, metrics: msgs(0) }).desired, 5);
});

test('per-pod average divides by the pods that reported', () => {
  // 4 replicas but only 2 report (2 just started): 4000 over 2 pods is 2000/pod, and 4 pods at
  // the 1000/pod target carry it: no scale-up on top of the pods still starting.
  assert.equal(recommend(4, 2, msgs(4000)[0], 0.1), 4);
  assert.equal(recommend(2, 2, msgs(4000)[0], 0.1), 4);
  assert.equal(decide({ ...base, readyPods: 2, metrics: msgs(2000) }).desired, 4);
});

test('scale-down stabilization: the highest recommendation within the window', () => {
  const minute = 60_000;
  const history: Recommendation[] = [
    { at: base.now - 4 * minute, replicas: 9 }, // outside a 3-minute window
    { at: base.now - 2 * minute, replicas: 7 },
    { at: base.now - 1 * minute, replicas: 5 },
  ];
  const d = decide({ ...base, current: 8, readyPods: 8, scaleDownWindowMs: 3 * minute, history, metrics: msgs(2000) });
  assert.equal(d.raw, 2);
  assert.equal(d.desired, 7, 'held at the highest recommendation of the last 3 minutes');
  assert.equal(d.direction, 'down');
  assert.equal(d.history.length, 3, 'the recommendation 4 minutes old is dropped, this one kept');

  // Once the window has passed with low load, it goes all the way down.
  const later = decide({ ...base, now: base.now + 3 * minute + 1, current: 7, readyPods: 7, scaleDownWindowMs: 3 * minute, history: d.history, metrics: msgs(1750) });
  assert.equal(later.desired, 2);
});

test('scale-up stabilization: the lowest recommendation within the window', () => {
  const history: Recommendation[] = [{ at: base.now - 10_000, replicas: 4 }];
  const d = decide({ ...base, scaleUpWindowMs: 30_000, history, metrics: msgs(8000) });
  assert.equal(d.raw, 8);
  assert.equal(d.desired, 4, 'a spike shorter than the window does not scale up');
  assert.equal(d.direction, 'hold');
  const sustained = decide({ ...base, now: base.now + 30_001, scaleUpWindowMs: 30_000, history: d.history, metrics: msgs(8000) });
  assert.equal(sustained.desired, 8);
});

test('no scale-up window: up at once, even right after a scale-down recommendation', () => {
  const history: Recommendation[] = [{ at: base.now - 1000, replicas: 2 }];
  assert.equal(decide({ ...base, scaleDownWindowMs: 300_000, history, metrics: msgs(8000) }).desired, 8);
});

test('missing data: keep the current replicas, never scale down, record nothing', () => {
  const history: Recommendation[] = [{ at: base.now - 1000, replicas: 1 }];
  const d = decide({ ...base, current: 6, readyPods: 0, metrics: null, history, scaleDownWindowMs: 300_000 });
  assert.equal(d.desired, 6);
  assert.equal(d.direction, 'hold');
  assert.equal(d.raw, null);
  assert.deepEqual(d.history, history);
  assert.equal(decide({ ...base, current: 0, metrics: null, minReplicas: 2 }).desired, 2, 'still raised to min');
  assert.equal(decide({ ...base, current: 6, metrics: [] }).desired, 6, 'no series is missing data too');
});
