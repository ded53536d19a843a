/**
 * The operator's pods size V8's worker pool to their CPU (services/control/v8-pool.ts): pure
 * functions of the Switchboard, no API server needed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { configMap, deployment } from '../../operator/resources';
import { cpuQuantity, v8PoolSize } from '../../services/control/v8-pool';
import { sbFixture } from './fixtures';

function nodeOptions(d: ReturnType<typeof deployment>): string | undefined {
  const env = d.spec!.template.spec!.containers[0].env ?? [];
  const found = env.filter((e) => e.name === 'NODE_OPTIONS');
  assert.ok(found.length <= 1, 'NODE_OPTIONS is set once');
  return found[0]?.value;
}

test('CPU quantities read as Kubernetes writes them', () => {
  assert.equal(cpuQuantity('250m'), 0.25);
  assert.equal(cpuQuantity('1'), 1);
  assert.equal(cpuQuantity('1.5'), 1.5);
  assert.equal(cpuQuantity('4000m'), 4);
  assert.equal(cpuQuantity(2), 2);
  for (const bad of [undefined, '', '0', '0m', 'abc', '1Gi', '-1', 0, Number.NaN]) assert.equal(cpuQuantity(bad), undefined, String(bad));
});

test('the pool leaves the main thread its CPU and keeps one helper', () => {
  assert.deepEqual([0.1, 0.25, 1, 1.5, 2, 3, 4, 16].map(v8PoolSize), [1, 1, 1, 1, 1, 2, 3, 15]);
});

test('each tier gets a pool sized by its CPU limit, else its request, else none', () => {
  // Defaults: a 250m request and no CPU limit, for both tiers.
  const plain = sbFixture();
  assert.equal(nodeOptions(deployment(plain, 'gateway', 1)), '--v8-pool-size=1');
  assert.equal(nodeOptions(deployment(plain, 'broadcast', 1)), '--v8-pool-size=1');
  const big = sbFixture('chat', 'ns', {
    gateway: { resources: { requests: { cpu: '2' }, limits: { cpu: '4' } } },
    broadcast: { resources: { requests: { cpu: '3' } } },
  });
  assert.equal(nodeOptions(deployment(big, 'gateway', 1)), '--v8-pool-size=3', 'the limit wins over the request');
  assert.equal(nodeOptions(deployment(big, 'broadcast', 1)), '--v8-pool-size=2', 'no limit: the request');
  const memoryOnly = sbFixture('chat', 'ns', { gateway: { resources: { limits: { memory: '1Gi' } } } });
  assert.equal(nodeOptions(deployment(memoryOnly, 'gateway', 1)), undefined, 'no CPU named: Node chooses');
});

test("the Switchboard's own NODE_OPTIONS is used whole, not merged", () => {
  const sb = sbFixture('chat', 'ns', { env: [{ name: 'NODE_OPTIONS', value: '--max-old-space-size=512' }] });
  assert.equal(nodeOptions(deployment(sb, 'gateway', 1)), '--max-old-space-size=512');
  // In spec.config it reaches the pod through the ConfigMap (envFrom), which an env entry would override.
  const viaConfig = sbFixture('chat', 'ns', { config: { NODE_OPTIONS: '--max-old-space-size=512' } });
  assert.equal(nodeOptions(deployment(viaConfig, 'broadcast', 1)), undefined);
  assert.equal(configMap(viaConfig).data!.NODE_OPTIONS, '--max-old-space-size=512');
});
