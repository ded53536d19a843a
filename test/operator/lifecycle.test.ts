// The operator against a real kube-apiserver (with kube-controller-manager, so owned objects are
// garbage-collected), running as `switchboard operator` with a ServiceAccount token bound only to
// k8s/rbac: applying a Switchboard creates its Deployments, Services and ConfigMap with the
// right spec; deleting it removes them; an invalid one is rejected; a FeatureFlag is published to
// the Switchboard's Redis and unpublished when deleted (issue #8, tests 1 and 5); a Deployment the
// API server refuses is Ready=False with its reason and a Warning Event (issue 15 item 4).
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { createAdminHandler } from '../../services/admin';
import { RedisProcess } from '../helpers/redis';
import { waitFor } from '../helpers/wait';
import { KubeApiError, namespaceFor, type ControlPlane, type KubeObject } from '../k8s/harness';
import { condition, controlPlaneWithCrds, featureFlag, getObject, operatorKubeconfig, OPERATOR_NS, OPERATOR_SA, startOperator, switchboard, type OperatorProcess } from './stack';

let cp: ControlPlane;
let op: OperatorProcess;
let redis: RedisProcess;

before(async () => {
  cp = await controlPlaneWithCrds(true);
  redis = await RedisProcess.start();
  op = await startOperator(await operatorKubeconfig(cp));
});
after(async () => {
  await op?.stop();
  await redis?.stop();
  await cp?.stop();
});

type Obj = KubeObject & { spec: any; status?: any }; // eslint-disable-line @typescript-eslint/no-explicit-any

interface KubeEvent {
  type: string;
  reason: string;
  message: string;
  involvedObject: { kind: string; name: string };
}

async function eventsIn(ns: string): Promise<KubeEvent[]> {
  const res = await cp.client.request('GET', `/api/v1/namespaces/${ns}/events`);
  return (res.body as { items: KubeEvent[] }).items;
}

test('a Switchboard gets its Deployments, Services and ConfigMap; deleting it removes them', async (t) => {
  const ns = await cp.createNamespace(namespaceFor(t.name));
  await cp.apply(switchboard('chat', {
    redis: { url: redis.url },
    gateway: { minReplicas: 2, maxReplicas: 6, service: { type: 'NodePort' }, resources: { requests: { cpu: '100m' } } },
    broadcast: { minReplicas: 1, maxReplicas: 2, shards: 8, resources: { limits: { cpu: '500m' } } },
    config: { LOG_LEVEL: 'debug', HISTORY_SIZE: '500' },
    env: [{ name: 'AUTH_SECRET', valueFrom: { secretKeyRef: { name: 'chat-auth', key: 'secret' } } }],
  }), { namespace: ns });

  const base = `/apis/apps/v1/namespaces/${ns}/deployments`;
  const gw = await waitFor(() => getObject<Obj>(cp, `${base}/chat-gateway`), 30_000, 'deployment chat-gateway', 100);
  const bc = await waitFor(() => getObject<Obj>(cp, `${base}/chat-broadcast`), 30_000, 'deployment chat-broadcast', 100);
  assert.equal(gw.spec.replicas, 2, 'gateway starts at minReplicas');
  assert.equal(bc.spec.replicas, 1);
  const owner = (gw.metadata.ownerReferences as Array<{ kind: string; name: string; controller: boolean }>)[0];
  assert.deepEqual([owner.kind, owner.name, owner.controller], ['Switchboard', 'chat', true]);
  const pod = gw.spec.template.spec;
  const c = pod.containers[0];
  assert.deepEqual(c.args, ['gateway']);
  assert.equal(c.image, 'ghcr.io/switchboard-dev/switchboard:0.1.0');
  assert.deepEqual(c.ports.map((p: { name: string; containerPort: number }) => `${p.name}:${p.containerPort}`), ['tcp:4000', 'grpc:4002', 'admin:4001']);
  assert.equal(c.readinessProbe.httpGet.path, '/readyz');
  assert.equal(c.livenessProbe.httpGet.path, '/healthz');
  assert.equal(c.securityContext.readOnlyRootFilesystem, true);
  assert.equal(c.securityContext.runAsNonRoot, true);
  assert.deepEqual(c.securityContext.capabilities.drop, ['ALL']);
  assert.equal(c.lifecycle.preStop.sleep.seconds, 5, 'gateway pods leave the endpoints before SIGTERM drains them');
  assert.ok(pod.terminationGracePeriodSeconds >= 5 + 10, 'grace period covers preStop plus SHUTDOWN_DRAIN_MS');
  assert.deepEqual(c.resources, { requests: { cpu: '100m' } });
  assert.equal(c.env.find((e: { name: string }) => e.name === 'SWITCHBOARD_NODE_FLAGS'), undefined, 'no CPU limit: Node keeps its own GC threads');
  assert.deepEqual(c.env.find((e: { name: string }) => e.name === 'AUTH_SECRET').valueFrom, { secretKeyRef: { name: 'chat-auth', key: 'secret' } });
  assert.equal(c.env.find((e: { name: string }) => e.name === 'REDIS_URL').value, redis.url);
  assert.deepEqual(bc.spec.template.spec.containers[0].args, ['broadcast']);
  assert.equal(bc.spec.template.spec.containers[0].lifecycle, undefined);
  const bcFlags = bc.spec.template.spec.containers[0].env.find((e: { name: string }) => e.name === 'SWITCHBOARD_NODE_FLAGS');
  assert.equal(bcFlags?.value, '--single-threaded-gc', "a 500m CPU limit: the collector on the main thread");

  const cm = await waitFor(() => getObject<Obj & { data: Record<string, string> }>(cp, `/api/v1/namespaces/${ns}/configmaps/chat-config`), 10_000, 'configmap', 100);
  assert.equal(cm.data.LOG_LEVEL, 'debug');
  assert.equal(cm.data.HISTORY_SIZE, '500');
  assert.equal(cm.data.STREAM_SHARDS, '8', 'shards come from spec.broadcast.shards');
  assert.equal(cm.data.TCP_HOST, '0.0.0.0');

  const svc = await waitFor(() => getObject<Obj>(cp, `/api/v1/namespaces/${ns}/services/chat-gateway`), 10_000, 'gateway service', 100);
  assert.equal(svc.spec.type, 'NodePort');
  assert.deepEqual(svc.spec.ports.map((p: { name: string; port: number }) => `${p.name}:${p.port}`), ['tcp:4000'], 'the gRPC API is not on the client Service');
  assert.equal(svc.spec.selector['app.kubernetes.io/component'], 'gateway');
  const api = await waitFor(() => getObject<Obj>(cp, `/api/v1/namespaces/${ns}/services/chat-api`), 10_000, 'api service', 100);
  assert.equal(api.spec.type, 'ClusterIP', 'the gRPC API stays inside the cluster whatever the client Service is');
  assert.deepEqual(api.spec.ports.map((p: { name: string; port: number }) => `${p.name}:${p.port}`), ['grpc:4002']);
  assert.deepEqual(api.spec.selector, svc.spec.selector);
  const metrics = await waitFor(() => getObject<Obj>(cp, `/api/v1/namespaces/${ns}/services/chat-metrics`), 10_000, 'metrics service', 100);
  assert.deepEqual(metrics.spec.ports.map((p: { name: string; port: number }) => `${p.name}:${p.port}`), ['admin:4001']);

  const sbPath = `/apis/switchboard.dev/v1alpha1/namespaces/${ns}/switchboards/chat`;
  const sb = await waitFor(async () => {
    const o = await getObject<Obj>(cp, sbPath);
    return condition(o, 'MetricsUnavailable') ? o : undefined;
  }, 20_000, 'status conditions', 100);
  assert.equal(condition(sb, 'MetricsUnavailable')!.status, 'True');
  assert.equal(condition(sb, 'MetricsUnavailable')!.reason, 'NoPrometheus');
  assert.equal(condition(sb, 'Ready')!.status, 'False', 'no pod runs here (no kubelet), so not available');
  assert.equal(condition(sb, 'Overloaded')!.status, 'False');
  assert.deepEqual(sb.status.replicas, { gateway: 2, broadcast: 1 });

  // Someone scales the Deployment by hand: the operator puts its own decision back.
  await cp.client.request('PATCH', `${base}/chat-gateway`, { body: { spec: { replicas: 5 } }, contentType: 'application/merge-patch+json' });
  await waitFor(async () => (await getObject<Obj>(cp, `${base}/chat-gateway`))?.spec.replicas === 2, 20_000, 'replicas restored to the operator\'s decision', 100);

  await cp.client.request('DELETE', sbPath);
  for (const p of [`${base}/chat-gateway`, `${base}/chat-broadcast`, `/api/v1/namespaces/${ns}/services/chat-gateway`, `/api/v1/namespaces/${ns}/services/chat-api`, `/api/v1/namespaces/${ns}/configmaps/chat-config`]) {
    await waitFor(async () => (await getObject(cp, p)) === undefined, 60_000, `${p} to be garbage-collected`, 200);
  }
});

test('upgrading the operator takes the gRPC API port off a client Service an older one made', async (t) => {
  const ns = await cp.createNamespace(namespaceFor(t.name));
  // What an older operator applied: the API port on the client Service, which may face the internet.
  await cp.apply({
    apiVersion: 'v1', kind: 'Service', metadata: { name: 'old-gateway', namespace: ns },
    spec: {
      type: 'NodePort',
      selector: { 'app.kubernetes.io/name': 'switchboard', 'app.kubernetes.io/instance': 'old', 'app.kubernetes.io/component': 'gateway' },
      ports: [{ name: 'tcp', port: 4000, targetPort: 'tcp', protocol: 'TCP' }, { name: 'grpc', port: 4002, targetPort: 'grpc', protocol: 'TCP' }],
    },
  }, { namespace: ns, fieldManager: 'switchboard-operator' });
  await cp.apply(switchboard('old', { redis: { url: redis.url }, gateway: { service: { type: 'NodePort' } } }), { namespace: ns });
  const ports = (o: Obj | undefined) => o?.spec.ports.map((p: { name: string; port: number }) => `${p.name}:${p.port}`).join(',');
  await waitFor(async () => ports(await getObject<Obj>(cp, `/api/v1/namespaces/${ns}/services/old-gateway`)) === 'tcp:4000', 30_000, 'the grpc port gone from old-gateway', 100);
  const api = await waitFor(() => getObject<Obj>(cp, `/api/v1/namespaces/${ns}/services/old-api`), 10_000, 'old-api', 100);
  assert.equal(api.spec.type, 'ClusterIP');
  assert.equal(ports(api), 'grpc:4002');
});

test('the operator\'s admin port answers like the server roles\': /healthz, /readyz, /stats, /metrics', async () => {
  const get = (path: string, init?: RequestInit) => fetch(`http://127.0.0.1:${op.adminPort}${path}`, init);
  // The gateway's and broadcast's admin handler, in process, as the reference.
  const reference = createServer(createAdminHandler({ stats: () => ({}), readiness: () => ({ ready: true, reasons: [] }), metrics: async () => ({ contentType: 'text/plain', body: '' }) }));
  await new Promise<void>((r) => reference.listen(0, '127.0.0.1', () => r()));
  const ref = (path: string, init?: RequestInit) => fetch(`http://127.0.0.1:${(reference.address() as AddressInfo).port}${path}`, init);
  try {
    for (const [path, init] of [['/healthz'], ['/readyz'], ['/nope'], ['/healthz', { method: 'POST' }]] as Array<[string, RequestInit?]>) {
      const [a, b] = [await get(path, init), await ref(path, init)];
      assert.equal(a.status, b.status, path);
      assert.equal(a.headers.get('content-type'), b.headers.get('content-type'), path);
      assert.equal(await a.text(), await b.text(), `${path} ${init?.method ?? 'GET'}: the same body as a server role's`);
    }
  } finally {
    reference.close();
  }
  assert.deepEqual(await (await get('/healthz')).json(), { status: 'ok' });
  assert.deepEqual(await (await get('/readyz')).json(), { status: 'ready', reasons: [] });
  const stats = (await (await get('/stats')).json()) as Record<string, unknown>;
  assert.equal(stats.role, 'operator');
  assert.equal(stats.leader, true);
  assert.equal(stats.identity, op.identity);
  const metrics = await get('/metrics');
  assert.match(metrics.headers.get('content-type') ?? '', /^text\/plain/);
  const text = await metrics.text();
  for (const name of ['switchboard_operator_reconciles_total', 'switchboard_operator_is_leader', 'switchboard_operator_reconcile_duration_seconds_bucket', 'process_resident_memory_bytes']) {
    assert.ok(text.includes(name), name);
  }
});

test('a Deployment the API server rejects shows as Ready=False ApplyFailed with a Warning Event; fixed, it is applied', async (t) => {
  const ns = await cp.createNamespace(namespaceFor(t.name));
  // Valid for the CRD (resources are passed through), invalid for a Deployment: a request above its limit.
  await cp.apply(switchboard('limits', {
    redis: { url: redis.url },
    gateway: { minReplicas: 1, maxReplicas: 2, resources: { requests: { cpu: '2' }, limits: { cpu: '1' } } },
  }), { namespace: ns });
  const sbPath = `/apis/switchboard.dev/v1alpha1/namespaces/${ns}/switchboards/limits`;
  const base = `/apis/apps/v1/namespaces/${ns}/deployments`;
  const sb = await waitFor(async () => {
    const o = await getObject<Obj>(cp, sbPath);
    return condition(o, 'Ready')?.reason === 'ApplyFailed' ? o : undefined;
  }, 30_000, 'Ready=False with reason ApplyFailed', 100);
  const ready = condition(sb, 'Ready')!;
  assert.equal(ready.status, 'False');
  assert.match(ready.message, /^apply Deployment limits-gateway: 422 Invalid .*must be less than or equal to cpu limit/);
  assert.equal(condition(sb, 'Scaling')!.status, 'Unknown', 'not applied, so not known');
  assert.equal(sb.status.observedGeneration, 1);
  const warning = await waitFor(async () => (await eventsIn(ns)).find((e) => e.reason === 'ApplyFailed'), 10_000, 'a Warning Event ApplyFailed', 100);
  assert.equal(warning.type, 'Warning');
  assert.deepEqual([warning.involvedObject.kind, warning.involvedObject.name], ['Switchboard', 'limits']);
  assert.equal(warning.message, ready.message);
  // Applied in order up to the refusal: the ConfigMap is there, nothing after the gateway Deployment.
  assert.ok(await getObject(cp, `/api/v1/namespaces/${ns}/configmaps/limits-config`));
  assert.equal(await getObject(cp, `${base}/limits-gateway`), undefined);
  assert.equal(await getObject(cp, `${base}/limits-broadcast`), undefined);
  assert.ok(Number(await op.metric('switchboard_operator_reconcile_errors_total{kind="Switchboard"}')) > 0, 'counted as a failed reconcile, retried with backoff');

  await cp.client.request('PATCH', sbPath, { body: { spec: { gateway: { resources: { requests: { cpu: '1' } } } } }, contentType: 'application/merge-patch+json' });
  await waitFor(() => getObject(cp, `${base}/limits-broadcast`), 30_000, 'the Deployments applied once fixed', 100);
  const fixed = await waitFor(async () => {
    const o = await getObject<Obj>(cp, sbPath);
    return condition(o, 'Ready')?.reason === 'Unavailable' ? o : undefined;
  }, 20_000, 'Ready says why it is not ready (no kubelet), no longer ApplyFailed', 100);
  assert.notEqual(condition(fixed, 'Scaling')!.status, 'Unknown');
  await waitFor(async () => (await eventsIn(ns)).some((e) => e.reason === 'Reconciled' && e.type === 'Normal'), 10_000, 'a Normal Event Reconciled', 100);
});

test('an invalid Switchboard is rejected by the schema before the operator sees it', async (t) => {
  const ns = await cp.createNamespace(namespaceFor(t.name));
  const bad = async (spec: Record<string, unknown>) => {
    try {
      await cp.apply(switchboard('bad', spec), { namespace: ns });
    } catch (err) {
      return err as KubeApiError;
    }
    assert.fail(`accepted: ${JSON.stringify(spec)}`);
  };
  assert.match((await bad({ redis: { url: redis.url }, gateway: { minReplicas: 5, maxReplicas: 2 } })).message, /minReplicas must be less than or equal/);
  assert.match((await bad({ redis: {} })).message, /exactly one of redis.url and redis.secretRef/);
  assert.match((await bad({ redis: { url: redis.url }, gateway: { service: { type: 'Ingress' } } })).message, /Unsupported value: "Ingress"/);
  assert.match((await bad({ redis: { url: redis.url }, thresholds: { maxErrorRate: 2 } })).message, /maxErrorRate/);
});

test('a FeatureFlag is published to the Switchboard\'s Redis and removed when deleted', async (t) => {
  const ns = await cp.createNamespace(namespaceFor(t.name));
  await cp.apply([
    switchboard('chat', { redis: { url: redis.url } }),
    featureFlag('voice-beta', { flagName: 'voice_beta', enabled: true, rolloutPercent: 25, betaUsers: ['alice'], nonCritical: true }),
  ], { namespace: ns });
  const read = () => redis.cli('hget', 'sb:flags', 'voice_beta');
  const published = await waitFor(() => read() || undefined, 20_000, 'the flag in sb:flags', 100);
  assert.deepEqual(JSON.parse(published), { name: 'voice_beta', enabled: true, rolloutPercent: 25, betaUsers: ['alice'], nonCritical: true, description: '' });
  const ffPath = `/apis/switchboard.dev/v1alpha1/namespaces/${ns}/featureflags/voice-beta`;
  const ff = await waitFor(async () => {
    const o = await getObject<Obj>(cp, ffPath);
    return o?.status?.publishedTo?.length ? o : undefined;
  }, 20_000, 'flag status', 100);
  assert.deepEqual(ff.status, { observedGeneration: 1, effective: true, reason: 'Enabled', message: ff.status.message, publishedTo: ['chat'] });
  assert.deepEqual(ff.metadata.finalizers, ['switchboard.dev/unpublish']);

  await cp.client.request('PATCH', ffPath, { body: { spec: { enabled: false } }, contentType: 'application/merge-patch+json' });
  await waitFor(() => JSON.parse(read()).enabled === false, 20_000, 'disabled in Redis', 100);

  await cp.client.request('DELETE', ffPath);
  await waitFor(() => read() === '', 20_000, 'the flag removed from sb:flags', 100);
  await waitFor(async () => (await getObject(cp, ffPath)) === undefined, 20_000, 'the FeatureFlag gone after its finalizer', 100);

  // The Switchboard deleted: the operator closes its connection to that Redis (it used to keep
  // one per URL for as long as it ran, reconnecting with the old credentials).
  const operatorClients = () => redis.cli('client', 'list').split('\n').filter((l) => /\bname=switchboard-operator\b/.test(l)).length;
  assert.equal(operatorClients(), 1, 'the operator publishes through one connection');
  await cp.client.request('DELETE', `/apis/switchboard.dev/v1alpha1/namespaces/${ns}/switchboards/chat`);
  await waitFor(() => operatorClients() === 0, 20_000, 'the operator\'s Redis connection closed', 100);
});

test('the operator\'s ServiceAccount is granted exactly what it uses', async () => {
  // A kubeconfig holding only the token: kubectl would otherwise present the admin certificate.
  const kubeconfig = await cp.writeKubeconfig('can-i', { token: await cp.mintServiceAccountToken(OPERATOR_NS, OPERATOR_SA) });
  const can = async (...args: string[]) => {
    try {
      return (await cp.kubectl(['auth', 'can-i', ...args], kubeconfig)).stdout.trim();
    } catch (err) {
      // `can-i` exits 1 when the answer is no; its stdout says so.
      const out = ((err as Error).cause as { stdout?: string } | undefined)?.stdout?.trim();
      return out ?? String(err);
    }
  };
  const allowed: string[][] = [
    ['watch', 'switchboards.switchboard.dev', '-A'],
    ['patch', 'featureflags.switchboard.dev', '-n', 'default'],
    ['patch', 'switchboards.switchboard.dev', '--subresource=status', '-n', 'default'],
    ['create', 'deployments.apps', '-n', 'default'],
    ['patch', 'services', '-n', 'default'],
    ['create', 'events', '-n', 'default'],
    ['update', 'leases.coordination.k8s.io/switchboard-operator', '-n', OPERATOR_NS],
    ['delete', 'leases.coordination.k8s.io/switchboard-operator', '-n', OPERATOR_NS],
    ['create', 'leases.coordination.k8s.io', '-n', OPERATOR_NS],
    ['get', 'deployments.apps/switchboard-operator', '-n', OPERATOR_NS],
  ];
  const denied: string[][] = [
    ['delete', 'deployments.apps', '-n', 'default'],
    // Secrets only where a Role grants them (the chart's operator.secretNamespaces; the example
    // overlay's namespace), never cluster-wide; and no verb the operator does not call.
    ['get', 'secrets', '-n', 'default'],
    ['list', 'secrets', '-n', 'default'],
    ['get', 'switchboards.switchboard.dev', '-n', 'default'],
    ['update', 'switchboards.switchboard.dev', '--subresource=status', '-n', 'default'],
    ['patch', 'events', '-n', 'default'],
    ['create', 'pods', '-n', 'default'],
    ['patch', 'switchboards.switchboard.dev', '-n', 'default'],
    ['update', 'leases.coordination.k8s.io', '-n', 'default'],
    ['update', 'leases.coordination.k8s.io/another-lease', '-n', OPERATOR_NS],
    ['delete', 'leases.coordination.k8s.io/another-lease', '-n', OPERATOR_NS],
    ['create', 'clusterroles.rbac.authorization.k8s.io'],
  ];
  for (const a of allowed) assert.equal(await can(...a), 'yes', `allowed: ${a.join(' ')}`);
  for (const d of denied) assert.equal(await can(...d), 'no', `denied: ${d.join(' ')}`);
});
