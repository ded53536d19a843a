// SharedBuild: what keeps /stats, /metrics and the broadcast worker's pending count from being
// built once per request (a pipelined flood decided the CPU and Redis commands they cost).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SharedBuild } from '../../services/admin';

test('requests during a build share it; past the bucket they get the last value; a token later, a fresh one', async () => {
  let now = 0;
  let n = 0;
  let release: (() => void) | null = null;
  const b = new SharedBuild(
    () =>
      new Promise<number>((res) => {
        const v = ++n;
        release = () => res(v);
      }),
    { perSecond: 1, now: () => now },
  );
  const during = [b.get(), b.get(), b.get()];
  assert.equal(b.builds, 1, 'one build for three concurrent requests');
  release!();
  assert.deepEqual(await Promise.all(during), [1, 1, 1]);
  // The bucket is empty: 1,000 requests within the second cost nothing more.
  for (let i = 0; i < 1000; i++) assert.equal(await b.get(), 1);
  assert.equal(b.builds, 1);
  now += 1000;
  const next = b.get();
  release!();
  assert.equal(await next, 2, 'fresh once the bucket has a token');
  assert.equal(b.builds, 2);
});

test('a burst of sequential requests is fresh each time; a failed build is not kept, the next request builds', async () => {
  let now = 0;
  let n = 0;
  let fail = false;
  const b = new SharedBuild(
    () => {
      if (fail) throw new Error('redis away');
      return ++n;
    },
    { perSecond: 4, burst: 4, now: () => now },
  );
  assert.deepEqual([await b.get(), await b.get(), await b.get(), await b.get()], [1, 2, 3, 4]);
  assert.equal(await b.get(), 4, 'the burst is spent');
  now += 250;
  fail = true;
  await assert.rejects(b.get(), /redis away/);
  fail = false;
  assert.equal(await b.get(), 4, 'no token left: the last value built');
  now += 250;
  assert.equal(await b.get(), 5);
});
