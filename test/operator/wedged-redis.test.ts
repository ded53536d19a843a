// A Switchboard whose Redis accepts connections and answers nothing (a SIGSTOPped redis-server,
// real, never port 6379). Its flag publishes had no command timeout and the FeatureFlag queue one
// worker, so that one tenant stopped flag publishing for every tenant, for ever, and stopping the
// queue (a step-down, SIGTERM) never returned. The FeatureFlag pipeline here is the operator's
// (WorkQueue, FeatureFlagController, FlagPublisher, as operator/index.ts wires them) with the API
// server's status writes recorded instead of sent.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { FLAG_FINALIZER, type FeatureFlag, type Switchboard } from '../../operator/api/types';
import { FeatureFlagController } from '../../operator/controllers/featureflag';
import { FlagPublisher } from '../../operator/flag-publisher';
import type { Kube } from '../../operator/kube/client';
import { keyString } from '../../operator/kube/key';
import { WorkQueue } from '../../operator/kube/queue';
import { silentLogger } from '../../services/telemetry/log';
import { RedisProcess } from '../helpers/redis';
import { waitFor } from '../helpers/wait';
import { sbFixture } from './fixtures';

let wedged: RedisProcess;
let healthy: RedisProcess;
before(async () => {
  [wedged, healthy] = await Promise.all([RedisProcess.start(), RedisProcess.start()]);
});
after(async () => {
  wedged?.proc?.kill('SIGCONT');
  await Promise.all([wedged?.stop(), healthy?.stop()]);
});

/** SIGSTOP the Redis for the test: the kernel still accepts connections, nothing answers. */
function freeze(t: { after(fn: () => void): void }, r: RedisProcess): void {
  r.proc!.kill('SIGSTOP');
  t.after(() => r.proc?.kill('SIGCONT'));
}

const FAST = { commandTimeoutMs: 300, publishTimeoutMs: 800 };
const flag = { name: 'typing', enabled: true, rolloutPercent: 100, betaUsers: [], nonCritical: false, description: '' };

test('a publish to a Redis that never answers fails within its bound; another Redis is not held up', { timeout: 15_000 }, async (t) => {
  freeze(t, wedged);
  const pub = new FlagPublisher({} as Pick<Kube, 'core'>, silentLogger, () => true, FAST);
  t.after(() => pub.close());
  const started = Date.now();
  const stuck = pub.write(sbFixture('evil', 'a', { redis: { url: wedged.url } }), flag).then(() => 'published', (e: Error) => e.message);
  await pub.write(sbFixture('chat', 'b', { redis: { url: healthy.url } }), flag);
  assert.ok(healthy.cli('hget', 'sb:flags', 'typing'));
  const outcome = await stuck;
  const took = Date.now() - started;
  assert.notEqual(outcome, 'published');
  assert.match(outcome, /timed out|did not answer/);
  assert.ok(took < 3000, `failed after ${took} ms`);

  // Redis back: the same connection publishes again (the wedged socket was closed and reconnected).
  wedged.proc!.kill('SIGCONT');
  await waitFor(async () => pub.write(sbFixture('evil', 'a', { redis: { url: wedged.url } }), flag).then(() => true, () => false), 5000, 'publish after SIGCONT', 50);
  assert.ok(wedged.cli('hget', 'sb:flags', 'typing'));
});

test('the FeatureFlag queue: a wedged tenant is RedisUnavailable and retried, the other tenant is published, stop() returns', { timeout: 15_000 }, async (t) => {
  freeze(t, wedged);
  healthy.cli('del', 'sb:flags');
  const sbs: Record<string, Switchboard[]> = {
    'tenant-a': [sbFixture('evil', 'tenant-a', { redis: { url: wedged.url } })],
    'tenant-b': [sbFixture('chat', 'tenant-b', { redis: { url: healthy.url } })],
  };
  const ff = (namespace: string): FeatureFlag => ({
    apiVersion: 'switchboard.dev/v1alpha1',
    kind: 'FeatureFlag',
    metadata: { namespace, name: 'typing', finalizers: [FLAG_FINALIZER], generation: 1 },
    spec: { enabled: true, rolloutPercent: 100, nonCritical: false },
  });
  const statuses: Array<{ namespace: string; reason: string }> = [];
  const kube = {
    custom: {
      patchNamespacedCustomObjectStatus: async (a: { namespace: string; body: { status: { reason: string } } }) => {
        statuses.push({ namespace: a.namespace, reason: a.body.status.reason });
      },
      patchNamespacedCustomObject: async () => undefined,
    },
  } as unknown as Kube;
  const publisher = new FlagPublisher(kube, silentLogger, () => true, FAST);
  t.after(() => publisher.close());
  const ctrl = new FeatureFlagController({
    kube, log: silentLogger, publisher,
    get: (k) => ff(k.namespace),
    switchboardsIn: (n) => sbs[n] ?? [],
    overloaded: () => false,
  });
  const failures: string[] = [];
  const q = new WorkQueue((k, signal) => ctrl.reconcile(k, signal), {
    concurrency: 4, timeoutMs: 5000, stopTimeoutMs: 500, baseDelayMs: 50, maxDelayMs: 200,
    onError: (k) => failures.push(keyString(k)),
  });
  q.start();
  q.add({ namespace: 'tenant-a', name: 'typing' });
  q.add({ namespace: 'tenant-b', name: 'typing' });

  await waitFor(() => healthy.cli('hget', 'sb:flags', 'typing'), 2000, 'tenant-b published while tenant-a is wedged', 20);
  await waitFor(() => statuses.some((s) => s.namespace === 'tenant-b' && s.reason === 'Enabled'), 2000, 'tenant-b Enabled');
  await waitFor(() => failures.filter((f) => f === 'tenant-a/typing').length >= 2, 5000, 'tenant-a failed and retried');
  assert.ok(statuses.some((s) => s.namespace === 'tenant-a' && s.reason === 'RedisUnavailable'), JSON.stringify(statuses));

  const started = Date.now();
  await q.stop();
  assert.ok(Date.now() - started < 2000, `stop() took ${Date.now() - started} ms`);
});
