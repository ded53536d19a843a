// The Helm chart (charts/switchboard): `helm lint` and `helm template` with the default values
// and other value sets, checked object by object against docs/operator.md and the CRDs, and
// validated by a real kube-apiserver (server-side dry run); bad values rejected with messages
// that say what to change; and a real `helm install` whose operator ServiceAccount has exactly
// the permissions docs/operator.md lists.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { parse } from 'yaml';
import { namespaceFor, projectCrdsYaml, repoRoot, startControlPlane, type ControlPlane, type KubeObject } from './harness';
import {
  CHART_DIR, checkOperatorPermissions, find, flattenRules, kinds, rbacContract, renderChart, writeValues, type PolicyRule,
} from './chart-support';

type Labels = Record<string, string>;
interface EnvVar { name: string; value?: string; valueFrom?: unknown }
interface Container {
  name: string;
  image: string;
  imagePullPolicy?: string;
  args?: string[];
  env?: EnvVar[];
  ports?: { name: string; containerPort: number }[];
  livenessProbe?: { httpGet?: { path: string; port: string | number } };
  readinessProbe?: { httpGet?: { path: string; port: string | number } };
  resources?: unknown;
  securityContext?: Record<string, unknown>;
}
interface PodSpec {
  serviceAccountName?: string;
  automountServiceAccountToken?: boolean;
  securityContext?: Record<string, unknown>;
  containers: Container[];
}
interface Deployment extends KubeObject {
  spec: { replicas: number; selector: { matchLabels: Labels }; template: { metadata: { labels: Labels }; spec: PodSpec } };
}
interface Role extends KubeObject { rules: PolicyRule[] }
interface Binding extends KubeObject {
  roleRef: { kind: string; name: string };
  subjects: { kind: string; name: string; namespace: string }[];
}
interface Service extends KubeObject { spec: { selector: Labels; ports: { name: string; port: number; targetPort: string | number }[] } }
type Spec = Record<string, unknown>;
interface Switchboard extends KubeObject { spec: Spec }

const GATEWAY_SELECTOR = (sb: string): Labels => ({
  'app.kubernetes.io/name': 'switchboard', 'app.kubernetes.io/instance': sb, 'app.kubernetes.io/component': 'gateway',
});

/** AUTH_SECRET from a Secret: what an exposed (NodePort, LoadBalancer) gateway needs. */
const AUTH_SECRET_ENV = [{ name: 'AUTH_SECRET', valueFrom: { secretKeyRef: { name: 'switchboard-auth', key: 'secret' } } }];

/** Value sets every structural test renders; a function of the release namespace. */
const VALUE_SETS: Record<string, (ns: string) => Record<string, unknown>> = {
  default: () => ({}),
  nodePort: () => ({ switchboard: { gateway: { service: { type: 'NodePort', nodePort: 30400 } }, env: AUTH_SECRET_ENV } }),
  loadBalancer: () => ({
    switchboard: {
      gateway: { service: { type: 'LoadBalancer', annotations: { 'service.beta.kubernetes.io/aws-load-balancer-type': 'nlb' } } },
      env: AUTH_SECRET_ENV,
    },
  }),
  existingSecret: () => ({ redis: { embedded: { enabled: false }, existingSecret: { name: 'redis', key: 'redis-url' } } }),
  externalUrl: () => ({ redis: { embedded: { enabled: false }, url: 'rediss://redis.example.com:6380/0' } }),
  watchNamespace: (ns) => ({ operator: { watchNamespace: ns } }),
  monitoringAndNetworkPolicy: () => ({
    monitoring: {
      serviceMonitor: { enabled: true, labels: { release: 'kube-prometheus-stack' } },
      prometheusRule: { enabled: true, labels: { release: 'kube-prometheus-stack' } },
      dashboards: { enabled: true, annotations: { grafana_folder: 'Switchboard' } },
    },
    networkPolicy: { enabled: true },
  }),
  fullSpec: () => ({
    switchboard: {
      name: 'chat',
      image: 'registry.example.com/switchboard:dev',
      imagePullPolicy: 'Always',
      gateway: { minReplicas: 2, maxReplicas: 20, port: 5000, service: { type: 'ClusterIP' }, resources: { requests: { cpu: '1' } } },
      broadcast: { minReplicas: 2, maxReplicas: 8, shards: 32 },
      prometheus: { url: 'http://prometheus-operated.monitoring.svc:9090', interval: '30s' },
      thresholds: { p99LatencyMs: 25.5, memoryMiB: 768, minThroughput: 100, maxErrorRate: 0.05, holdSeconds: 120 },
      scaling: {
        targetMessagesPerPod: 8000, targetConnectionsPerPod: 1000, scaleUpStabilizationSeconds: 30,
        scaleDownStabilizationSeconds: 600, maxStep: 2, tolerance: 0.2,
      },
      config: { LOG_LEVEL: 'debug', HISTORY_SIZE: 500, REDIS_CLUSTER: false },
      env: [{ name: 'AUTH_SECRET', valueFrom: { secretKeyRef: { name: 'chat', key: 'auth-secret' } } }],
    },
  }),
};

let cp: ControlPlane;
before(async () => {
  cp = await startControlPlane();
});
after(() => cp?.stop());

let crdsApplied: Promise<unknown> | undefined;
function ensureCrds(): Promise<unknown> {
  crdsApplied ??= cp.apply(projectCrdsYaml());
  return crdsApplied;
}

/**
 * Server-side dry run of rendered objects: the real API server checks them (built-in schemas,
 * the CRD's OpenAPI and CEL rules, admission) and stores nothing. Prometheus Operator kinds are
 * left out: this API server does not serve them.
 */
async function assertServerAccepts(objects: readonly KubeObject[], ns: string): Promise<void> {
  await ensureCrds();
  const served = objects.filter((o) => !o.apiVersion.startsWith('monitoring.coreos.com/'));
  // JSON, not YAML: kubectl reads YAML 1.1, where a plain `no` (redis's --appendonly no) is false.
  const file = path.join(cp.dir, `dry-run-${ns}-${Math.random().toString(36).slice(2)}.json`);
  await writeFile(file, JSON.stringify({ apiVersion: 'v1', kind: 'List', items: served }));
  await cp.kubectl(['apply', '--dry-run=server', '--server-side', '--force-conflicts', '--field-manager=chart-test', '-n', ns, '-f', file]);
}

async function render(t: { name: string }, values: Record<string, unknown>, release = 'sb'): Promise<{ ns: string; objects: KubeObject[] }> {
  const ns = await cp.createNamespace(namespaceFor(t.name));
  const { objects } = await renderChart(cp, { namespace: ns, values, release });
  return { ns, objects };
}

function deepMerge(base: Spec, over: Spec): Spec {
  const out: Spec = { ...base };
  for (const [k, v] of Object.entries(over)) {
    const b = out[k];
    const isMap = (x: unknown): x is Spec => typeof x === 'object' && x !== null && !Array.isArray(x);
    out[k] = isMap(b) && isMap(v) ? deepMerge(b, v) : v;
  }
  return out;
}

interface LabelSelector {
  matchLabels?: Labels;
  matchExpressions?: { key: string; operator: string; values?: string[] }[];
}
interface NetworkPolicy extends KubeObject {
  spec: {
    podSelector: LabelSelector;
    policyTypes: string[];
    ingress: { ports: { port: number; protocol: string }[]; from?: { podSelector?: LabelSelector; namespaceSelector?: LabelSelector }[] }[];
  };
}

/** Whether a label selector (matchLabels, and In / NotIn / Exists expressions) selects labels. */
function selects(sel: LabelSelector, labels: Labels): boolean {
  return Object.entries(sel.matchLabels ?? {}).every(([k, v]) => labels[k] === v) &&
    (sel.matchExpressions ?? []).every((e) => {
      if (e.operator === 'In') return e.values!.includes(labels[e.key]);
      if (e.operator === 'NotIn') return !e.values!.includes(labels[e.key]);
      if (e.operator === 'Exists') return e.key in labels;
      throw new Error(`selector operator ${e.operator}`);
    });
}

function env(c: Container): Record<string, EnvVar> {
  return Object.fromEntries((c.env ?? []).map((e) => [e.name, e]));
}

test('helm install: CRDs Established, operator, RBAC and Switchboard created; the ServiceAccount may do exactly its job', async (t) => {
  const ns = await cp.createNamespace(namespaceFor(t.name));
  t.after(() => cp.helm(['uninstall', 'sb', '--namespace', ns]).catch(() => undefined));
  const install = await cp.helm(['install', 'sb', CHART_DIR, '--namespace', ns]);

  for (const name of ['switchboards.switchboard.dev', 'featureflags.switchboard.dev']) {
    const crd = await cp.client.get<{ status: { conditions: { type: string; status: string }[] } }>(
      `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${name}`);
    assert.equal(crd.status.conditions.find((c) => c.type === 'Established')?.status, 'True', name);
  }
  const deploy = await cp.client.get<Deployment>(`/apis/apps/v1/namespaces/${ns}/deployments/switchboard-operator`);
  assert.equal(deploy.spec.replicas, 2);
  assert.equal(deploy.spec.template.spec.serviceAccountName, 'switchboard-operator');
  await cp.client.get(`/api/v1/namespaces/${ns}/serviceaccounts/switchboard-operator`);
  await cp.client.get(`/api/v1/namespaces/${ns}/services/switchboard-operator-metrics`);
  const clusterRole = await cp.client.get<Role>('/apis/rbac.authorization.k8s.io/v1/clusterroles/switchboard-operator');
  assert.deepEqual(flattenRules(clusterRole.rules), flattenRules(rbacContract().operator));
  const binding = await cp.client.get<Binding>('/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/switchboard-operator');
  assert.deepEqual(binding.subjects, [{ kind: 'ServiceAccount', name: 'switchboard-operator', namespace: ns }]);
  await cp.client.get(`/apis/rbac.authorization.k8s.io/v1/namespaces/${ns}/roles/switchboard-operator-leader`);
  await cp.client.get(`/apis/rbac.authorization.k8s.io/v1/namespaces/${ns}/rolebindings/switchboard-operator-leader`);
  const secretsRole = await cp.client.get<Role>(`/apis/rbac.authorization.k8s.io/v1/namespaces/${ns}/roles/switchboard-operator-secrets`);
  assert.deepEqual(flattenRules(secretsRole.rules), flattenRules(rbacContract().secrets));
  await cp.client.get(`/apis/apps/v1/namespaces/${ns}/deployments/sb-switchboard-redis`);
  await cp.client.get(`/apis/policy/v1/namespaces/${ns}/poddisruptionbudgets/sb-switchboard-gateway`);

  // Stored as the API server defaulted it: the chart's values plus the CRD defaults.
  const sb = await cp.client.get<Switchboard>(`/apis/switchboard.dev/v1alpha1/namespaces/${ns}/switchboards/sb-switchboard`);
  assert.deepEqual(sb.spec.redis, { url: `redis://sb-switchboard-redis.${ns}.svc:6379` });
  assert.equal(sb.spec.image, 'ghcr.io/switchboard-dev/switchboard:0.1.0');
  assert.equal((sb.spec.thresholds as Spec).p99LatencyMs, 50);
  assert.equal((sb.spec.scaling as Spec).scaleDownStabilizationSeconds, 300);

  // NOTES.txt: the first commands to try.
  assert.match(install.stdout, new RegExp(`kubectl -n ${ns} get switchboards`));
  assert.match(install.stdout, new RegExp(`kubectl -n ${ns} port-forward service/sb-switchboard-gateway 4000:4000`));
  assert.match(install.stdout, /nc 127\.0\.0\.1 4000\n\s+\{"type":"hello","user":"ada"\}/);
  assert.match(install.stdout, /service\/sb-switchboard-metrics 4001:4001/);
  assert.match(install.stdout, /service\/switchboard-operator-metrics 8081:8081/);

  // The operator's own identity, from a TokenRequest, against the real RBAC authorizer.
  const other = await cp.createNamespace(namespaceFor(`${t.name} elsewhere`));
  const token = await cp.mintServiceAccountToken(ns, 'switchboard-operator');
  await checkOperatorPermissions(cp.clientFor({ token }), {
    workNamespaces: [ns, other], foreignNamespaces: [], secretNamespaces: [ns], ownNamespace: ns, clusterWide: true,
  });
  // The same through kubectl, as an operator's author would check it.
  const kubeconfig = await cp.writeKubeconfig(`operator-${ns}`, { token });
  const yes = await cp.kubectl(['auth', 'can-i', 'patch', 'deployments.apps', '--namespace', other], kubeconfig);
  assert.equal(yes.stdout.trim(), 'yes');
  await assert.rejects(cp.kubectl(['auth', 'can-i', 'delete', 'deployments.apps', '--namespace', other], kubeconfig), /no/);
  // Secrets: its own namespace's only, never another's.
  assert.equal((await cp.kubectl(['auth', 'can-i', 'get', 'secrets', '--namespace', ns], kubeconfig)).stdout.trim(), 'yes');
  await assert.rejects(cp.kubectl(['auth', 'can-i', 'get', 'secrets', '--namespace', other], kubeconfig), /no/);

  await cp.helm(['uninstall', 'sb', '--namespace', ns]);
  const gone = await cp.client.request('GET', '/apis/rbac.authorization.k8s.io/v1/clusterroles/switchboard-operator');
  assert.equal(gone.status, 404, 'uninstall removes the ClusterRole');
  const kept = await cp.client.request('GET', '/apis/apiextensions.k8s.io/v1/customresourcedefinitions/switchboards.switchboard.dev');
  assert.equal(kept.status, 200, 'Helm keeps CRDs on uninstall (their resources would go with them)');
});

test('helm install with operator.watchNamespace: the operator may act in that namespace only', async (t) => {
  const ns = await cp.createNamespace(namespaceFor(t.name));
  const watched = await cp.createNamespace(namespaceFor(`${t.name} watched`));
  const other = await cp.createNamespace(namespaceFor(`${t.name} other`));
  t.after(() => cp.helm(['uninstall', 'ops', '--namespace', ns]).catch(() => undefined));
  await cp.helm(['install', 'ops', CHART_DIR, '--namespace', ns,
    '--set', `operator.watchNamespace=${watched}`, '--set', 'switchboard.enabled=false']);

  const role = await cp.client.get<Role>(`/apis/rbac.authorization.k8s.io/v1/namespaces/${watched}/roles/switchboard-operator`);
  assert.deepEqual(flattenRules(role.rules), flattenRules(rbacContract().operator));
  const deploy = await cp.client.get<Deployment>(`/apis/apps/v1/namespaces/${ns}/deployments/switchboard-operator`);
  assert.equal(env(deploy.spec.template.spec.containers[0]).WATCH_NAMESPACE?.value, watched);
  const sbs = await cp.client.get<{ items: unknown[] }>(`/apis/switchboard.dev/v1alpha1/namespaces/${ns}/switchboards`);
  assert.deepEqual(sbs.items, [], 'switchboard.enabled=false creates no Switchboard');

  const token = await cp.mintServiceAccountToken(ns, 'switchboard-operator');
  await checkOperatorPermissions(cp.clientFor({ token }), {
    workNamespaces: [watched], foreignNamespaces: [ns, other], secretNamespaces: [watched], ownNamespace: ns, clusterWide: false,
  });
});

test('helm lint passes with the default values and every value set', async (t) => {
  const ns = namespaceFor(t.name);
  for (const [name, values] of Object.entries(VALUE_SETS)) {
    const file = await writeValues(cp, values(ns));
    const { stdout } = await cp.helm(['lint', '--strict', CHART_DIR, '--namespace', ns, '--values', file]);
    assert.match(stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/, name);
  }
});

test('every value set renders objects the API server accepts', async (t) => {
  for (const [name, values] of Object.entries(VALUE_SETS)) {
    const ns = await cp.createNamespace(namespaceFor(`${t.name} ${name}`));
    const { objects } = await renderChart(cp, { namespace: ns, values: values(ns) });
    await assert.doesNotReject(assertServerAccepts(objects, ns), name);
  }
});

test('default values: the operator Deployment (image, args, env, probes, pod security) and metrics Service', async (t) => {
  const { ns, objects } = await render(t, {});
  const deploy = find<Deployment>(objects, 'Deployment', 'switchboard-operator');
  assert.equal(deploy.metadata.namespace, ns);
  assert.equal(deploy.spec.replicas, 2);
  const pod = deploy.spec.template.spec;
  assert.equal(pod.serviceAccountName, 'switchboard-operator');
  assert.equal(pod.automountServiceAccountToken, true);
  assert.deepEqual(pod.securityContext, {
    runAsNonRoot: true, runAsUser: 10001, runAsGroup: 10001, fsGroup: 10001, seccompProfile: { type: 'RuntimeDefault' },
  });
  const [c] = pod.containers;
  assert.equal(pod.containers.length, 1);
  assert.equal(c.image, 'ghcr.io/switchboard-dev/switchboard:0.1.0');
  assert.deepEqual(c.args, ['operator']);
  assert.deepEqual(c.securityContext, {
    allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, runAsNonRoot: true, capabilities: { drop: ['ALL'] },
  });
  const e = env(c);
  assert.deepEqual(e.POD_NAMESPACE.valueFrom, { fieldRef: { fieldPath: 'metadata.namespace' } });
  assert.deepEqual(e.POD_NAME.valueFrom, { fieldRef: { fieldPath: 'metadata.name' } });
  assert.equal(e.OPERATOR_ADMIN_PORT.value, '8081');
  assert.equal(e.LEADER_ELECTION.value, 'true');
  assert.equal(e.LEASE_NAME.value, 'switchboard-operator');
  assert.equal(e.WATCH_NAMESPACE, undefined);
  assert.deepEqual(c.ports, [{ name: 'admin', containerPort: 8081, protocol: 'TCP' }]);
  assert.deepEqual(c.livenessProbe?.httpGet, { path: '/healthz', port: 'admin' });
  assert.deepEqual(c.readinessProbe?.httpGet, { path: '/readyz', port: 'admin' });
  assert.ok(c.resources, 'resources are set');

  const sa = find(objects, 'ServiceAccount', 'switchboard-operator');
  assert.equal(sa.automountServiceAccountToken, true);
  const svc = find<Service>(objects, 'Service', 'switchboard-operator-metrics');
  assert.deepEqual(svc.spec.ports.map((p) => [p.name, p.port, p.targetPort]), [['admin', 8081, 'admin']]);
  assert.deepEqual(svc.spec.selector, deploy.spec.selector.matchLabels);
  for (const [k, v] of Object.entries(deploy.spec.selector.matchLabels)) assert.equal(deploy.spec.template.metadata.labels[k], v);

  // Off by default (but for the embedded Redis's NetworkPolicy, which is always there).
  assert.deepEqual(kinds(objects.filter((o) => o.kind === 'NetworkPolicy')), ['NetworkPolicy/sb-switchboard-redis']);
  for (const kind of ['ServiceMonitor', 'PrometheusRule', 'ConfigMap']) {
    assert.equal(objects.filter((o) => o.kind === kind).length, 0, `${kind} is off by default`);
  }
});

test('default values: RBAC is exactly the tables of docs/operator.md', async (t) => {
  const { ns, objects } = await render(t, {});
  const contract = rbacContract();
  const role = find<Role>(objects, 'ClusterRole', 'switchboard-operator');
  assert.deepEqual(flattenRules(role.rules), flattenRules(contract.operator));
  const binding = find<Binding>(objects, 'ClusterRoleBinding', 'switchboard-operator');
  assert.deepEqual(binding.roleRef, { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'switchboard-operator' });
  assert.deepEqual(binding.subjects, [{ kind: 'ServiceAccount', name: 'switchboard-operator', namespace: ns }]);
  const leader = find<Role>(objects, 'Role', 'switchboard-operator-leader');
  assert.equal(leader.metadata.namespace, ns);
  assert.deepEqual(flattenRules(leader.rules), flattenRules(contract.leader));
  const leaderBinding = find<Binding>(objects, 'RoleBinding', 'switchboard-operator-leader');
  assert.deepEqual(leaderBinding.subjects, [{ kind: 'ServiceAccount', name: 'switchboard-operator', namespace: ns }]);
  const secrets = find<Role>(objects, 'Role', 'switchboard-operator-secrets');
  assert.equal(secrets.metadata.namespace, ns);
  assert.deepEqual(flattenRules(secrets.rules), flattenRules(contract.secrets));
  const secretsBinding = find<Binding>(objects, 'RoleBinding', 'switchboard-operator-secrets');
  assert.deepEqual(secretsBinding.roleRef, { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'switchboard-operator-secrets' });
  assert.deepEqual(secretsBinding.subjects, [{ kind: 'ServiceAccount', name: 'switchboard-operator', namespace: ns }]);
  assert.deepEqual(kinds(objects).filter((k) => /Role/.test(k)), [
    'ClusterRole/switchboard-operator', 'ClusterRoleBinding/switchboard-operator',
    'Role/switchboard-operator-leader', 'Role/switchboard-operator-secrets',
    'RoleBinding/switchboard-operator-leader', 'RoleBinding/switchboard-operator-secrets',
  ]);
});

test('the operator reads Secrets only in operator.secretNamespaces, never through its ClusterRole', async (t) => {
  const secretRules = (o: KubeObject): string[] => flattenRules((o as Role).rules).filter((r) => r.startsWith('core secrets '));
  const { ns, objects } = await render(t, {});
  assert.deepEqual(secretRules(find(objects, 'ClusterRole', 'switchboard-operator')), [], 'no Secrets in the ClusterRole');
  const secretRoles = (objs: KubeObject[]): string[] => objs.filter((o) => o.kind === 'Role' && secretRules(o).length > 0)
    .map((o) => `${o.metadata.namespace}/${o.metadata.name}: ${secretRules(o).join(', ')}`).sort();
  assert.deepEqual(secretRoles(objects), [`${ns}/switchboard-operator-secrets: core secrets get`], 'default: the release namespace');

  const listed = await render(t, { operator: { secretNamespaces: ['chat', 'games'] } });
  assert.deepEqual(secretRoles(listed.objects), ['chat/switchboard-operator-secrets: core secrets get', 'games/switchboard-operator-secrets: core secrets get']);
  for (const b of listed.objects.filter((o) => o.kind === 'RoleBinding' && o.metadata.name === 'switchboard-operator-secrets') as Binding[]) {
    assert.deepEqual(b.subjects, [{ kind: 'ServiceAccount', name: 'switchboard-operator', namespace: listed.ns }], b.metadata.namespace);
  }
  const none = await render(t, { operator: { secretNamespaces: [] } });
  assert.deepEqual(secretRoles(none.objects), [], '[]: no Secrets anywhere');
  assert.equal(none.objects.filter((o) => o.metadata.name === 'switchboard-operator-secrets').length, 0);

  // Watching one namespace: the Switchboards, so the Secrets, are there.
  const { objects: away } = await renderChart(cp, {
    namespace: ns, values: { operator: { watchNamespace: 'chat' }, switchboard: { enabled: false } },
  });
  assert.deepEqual(secretRoles(away), ['chat/switchboard-operator-secrets: core secrets get']);
  assert.deepEqual(secretRules(find(away, 'Role', 'switchboard-operator')), []);
});

test('default values: a Switchboard on the embedded Redis, and a PodDisruptionBudget for its gateways', async (t) => {
  const { ns, objects } = await render(t, {});
  const sb = find<Switchboard>(objects, 'Switchboard', 'sb-switchboard');
  assert.equal(sb.metadata.namespace, ns);
  assert.deepEqual(sb.spec.redis, { url: `redis://sb-switchboard-redis.${ns}.svc:6379` });
  assert.equal(sb.spec.image, 'ghcr.io/switchboard-dev/switchboard:0.1.0');
  assert.equal(sb.spec.prometheus, undefined, 'no prometheus section without prometheus.url');

  const redis = find<Deployment>(objects, 'Deployment', 'sb-switchboard-redis');
  assert.equal(redis.spec.template.spec.containers[0].image, 'redis:7');
  assert.equal(redis.spec.template.spec.securityContext?.runAsNonRoot, true);
  const redisSvc = find<Service>(objects, 'Service', 'sb-switchboard-redis');
  assert.deepEqual(redisSvc.spec.selector, redis.spec.selector.matchLabels);
  assert.deepEqual(redisSvc.spec.ports.map((p) => p.port), [6379]);

  const pdb = find<KubeObject & { spec: Record<string, unknown> }>(objects, 'PodDisruptionBudget', 'sb-switchboard-gateway');
  assert.deepEqual(pdb.spec, { maxUnavailable: 1, selector: { matchLabels: GATEWAY_SELECTOR('sb-switchboard') } });

  const min = await render(t, { podDisruptionBudget: { maxUnavailable: null, minAvailable: '50%' } });
  const minPdb = find<KubeObject & { spec: Record<string, unknown> }>(min.objects, 'PodDisruptionBudget', 'sb-switchboard-gateway');
  assert.equal(minPdb.spec.minAvailable, '50%');
  assert.equal(minPdb.spec.maxUnavailable, undefined);
});

test('the embedded Redis (no password) admits only the Switchboard pods and the operator, whatever networkPolicy.enabled says', async (t) => {
  for (const [what, values] of [['default values', {}], ['networkPolicy.enabled', { networkPolicy: { enabled: true } }]] as const) {
    const { objects } = await render(t, values);
    const policy = find<NetworkPolicy>(objects, 'NetworkPolicy', 'sb-switchboard-redis');
    const redisPod = find<Deployment>(objects, 'Deployment', 'sb-switchboard-redis').spec.template.metadata.labels;
    const operatorPod = find<Deployment>(objects, 'Deployment', 'switchboard-operator').spec.template.metadata.labels;
    assert.ok(selects(policy.spec.podSelector, redisPod), `${what}: the policy selects the Redis pod`);
    assert.deepEqual(policy.spec.policyTypes, ['Ingress']);
    assert.equal(policy.spec.ingress.length, 1, what);
    const [rule] = policy.spec.ingress;
    assert.deepEqual(rule.ports, [{ port: 6379, protocol: 'TCP' }]);
    assert.ok(rule.from && rule.from.length > 0, `${what}: a from list (none would admit everyone)`);
    assert.ok(rule.from.every((p) => p.podSelector && !p.namespaceSelector), `${what}: pods of the release namespace only`);
    const admitted = (labels: Labels): boolean => rule.from!.some((p) => selects(p.podSelector!, labels));
    // The labels the operator gives the Switchboard's pods (docs/operator.md).
    const sbPod = (component: string): Labels => ({
      'app.kubernetes.io/name': 'switchboard', 'app.kubernetes.io/instance': 'sb-switchboard',
      'app.kubernetes.io/managed-by': 'switchboard-operator', 'app.kubernetes.io/component': component,
    });
    assert.ok(admitted(sbPod('gateway')), `${what}: gateway pods`);
    assert.ok(admitted(sbPod('broadcast')), `${what}: broadcast pods`);
    assert.ok(admitted(operatorPod), `${what}: the operator`);
    assert.ok(!admitted({ app: 'anything' }), `${what}: another pod`);
    assert.ok(!admitted({ ...sbPod('gateway'), 'app.kubernetes.io/instance': 'another' }), `${what}: another Switchboard's gateway`);
    assert.ok(!admitted(redisPod), `${what}: the Redis pod itself`);
  }
  // The switch still governs the other policies; without the embedded Redis there is none.
  const { objects } = await render(t, VALUE_SETS.externalUrl(''));
  assert.deepEqual(objects.filter((o) => o.kind === 'NetworkPolicy'), []);
});

test('an exposed gateway (NodePort, LoadBalancer) needs AUTH_SECRET, or switchboard.allowUnauthenticated', async (t) => {
  const ns = await cp.createNamespace(namespaceFor(t.name));
  const exposed = (type: string, extra: Record<string, unknown> = {}): Record<string, unknown> =>
    ({ switchboard: { gateway: { service: { type } }, ...extra } });
  const refused = /switchboard\.gateway\.service\.type is (NodePort|LoadBalancer), which exposes the gateway outside the cluster, but no AUTH_SECRET is set[\s\S]*switchboard\.allowUnauthenticated=true/;
  for (const type of ['NodePort', 'LoadBalancer']) {
    await assert.rejects(renderChart(cp, { namespace: ns, values: exposed(type) }), refused, type);
    await assert.rejects(renderChart(cp, { namespace: ns, values: exposed(type, { env: [{ name: 'AUTH_SECRET', value: '' }] }) }), refused,
      `${type}: an empty AUTH_SECRET is none`);
    await assert.rejects(renderChart(cp, { namespace: ns, values: exposed(type, { env: [{ name: 'API_KEY', value: 'k' }] }) }), refused,
      `${type}: another variable`);
    await assert.rejects(renderChart(cp, { namespace: ns, values: exposed(type, { config: { AUTH_SECRET: 's3cret' } }) }),
      /switchboard\.config\.AUTH_SECRET: config goes into a plain-text ConfigMap/, `${type}: AUTH_SECRET in config`);
    for (const [how, extra] of [
      ['AUTH_SECRET from a Secret', { env: AUTH_SECRET_ENV }],
      ['AUTH_SECRET as a value', { env: [{ name: 'AUTH_SECRET', value: 's3cret' }] }],
      ['allowUnauthenticated', { allowUnauthenticated: true }],
    ] as const) {
      const { objects } = await renderChart(cp, { namespace: ns, values: exposed(type, extra) });
      const sb = find<Switchboard>(objects, 'Switchboard', 'sb-switchboard');
      assert.equal((sb.spec.gateway as { service: { type: string } }).service.type, type, `${type}, ${how}`);
      assert.equal(JSON.stringify(sb.spec).includes('allowUnauthenticated'), false, 'a chart value, not a spec field');
    }
  }
  // Inside the cluster only, development mode stays the default.
  await renderChart(cp, { namespace: ns, values: {} });

  // The release notes say so (helm template prints no notes: a client-side dry-run install does).
  const notes = async (values: Record<string, unknown>): Promise<string> =>
    (await cp.helm(['install', 'sb', CHART_DIR, '--namespace', ns, '--dry-run=client', '--values', await writeValues(cp, values)])).stdout;
  assert.match(await notes(exposed('LoadBalancer', { allowUnauthenticated: true })),
    /WARNING: the gateway is reachable from outside the cluster WITHOUT AUTHENTICATION/);
  assert.match(await notes({}), /No AUTH_SECRET: the gateway runs in development mode and trusts hello\.user as given/);
  const authed = await notes(exposed('LoadBalancer', { env: AUTH_SECRET_ENV }));
  assert.doesNotMatch(authed, /AUTHENTICATION|No AUTH_SECRET/);
});

test('the gateway Service type, node port and annotations reach spec.gateway.service', async (t) => {
  const nodePort = await render(t, VALUE_SETS.nodePort(''));
  const np = find<Switchboard>(nodePort.objects, 'Switchboard', 'sb-switchboard');
  assert.deepEqual((np.spec.gateway as Spec).service, { type: 'NodePort', nodePort: 30400, annotations: {} });

  const lb = await render(t, VALUE_SETS.loadBalancer(''));
  const spec = find<Switchboard>(lb.objects, 'Switchboard', 'sb-switchboard').spec;
  assert.deepEqual((spec.gateway as Spec).service, {
    type: 'LoadBalancer', annotations: { 'service.beta.kubernetes.io/aws-load-balancer-type': 'nlb' },
  });
  // The operator owns the gateway Service: the chart renders none.
  assert.equal(lb.objects.filter((o) => o.kind === 'Service' && o.metadata.name === 'sb-switchboard-gateway').length, 0);
});

test('Redis from an existing Secret or an external URL: spec.redis, and no embedded Redis', async (t) => {
  const secret = await render(t, VALUE_SETS.existingSecret(''));
  assert.deepEqual(find<Switchboard>(secret.objects, 'Switchboard', 'sb-switchboard').spec.redis,
    { secretRef: { name: 'redis', key: 'redis-url' } });
  assert.equal(secret.objects.filter((o) => o.metadata.name === 'sb-switchboard-redis').length, 0);

  const url = await render(t, VALUE_SETS.externalUrl(''));
  assert.deepEqual(find<Switchboard>(url.objects, 'Switchboard', 'sb-switchboard').spec.redis,
    { url: 'rediss://redis.example.com:6380/0' });
  assert.equal(url.objects.filter((o) => o.metadata.name === 'sb-switchboard-redis').length, 0);
});

test('operator.watchNamespace: a Role and RoleBinding in that namespace, and WATCH_NAMESPACE', async (t) => {
  const ns = await cp.createNamespace(namespaceFor(t.name));
  const { objects } = await renderChart(cp, { namespace: ns, values: VALUE_SETS.watchNamespace(ns) });
  assert.equal(objects.filter((o) => o.kind.startsWith('Cluster')).length, 0, 'nothing cluster-scoped');
  const role = find<Role>(objects, 'Role', 'switchboard-operator');
  assert.equal(role.metadata.namespace, ns);
  assert.deepEqual(flattenRules(role.rules), flattenRules(rbacContract().operator));
  const binding = find<Binding>(objects, 'RoleBinding', 'switchboard-operator');
  assert.deepEqual(binding.roleRef, { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'switchboard-operator' });
  assert.deepEqual(binding.subjects, [{ kind: 'ServiceAccount', name: 'switchboard-operator', namespace: ns }]);
  find<Role>(objects, 'Role', 'switchboard-operator-leader');
  const c = find<Deployment>(objects, 'Deployment', 'switchboard-operator').spec.template.spec.containers[0];
  assert.equal(env(c).WATCH_NAMESPACE.value, ns);

  // Another namespace, operator only: its Role goes there, the leader Role stays home.
  const { objects: away } = await renderChart(cp, {
    namespace: ns, values: { operator: { watchNamespace: 'chat' }, switchboard: { enabled: false } },
  });
  assert.equal(find<Role>(away, 'Role', 'switchboard-operator').metadata.namespace, 'chat');
  assert.equal(find<Role>(away, 'Role', 'switchboard-operator-leader').metadata.namespace, ns);
  assert.deepEqual(away.filter((o) => o.kind === 'Switchboard' || o.kind === 'PodDisruptionBudget' || o.metadata.name?.endsWith('-redis')), []);
});

test('monitoring: ServiceMonitors with pod and namespace labels, the PrometheusRule, dashboards; NetworkPolicies', async (t) => {
  const { ns, objects } = await render(t, VALUE_SETS.monitoringAndNetworkPolicy(''));
  type Endpoint = { port: string; honorLabels?: boolean; relabelings: { sourceLabels: string[]; targetLabel: string }[] };
  type Monitor = KubeObject & { spec: { selector: { matchLabels: Labels }; namespaceSelector: unknown; endpoints: Endpoint[] } };
  const relabels = (e: Endpoint): Record<string, string[]> => Object.fromEntries(e.relabelings.map((r) => [r.targetLabel, r.sourceLabels]));

  const sm = find<Monitor>(objects, 'ServiceMonitor', 'sb-switchboard');
  assert.equal(sm.metadata.labels && (sm.metadata.labels as Labels).release, 'kube-prometheus-stack');
  assert.deepEqual(sm.spec.selector.matchLabels, {
    'app.kubernetes.io/name': 'switchboard', 'app.kubernetes.io/instance': 'sb-switchboard', 'app.kubernetes.io/managed-by': 'switchboard-operator',
  });
  assert.deepEqual(sm.spec.namespaceSelector, { matchNames: [ns] });
  assert.equal(sm.spec.endpoints[0].port, 'admin');
  assert.deepEqual(relabels(sm.spec.endpoints[0]).pod, ['__meta_kubernetes_pod_name']);
  assert.deepEqual(relabels(sm.spec.endpoints[0]).namespace, ['__meta_kubernetes_namespace']);

  const opSm = find<Monitor>(objects, 'ServiceMonitor', 'switchboard-operator');
  const opSvc = find<Service>(objects, 'Service', 'switchboard-operator-metrics');
  assert.deepEqual(opSm.spec.selector.matchLabels, opSvc.spec.selector);
  for (const [k, v] of Object.entries(opSm.spec.selector.matchLabels)) assert.equal((opSvc.metadata.labels as Labels)[k], v);
  assert.equal(opSm.spec.endpoints[0].port, opSvc.spec.ports[0].name);
  assert.equal(opSm.spec.endpoints[0].honorLabels, true, 'per-Switchboard operator series keep their namespace');
  assert.deepEqual(relabels(opSm.spec.endpoints[0]).pod, ['__meta_kubernetes_pod_name']);

  const rule = find<KubeObject & { spec: unknown }>(objects, 'PrometheusRule', 'sb-switchboard');
  const file = parse(readFileSync(path.join(CHART_DIR, 'rules', 'switchboard-alerts.yaml'), 'utf8')) as { groups: unknown[] };
  assert.ok(file.groups.length > 0);
  assert.deepEqual(rule.spec, file, 'the PrometheusRule holds the rules file as it is');

  const dashboards = readdirSync(path.join(CHART_DIR, 'dashboards')).filter((f) => f.endsWith('.json')).sort();
  assert.ok(dashboards.length > 0);
  const maps = objects.filter((o) => o.kind === 'ConfigMap') as (KubeObject & { data: Record<string, string> })[];
  assert.deepEqual(maps.map((m) => Object.keys(m.data)).flat().sort(), dashboards);
  for (const m of maps) {
    assert.equal((m.metadata.labels as Labels).grafana_dashboard, '1');
    assert.deepEqual(m.metadata.annotations, { grafana_folder: 'Switchboard' });
    const [key] = Object.keys(m.data);
    const text = readFileSync(path.join(CHART_DIR, 'dashboards', key), 'utf8');
    assert.deepEqual(JSON.parse(m.data[key]), JSON.parse(text), `${key} is copied as it is`);
  }
  const relabelled = await render(t, { monitoring: { dashboards: { enabled: true, label: 'dashboards', labelValue: 'switchboard' } } });
  for (const m of relabelled.objects.filter((o) => o.kind === 'ConfigMap')) {
    assert.equal((m.metadata.labels as Labels).dashboards, 'switchboard');
    assert.equal((m.metadata.labels as Labels).grafana_dashboard, undefined);
  }

  type Policy = KubeObject & { spec: { podSelector: { matchLabels: Labels }; ingress: { ports: { port: number }[]; from?: unknown[] }[] } };
  const gw = find<Policy>(objects, 'NetworkPolicy', 'sb-switchboard-gateway');
  assert.deepEqual(gw.spec.podSelector.matchLabels, GATEWAY_SELECTOR('sb-switchboard'));
  const byPort = Object.fromEntries(gw.spec.ingress.map((r) => [r.ports[0].port, r.from]));
  assert.equal(byPort[4000], undefined, 'clients reach the client port from anywhere by default');
  assert.deepEqual(byPort[4001], [{ namespaceSelector: {}, podSelector: { matchLabels: { 'app.kubernetes.io/name': 'prometheus' } } }]);
  const redis = find<Policy>(objects, 'NetworkPolicy', 'sb-switchboard-redis');
  assert.equal(redis.spec.ingress[0].ports[0].port, 6379);
  assert.equal(redis.spec.ingress[0].from?.length, 2, 'the Switchboard pods and the operator');
  find<Policy>(objects, 'NetworkPolicy', 'sb-switchboard-broadcast');
  find<Policy>(objects, 'NetworkPolicy', 'switchboard-operator');
});

test('values.switchboard.* are the CRD spec fields, with the CRD bounds, and render into spec as given', async (t) => {
  type Schema = { type?: string | string[]; properties?: Record<string, Schema>; [k: string]: unknown };
  const valuesSchema = JSON.parse(readFileSync(path.join(CHART_DIR, 'values.schema.json'), 'utf8')) as Schema;
  const crd = parse(readFileSync(path.join(repoRoot(), 'k8s', 'crds', 'switchboard.dev_switchboards.yaml'), 'utf8')) as {
    spec: { versions: { schema: { openAPIV3Schema: Schema } }[] };
  };
  const crdSpec = crd.spec.versions[0].schema.openAPIV3Schema.properties!.spec;
  const chartOnly = new Set(['enabled', 'name', 'allowUnauthenticated']);
  const mismatches: string[] = [];
  const compare = (values: Schema, crdNode: Schema | undefined, at: string): void => {
    if (!crdNode) return void mismatches.push(`${at}: not a field of the Switchboard spec`);
    for (const key of ['minimum', 'maximum', 'enum', 'pattern', 'maxLength', 'maxProperties'] as const) {
      const exclusive = key === 'minimum' && crdNode.exclusiveMinimum === true;
      if (crdNode[key] !== undefined && !exclusive && at !== 'config' && !(key === 'pattern' && at.endsWith('url'))) {
        if (JSON.stringify(values[key]) !== JSON.stringify(crdNode[key])) {
          mismatches.push(`${at}.${key}: chart ${JSON.stringify(values[key])}, CRD ${JSON.stringify(crdNode[key])}`);
        }
      }
    }
    if (crdNode.exclusiveMinimum === true && values.exclusiveMinimum !== crdNode.minimum) {
      mismatches.push(`${at}: the CRD's minimum is exclusive`);
    }
    if (values.type === 'object' && crdNode.type === 'object' && values.properties && !crdNode['x-kubernetes-preserve-unknown-fields']) {
      for (const [k, v] of Object.entries(values.properties)) compare(v, crdNode.properties?.[k], `${at}.${k}`);
    }
  };
  for (const [k, v] of Object.entries(valuesSchema.properties!.switchboard.properties!)) {
    if (!chartOnly.has(k)) compare(v, crdSpec.properties![k], k);
  }
  assert.deepEqual(mismatches, []);

  // Helm merges the given values into values.yaml's, map by map: so does the expectation.
  const values = VALUE_SETS.fullSpec('');
  const defaults = (parse(readFileSync(path.join(CHART_DIR, 'values.yaml'), 'utf8')) as { switchboard: Spec }).switchboard;
  const merged = deepMerge(defaults, values.switchboard as Spec);
  const { ns, objects } = await render(t, values);
  const sb = find<Switchboard>(objects, 'Switchboard', 'chat');
  assert.deepEqual(sb.spec, {
    image: 'registry.example.com/switchboard:dev',
    imagePullPolicy: 'Always',
    redis: { url: `redis://sb-switchboard-redis.${ns}.svc:6379` },
    gateway: merged.gateway,
    broadcast: merged.broadcast,
    prometheus: merged.prometheus,
    thresholds: merged.thresholds,
    scaling: merged.scaling,
    config: { LOG_LEVEL: 'debug', HISTORY_SIZE: '500', REDIS_CLUSTER: 'false' },
    env: merged.env,
  });
  assert.deepEqual((sb.spec.gateway as Spec).resources, { requests: { cpu: '1', memory: '256Mi' }, limits: { memory: '1Gi' } });
  assert.equal(find<KubeObject & { spec: { selector: { matchLabels: Labels } } }>(objects, 'PodDisruptionBudget', 'chat-gateway')
    .spec.selector.matchLabels['app.kubernetes.io/instance'], 'chat');
});

test('bad values fail helm template with a message that says what to change', async (t) => {
  const ns = namespaceFor(t.name);
  const cases: [string, string[], RegExp][] = [
    ['operator.replicas below 1', ['--set', 'operator.replicas=0'], /at '\/operator\/replicas': minimum: got 0, want 1/],
    ['a service type that does not exist', ['--set', 'switchboard.gateway.service.type=Ingress'],
      /at '\/switchboard\/gateway\/service\/type': value must be one of 'ClusterIP', 'NodePort', 'LoadBalancer'/],
    ['a misspelt key', ['--set', 'switchboard.gateway.replicas=3'], /at '\/switchboard\/gateway': additional properties 'replicas' not allowed/],
    ['a Redis URL of another scheme', ['--set', 'redis.url=http://redis:6379'], /at '\/redis\/url'/],
    ['no Redis at all', ['--set', 'redis.embedded.enabled=false'],
      /the Switchboard needs a Redis: set exactly one of redis\.url, redis\.existingSecret\.name and redis\.embedded\.enabled \(none is set\)/],
    ['two Redis sources', ['--set', 'redis.url=redis://r:6379'],
      /set exactly one of .*\(redis\.url, redis\.embedded\.enabled are set\).*--set redis\.embedded\.enabled=false/],
    ['a secret and a URL', ['--set', 'redis.embedded.enabled=false', '--set', 'redis.url=redis://r:6379', '--set', 'redis.existingSecret.name=r'],
      /redis\.url, redis\.existingSecret\.name are set/],
    ['minReplicas above maxReplicas', ['--set', 'switchboard.gateway.minReplicas=5', '--set', 'switchboard.gateway.maxReplicas=2'],
      /switchboard\.gateway\.minReplicas \(5\) must be less than or equal to switchboard\.gateway\.maxReplicas \(2\)/],
    ['more broadcast replicas than shards', ['--set', 'switchboard.broadcast.maxReplicas=20', '--set', 'switchboard.broadcast.shards=8'],
      /switchboard\.broadcast\.maxReplicas \(20\) must not exceed switchboard\.broadcast\.shards \(8\)/],
    ['a node port on a ClusterIP Service', ['--set', 'switchboard.gateway.service.nodePort=30400'],
      /nodePort needs switchboard\.gateway\.service\.type NodePort or LoadBalancer/],
    ['two operators without leader election', ['--set', 'operator.leaderElection=false'],
      /operator\.replicas is 2 but operator\.leaderElection is off/],
    ['a Switchboard the operator would not watch', ['--set', 'operator.watchNamespace=elsewhere'],
      /operator\.watchNamespace is "elsewhere" but the chart's Switchboard goes into the release namespace/],
    ['both PDB settings', ['--set', 'podDisruptionBudget.minAvailable=1'], /set one of maxUnavailable and minAvailable, not both/],
    ['a LoadBalancer gateway without AUTH_SECRET', ['--set', 'switchboard.gateway.service.type=LoadBalancer'],
      /no AUTH_SECRET is set[\s\S]*set switchboard\.allowUnauthenticated=true/],
    ['a secret in config', ['--set', 'switchboard.config.API_KEY=k'],
      /switchboard\.config\.API_KEY: config goes into a plain-text ConfigMap[\s\S]*switchboard\.env with valueFrom\.secretKeyRef/],
    ['a config key in lower case', ['--set', 'switchboard.config.log_level=debug'],
      /invalid propertyName 'log_level'[\s\S]*does not match pattern '\^\[A-Z\]\[A-Z0-9_\]\*\$'/],
  ];
  for (const [what, args, message] of cases) {
    await assert.rejects(cp.helm(['template', 'sb', CHART_DIR, '--namespace', ns, ...args]), message, what);
  }
  // helm install checks the same before it touches the cluster.
  const real = await cp.createNamespace(ns);
  await assert.rejects(cp.helm(['install', 'bad', CHART_DIR, '--namespace', real, '--set', 'redis.embedded.enabled=false']),
    /the Switchboard needs a Redis/);
  const releases = await cp.helm(['list', '--namespace', real, '--all', '--output', 'json']);
  assert.deepEqual(JSON.parse(releases.stdout), []);
});

test('charts/switchboard/README.md documents every value, and only values that exist', () => {
  // Maps users fill in freely are documented as one row.
  const freeForm = new Set(['resources', 'annotations', 'labels', 'podAnnotations', 'podLabels', 'nodeSelector', 'affinity',
    'thresholds', 'scaling', 'config', 'serviceAccount.annotations']);
  const leaves = (node: unknown, at: string[]): string[] => {
    const isMap = typeof node === 'object' && node !== null && !Array.isArray(node);
    if (!isMap || (at.length > 0 && freeForm.has(at[at.length - 1]))) return [at.join('.')];
    return Object.entries(node as Record<string, unknown>).flatMap(([k, v]) => leaves(v, [...at, k]));
  };
  const values = leaves(parse(readFileSync(path.join(CHART_DIR, 'values.yaml'), 'utf8')), []);
  const readme = readFileSync(path.join(CHART_DIR, 'README.md'), 'utf8');
  const documented = [...readme.matchAll(/^\| `([A-Za-z.]+)` \|/gm)].map((m) => m[1]);
  assert.deepEqual(values.filter((k) => !documented.includes(k)), [], 'values.yaml keys missing from the README table');

  type Schema = { properties?: Record<string, Schema> };
  const schema = JSON.parse(readFileSync(path.join(CHART_DIR, 'values.schema.json'), 'utf8')) as Schema;
  const inSchema = (key: string): boolean => {
    let node: Schema | undefined = schema;
    for (const part of key.split('.')) node = node?.properties?.[part];
    return node !== undefined;
  };
  assert.deepEqual(documented.filter((k) => !inSchema(k)), [], 'README rows for keys the schema does not know');
});
