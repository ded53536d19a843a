// With kube-controller-manager running, the control plane behaves as the operator will see it
// in a cluster: Deployments get ReplicaSets (their pods stay Pending, there are no nodes) and
// deleting an owner garbage-collects what it owns.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { namespaceFor, startControlPlane, waitFor, type ControlPlane, type KubeObject } from './harness';

let cp: ControlPlane;
before(async () => {
  cp = await startControlPlane({ controllerManager: true });
});
after(() => cp?.stop());

interface ReplicaSet extends KubeObject {
  spec: { replicas: number };
  metadata: KubeObject['metadata'] & { ownerReferences?: { kind: string; name: string }[] };
}

function deployment(name: string, replicas: number): KubeObject {
  const labels = { 'app.kubernetes.io/name': name };
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name, labels },
    spec: {
      replicas,
      selector: { matchLabels: labels },
      template: { metadata: { labels }, spec: { containers: [{ name: 'server', image: 'switchboard:test' }] } },
    },
  };
}

test('a Deployment gets a ReplicaSet and pods, and they go when it is deleted', async (t) => {
  const ns = await cp.createNamespace(namespaceFor(t.name));
  await cp.apply(deployment('gateway', 2), { namespace: ns });

  const rsPath = `/apis/apps/v1/namespaces/${ns}/replicasets`;
  let owned: ReplicaSet[] = [];
  await waitFor('the ReplicaSet of deployment/gateway', 30_000, async () => {
    const list = await cp.client.get<{ items: ReplicaSet[] }>(rsPath);
    owned = list.items.filter((rs) => rs.metadata.ownerReferences?.some((o) => o.kind === 'Deployment' && o.name === 'gateway'));
    return owned.length === 1;
  });
  assert.equal(owned[0].spec.replicas, 2);
  await waitFor('2 pods of the ReplicaSet', 30_000, async () =>
    (await cp.client.get<{ items: unknown[] }>(`/api/v1/namespaces/${ns}/pods`)).items.length === 2);

  await cp.client.call('DELETE', `/apis/apps/v1/namespaces/${ns}/deployments/gateway`, {
    body: { apiVersion: 'v1', kind: 'DeleteOptions', propagationPolicy: 'Background' },
  });
  await waitFor('the garbage collector to delete the ReplicaSet', 30_000, async () =>
    (await cp.client.get<{ items: unknown[] }>(rsPath)).items.length === 0);
});

test('every new namespace gets a default ServiceAccount', async (t) => {
  const ns = await cp.createNamespace(namespaceFor(t.name));
  await waitFor(`serviceaccount/default in ${ns}`, 30_000, async () =>
    (await cp.client.request('GET', `/api/v1/namespaces/${ns}/serviceaccounts/default`)).status === 200);
});
