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

test('prometheus.interval above 1h is refused: a timer past 2^31-1 ms (597h) would query every 1 ms', async (t) => {
  const ns = await cp.createNamespace(namespaceFor(t.name));
  const prometheus = (interval: string) => ({ prometheus: { url: 'http://prometheus:9090', interval } });
  for (const [i, interval] of ['597h', '61m', '1h1s', '3601s'].entries()) {
    const err = await rejection(ns, switchboard(`slow-${i}`, prometheus(interval)));
    assert.equal(err.status, 422, interval);
    assert.match(err.message, /spec\.prometheus\.interval: Invalid value.*prometheus\.interval must be at most 1h/, interval);
  }
  for (const [i, interval] of ['1h', '59m59s', '500ms'].entries()) {
    const [ok] = await cp.apply(switchboard(`ok-${i}`, prometheus(interval)), { namespace: ns });
    assert.equal((ok.spec as { prometheus: { interval: string } }).prometheus.interval, interval);
  }
});

test('spec.config refuses AUTH_SECRET, API_KEY and REDIS_URL: the ConfigMap is plain text', async (t) => {
  const ns = await cp.createNamespace(namespaceFor(t.name));
  for (const key of ['AUTH_SECRET', 'API_KEY', 'REDIS_URL']) {
    const err = await rejection(ns, switchboard(`secret-${key.toLowerCase().replace(/_/g, '-')}`, { config: { LOG_LEVEL: 'debug', [key]: 'hunter2' } }));
    assert.equal(err.status, 422, key);
    assert.match(err.message, /spec\.config: Invalid value.*config must not hold AUTH_SECRET, API_KEY or REDIS_URL.*valueFrom\.secretKeyRef.*redis\.secretRef/, key);
  }
  const [ok] = await cp.apply(switchboard('plain', {
    config: { LOG_LEVEL: 'debug', REDIS_CLUSTER: 'false' },
    env: [{ name: 'AUTH_SECRET', valueFrom: { secretKeyRef: { name: 'chat', key: 'auth-secret' } } }],
  }), { namespace: ns });
  assert.deepEqual((ok.spec as { config: unknown }).config, { LOG_LEVEL: 'debug', REDIS_CLUSTER: 'false' });
});

test('gateway.port 4001 or 4002 is refused: the admin and gRPC API listeners are there', async (t) => {
  const ns = await cp.createNamespace(namespaceFor(t.name));
  for (const port of [4001, 4002]) {
    const err = await rejection(ns, switchboard(`port-${port}`, { gateway: { port } }));
    assert.equal(err.status, 422, String(port));
    assert.match(err.message, /spec\.gateway\.port: Invalid value.*gateway\.port must not be 4001 or 4002/, String(port));
  }
  const [ok] = await cp.apply(switchboard('port-4003', { gateway: { port: 4003 } }), { namespace: ns });
  assert.equal((ok.spec as { gateway: { port: number } }).gateway.port, 4003);
});

test('prometheus.url with credentials is refused: fetch rejects it and its error would quote them', async (t) => {
  const ns = await cp.createNamespace(namespaceFor(t.name));
  for (const [i, url] of ['http://user:pass@prometheus:9090', 'https://token@prometheus', 'http://user:p@ss@prometheus:9090/'].entries()) {
    const err = await rejection(ns, switchboard(`creds-${i}`, { prometheus: { url } }));
    assert.equal(err.status, 422, url);
    assert.match(err.message, /spec\.prometheus\.url: Invalid value.*prometheus\.url must not hold credentials/, url);
  }
  // An @ after the host is not userinfo.
  const [ok] = await cp.apply(switchboard('at-in-path', { prometheus: { url: 'http://prometheus:9090/prom@eu' } }), { namespace: ns });
  assert.equal((ok.spec as { prometheus: { url: string } }).prometheus.url, 'http://prometheus:9090/prom@eu');
});

// Every gateway and broadcast pod must hash rooms to the same number of shards (docs/cluster.md):
// a change on a live Switchboard reached only the pods that restarted, and a room's messages went
// to two shards. The number is fixed once set; other spec changes still go through.
test('broadcast.shards cannot be changed once set; the rest of broadcast can', async (t) => {
  const ns = await cp.createNamespace(namespaceFor(t.name));
  const [created] = await cp.apply(switchboard('sharded', { broadcast: { shards: 16 } }), { namespace: ns });
  const path = await cp.client.resourcePath(GROUP_VERSION, 'Switchboard', ns, 'sharded');
  const patch = (broadcast: Record<string, unknown>) =>
    cp.client.call<KubeObject>('PATCH', path, { body: { spec: { broadcast } }, contentType: 'application/merge-patch+json' });
  await assert.rejects(patch({ shards: 32 }), (err: unknown) => {
    assert.ok(err instanceof KubeApiError, String(err));
    assert.equal(err.status, 422);
    assert.match(err.message, /broadcast\.shards cannot be changed on a live Switchboard/);
    return true;
  });
  const kept = await cp.client.get<KubeObject & { spec: { broadcast: { shards: number } } }>(path);
  assert.equal(kept.spec.broadcast.shards, 16);
  assert.equal(kept.metadata.resourceVersion, created.metadata.resourceVersion, 'nothing written');
  const scaled = await patch({ maxReplicas: 8 }) as KubeObject & { spec: { broadcast: { maxReplicas: number; shards: number } } };
  assert.deepEqual([scaled.spec.broadcast.maxReplicas, scaled.spec.broadcast.shards], [8, 16], 'other fields change; shards stays');
  // The default counts as set: a Switchboard created without shards keeps 16.
  await cp.apply(switchboard('defaulted', {}), { namespace: ns });
  const dpath = await cp.client.resourcePath(GROUP_VERSION, 'Switchboard', ns, 'defaulted');
  await assert.rejects(
    cp.client.call('PATCH', dpath, { body: { spec: { broadcast: { shards: 8 } } }, contentType: 'application/merge-patch+json' }),
    /broadcast\.shards cannot be changed/,
  );
});

// The name prefixes every object the operator makes; a Service named NAME-gateway must be a
// DNS-1035 label. Names that could never make them were accepted, and the operator created the
// Deployments before the Services failed, leaving a half-made Switchboard.
test('Switchboard names the operator cannot derive Service names from are refused; 53 characters is accepted', async (t) => {
  const ns = await cp.createNamespace(namespaceFor(t.name));
  for (const name of ['a'.repeat(54), 'a'.repeat(60), 'chat.eu', '1chat']) {
    const err = await rejection(ns, switchboard(name, {}));
    assert.equal(err.status, 422, name);
    assert.match(err.message, /metadata\.name/, name);
  }
  const longest = 'a'.repeat(53);
  const [ok] = await cp.apply(switchboard(longest, {}), { namespace: ns });
  assert.equal(ok.metadata.name, longest);
  // NAME-broadcast, the longest name made from it, is a valid Service name too.
  assert.equal(`${longest}-broadcast`.length, 63);
  await cp.apply({ apiVersion: 'v1', kind: 'Service', metadata: { name: `${longest}-broadcast` }, spec: { ports: [{ port: 80 }] } }, { namespace: ns });
});
