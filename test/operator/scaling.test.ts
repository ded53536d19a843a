// The operator's metrics loop end to end (issue #8, tests 2, 3 and 4): real gateway and
// broadcast processes on a real Redis, loaded by the project's load generator, scraped by a real
// Prometheus; the operator (a child process on the real API server, RBAC from k8s/rbac) reads
// Prometheus and scales the gateway Deployment, sheds nonCritical flags on a threshold breach,
// and keeps everything as it is while Prometheus is gone.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { GeneratorPool } from '../../load-tests/generator/pool';
import { buildSpecs } from '../../load-tests/scenarios';
import { helloClient } from '../helpers/wire';
import { waitFor } from '../helpers/wait';
import { namespaceFor, type ControlPlane, type KubeObject } from '../k8s/harness';
import { condition, controlPlaneWithCrds, DataPlane, featureFlag, getObject, operatorKubeconfig, startOperator, switchboard, type OperatorProcess } from './stack';

let cp: ControlPlane;
let op: OperatorProcess;
const planes: DataPlane[] = [];

before(async () => {
  cp = await controlPlaneWithCrds();
  op = await startOperator(await operatorKubeconfig(cp));
});
after(async () => {
  for (const l of loads) await l.stop();
  await op?.stop();
  for (const p of planes) await p.stop();
  await cp?.stop();
});

type Obj = KubeObject & { spec: any; status?: any }; // eslint-disable-line @typescript-eslint/no-explicit-any

/** Chat load from the load generator: `clients` in rooms of `roomSize`, `rate` publishes/s. */
async function load(port: number, rate: number, clients = 20, roomSize = 10): Promise<{ stop(): Promise<void> }> {
  const pool = new GeneratorPool(1);
  const specs = buildSpecs({ scenario: 'fanout', clients, roomSize, rate, warmupS: 0, measureS: 0, binary: true, padBytes: 16, sampleEvery: 8 }, [port]);
  const setup = await pool.setup(specs, { host: '127.0.0.1', binary: true, sampleEvery: 8, padBytes: 16, concurrency: 16 });
  assert.equal(setup.failed, 0, 'every load connection joined');
  pool.start(rate);
  let stopped: Promise<void> | null = null;
  const traffic = {
    stop(): Promise<void> {
      stopped ??= (async () => {
        await pool.stop();
        await pool.close();
        await pool.exit();
      })();
      return stopped;
    },
  };
  loads.push(traffic);
  return traffic;
}

/** Every load started, so a failed test cannot leave generator threads keeping the process up. */
const loads: Array<{ stop(): Promise<void> }> = [];

const paths = (ns: string) => ({
  sb: `/apis/switchboard.dev/v1alpha1/namespaces/${ns}/switchboards/chat`,
  gateway: `/apis/apps/v1/namespaces/${ns}/deployments/chat-gateway`,
  flag: (name: string) => `/apis/switchboard.dev/v1alpha1/namespaces/${ns}/featureflags/${name}`,
});

async function replicas(ns: string): Promise<number> {
  return (await getObject<Obj>(cp, paths(ns).gateway))?.spec.replicas ?? -1;
}

async function eventsFor(ns: string): Promise<Array<{ reason: string; message: string }>> {
  const res = await cp.client.request('GET', `/api/v1/namespaces/${ns}/events`);
  return (res.body as { items: Array<{ reason: string; message: string }> }).items;
}

/**
 * A namespace named after the test, a data plane scraped as Switchboard `chat` of it, and that
 * Switchboard (its Redis and Prometheus filled in; `spec` adds the rest) plus any other objects.
 */
async function stackFor(testName: string, spec: Record<string, unknown>, others: KubeObject[] = []) {
  const ns = await cp.createNamespace(namespaceFor(testName));
  const dp = await DataPlane.start(ns, 'chat');
  planes.push(dp);
  const { prometheus, ...rest } = spec as { prometheus?: Record<string, unknown> };
  await cp.apply([
    switchboard('chat', { redis: { url: dp.redis.url }, prometheus: { url: dp.prometheus.url, interval: '1s', ...prometheus }, ...rest }),
    ...others,
  ], { namespace: ns });
  return { ns, dp, p: paths(ns) };
}

test('scale-up under load within bounds; scale-down only after the stabilization window', async (t) => {
  const { ns, dp, p } = await stackFor(t.name, {
    gateway: { minReplicas: 1, maxReplicas: 3 },
    broadcast: { minReplicas: 1, maxReplicas: 1, shards: 4 },
    prometheus: { rateWindow: '4s' },
    thresholds: { p99LatencyMs: 60_000 },
    scaling: { targetMessagesPerPod: 500, targetConnectionsPerPod: 100_000, scaleUpStabilizationSeconds: 0, scaleDownStabilizationSeconds: 8, maxStep: 4 },
  });
  await waitFor(async () => condition(await getObject<Obj>(cp, p.sb), 'MetricsUnavailable')?.status === 'False', 30_000, 'metrics available', 200);
  assert.equal(await replicas(ns), 1, 'idle: minReplicas');

  // 400 publishes/s into rooms of 10: ~4000 deliveries/s against a target of 500 per pod.
  const traffic = await load(dp.gatewayPort, 400);
  await waitFor(async () => (await replicas(ns)) === 3, 30_000, 'the gateway Deployment scaled to maxReplicas', 200);
  // Bounded by maxReplicas (the events below never say more than 3). The reconcile writes status
  // after applying the Deployments, so the status may trail the Deployment: poll it (bounded).
  await waitFor(async () => (await getObject<Obj>(cp, p.sb))?.status?.desiredReplicas?.gateway === 3, 5000, 'status.desiredReplicas.gateway at 3', 100);
  // One step or two (the first round may see the rate still ramping up), each saying why.
  // Events are recorded alongside the reconcile, not before it: poll (bounded).
  const ups = await waitFor(async () => {
    const u = (await eventsFor(ns)).filter((e) => e.reason === 'ScaledUp');
    return u.length >= 1 ? u : undefined;
  }, 5000, 'a ScaledUp event', 100);
  for (const e of ups) assert.match(e.message, /^gateway [12] -> [23]: messagesPerPod [0-9.]+\/pod vs target 500/);

  await traffic.stop();
  const stoppedAt = Date.now();
  await waitFor(async () => (await replicas(ns)) === 1, 60_000, 'scale-down after the window', 200);
  const took = Date.now() - stoppedAt;
  assert.ok(took >= 8000, `scaled down ${took} ms after the load stopped, inside the 8 s stabilization window`);
  await waitFor(async () => (await eventsFor(ns)).some((e) => e.reason === 'ScaledDown'), 5000, 'a ScaledDown event', 100);
  // The gauge is set after the reconcile has applied both Deployments, so it may trail the
  // gateway Deployment we just read by the broadcast tier's apply: poll it (bounded).
  const series = 'switchboard_operator_desired_replicas{namespace="' + ns + '",switchboard="chat",tier="gateway"}';
  await waitFor(async () => (await op.metric(series)) === 1, 5000, 'the desired-replicas gauge at 1', 100);
});

test('a breached p99 threshold sheds nonCritical flags on the running gateways, restored after recovery', async (t) => {
  const { ns, dp, p } = await stackFor(t.name, {
    prometheus: { rateWindow: '3s' },
    // Any traffic at all breaches a 1 µs p99.
    thresholds: { p99LatencyMs: 0.001, holdSeconds: 3 },
    scaling: { targetMessagesPerPod: 1_000_000, targetConnectionsPerPod: 100_000 },
  }, [
    featureFlag('history', { enabled: true, nonCritical: true, description: 'room history (a store read)' }),
    featureFlag('direct', { enabled: true, nonCritical: false }),
  ]);
  const client = await helloClient(dp.gatewayPort, 'watcher');
  await client.join('quiet');
  await waitFor(async () => (await getObject<Obj>(cp, p.flag('history')))?.status?.effective === true, 30_000, 'history published and effective', 200);
  assert.equal((await client.request({ type: 'history', room: 'quiet', id: 1 })).type, 'history');

  const traffic = await load(dp.gatewayPort, 200);
  const shed = await waitFor(async () => {
    const f = await getObject<Obj>(cp, p.flag('history'));
    return f?.status?.reason === 'Overloaded' ? f : undefined;
  }, 30_000, 'history shed', 200);
  assert.equal(shed.status.effective, false);
  const sb = await waitFor(async () => {
    const o = await getObject<Obj>(cp, p.sb);
    return condition(o, 'Overloaded')?.status === 'True' ? o : undefined;
  }, 10_000, 'the Switchboard\'s Overloaded condition', 100);
  assert.match(condition(sb, 'Overloaded')!.message, /p99 latency/);
  assert.deepEqual(sb!.status.shedFlags, ['history']);
  assert.equal((await getObject<Obj>(cp, p.flag('direct')))!.status.effective, true, 'a critical flag stays on');
  // The running gateway sees it off: a client's gated request is refused.
  await waitFor(async () => (await client.request({ type: 'history', room: 'quiet', id: 2 })).code === 'feature_disabled', 10_000, 'feature_disabled at the gateway', 100);

  await traffic.stop();
  const stoppedAt = Date.now();
  await waitFor(async () => (await getObject<Obj>(cp, p.flag('history')))?.status?.effective === true, 30_000, 'history restored', 200);
  assert.ok(Date.now() - stoppedAt >= 3000, 'restored only after the hold period');
  await waitFor(async () => (await client.request({ type: 'history', room: 'quiet', id: 3 })).type === 'history', 10_000, 'history served again', 100);
  await waitFor(async () => (await getObject<Obj>(cp, p.sb))?.status.shedFlags?.length === 0, 10_000, 'shedFlags empty in the Switchboard status', 100);
  assert.ok((await eventsFor(ns)).some((e) => e.reason === 'ThresholdBreached'));
  assert.ok((await eventsFor(ns)).some((e) => e.reason === 'Recovered'));
  await client.end();
});

test('Prometheus stopped: no scaling, MetricsUnavailable, and back when it returns', async (t) => {
  const { ns, dp, p } = await stackFor(t.name, {
    gateway: { minReplicas: 1, maxReplicas: 5 },
    prometheus: { rateWindow: '4s' },
    thresholds: { p99LatencyMs: 60_000 },
    // No windows at all: with data, an idle cluster goes to minReplicas at once.
    scaling: { targetMessagesPerPod: 500, scaleUpStabilizationSeconds: 0, scaleDownStabilizationSeconds: 0 },
  });
  await waitFor(async () => condition(await getObject<Obj>(cp, p.sb), 'MetricsUnavailable')?.status === 'False', 30_000, 'metrics available', 200);

  await dp.prometheus.stop();
  await waitFor(async () => condition(await getObject<Obj>(cp, p.sb), 'MetricsUnavailable')?.status === 'True', 20_000, 'MetricsUnavailable', 200);
  const c = condition(await getObject<Obj>(cp, p.sb), 'MetricsUnavailable')!;
  assert.equal(c.reason, 'MetricsUnavailable');
  assert.match(c.message, /unreachable/);
  // Scale the Deployment's decision up by hand through the spec bounds: with Prometheus gone the
  // operator must neither scale down (no data) nor anywhere else.
  await cp.client.request('PATCH', p.sb, { body: { spec: { gateway: { minReplicas: 4, maxReplicas: 5 } } }, contentType: 'application/merge-patch+json' });
  await waitFor(async () => (await replicas(ns)) === 4, 20_000, 'raised to the new minReplicas', 200);
  await cp.client.request('PATCH', p.sb, { body: { spec: { gateway: { minReplicas: 1, maxReplicas: 5 } } }, contentType: 'application/merge-patch+json' });
  const until = Date.now() + 4000;
  while (Date.now() < until) {
    assert.equal(await replicas(ns), 4, 'no scale-down on missing data');
    await new Promise((r) => setTimeout(r, 250));
  }
  assert.ok(Number(await op.metric(`switchboard_operator_metrics_query_errors_total{namespace="${ns}",switchboard="chat"}`)) > 0);

  await dp.prometheus.restart();
  await waitFor(async () => condition(await getObject<Obj>(cp, p.sb), 'MetricsUnavailable')?.status === 'False', 30_000, 'metrics back', 200);
  await waitFor(async () => (await replicas(ns)) === 1, 30_000, 'idle again: back to minReplicas with data', 200);
  assert.ok((await eventsFor(ns)).some((e) => e.reason === 'MetricsUnavailable'));
  assert.ok((await eventsFor(ns)).some((e) => e.reason === 'MetricsAvailable'));
});
