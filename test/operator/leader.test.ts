// Leader election with a coordination.k8s.io Lease (issue #8, test 6): two operator replicas,
// only the leader writes; kill -9 the leader and the other takes over within the lease time.
// The Lease is not left behind (issue 17): a leader stopping cleanly deletes it, and it is owned
// by the operator's Deployment, so the garbage collector removes it when no replica could.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { RedisProcess } from '../helpers/redis';
import { waitFor } from '../helpers/wait';
import { namespaceFor, type ControlPlane, type KubeObject } from '../k8s/harness';
import { controlPlaneWithCrds, featureFlag, getObject, operatorKubeconfig, OPERATOR_NS, startOperator, switchboard, type OperatorProcess } from './stack';

let cp: ControlPlane;
let redis: RedisProcess;
const ops: OperatorProcess[] = [];

before(async () => {
  // With the controller-manager: its garbage collector deletes what an owner leaves.
  cp = await controlPlaneWithCrds(true);
  redis = await RedisProcess.start();
});
after(async () => {
  for (const o of ops) await o.stop('SIGKILL');
  await redis?.stop();
  await cp?.stop();
});

type Lease = KubeObject & {
  metadata: { uid: string; ownerReferences?: Array<{ apiVersion: string; kind: string; name: string; uid: string }> };
  spec: { holderIdentity?: string; leaseDurationSeconds: number; leaseTransitions?: number };
};
const leasePath = `/apis/coordination.k8s.io/v1/namespaces/${OPERATOR_NS}/leases/switchboard-operator`;
/** The operator's Deployment as k8s/operator names it (k8s/rbac lets the operator read only it). */
const DEPLOYMENT = 'switchboard-operator';

/** Two operator replicas with a 3 s lease: `a` started first and leading, then `b`. */
async function twoReplicas(kubeconfig: string) {
  const a = await startOperator(kubeconfig, { LEASE_DURATION_MS: '3000' });
  ops.push(a);
  await waitFor(async () => (await getObject<Lease>(cp, leasePath))?.spec.holderIdentity === a.identity, 20_000, 'a to lead', 100);
  const b = await startOperator(kubeconfig, { LEASE_DURATION_MS: '3000' });
  ops.push(b);
  return [a, b] as const;
}

test('two replicas: only the leader writes; kill -9 it and the other takes over within the lease time', async (t) => {
  const kubeconfig = await operatorKubeconfig(cp);
  const [a, b] = await twoReplicas(kubeconfig);

  const ns = await cp.createNamespace(namespaceFor(t.name));
  await cp.apply(switchboard('first', { redis: { url: redis.url } }), { namespace: ns });
  await waitFor(() => getObject(cp, `/apis/apps/v1/namespaces/${ns}/deployments/first-gateway`), 20_000, 'first reconciled', 100);
  // b has watched the same objects all along (warm informers) but has written nothing, while a
  // went on reconciling (RESYNC_MS 2000: a few rounds).
  const reconciles = async () => Number(await a.metric('switchboard_operator_reconciles_total{kind="Switchboard",result="ok"}') ?? 0);
  const first = await reconciles();
  await waitFor(async () => (await reconciles()) >= first + 2, 20_000, 'a to resync twice more', 100);
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

  // A graceful stop hands over at once: the Lease is deleted, not left to expire.
  // (c campaigns from its start, before startOperator returns.)
  const c = await startOperator(kubeconfig, { LEASE_DURATION_MS: '30000' });
  ops.push(c);
  const stoppedAt = Date.now();
  await b.stop('SIGTERM');
  assert.ok(b.cli.logs().some((l) => l.msg === 'deleted the leader lease'), 'b deleted the Lease it held');
  await waitFor(async () => (await getObject<Lease>(cp, leasePath))?.spec.holderIdentity === c.identity, 15_000, 'c to take over', 100);
  assert.ok(Date.now() - stoppedAt < 10_000, 'deleted lease taken without waiting out 30 s');

  // The last replica stopped cleanly: no Lease remains.
  await c.stop('SIGTERM');
  assert.equal(await getObject<Lease>(cp, leasePath), undefined, 'no Lease after the last replica stopped');
  assert.equal(c.cli.child.exitCode, 0, `c exited 0:\n${c.cli.stderr.join('\n')}`);
});

test('the Lease is owned by the operator Deployment: kill -9 every replica, delete the Deployment, the Lease goes', async () => {
  const kubeconfig = await operatorKubeconfig(cp);
  const owner = { OPERATOR_DEPLOYMENT: DEPLOYMENT };
  assert.equal(await getObject<Lease>(cp, leasePath), undefined, 'no Lease left by the test before');
  // The operator's Deployment as k8s/operator names it. Its pods do not matter here (the
  // replicas run as local processes with its name in OPERATOR_DEPLOYMENT), so none: replicas 0.
  const labels = { 'app.kubernetes.io/name': 'switchboard', 'app.kubernetes.io/component': 'operator' };
  await cp.apply({
    apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: DEPLOYMENT, labels },
    spec: { replicas: 0, selector: { matchLabels: labels }, template: { metadata: { labels }, spec: { containers: [{ name: 'operator', image: 'switchboard:test' }] } } },
  }, { namespace: OPERATOR_NS });
  const deployPath = `/apis/apps/v1/namespaces/${OPERATOR_NS}/deployments/${DEPLOYMENT}`;
  const deployUid = (await getObject<KubeObject & { metadata: { uid: string } }>(cp, deployPath))!.metadata.uid;
  const expectedOwner = [{ apiVersion: 'apps/v1', kind: 'Deployment', name: DEPLOYMENT, uid: deployUid }];

  // An operator without OPERATOR_DEPLOYMENT (an older one) makes a Lease with no owner ...
  const old = await startOperator(kubeconfig);
  ops.push(old);
  await waitFor(async () => (await getObject<Lease>(cp, leasePath))?.spec.holderIdentity === old.identity, 20_000, 'the old operator to lead', 100);
  assert.equal((await getObject<Lease>(cp, leasePath))!.metadata.ownerReferences, undefined);
  // ... which the next holder adopts into the Deployment when it takes over.
  const d = await startOperator(kubeconfig, owner);
  ops.push(d);
  await old.stop('SIGKILL');
  await waitFor(async () => (await getObject<Lease>(cp, leasePath))?.spec.holderIdentity === d.identity, 15_000, 'd to take over', 100);
  assert.deepEqual((await getObject<Lease>(cp, leasePath))!.metadata.ownerReferences, expectedOwner, 'the taken-over Lease is owned by the Deployment');

  // A standby names the same owner; kill -9 the leader and the Lease, still owned, moves to it.
  const e = await startOperator(kubeconfig, owner);
  ops.push(e);
  await d.stop('SIGKILL');
  await waitFor(async () => (await getObject<Lease>(cp, leasePath))?.spec.holderIdentity === e.identity, 15_000, 'e to take over', 100);
  assert.deepEqual((await getObject<Lease>(cp, leasePath))!.metadata.ownerReferences, expectedOwner);

  // No replica left to delete it: the Lease stays ...
  await e.stop('SIGKILL');
  const orphan = await getObject<Lease>(cp, leasePath);
  assert.equal(orphan?.spec.holderIdentity, e.identity, 'a killed leader cannot delete its Lease');
  // ... until its owner goes, as with `helm uninstall` (background propagation).
  await cp.client.call('DELETE', deployPath, { body: { kind: 'DeleteOptions', apiVersion: 'v1', propagationPolicy: 'Background' } });
  await waitFor(async () => (await getObject<Lease>(cp, leasePath)) === undefined, 60_000, 'the garbage collector to delete the Lease', 200);

  // While the Deployment is missing (an uninstall in progress) a replica creates no Lease.
  const late = await startOperator(kubeconfig, owner);
  ops.push(late);
  await waitFor(() => late.cli.logs().some((l) => l.msg === 'not taking the leader lease'), 20_000, 'late to find its owner missing', 100);
  assert.equal(await getObject<Lease>(cp, leasePath), undefined, 'no Lease without its owner');
  assert.equal(await late.metric('switchboard_operator_is_leader'), 0);
  await late.stop('SIGTERM');
  assert.equal(late.cli.child.exitCode, 0);
});

// A leader paused past its lease (SIGSTOP here; a long GC or a frozen VM alike) resumes with its
// timers due, its watches delivering what changed, and its own idea that it leads: before the
// fix it applied Deployments and patched statuses within milliseconds of resuming, while another
// replica held the Lease. Now every write first checks that the Lease was renewed within the
// renew deadline by the local clock, so it writes nothing until it holds the Lease again.
test('a leader paused past its lease writes nothing after it resumes while another holds the Lease', async (t) => {
  const kubeconfig = await operatorKubeconfig(cp);
  assert.equal(await getObject<Lease>(cp, leasePath), undefined, 'no Lease left by the test before');
  const [a, b] = await twoReplicas(kubeconfig);

  const ns = await cp.createNamespace(namespaceFor(t.name));
  const image = (tag: string) => `ghcr.io/switchboard-dev/switchboard:${tag}`;
  await cp.apply(switchboard('paused', { image: image('0.1.0'), redis: { url: redis.url } }), { namespace: ns });
  await cp.apply(featureFlag('paused-flag', { enabled: true, rolloutPercent: 10 }), { namespace: ns });
  type Deployment = KubeObject & { spec: { template: { spec: { containers: Array<{ image: string }> } } } };
  type Generational = KubeObject & { metadata: { generation: number }; status?: { observedGeneration?: number } };
  const depPath = `/apis/apps/v1/namespaces/${ns}/deployments/paused-gateway`;
  const sbPath = `/apis/switchboard.dev/v1alpha1/namespaces/${ns}/switchboards/paused`;
  const ffPath = `/apis/switchboard.dev/v1alpha1/namespaces/${ns}/featureflags/paused-flag`;
  const current = async (path: string) => {
    const o = await getObject<Generational>(cp, path);
    return o !== undefined && o.status?.observedGeneration === o.metadata.generation;
  };
  await waitFor(async () => (await current(sbPath)) && (await current(ffPath)), 20_000, 'both reconciled', 100);

  a.cli.child.kill('SIGSTOP');
  await waitFor(async () => (await getObject<Lease>(cp, leasePath))?.spec.holderIdentity === b.identity, 15_000, 'b to take over from the paused a', 50);
  // b stops too, holding a Lease good for 3 s more: nothing may write until it expires, and
  // whatever changes now is work a finds the moment it resumes.
  b.cli.child.kill('SIGSTOP');
  await cp.apply(switchboard('paused', { image: image('0.2.0'), redis: { url: redis.url } }), { namespace: ns });
  await cp.apply(featureFlag('paused-flag', { enabled: true, rolloutPercent: 20 }), { namespace: ns });
  a.cli.child.kill('SIGCONT');

  // Each object is read before the Lease: a write seen while the Lease, read after it, still
  // names b was made while b held it.
  const deadline = Date.now() + 30_000;
  for (;;) {
    assert.ok(Date.now() < deadline, 'a to take over and do the work');
    const dep = await getObject<Deployment>(cp, depPath);
    const sbDone = await current(sbPath);
    const ffDone = await current(ffPath);
    const applied = dep?.spec.template.spec.containers[0]?.image === image('0.2.0');
    const holder = (await getObject<Lease>(cp, leasePath))?.spec.holderIdentity;
    if (holder === b.identity) {
      assert.ok(!applied, 'a applied the Deployment while b held the Lease');
      assert.ok(!sbDone, 'a wrote the Switchboard status while b held the Lease');
      assert.ok(!ffDone, 'a wrote the FeatureFlag status while b held the Lease');
    } else if (holder === a.identity && applied && sbDone && ffDone) {
      break; // b's Lease expired, a took it and then did the work
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.ok(a.cli.logs().some((l) => l.msg === 'no longer the leader'), 'a found out it had lost the Lease');

  // Leave no Lease behind for the next test: a, the holder, deletes it on a clean stop.
  await b.stop('SIGKILL');
  await a.stop('SIGTERM');
  assert.equal(await getObject<Lease>(cp, leasePath), undefined);
});
