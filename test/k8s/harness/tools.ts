// Finds the binaries test/k8s/tools.sh builds. They live in a cache outside the repository,
// keyed by the Kubernetes version pinned in test/k8s/versions.env, so the harness reads that
// file too: a checkout that bumps the version fails fast instead of testing stale binaries.
import { accessSync, constants, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';

export const ToolName = {
  kubeApiserver: 'kube-apiserver',
  kubeControllerManager: 'kube-controller-manager',
  kubectl: 'kubectl',
  etcd: 'etcd',
  helm: 'helm',
} as const;
export type ToolName = typeof ToolName[keyof typeof ToolName];

export interface Tools {
  readonly kubeVersion: string;
  readonly binDir: string;
  /** Absolute path of each tool. */
  readonly paths: Readonly<Record<ToolName, string>>;
}

/** The repository root, found from this file both as .ts (ts-node, editors) and as dist/.../.js. */
export function repoRoot(): string {
  let dir = __dirname;
  for (;;) {
    try {
      accessSync(path.join(dir, 'test', 'k8s', 'versions.env'));
      return dir;
    } catch {
      const parent = path.dirname(dir);
      if (parent === dir) throw new Error(`cannot find test/k8s/versions.env above ${__dirname}`);
      dir = parent;
    }
  }
}

/** KEY=value lines of test/k8s/versions.env. */
export function pinnedVersions(): Readonly<Record<string, string>> {
  const text = readFileSync(path.join(repoRoot(), 'test', 'k8s', 'versions.env'), 'utf8');
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^\s*([A-Z_]+)=(\S*)\s*$/.exec(line);
    if (m) out[m[1]] = m[2];
  }
  return out;
}

export function cacheDir(): string {
  return process.env.SWITCHBOARD_K8S_CACHE || path.join(homedir(), '.cache', 'switchboard-k8s');
}

/**
 * The tool binaries, or an error naming what is missing and how to build it. Tests call this
 * (through startControlPlane) and fail with that message: a missing toolchain is a broken test
 * environment, not a reason to skip. Tools not in `required` that are not in the cache resolve
 * to their bare name, i.e. whatever is on PATH (used against an existing cluster, where only
 * helm and kubectl matter).
 */
export function findTools(required: readonly ToolName[] = Object.values(ToolName)): Tools {
  const kubeVersion = pinnedVersions().KUBE_VERSION;
  if (!kubeVersion) throw new Error('test/k8s/versions.env has no KUBE_VERSION');
  const binDir = path.join(cacheDir(), kubeVersion, 'bin');
  const paths = {} as Record<ToolName, string>;
  const missing: string[] = [];
  for (const name of Object.values(ToolName)) {
    paths[name] = path.join(binDir, name);
    try {
      accessSync(paths[name], constants.X_OK);
    } catch {
      if (required.includes(name)) missing.push(name);
      else paths[name] = name;
    }
  }
  if (missing.length > 0) {
    throw new Error(
      `Kubernetes test tools ${missing.join(', ')} not found in ${binDir}. ` +
        'Run `npm run k8s:tools` (bash test/k8s/tools.sh) to build them from the Go module proxy; ' +
        'the first build takes about 10 minutes on 2 cores, later runs reuse the cache. See docs/testing.md.',
    );
  }
  return { kubeVersion, binDir, paths };
}

/** What `bash test/k8s/tools.sh node` adds for a node (node.ts). */
export const NodeToolName = {
  kubeScheduler: 'kube-scheduler',
  kubelet: 'kubelet',
  kubeProxy: 'kube-proxy',
  coredns: 'coredns',
  prometheus: 'prometheus',
} as const;
export type NodeToolName = typeof NodeToolName[keyof typeof NodeToolName];

export interface NodeTools {
  readonly binDir: string;
  readonly paths: Readonly<Record<NodeToolName, string>>;
  /** OCI archive of the pod sandbox image, named registry.k8s.io/pause:<PAUSE_VERSION>. */
  readonly pauseArchive: string;
  readonly pauseImage: string;
}

/** The node's binaries and pause image, or an error naming what is missing and how to build it. */
export function findNodeTools(): NodeTools {
  const versions = pinnedVersions();
  const binDir = path.join(cacheDir(), versions.KUBE_VERSION, 'bin');
  const paths = {} as Record<NodeToolName, string>;
  const missing: string[] = [];
  for (const name of Object.values(NodeToolName)) {
    paths[name] = path.join(binDir, name);
    try {
      accessSync(paths[name], constants.X_OK);
    } catch {
      missing.push(name);
    }
  }
  const pauseArchive = path.join(cacheDir(), versions.KUBE_VERSION, 'images', `pause-${versions.PAUSE_VERSION}.oci.tar`);
  try {
    accessSync(pauseArchive, constants.R_OK);
  } catch {
    missing.push(path.basename(pauseArchive));
  }
  if (missing.length > 0) {
    throw new Error(`node tools ${missing.join(', ')} not found in ${path.dirname(binDir)}. ` +
      'Run `bash test/k8s/tools.sh node` to build them (see docs/testing.md).');
  }
  return { binDir, paths, pauseArchive, pauseImage: `registry.k8s.io/pause:${versions.PAUSE_VERSION}` };
}
