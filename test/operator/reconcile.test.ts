// The Switchboard reconcile's shape without an API server (issue 15 item 4): a fake Kube that
// refuses what the test says, and the order of what reconcile does. Whatever fails, the status is
// written (Ready=False with the step's reason) and a Warning Event recorded before the error goes
// to the work queue. The same against a real kube-apiserver is in lifecycle.test.ts.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ApiException, type KubernetesObject } from '@kubernetes/client-node';
import type { FeatureFlag, Switchboard, SwitchboardStatus } from '../../operator/api/types';
import { ReconcileError, SwitchboardController } from '../../operator/controllers/switchboard';
import type { Kube } from '../../operator/kube/client';
import { keyString, type ObjectKey } from '../../operator/kube/key';
import { OperatorMetrics } from '../../operator/metrics';
import { MetricsScaleHandler } from '../../operator/scaling/handler';
import { silentLogger } from '../../services/telemetry/log';
import { EventLog, ManualTimers, sbFixture } from './fixtures';

const KEY: ObjectKey = { namespace: 'ns', name: 'chat' };

function apiError(code: number, reason: string, message: string): ApiException<string> {
  return new ApiException(code, `HTTP-Code: ${code}`, JSON.stringify({ kind: 'Status', reason, message }), {});
}

/** A fake cluster: `refuse` picks the calls that fail; `calls` is what reconcile did, in order. */
function cluster(sb: Switchboard | undefined) {
  const calls: string[] = [];
  const statuses: SwitchboardStatus[] = [];
  const state = { sb, refuse: (_call: string): ApiException<string> | undefined => undefined };
  const call = (name: string) => {
    calls.push(name);
    const err = state.refuse(name);
    if (err) throw err;
  };
  const kube = {
    apps: {
      readNamespacedDeployment: async (r: { name: string }) => {
        call(`read Deployment ${r.name}`);
        throw apiError(404, 'NotFound', `deployments.apps "${r.name}" not found`);
      },
    },
    objects: {
      patch: async (obj: KubernetesObject) => {
        call(`apply ${obj.kind} ${obj.metadata?.name}`);
        // No kubelet here either: the pods exist but none is available.
        const replicas = (obj as { spec?: { replicas?: number } }).spec?.replicas;
        return obj.kind === 'Deployment' ? { ...obj, status: { replicas, availableReplicas: 0 } } : obj;
      },
    },
    custom: {
      patchNamespacedCustomObjectStatus: async (r: { body: { status: SwitchboardStatus } }) => {
        call('write status');
        statuses.push(r.body.status);
        // What the API server keeps (merge patch of the status), so the next reconcile sees it.
        if (state.sb) state.sb = { ...state.sb, status: { ...state.sb.status, ...r.body.status } };
      },
    },
  } as unknown as Kube;
  const events = new EventLog();
  const record = events.record.bind(events);
  events.record = (obj, type, reason, message) => {
    calls.push(`event ${type} ${reason}`);
    record(obj, type, reason, message);
  };
  const metrics = new OperatorMetrics();
  // The scale handler's own Events (MetricsUnavailable, ...) go elsewhere: `calls` is the reconcile's.
  const scale = new MetricsScaleHandler({
    log: silentLogger, events: new EventLog(), metrics, onUpdate: () => undefined, onOverloadChange: () => undefined,
    query: async () => null, every: new ManualTimers().every,
  });
  const requeuedFlags: string[] = [];
  const flags = [{ metadata: { name: 'voice', namespace: 'ns' } }] as FeatureFlag[];
  const controller = new SwitchboardController({
    kube, log: silentLogger, events, metrics, scale,
    get: (k) => (state.sb && keyString(state.sb.metadata) === keyString(k) ? state.sb : undefined),
    flagsIn: () => flags,
    enqueueFlag: (k) => requeuedFlags.push(keyString(k)),
  });
  return { controller, calls, statuses, state, events, scale, metrics, requeuedFlags };
}

const cond = (s: SwitchboardStatus | undefined, type: string) => s?.conditions?.find((c) => c.type === type);

test('a Deployment the API server rejects: Ready=False ApplyFailed, a Warning Event, the status written, then the error', async () => {
  const c = cluster(sbFixture('chat', 'ns', { prometheus: undefined }));
  c.state.refuse = (call) => (call === 'apply Deployment chat-gateway'
    ? apiError(422, 'Invalid', 'Deployment.apps "chat-gateway" is invalid: spec.template.spec.containers[0].resources.requests: Invalid value: "2": must be less than or equal to cpu limit of 1')
    : undefined);

  await assert.rejects(c.controller.reconcile(KEY), (err: unknown) => {
    assert.ok(err instanceof ReconcileError);
    assert.equal(err.reason, 'ApplyFailed');
    assert.match(err.message, /^ns\/chat: apply Deployment chat-gateway: 422 Invalid/);
    return true;
  });
  // The fixed order: get, compute and apply (stopping at the refusal), events, status; then throw.
  assert.deepEqual(c.calls, [
    'read Deployment chat-gateway', 'read Deployment chat-broadcast',
    'apply ConfigMap chat-config', 'apply Deployment chat-gateway',
    'event Warning ApplyFailed',
    'write status',
  ]);
  const status = c.statuses[0];
  const ready = cond(status, 'Ready')!;
  assert.equal(ready.status, 'False');
  assert.equal(ready.reason, 'ApplyFailed');
  assert.match(ready.message, /^apply Deployment chat-gateway: 422 Invalid Deployment.apps "chat-gateway" is invalid: .*must be less than or equal to cpu limit/);
  assert.equal(cond(status, 'Scaling')!.status, 'Unknown', 'the Deployments were not applied: not known');
  assert.equal(cond(status, 'Overloaded')!.status, 'False', 'the scale handler\'s state is still known');
  assert.equal(status.replicas, undefined, 'replicas not known: left as they were');
  assert.deepEqual(status.desiredReplicas, { gateway: 1, broadcast: 1 });
  assert.deepEqual(c.events.events.find((e) => e.reason === 'ApplyFailed'), { object: 'Switchboard/ns/chat', type: 'Warning', reason: 'ApplyFailed', message: ready.message });

  // Fixed: the next reconcile applies everything, Ready says why it is (not) ready, and a Normal
  // Event says it reconciled again.
  c.state.refuse = () => undefined;
  c.calls.length = 0;
  await c.controller.reconcile(KEY);
  assert.deepEqual(c.calls, [
    'apply ConfigMap chat-config', 'apply Deployment chat-gateway', 'apply Deployment chat-broadcast',
    'apply Service chat-gateway', 'apply Service chat-metrics',
    'event Normal Reconciled',
    'write status',
  ]);
  assert.equal(cond(c.statuses[1], 'Ready')!.reason, 'Unavailable');
  assert.equal(cond(c.statuses[1], 'Scaling')!.status, 'False');
  assert.deepEqual(c.statuses[1].replicas, { gateway: 1, broadcast: 1 });
  c.calls.length = 0;
  await c.controller.reconcile(KEY);
  assert.ok(!c.calls.includes('event Normal Reconciled'), 'only once, on the way back');
  c.scale.stopAll();
});

test('RBAC-forbidden read of the Deployments: Ready=False ReconcileFailed, conditions it could not know are Unknown', async () => {
  const c = cluster(sbFixture());
  c.state.refuse = (call) => (call.startsWith('read Deployment')
    ? apiError(403, 'Forbidden', 'deployments.apps "chat-gateway" is forbidden: User "system:serviceaccount:x:y" cannot get resource "deployments"')
    : undefined);
  await assert.rejects(c.controller.reconcile(KEY), ReconcileError);
  assert.deepEqual(c.calls, ['read Deployment chat-gateway', 'event Warning ReconcileFailed', 'write status']);
  const status = c.statuses[0];
  assert.deepEqual([cond(status, 'Ready')!.status, cond(status, 'Ready')!.reason], ['False', 'ReconcileFailed']);
  assert.match(cond(status, 'Ready')!.message, /^read the Deployments: 403 Forbidden .*cannot get resource "deployments"/);
  for (const t of ['Scaling', 'Overloaded', 'MetricsUnavailable']) assert.equal(cond(status, t)!.status, 'Unknown', t);
  assert.equal(status.desiredReplicas, undefined);
  assert.equal(c.scale.has(KEY), false, 'no metrics loop for a Switchboard it could not start');
});

test('a status the API server refuses is a Warning Event and the error', async () => {
  const c = cluster(sbFixture());
  c.state.refuse = (call) => (call === 'write status' ? apiError(403, 'Forbidden', 'switchboards.switchboard.dev "chat" is forbidden') : undefined);
  await assert.rejects(c.controller.reconcile(KEY), (err: unknown) => err instanceof ReconcileError && err.reason === 'StatusUpdateFailed');
  assert.deepEqual(c.calls.slice(-2), ['write status', 'event Warning StatusUpdateFailed']);
  c.scale.stopAll();
});

test('not found: done, its loop and series forgotten, its flags requeued; being deleted: nothing applied', async () => {
  const c = cluster(sbFixture());
  await c.controller.reconcile(KEY);
  assert.equal(c.scale.has(KEY), true);
  assert.ok((await c.metrics.desired.get()).values.some((v) => v.labels.switchboard === 'chat'));

  c.state.sb = { ...c.state.sb!, metadata: { ...c.state.sb!.metadata, deletionTimestamp: new Date() } };
  c.calls.length = 0;
  await c.controller.reconcile(KEY);
  assert.deepEqual(c.calls, [], 'the garbage collector removes the children');
  assert.equal(c.scale.has(KEY), false);

  c.state.sb = undefined;
  await c.controller.reconcile(KEY);
  assert.deepEqual(c.calls, []);
  assert.deepEqual(c.requeuedFlags, ['ns/voice'], 'its flags are republished without it');
  assert.equal((await c.metrics.desired.get()).values.some((v) => v.labels.switchboard === 'chat'), false);
});
