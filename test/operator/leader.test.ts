// Leader election with a coordination.k8s.io Lease (issue #8, test 6): two operator replicas,
// only the leader writes; kill -9 the leader and the other takes over within the lease time.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { RedisProcess } from '../helpers/redis';
import { waitFor } from '../helpers/wait';
import { namespaceFor, type ControlPlane, type KubeObject } from '../k8s/harness';
import { controlPlaneWithCrds, getObject, operatorKubeconfig, OPERATOR_NS, startOperator, switchboard, type OperatorProcess } from './stack';

let cp: ControlPlane;
let redis: RedisProcess;
const ops: OperatorProcess[] = [];

before(async () => {
  cp = await controlPlaneWithCrds();
  redis = await RedisProcess.start();
});
after(async () => {
  for (const o of ops) await o.stop('SIGKILL');
  await redis?.stop();
  await cp?.stop();
});

type Lease = KubeObject & { spec: { holderIdentity?: string; leaseDurationSeconds: number; leaseTransitions?: number } };
const leasePath = `/apis/coordination.k8s.io/v1/namespaces/${OPERATOR_NS}/leases/switchboard-operator`;

test('two replicas: only the leader writes; kill -9 it and the other takes over within the lease time', async (t) => {
  const kubeconfig = await operatorKubeconfig(cp);
  const a = await startOperator(kubeconfig, { LEASE_DURATION_MS: '3000' });
  ops.push(a);
  await waitFor(async () => (await getObject<Lease>(cp, leasePath))?.spec.holderIdentity === a.identity, 20_000, 'a to lead', 100);
  const b = await startOperator(kubeconfig, { LEASE_DURATION_MS: '3000' });
  ops.push(b);

  const ns = await cp.createNamespace(namespaceFor(t.name));
  await cp.apply(switchboard('first', { redis: { url: redis.url } }), { namespace: ns });
  await waitFor(() => getObject(cp, `/apis/apps/v1/namespaces/${ns}/deployments/first-gateway`), 20_000, 'first reconciled', 100);
  // b has watched the same objects all along (warm informers) but has written nothing.
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal(await a.metric('switchboard_operator_is_leader'), 1);
  assert.equal(await b.metric('switchboard_operator_is_leader'), 0);
  assert.ok(Number(await a.metric('switchboard_operator_reconciles_total{kind="Switchboard",result="ok"}')) > 0);
  assert.equal(await b.metric('switchboard_operator_reconciles_total{kind="Switchboard",result="ok"}'), undefined, 'the follower reconciled nothing');
  const sb = await getObject<KubeObject & { metadata: { managedFields: Array<{ manager: string; operation: string }> } }>(cp, `/apis/switchboard.dev/v1alpha1/namespaces/${ns}/switchboards/first`);
  assert.ok(sb!.metadata.managedFields.some((f) => f.manager === 'switchboard-operator'), 'status written by the operator');

  const killedAt = Date.now();
  await a.stop('SIGKILL');
  await waitFor(async () => (await getObject<Lease>(cp, leasePath))?.spec.holderIdentity === b.identity, 15_000, 'b to take over', 100);
  const tookMs = Date.now() - killedAt;
  assert.ok(tookMs <= 3000 + 2000, `took over after ${tookMs} ms (lease 3000 ms plus one retry period)`);
  assert.equal((await getObject<Lease>(cp, leasePath))!.spec.leaseTransitions, 1);
  assert.equal(await b.metric('switchboard_operator_is_leader'), 1);

  // The new leader does the work: a Switchboard created now is reconciled.
  await cp.apply(switchboard('second', { redis: { url: redis.url } }), { namespace: ns });
  await waitFor(() => getObject(cp, `/apis/apps/v1/namespaces/${ns}/deployments/second-gateway`), 20_000, 'second reconciled by b', 100);

  // A graceful stop hands over at once: the Lease is released, not left to expire.
  const c = await startOperator(kubeconfig, { LEASE_DURATION_MS: '30000' });
  ops.push(c);
  await new Promise((r) => setTimeout(r, 500));
  const stoppedAt = Date.now();
  await b.stop('SIGTERM');
  await waitFor(async () => (await getObject<Lease>(cp, leasePath))?.spec.holderIdentity === c.identity, 15_000, 'c to take over', 100);
  assert.ok(Date.now() - stoppedAt < 10_000, 'released lease taken without waiting out 30 s');
});
