/**
 * The objects the operator makes, as pure functions of the Switchboard (no API server needed):
 * pods get garbage-collector threads matched to their CPU (services/control/gc-threads.ts), and
 * the gRPC API port is never on the client Service, which may face the internet. A config change
 * rolls the pods (a checksum of the ConfigMap in the pod template), and the CRD's name limit is the
 * one these names need.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseAllDocuments } from 'yaml';
import {
  apiService, CONFIG_CHECKSUM_ANNOTATION, configMap, deployment, gatewayService, MAX_SWITCHBOARD_NAME, metricsService, names, NODE_FLAGS_ENV, PORTS,
} from '../../operator/resources';
import { repoRoot } from '../k8s/harness';
import { cpuQuantity, gcFlags } from '../../services/control/gc-threads';
import { sbFixture } from './fixtures';

function nodeFlags(d: ReturnType<typeof deployment>): string | undefined {
  const env = d.spec!.template.spec!.containers[0].env ?? [];
  const found = env.filter((e) => e.name === NODE_FLAGS_ENV);
  assert.ok(found.length <= 1, `${NODE_FLAGS_ENV} is set once`);
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

test('one CPU or less collects on the main thread; more keeps one CPU for it', () => {
  assert.deepEqual(
    [0.1, 0.25, 1, 1.5, 2, 3, 4, 16].map((c) => gcFlags(c).join(' ')),
    ['--single-threaded-gc', '--single-threaded-gc', '--single-threaded-gc', '--v8-pool-size=1', '--v8-pool-size=1', '--v8-pool-size=2', '--v8-pool-size=3', '--v8-pool-size=15'],
  );
});

test('each tier gets flags from its CPU limit, and none without one', () => {
  // Defaults: a 250m request and no CPU limit: the pod may use idle cores, Node's pool stays.
  const plain = sbFixture();
  assert.equal(nodeFlags(deployment(plain, 'gateway', 1)), undefined);
  assert.equal(nodeFlags(deployment(plain, 'broadcast', 1)), undefined);
  const limited = sbFixture('chat', 'ns', {
    gateway: { resources: { requests: { cpu: '2' }, limits: { cpu: '4' } } },
    broadcast: { resources: { requests: { cpu: '250m' }, limits: { cpu: '500m' } } },
  });
  assert.equal(nodeFlags(deployment(limited, 'gateway', 1)), '--v8-pool-size=3');
  assert.equal(nodeFlags(deployment(limited, 'broadcast', 1)), '--single-threaded-gc');
  const requestOnly = sbFixture('chat', 'ns', { gateway: { resources: { requests: { cpu: '3' } } } });
  assert.equal(nodeFlags(deployment(requestOnly, 'gateway', 1)), undefined, 'a request is not a quota');
});

test("the Switchboard's own node flags are used whole, not merged", () => {
  const sb = sbFixture('chat', 'ns', {
    gateway: { resources: { limits: { cpu: '1' } } },
    env: [{ name: NODE_FLAGS_ENV, value: '--max-semi-space-size=32' }],
  });
  assert.equal(nodeFlags(deployment(sb, 'gateway', 1)), '--max-semi-space-size=32');
  // In spec.config it reaches the pod through the ConfigMap (envFrom), which an env entry would override.
  const viaConfig = sbFixture('chat', 'ns', { broadcast: { resources: { limits: { cpu: '1' } } }, config: { [NODE_FLAGS_ENV]: '' } });
  assert.equal(nodeFlags(deployment(viaConfig, 'broadcast', 1)), undefined);
  assert.equal(configMap(viaConfig).data![NODE_FLAGS_ENV], '');
});

test('the gRPC API port is on its own ClusterIP Service, never on a LoadBalancer or NodePort client Service', () => {
  for (const type of ['ClusterIP', 'NodePort', 'LoadBalancer'] as const) {
    const sb = sbFixture('chat', 'ns', { gateway: { port: 5000, service: { type, ...(type === 'ClusterIP' ? {} : { nodePort: 30500 }) } } });
    const client = gatewayService(sb);
    assert.equal(client.metadata!.name, 'chat-gateway');
    assert.equal(client.spec!.type, type);
    assert.deepEqual(client.spec!.ports!.map((p) => `${p.name}:${p.port}`), ['tcp:5000'], `${type}: the client port only`);

    const api = apiService(sb);
    assert.equal(api.metadata!.name, 'chat-api');
    assert.equal(api.spec!.type, 'ClusterIP', `${type}: the API stays inside the cluster`);
    assert.deepEqual(api.spec!.ports, [{ name: 'grpc', port: PORTS.grpc, targetPort: 'grpc', protocol: 'TCP' }]);
    assert.deepEqual(api.spec!.selector, client.spec!.selector, 'the same gateway pods');
    assert.equal(api.metadata!.annotations, undefined, "the client Service's annotations (load balancer settings) are not copied");
    assert.equal(api.metadata!.ownerReferences![0].name, 'chat');
  }
});

// Pods read the ConfigMap only at start (envFrom): before, a config change reached only pods that
// happened to restart, so they ran beside pods with the old settings.
test('a config change changes both pod templates (the Deployments roll); the same config does not', () => {
  const checksum = (sb: ReturnType<typeof sbFixture>, tier: 'gateway' | 'broadcast') =>
    deployment(sb, tier, 1).spec!.template.metadata!.annotations![CONFIG_CHECKSUM_ANNOTATION];
  const base = sbFixture();
  for (const tier of ['gateway', 'broadcast'] as const) {
    assert.match(checksum(base, tier), /^[0-9a-f]{64}$/, `${tier}: annotated`);
    assert.equal(checksum(sbFixture(), tier), checksum(base, tier), `${tier}: stable for the same spec`);
    assert.equal(checksum(sbFixture('chat', 'ns', { image: 'other:1' }), tier), checksum(base, tier), `${tier}: not a config change`);
    for (const changed of [
      sbFixture('chat', 'ns', { config: { LOG_LEVEL: 'debug' } }),
      sbFixture('chat', 'ns', { broadcast: { shards: 32 } }),
      sbFixture('chat', 'ns', { gateway: { port: 5000 } }),
    ]) {
      assert.notEqual(configMap(changed).data, configMap(base).data);
      assert.notEqual(checksum(changed, tier), checksum(base, tier), `${tier}: ${JSON.stringify(configMap(changed).data)}`);
    }
  }
  // Key order in spec.config is not a change.
  const ab = sbFixture('chat', 'ns', { config: { A_ONE: '1', B_TWO: '2' } });
  const ba = sbFixture('chat', 'ns', { config: { B_TWO: '2', A_ONE: '1' } });
  assert.equal(checksum(ab, 'gateway'), checksum(ba, 'gateway'));
});

test("the CRD's metadata.name limit is what the longest name the operator derives allows", () => {
  const longest = ['', 'x'.repeat(MAX_SWITCHBOARD_NAME)].map((n) => {
    const sb = sbFixture(n);
    return [configMap(sb), deployment(sb, 'gateway', 1), deployment(sb, 'broadcast', 1), gatewayService(sb), apiService(sb), metricsService(sb)]
      .map((o) => o.metadata!.name!.length);
  });
  assert.equal(MAX_SWITCHBOARD_NAME, 63 - Math.max(...longest[0]), 'derived from the longest suffix');
  assert.equal(Math.max(...longest[1]), 63, 'a name of the maximum length makes names of at most 63 characters');
  assert.equal(names.deployment('', 'broadcast'), '-broadcast');
  for (const dir of ['k8s/crds', 'charts/switchboard/crds']) {
    const crd = parseAllDocuments(readFileSync(path.join(repoRoot(), dir, 'switchboard.dev_switchboards.yaml'), 'utf8'))[0].toJS();
    const name = crd.spec.versions[0].schema.openAPIV3Schema.properties.metadata.properties.name;
    assert.equal(name.maxLength, MAX_SWITCHBOARD_NAME, `${dir}: metadata.name maxLength`);
    assert.equal(name.pattern, '^[a-z]([-a-z0-9]*[a-z0-9])?$', `${dir}: a DNS-1035 label, as Service names must be`);
  }
});
