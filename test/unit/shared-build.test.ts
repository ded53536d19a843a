// SharedBuild: what keeps /stats, /metrics and the broadcast worker's pending count from being
// built once per request (a pipelined flood decided the CPU and Redis commands they cost), while
// every answer is built after its request arrived (a reader never sees a value older than its
// question: a test that reads a gauge right after a change saw the last body of its own polling).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SharedBuild } from '../../services/admin';

/** Time and timers the test moves by hand. */
class Clock {
  now = 0;
  private timers: { at: number; fn: () => void }[] = [];
  later = (fn: () => void, ms: number): void => {
    this.timers.push({ at: this.now + ms, fn });
  };
  async advance(ms: number): Promise<void> {
    this.now += ms;
    const due = this.timers.filter((t) => t.at <= this.now);
    this.timers = this.timers.filter((t) => t.at > this.now);
    for (const t of due) t.fn();
    await settle();
  }
  get pending(): number {
    return this.timers.length;
  }
}

const settle = () => new Promise<void>((r) => setImmediate(r));

/** A build that counts and finishes when the test says. */
function manualBuild() {
  let n = 0;
  const releases: (() => void)[] = [];
  return {
    fn: () =>
      new Promise<number>((res) => {
        const v = ++n;
        releases.push(() => res(v));
      }),
    release: async () => {
      releases.shift()!();
      await settle();
    },
  };
}

test('requests during a build wait for the next one, which they all share; a flood gets perSecond builds', async () => {
  const clock = new Clock();
  const m = manualBuild();
  const b = new SharedBuild(m.fn, { perSecond: 1, now: () => clock.now, later: clock.later });
  const first = b.get();
  const during = [b.get(), b.get(), b.get()];
  assert.equal(b.builds, 1, 'the first request starts a build; the others arrived after it began');
  await m.release();
  assert.equal(await first, 1);
  // The bucket is empty: the waiting requests' build starts when it has a token, not before.
  assert.equal(b.builds, 1);
  const more = Array.from({ length: 1000 }, () => b.get());
  await clock.advance(999);
  assert.equal(b.builds, 1, 'no token yet');
  await clock.advance(1);
  assert.equal(b.builds, 2, 'one build for 1,003 requests');
  await m.release();
  assert.deepEqual(new Set(await Promise.all([...during, ...more])), new Set([2]));
  assert.equal(clock.pending, 0);
});

test('sequential requests within the burst are each fresh; a failed build fails its waiters and is not kept', async () => {
  const clock = new Clock();
  let n = 0;
  let fail = false;
  const b = new SharedBuild(
    () => {
      if (fail) throw new Error('redis away');
      return ++n;
    },
    { perSecond: 4, burst: 4, now: () => clock.now, later: clock.later },
  );
  assert.deepEqual([await b.get(), await b.get(), await b.get(), await b.get()], [1, 2, 3, 4]);
  // The burst is spent: the fifth waits for a token (250 ms) and gets a new value, never the old.
  let fifth: number | undefined;
  void b.get().then((v) => (fifth = v));
  await settle();
  assert.equal(fifth, undefined);
  await clock.advance(250);
  assert.equal(fifth, 5);
  fail = true;
  const failed = b.get();
  const rejected = assert.rejects(failed, /redis away/);
  await clock.advance(250);
  await rejected;
  fail = false;
  const after = b.get();
  await clock.advance(250);
  assert.equal(await after, 6, 'the failure was not kept: the next request built again');
});

test('with maxAgeMs a value that young answers at once; older ones are built again', async () => {
  const clock = new Clock();
  let n = 0;
  const b = new SharedBuild(() => ++n, { perSecond: 1, maxAgeMs: 1000, now: () => clock.now, later: clock.later });
  assert.equal(await b.get(), 1);
  for (let i = 0; i < 100; i++) assert.equal(await b.get(), 1);
  await clock.advance(1000);
  assert.equal(await b.get(), 1, 'a second old is young enough');
  await clock.advance(1);
  assert.equal(await b.get(), 2);
  assert.equal(b.builds, 2);
});
