// The project's CRDs (k8s/crds) against a real kube-apiserver: they install and become
// Established, and the API server itself (OpenAPI schema and CEL rules, not the operator)
// accepts valid resources and rejects invalid ones with the messages the CRDs define.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { KubeApiError, namespaceFor, projectCrdsYaml, startControlPlane, type ControlPlane, type KubeObject } from './harness';

const GROUP_VERSION = 'switchboard.dev/v1alpha1';

let cp: ControlPlane;
before(async () => {
  cp = await startControlPlane();
  await cp.apply(projectCrdsYaml());
});
after(() => cp?.stop());

function featureFlag(name: string, spec: Record<string, unknown>): KubeObject {
  return { apiVersion: GROUP_VERSION, kind: 'FeatureFlag', metadata: { name }, spec };
}

function switchboard(name: string, spec: Record<string, unknown>): KubeObject {
  return {
    apiVersion: GROUP_VERSION,
    kind: 'Switchboard',
    metadata: { name },
    spec: { image: 'switchboard:test', redis: { url: 'redis://redis:6379' }, ...spec },
  };
}

/** Creates obj and returns the API error; fails the test if the server accepted it. */
async function rejection(ns: string, obj: KubeObject): Promise<KubeApiError> {
  const path = await cp.client.resourcePath(obj.apiVersion, obj.kind, ns);
  try {
    await cp.client.create(path, obj);
  } catch (err) {
    if (err instanceof KubeApiError) return err;
    throw err;
  }
  assert.fail(`the API server accepted ${JSON.stringify(obj.spec)}`);
}

test('the Switchboard and FeatureFlag CRDs are Established and served', async () => {
  for (const name of ['switchboards.switchboard.dev', 'featureflags.switchboard.dev']) {
    const crd = await cp.client.get<{ status: { conditions: { type: string; status: string }[] } }>(
      `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${name}`);
    const cond = (type: string): string | undefined => crd.status.conditions.find((c) => c.type === type)?.status;
    assert.equal(cond('Established'), 'True', name);
    assert.equal(cond('NamesAccepted'), 'True', name);
  }
  const discovery = await cp.client.get<{ resources: { name: string }[] }>(`/apis/${GROUP_VERSION}`);
  const served = discovery.resources.map((r) => r.name).sort();
  assert.deepEqual(served, ['featureflags', 'featureflags/status', 'switchboards', 'switchboards/status']);
});

test('a valid FeatureFlag is accepted and defaulted', async (t) => {
  const ns = await cp.createNamespace(namespaceFor(t.name));
  const [ff] = await cp.apply(featureFlag('new-editor', { enabled: true, betaUsers: ['alice'] }), { namespace: ns });
  const spec = ff.spec as Record<string, unknown>;
  assert.equal(spec.rolloutPercent, 100);
  assert.equal(spec.nonCritical, false);
  assert.deepEqual(spec.betaUsers, ['alice']);
});

test('rolloutPercent 150 is rejected by the schema', async (t) => {
  const ns = await cp.createNamespace(namespaceFor(t.name));
  const err = await rejection(ns, featureFlag('too-much', { enabled: true, rolloutPercent: 150 }));
  assert.equal(err.status, 422);
  assert.equal(err.reason, 'Invalid');
  assert.match(err.message, /spec\.rolloutPercent.*less than or equal to 100/);

  const negative = await rejection(ns, featureFlag('too-little', { enabled: true, rolloutPercent: -1 }));
  assert.match(negative.message, /spec\.rolloutPercent.*greater than or equal to 0/);
});

test('a valid Switchboard is accepted and defaulted', async (t) => {
  const ns = await cp.createNamespace(namespaceFor(t.name));
  const [sb] = await cp.apply(switchboard('chat', {
    gateway: { minReplicas: 2, maxReplicas: 8, resources: { requests: { cpu: '250m' } } },
    prometheus: { url: 'http://prometheus:9090' },
  }), { namespace: ns });
  const spec = sb.spec as Record<string, Record<string, unknown>>;
  assert.deepEqual(spec.gateway, {
    minReplicas: 2, maxReplicas: 8, port: 4000, resources: { requests: { cpu: '250m' } }, service: { type: 'ClusterIP' },
  });
  assert.equal(spec.broadcast.shards, 16);
  assert.equal(spec.thresholds.p99LatencyMs, 50);
  assert.equal(spec.thresholds.holdSeconds, 60);
  assert.equal(spec.scaling.tolerance, 0.1);
  assert.equal(spec.prometheus.interval, '15s');
  assert.equal(spec.scaling.scaleDownStabilizationSeconds, 300);
});

test('minReplicas above maxReplicas is rejected by a CEL rule', async (t) => {
  const ns = await cp.createNamespace(namespaceFor(t.name));
  const gw = await rejection(ns, switchboard('inverted', { gateway: { minReplicas: 5, maxReplicas: 2 } }));
  assert.equal(gw.status, 422);
  assert.match(gw.message, /gateway\.minReplicas must be less than or equal to gateway\.maxReplicas/);

  const bc = await rejection(ns, switchboard('inverted-broadcast', { broadcast: { minReplicas: 3, maxReplicas: 1 } }));
  assert.match(bc.message, /broadcast\.minReplicas must be less than or equal to broadcast\.maxReplicas/);
});

test('redis needs exactly one of url and secretRef', async (t) => {
  const ns = await cp.createNamespace(namespaceFor(t.name));
  const both = await rejection(ns, switchboard('both', { redis: { url: 'redis://r:6379', secretRef: { name: 'redis' } } }));
  assert.match(both.message, /exactly one of redis\.url and redis\.secretRef must be set/);
  const bad = await rejection(ns, switchboard('http-redis', { redis: { url: 'http://r:6379' } }));
  assert.match(bad.message, /redis\.url must start with redis:\/\/ or rediss:\/\//);
  const [ok] = await cp.apply(switchboard('from-secret', { redis: { secretRef: { name: 'redis' } } }), { namespace: ns });
  assert.deepEqual((ok.spec as { redis: unknown }).redis, { secretRef: { name: 'redis', key: 'url' } });
});

test('status is a subresource: spec writes ignore it, /status writes only it', async (t) => {
  const ns = await cp.createNamespace(namespaceFor(t.name));
  const [created] = await cp.apply(featureFlag('shed-me', { enabled: true, nonCritical: true }), { namespace: ns });
  const path = await cp.client.resourcePath(GROUP_VERSION, 'FeatureFlag', ns, 'shed-me');

  await cp.client.call('PATCH', path, {
    body: { status: { effective: true, reason: 'Enabled' } },
    contentType: 'application/merge-patch+json',
  });
  assert.equal((await cp.client.get(path)).status, undefined, 'a status write through the main resource is dropped');

  const updated = await cp.client.call<KubeObject>('PATCH', `${path}/status`, {
    body: { spec: { enabled: false }, status: { effective: false, reason: 'Shed' } },
    contentType: 'application/merge-patch+json',
  });
  assert.deepEqual(updated.status, { effective: false, reason: 'Shed' });
  assert.equal((updated.spec as { enabled: boolean }).enabled, true, 'a spec write through /status is dropped');
  assert.equal(updated.metadata.generation, created.metadata.generation, 'status writes do not bump generation');
});

test('printer columns show the flag state', async (t) => {
  const ns = await cp.createNamespace(namespaceFor(t.name));
  await cp.apply(featureFlag('columns', { enabled: true, rolloutPercent: 25 }), { namespace: ns });
  const { stdout } = await cp.kubectl(['get', 'featureflags', '-n', ns]);
  const [header, row] = stdout.trim().split('\n').map((l) => l.trim().split(/\s+/));
  assert.deepEqual(header, ['NAME', 'ENABLED', 'ROLLOUT', 'EFFECTIVE', 'REASON', 'AGE']);
  assert.deepEqual(row.slice(0, 3), ['columns', 'true', '25']);
});
