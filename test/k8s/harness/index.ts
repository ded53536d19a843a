// Public face of the Kubernetes test harness. A test file starts one control plane and gives
// each test its own namespace:
//
//   let cp: ControlPlane;
//   before(async () => { cp = await startControlPlane(); });
//   after(() => cp?.stop());
//   test('does a thing', async (t) => {
//     const ns = await cp.createNamespace(namespaceFor(t.name));
//     await cp.apply(yaml, { namespace: ns });
//   });
//
// See docs/testing.md.
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { repoRoot } from './tools';

export { NODE_NETWORK, NodeCluster, startNodeCluster, type ImageArchive, type NodeClusterOptions } from './node';
export { ADMIN, ControlPlane, startControlPlane, type ControlPlaneOptions, type ExecResult } from './control-plane';
export {
  KubeApiError, KubeClient, parseYamlObjects, waitFor,
  type ApplyOptions, type Credentials, type KubeObject, type KubeResponse, type RequestOptions, type WatchEvent,
} from './client';
export { type CertFiles, type ClientIdentity } from './pki';
export { cacheDir, findNodeTools, findTools, pinnedVersions, repoRoot, type NodeTools, type Tools } from './tools';

/**
 * A namespace name derived from a test's name (so leftovers say which test made them), made
 * DNS-1123-safe and unique with a random suffix.
 */
export function namespaceFor(testName: string): string {
  const slug = testName.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 50).replace(/-+$/, '');
  return `${slug || 'test'}-${randomBytes(3).toString('hex')}`;
}

/** The project's CRDs (k8s/crds/*.yaml but its kustomization.yaml) as one YAML stream, for cp.apply(). */
export function projectCrdsYaml(): string {
  const dir = path.join(repoRoot(), 'k8s', 'crds');
  return readdirSync(dir).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml').sort()
    .map((f) => readFileSync(path.join(dir, f), 'utf8'))
    .join('\n---\n');
}
