// The test control plane itself: the pinned version answers, the kubeconfig works for kubectl
// and helm, RBAC is enforced for identities that have no bindings, ServiceAccount tokens from
// the TokenRequest API authenticate, and watches deliver events in order.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { KubeApiError, namespaceFor, pinnedVersions, startControlPlane, waitFor, type ControlPlane, type KubeObject, type WatchEvent } from './harness';

let cp: ControlPlane;
before(async () => {
  cp = await startControlPlane();
});
after(() => cp?.stop());

test('the API server is the pinned Kubernetes version', async () => {
  const version = await cp.client.get<{ gitVersion: string; major: string }>('/version');
  assert.equal(version.major, '1');
  // An external cluster (SWITCHBOARD_K8S_KUBECONFIG) runs whatever version it runs.
  if (!cp.external) assert.equal(version.gitVersion, pinnedVersions().KUBE_VERSION);
});

test('kubectl and helm work with the kubeconfig', async (t) => {
  const ns = await cp.createNamespace(namespaceFor(t.name));
  const { stdout } = await cp.kubectl(['get', 'namespace', ns, '-o', 'jsonpath={.status.phase}']);
  assert.equal(stdout, 'Active');
  const helm = await cp.helm(['list', '--namespace', ns, '--output', 'json']);
  assert.deepEqual(JSON.parse(helm.stdout), []);
  const helmVersion = await cp.helm(['version', '--short']);
  assert.match(helmVersion.stdout, new RegExp(`^${pinnedVersions().HELM_VERSION.replace(/\./g, '\\.')}`));
});

test('a ServiceAccount without bindings gets 403, and gets access once bound', async (t) => {
  const ns = await cp.createNamespace(namespaceFor(t.name));
  const token = await cp.mintServiceAccountToken(ns, 'nobody');
  const nobody = cp.clientFor({ token });

  const review = await nobody.create<{ status: { userInfo: { username: string } } }>(
    '/apis/authentication.k8s.io/v1/selfsubjectreviews',
    { apiVersion: 'authentication.k8s.io/v1', kind: 'SelfSubjectReview' });
  assert.equal(review.status.userInfo.username, `system:serviceaccount:${ns}:nobody`);

  const denied = await nobody.request<{ reason: string; message: string }>('GET', `/api/v1/namespaces/${ns}/configmaps`);
  assert.equal(denied.status, 403);
  assert.equal(denied.body.reason, 'Forbidden');
  assert.match(denied.body.message, new RegExp(`system:serviceaccount:${ns}:nobody`));

  await cp.apply([
    { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'Role', metadata: { name: 'read-configmaps' },
      rules: [{ apiGroups: [''], resources: ['configmaps'], verbs: ['get', 'list'] }] },
    { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'RoleBinding', metadata: { name: 'nobody-reads' },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'read-configmaps' },
      subjects: [{ kind: 'ServiceAccount', name: 'nobody', namespace: ns }] },
  ], { namespace: ns });
  // RBAC changes reach the authorizer through a watch-fed cache: poll, bounded.
  await waitFor('the RoleBinding to take effect', 10_000, async () =>
    (await nobody.request('GET', `/api/v1/namespaces/${ns}/configmaps`)).status === 200);
  const stillDenied = await nobody.request('GET', `/api/v1/namespaces/${ns}/secrets`);
  assert.equal(stillDenied.status, 403);
});

test('a client certificate outside system:masters gets 403', async (t) => {
  const ns = await cp.createNamespace(namespaceFor(t.name));
  const cert = await cp.issueClientCertificate({ user: 'mallory', groups: ['switchboard:testers'] });
  const mallory = cp.clientFor({ certPem: cert.certPem, keyPem: cert.keyPem });
  await assert.rejects(mallory.get(`/api/v1/namespaces/${ns}`), (err: unknown) =>
    err instanceof KubeApiError && err.status === 403 && /User "mallory"/.test(err.message));
  const anonymous = await cp.clientFor({ token: 'not-a-token' }).request('GET', '/api/v1/namespaces');
  assert.equal(anonymous.status, 401);
});

test('a watch sees ADDED, MODIFIED and DELETED in order', async (t) => {
  const ns = await cp.createNamespace(namespaceFor(t.name));
  const path = `/api/v1/namespaces/${ns}/configmaps`;
  const list = await cp.client.get<{ metadata: { resourceVersion: string } }>(path);
  const events: WatchEvent[] = [];
  const watching = (async () => {
    for await (const ev of cp.client.watch(path, { resourceVersion: list.metadata.resourceVersion, timeoutSeconds: '30' })) {
      events.push(ev);
      if (ev.type === 'DELETED') break;
    }
  })();

  const cm: KubeObject = { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'watched' }, data: { v: '1' } };
  await cp.client.create(path, cm);
  await cp.client.call('PATCH', `${path}/watched`, { body: { data: { v: '2' } }, contentType: 'application/merge-patch+json' });
  await cp.client.call('DELETE', `${path}/watched`);
  await watching;

  assert.deepEqual(events.map((e) => e.type), ['ADDED', 'MODIFIED', 'DELETED']);
  assert.deepEqual(events.map((e) => (e.object.data as { v: string }).v), ['1', '2', '2']);
  const rvs = events.map((e) => BigInt(e.object.metadata.resourceVersion as string));
  assert.ok(rvs[0] < rvs[1] && rvs[1] < rvs[2], `resourceVersions increase: ${rvs.join(', ')}`);
});
