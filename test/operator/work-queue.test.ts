// The operator's work queue (operator/kube/queue.ts) without an API server. One key whose handler
// never returned (a Switchboard whose Redis accepts connections and answers nothing) held the
// queue's only worker: no other key was handled again, and stop(), which a step-down and SIGTERM
// wait for, never resolved.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DeadlineError, WorkQueue, type QueueOptions } from '../../operator/kube/queue';
import { keyString, type ObjectKey } from '../../operator/kube/key';
import { waitFor } from '../helpers/wait';

const key = (name: string): ObjectKey => ({ namespace: 'ns', name });

/** A promise and its resolve function. */
function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

function queue(handle: (k: ObjectKey, signal: AbortSignal) => Promise<void>, opts: QueueOptions = {}) {
  const done: string[] = [];
  const errors: Array<{ key: string; err: unknown }> = [];
  const q = new WorkQueue(
    async (k, signal) => {
      await handle(k, signal);
      done.push(k.name);
    },
    { baseDelayMs: 1, maxDelayMs: 20, onError: (k, err) => errors.push({ key: keyString(k), err }), ...opts },
  );
  return { q, done, errors };
}

test('one key that never finishes does not hold the others: several keys at once', { timeout: 10_000 }, async (t) => {
  const stuck = deferred();
  const { q, done } = queue((k) => (k.name === 'wedged' ? stuck.promise : Promise.resolve()), { concurrency: 4, timeoutMs: 60_000, stopTimeoutMs: 100 });
  t.after(() => q.stop());
  t.after(() => stuck.resolve());
  q.start();
  q.add(key('wedged'));
  for (const n of ['a', 'b', 'c', 'd', 'e']) q.add(key(n));
  await waitFor(() => done.length === 5, 2000, 'every other key handled beside the wedged one');
  assert.deepEqual([...done].sort(), ['a', 'b', 'c', 'd', 'e']);
  assert.equal(q.inFlight, 1);
});

test('a key is never handled twice at once, and a change during its handling is handled after', { timeout: 10_000 }, async (t) => {
  const running = new Map<string, number>();
  let most = 0;
  const gates: Array<() => void> = [];
  const { q, done } = queue(
    async (k) => {
      running.set(k.name, (running.get(k.name) ?? 0) + 1);
      most = Math.max(most, running.get(k.name)!);
      await new Promise<void>((r) => gates.push(r));
      running.set(k.name, running.get(k.name)! - 1);
    },
    { concurrency: 4, timeoutMs: 60_000 },
  );
  t.after(() => q.stop());
  q.start();
  q.add(key('x'));
  await waitFor(() => gates.length === 1, 2000, 'x started');
  for (let i = 0; i < 5; i++) q.add(key('x')); // changes while it is handled
  assert.equal(q.length, 0, 'not queued beside itself');
  gates.shift()!();
  await waitFor(() => gates.length === 1, 2000, 'x handled again after');
  gates.shift()!();
  await waitFor(() => done.length === 2, 2000, 'x done twice');
  assert.equal(most, 1);
});

test('a handler past its deadline fails, frees its worker, is aborted, and its key waits until it settles', { timeout: 10_000 }, async (t) => {
  const late = deferred();
  let signal: AbortSignal | undefined;
  let calls = 0;
  const { q, done, errors } = queue(
    async (k, s) => {
      if (k.name !== 'wedged') return;
      calls++;
      if (calls > 1) return;
      signal = s;
      await late.promise; // ignores its signal, as a call stuck in a library might
    },
    { concurrency: 1, timeoutMs: 150 },
  );
  t.after(() => q.stop());
  t.after(() => late.resolve());
  q.start();
  q.add(key('wedged'));
  q.add(key('next'));
  await waitFor(() => done.includes('next'), 3000, 'the next key handled by the only worker');
  assert.ok(errors.length >= 1 && errors[0].err instanceof DeadlineError, String(errors[0]?.err));
  assert.equal(errors[0].key, 'ns/wedged');
  assert.equal(signal?.aborted, true, 'the late call was told to stop');
  // Its retry is due (backoff of 1 ms) but the call has not settled: not handled twice at once.
  await waitFor(() => q.inFlight === 1 && q.length === 0, 1000, 'the retry held back');
  assert.equal(calls, 1);
  late.resolve();
  await waitFor(() => calls === 2 && done.includes('wedged'), 2000, 'retried once the late call settled');
});

test('stop() returns within its bound even when a handler never does, and aborts the handlers', { timeout: 10_000 }, async () => {
  let signal: AbortSignal | undefined;
  const { q } = queue(
    (_k, s) => {
      signal = s;
      return new Promise<void>(() => undefined); // never settles
    },
    { concurrency: 2, timeoutMs: 60_000, stopTimeoutMs: 200 },
  );
  q.start();
  q.add(key('wedged'));
  await waitFor(() => signal !== undefined, 2000, 'handler started');
  const started = Date.now();
  await q.stop();
  const took = Date.now() - started;
  assert.ok(took < 1500, `stop() took ${took} ms`);
  assert.equal(signal?.aborted, true);
});
