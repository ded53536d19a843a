// The plain manifests (k8s/, kustomize) and their agreement with the Helm chart: one set of CRD
// files, one set of RBAC rules (docs/operator.md's), one operator Deployment. Both kustomizations
// render with kubectl's kustomize and apply to a real kube-apiserver, after which the operator's
// ServiceAccount has exactly the permissions docs/operator.md lists.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { parse } from 'yaml';
import {
  namespaceFor, parseYamlObjects, projectCrdsYaml, repoRoot, startControlPlane, waitFor, type ControlPlane, type KubeObject,
} from './harness';
import { CHART_DIR, canI, checkOperatorPermissions, find, flattenRules, kinds, rbacContract, renderChart, type PolicyRule } from './chart-support';

const K8S = path.join(repoRoot(), 'k8s');
const OPERATOR_NS = 'switchboard-system';

type Labels = Record<string, string>;
interface Role extends KubeObject { rules: PolicyRule[] }
interface Binding extends KubeObject { roleRef: unknown; subjects: unknown[] }
interface Workload extends KubeObject { spec: { replicas?: number; selector: unknown; template: { spec: unknown } } }

let cp: ControlPlane;
before(async () => {
  cp = await startControlPlane();
});
after(() => cp?.stop());

async function kustomize(dir: string): Promise<KubeObject[]> {
  const { stdout } = await cp.kubectl(['kustomize', path.join(K8S, dir)]);
  return parseYamlObjects(stdout);
}

/**
 * Applies a kustomization with kubectl (server-side). On a cluster of SWITCHBOARD_K8S_KUBECONFIG
 * it only dry-runs: a real cluster may already run the operator in switchboard-system.
 */
async function applyKustomization(dir: string): Promise<void> {
  const dryRun = cp.external ? ['--dry-run=server'] : [];
  await cp.kubectl(['apply', '--server-side', '--field-manager=manifests-test', ...dryRun, '-k', path.join(K8S, dir)]);
}

let baseApplied: Promise<void> | undefined;
function applyBase(): Promise<void> {
  baseApplied ??= (async () => {
    await applyKustomization('base');
    if (cp.external) await cp.apply(projectCrdsYaml()); // the overlay's dry run needs them served
    for (const crd of ['switchboards.switchboard.dev', 'featureflags.switchboard.dev']) await cp.client.waitForEstablished(crd);
  })();
  return baseApplied;
}

function crdFiles(dir: string): string[] {
  return readdirSync(dir).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml').sort();
}

test('the chart\'s crds/ are byte-identical to k8s/crds/, and k8s/crds/kustomization.yaml lists them all', () => {
  const source = crdFiles(path.join(K8S, 'crds'));
  const chart = crdFiles(path.join(CHART_DIR, 'crds'));
  assert.ok(source.length >= 2);
  assert.deepEqual(chart, source, 'the same files (npm run crds:sync copies them)');
  for (const f of source) {
    const a = readFileSync(path.join(K8S, 'crds', f));
    const b = readFileSync(path.join(CHART_DIR, 'crds', f));
    assert.ok(a.equals(b), `charts/switchboard/crds/${f} differs from k8s/crds/${f}: run npm run crds:sync`);
  }
  const kustomization = parse(readFileSync(path.join(K8S, 'crds', 'kustomization.yaml'), 'utf8')) as { resources: string[] };
  assert.deepEqual([...kustomization.resources].sort(), source);
});

test('k8s/rbac has exactly the rules of docs/operator.md, the same as the chart renders', async (t) => {
  const contract = rbacContract();
  const objects = await kustomize('rbac');
  assert.deepEqual(kinds(objects), [
    'ClusterRole/switchboard-operator', 'ClusterRoleBinding/switchboard-operator',
    'Role/switchboard-operator-leader', 'RoleBinding/switchboard-operator-leader', 'ServiceAccount/switchboard-operator',
  ]);
  const clusterRole = find<Role>(objects, 'ClusterRole', 'switchboard-operator');
  const leader = find<Role>(objects, 'Role', 'switchboard-operator-leader');
  assert.deepEqual(flattenRules(clusterRole.rules), flattenRules(contract.operator));
  assert.deepEqual(flattenRules(clusterRole.rules).filter((r) => r.startsWith('core secrets ')), [], 'no Secrets cluster-wide');
  assert.deepEqual(flattenRules(leader.rules), flattenRules(contract.leader));
  assert.equal(leader.metadata.namespace, OPERATOR_NS);
  const subject = [{ kind: 'ServiceAccount', name: 'switchboard-operator', namespace: OPERATOR_NS }];
  assert.deepEqual(find<Binding>(objects, 'ClusterRoleBinding', 'switchboard-operator').subjects, subject);
  assert.deepEqual(find<Binding>(objects, 'RoleBinding', 'switchboard-operator-leader').subjects, subject);

  // The chart, installed as release "switchboard" in switchboard-system, renders the same rules
  // and bindings, in cluster-wide and (as a Role) watch-one-namespace mode.
  const { objects: chart } = await renderChart(cp, { release: 'switchboard', namespace: OPERATOR_NS });
  assert.deepEqual(find<Role>(chart, 'ClusterRole', 'switchboard-operator').rules, clusterRole.rules);
  assert.deepEqual(find<Role>(chart, 'Role', 'switchboard-operator-leader').rules, leader.rules);
  // The Secrets Role is per namespace: the overlay's (k8s/overlays/example) and the chart's agree.
  const overlaySecrets = find<Role>(await kustomize('overlays/example'), 'Role', 'switchboard-operator-secrets');
  assert.deepEqual(flattenRules(overlaySecrets.rules), flattenRules(contract.secrets));
  assert.deepEqual(find<Role>(chart, 'Role', 'switchboard-operator-secrets').rules, overlaySecrets.rules);
  for (const [kind, name] of [['ClusterRoleBinding', 'switchboard-operator'], ['RoleBinding', 'switchboard-operator-leader']]) {
    const ours = find<Binding>(objects, kind, name);
    const theirs = find<Binding>(chart, kind, name);
    assert.deepEqual([theirs.roleRef, theirs.subjects], [ours.roleRef, ours.subjects], `${kind}/${name}`);
  }
  const ns = namespaceFor(t.name);
  const { objects: scoped } = await renderChart(cp, {
    release: 'switchboard', namespace: OPERATOR_NS, values: { operator: { watchNamespace: ns }, switchboard: { enabled: false } },
  });
  assert.deepEqual(find<Role>(scoped, 'Role', 'switchboard-operator').rules, clusterRole.rules);
});

test('k8s/operator is the chart\'s operator with its default values', async () => {
  const objects = await kustomize('operator');
  assert.deepEqual(kinds(objects), [
    'Deployment/switchboard-operator', `Namespace/${OPERATOR_NS}`, 'Service/switchboard-operator-metrics',
  ]);
  const { objects: chart } = await renderChart(cp, { release: 'switchboard', namespace: OPERATOR_NS });
  const ours = find<Workload>(objects, 'Deployment', 'switchboard-operator');
  const theirs = find<Workload>(chart, 'Deployment', 'switchboard-operator');
  assert.equal(ours.metadata.namespace, OPERATOR_NS);
  assert.deepEqual(ours.spec.template.spec, theirs.spec.template.spec, 'pod spec: image, args, env, probes, security, volumes');
  assert.deepEqual([ours.spec.replicas, ours.spec.selector], [theirs.spec.replicas, theirs.spec.selector]);
  const ourSvc = find<KubeObject & { spec: unknown }>(objects, 'Service', 'switchboard-operator-metrics');
  const theirSvc = find<KubeObject & { spec: unknown }>(chart, 'Service', 'switchboard-operator-metrics');
  assert.deepEqual(ourSvc.spec, theirSvc.spec);
});

test('kubectl apply -k k8s/base: CRDs Established, operator created, its ServiceAccount may do exactly its job', async (t) => {
  const objects = await kustomize('base');
  assert.deepEqual(kinds(objects), [
    'ClusterRole/switchboard-operator', 'ClusterRoleBinding/switchboard-operator',
    'CustomResourceDefinition/featureflags.switchboard.dev', 'CustomResourceDefinition/switchboards.switchboard.dev',
    'Deployment/switchboard-operator', `Namespace/${OPERATOR_NS}`,
    'Role/switchboard-operator-leader', 'RoleBinding/switchboard-operator-leader',
    'Service/switchboard-operator-metrics', 'ServiceAccount/switchboard-operator',
  ]);
  await applyBase();
  if (cp.external) return t.skip('dry run only on an existing cluster');

  for (const o of objects) {
    const res = await cp.client.request('GET', await cp.client.resourcePath(o.apiVersion, o.kind, o.metadata.namespace, o.metadata.name));
    assert.equal(res.status, 200, `${o.kind}/${o.metadata.name} exists`);
  }
  const work = await cp.createNamespace(namespaceFor(t.name));
  const token = await cp.mintServiceAccountToken(OPERATOR_NS, 'switchboard-operator');
  await checkOperatorPermissions(cp.clientFor({ token }), {
    workNamespaces: [work, OPERATOR_NS], foreignNamespaces: [], secretNamespaces: [], ownNamespace: OPERATOR_NS, clusterWide: true,
  });
});

test('kubectl apply -k k8s/overlays/example: Switchboard chat, its Redis and a FeatureFlag in namespace chat', async () => {
  const objects = await kustomize('overlays/example');
  assert.deepEqual(kinds(objects), [
    'Deployment/redis', 'FeatureFlag/typing-indicators', 'Namespace/chat', 'NetworkPolicy/redis', 'Role/switchboard-operator-secrets',
    'RoleBinding/switchboard-operator-secrets', 'Service/redis', 'Switchboard/chat',
  ]);
  for (const o of objects) if (o.kind !== 'Namespace') assert.equal(o.metadata.namespace, 'chat', `${o.kind}/${o.metadata.name}`);
  const sb = find<KubeObject & { spec: { redis: { url: string } } }>(objects, 'Switchboard', 'chat');
  const redisSvc = find(objects, 'Service', 'redis');
  assert.equal(sb.spec.redis.url, `redis://${redisSvc.metadata.name}.chat.svc:6379`, 'the Switchboard points at the overlay\'s Redis');

  await applyBase();
  await applyKustomization('overlays/example');
  if (cp.external) return;
  // Stored as the API server defaulted it (CRD defaults fill what the example leaves out).
  const path = await cp.client.resourcePath('switchboard.dev/v1alpha1', 'Switchboard', 'chat', 'chat');
  let stored: { spec: { gateway: { service: { type: string } }; scaling: { maxStep: number }; thresholds: { holdSeconds: number } } } | undefined;
  await waitFor('Switchboard chat', 10_000, async () => {
    const res = await cp.client.request<NonNullable<typeof stored>>('GET', path);
    stored = res.status === 200 ? res.body : undefined;
    return stored !== undefined;
  });
  assert.equal(stored!.spec.gateway.service.type, 'ClusterIP');
  assert.equal(stored!.spec.scaling.maxStep, 4);
  assert.equal(stored!.spec.thresholds.holdSeconds, 60);
  const ff = await cp.client.get<{ spec: { rolloutPercent: number; flagName: string } }>(
    await cp.client.resourcePath('switchboard.dev/v1alpha1', 'FeatureFlag', 'chat', 'typing-indicators'));
  assert.deepEqual([ff.spec.flagName, ff.spec.rolloutPercent], ['typing_indicators', 25]);
  const ns = await cp.client.get<{ metadata: { labels: Record<string, string> } }>('/api/v1/namespaces/chat');
  assert.equal(ns.metadata.labels['pod-security.kubernetes.io/enforce'], 'restricted');

  // The operator may read Secrets in chat (spec.redis.secretRef), and nowhere else.
  const operator = cp.clientFor({ token: await cp.mintServiceAccountToken(OPERATOR_NS, 'switchboard-operator') });
  await waitFor('the operator to read Secrets in chat', 15_000, () => canI(operator, { verb: 'get', group: '', resource: 'secrets', namespace: 'chat' }));
  for (const [verb, namespace] of [['list', 'chat'], ['watch', 'chat'], ['get', OPERATOR_NS], ['get', 'default'], ['get', undefined]] as const) {
    assert.equal(await canI(operator, { verb, group: '', resource: 'secrets', namespace }), false, `${verb} secrets in ${namespace ?? 'the cluster'}`);
  }
});

test('k8s/overlays/example: its Redis (no password) admits only Switchboard chat\'s pods and the operator', async () => {
  type Selector = { matchLabels?: Labels; matchExpressions?: { key: string; operator: string; values: string[] }[] };
  type Peer = { podSelector?: Selector; namespaceSelector?: Selector };
  type Policy = KubeObject & { spec: { podSelector: Selector; policyTypes: string[]; ingress: { ports: { port: number }[]; from?: Peer[] }[] } };
  const selects = (sel: Selector, labels: Labels): boolean =>
    Object.entries(sel.matchLabels ?? {}).every(([k, v]) => labels[k] === v) &&
    (sel.matchExpressions ?? []).every((e) => e.operator === 'In' && e.values.includes(labels[e.key]));
  const objects = await kustomize('overlays/example');
  const policy = find<Policy>(objects, 'NetworkPolicy', 'redis');
  const redis = find<Workload & { spec: { template: { metadata: { labels: Labels } } } }>(objects, 'Deployment', 'redis');
  assert.ok(selects(policy.spec.podSelector, redis.spec.template.metadata.labels), 'selects the Redis pod');
  assert.deepEqual(policy.spec.policyTypes, ['Ingress']);
  assert.equal(policy.spec.ingress.length, 1);
  const [rule] = policy.spec.ingress;
  assert.deepEqual(rule.ports.map((p) => p.port), [6379]);
  assert.ok(rule.from && rule.from.length > 0, 'a from list (none would admit everyone)');
  // A peer without namespaceSelector is the policy's namespace, chat.
  const admitted = (namespace: string, labels: Labels): boolean => rule.from!.some((p) =>
    (p.namespaceSelector ? selects(p.namespaceSelector, { 'kubernetes.io/metadata.name': namespace }) : namespace === 'chat') &&
    (p.podSelector === undefined || selects(p.podSelector, labels)));
  const chatPod = (component: string): Labels => ({
    'app.kubernetes.io/name': 'switchboard', 'app.kubernetes.io/instance': 'chat',
    'app.kubernetes.io/managed-by': 'switchboard-operator', 'app.kubernetes.io/component': component,
  });
  const operator = find<Workload & { spec: { template: { metadata: { labels: Labels } } } }>(await kustomize('operator'), 'Deployment', 'switchboard-operator');
  assert.ok(admitted('chat', chatPod('gateway')) && admitted('chat', chatPod('broadcast')), 'gateway and broadcast pods');
  assert.ok(admitted(OPERATOR_NS, operator.spec.template.metadata.labels), 'the operator');
  assert.ok(!admitted('chat', { app: 'anything' }), 'another pod in chat');
  assert.ok(!admitted('elsewhere', chatPod('gateway')), 'a look-alike in another namespace');
  assert.ok(!admitted('elsewhere', operator.spec.template.metadata.labels), 'an operator look-alike in another namespace');
});
