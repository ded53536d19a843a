// How the local control plane's processes are started: the flags of etcd, kube-apiserver and
// kube-controller-manager, free ports, and waiting (bounded) until each one is up.
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import type { CertFiles, Pki } from './pki';
import { ManagedProcess } from './process';
import type { Tools } from './tools';
import { freePort } from '../../helpers/net';

const run = promisify(execFile);

/**
 * The Service IP range of the local control plane: part of 198.18.0.0/15, the benchmarking range
 * (RFC 2544), which no real host uses, so a ClusterIP can never be mistaken for a machine
 * elsewhere. Pods of the test node (node.ts) get addresses from 198.18.0.0/16.
 */
export const SERVICE_CIDR = '198.19.0.0/16';
/** The "kubernetes" Service's IP (the first of SERVICE_CIDR), which the serving certificate covers. */
export const KUBERNETES_SERVICE_IP = '198.19.0.1';

/** Starts etcd on free loopback ports, waits until it is healthy, returns its client URL. */
export async function startEtcd(tools: Tools, dir: string, processes: ManagedProcess[], timeoutMs: number): Promise<string> {
  const [major, minor] = await etcdVersion(tools);
  const [port, peerPort] = await freePorts(2);
  const url = `http://127.0.0.1:${port}`;
  const peer = `http://127.0.0.1:${peerPort}`;
  const etcd = ManagedProcess.start({
    name: 'etcd',
    command: tools.paths.etcd,
    logPath: path.join(dir, 'etcd.log'),
    // If this Node process is killed outright, etcd's watchdog also removes the temp dir (etcd
    // preallocates a 64 MiB WAL there).
    orphanCleanupPath: dir,
    args: [
      '--name=test',
      `--data-dir=${path.join(dir, 'etcd-data')}`,
      `--listen-client-urls=${url}`,
      `--advertise-client-urls=${url}`,
      `--listen-peer-urls=${peer}`,
      `--initial-advertise-peer-urls=${peer}`,
      `--initial-cluster=test=${peer}`,
      // Test data is thrown away: skipping fsync makes every write several times faster
      // (etcd 3.5+; SWITCHBOARD_K8S_ETCD=system may give an older one).
      ...(major > 3 || minor >= 5 ? ['--unsafe-no-fsync'] : []),
      '--log-level=warn',
    ],
  });
  processes.push(etcd);
  await waitReady(processes, 'etcd', timeoutMs, async () => {
    const res = await fetch(`${url}/health`);
    return res.ok && ((await res.json()) as { health?: string }).health === 'true';
  });
  return url;
}

export interface ApiserverOptions {
  readonly etcdUrl: string;
  readonly port: number;
  readonly pki: Pki;
  readonly serving: CertFiles;
  readonly extraArgs: readonly string[];
  /**
   * With a node: the node's address, which pods reach the API server at. The apiserver then
   * listens on every address (clients on the host keep using 127.0.0.1), advertises this one as
   * the "kubernetes" Service's endpoint, authorizes kubelets with the Node authorizer and
   * NodeRestriction, and reaches kubelets with this client certificate.
   */
  readonly node?: { readonly address: string; readonly kubeletClient: CertFiles };
}

/** Starts kube-apiserver on 127.0.0.1 with client-certificate authentication, RBAC and ServiceAccount tokens. */
export function startApiserver(tools: Tools, dir: string, processes: ManagedProcess[], o: ApiserverOptions): void {
  processes.push(ManagedProcess.start({
    name: 'kube-apiserver',
    command: tools.paths['kube-apiserver'],
    logPath: path.join(dir, 'kube-apiserver.log'),
    args: [
      `--etcd-servers=${o.etcdUrl}`,
      ...(o.node ? [
        '--bind-address=0.0.0.0',
        `--advertise-address=${o.node.address}`,
        '--authorization-mode=Node,RBAC',
        '--enable-admission-plugins=NodeRestriction',
        `--kubelet-client-certificate=${o.node.kubeletClient.certPath}`,
        `--kubelet-client-key=${o.node.kubeletClient.keyPath}`,
        '--kubelet-preferred-address-types=InternalIP',
      ] : [
        '--bind-address=127.0.0.1',
        '--advertise-address=127.0.0.1',
        // The "kubernetes" Service's endpoints would point at a loopback address, which the
        // endpoint reconciler refuses; nothing in the tests runs in a pod that would use them.
        '--endpoint-reconciler-type=none',
        '--authorization-mode=RBAC',
      ]),
      `--secure-port=${o.port}`,
      `--tls-cert-file=${o.serving.certPath}`,
      `--tls-private-key-file=${o.serving.keyPath}`,
      `--client-ca-file=${o.pki.ca.certPath}`,
      '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
      `--service-account-key-file=${o.pki.serviceAccountPublicKeyPath}`,
      `--service-account-signing-key-file=${o.pki.serviceAccountKeyPath}`,
      `--service-cluster-ip-range=${SERVICE_CIDR}`,
      `--cert-dir=${path.join(dir, 'apiserver-certs')}`,
      '--profiling=false',
      ...o.extraArgs,
    ],
  }));
}

/**
 * Starts kube-controller-manager as kubeadm runs it: as system:kube-controller-manager (the
 * client certificate in kubeconfigPath) with service-account credentials, so each controller
 * acts as its own ServiceAccount, bound by RBAC's bootstrap policy.
 */
export function startControllerManager(tools: Tools, dir: string, processes: ManagedProcess[], pki: Pki, kubeconfigPath: string, withNodes = false): void {
  processes.push(ManagedProcess.start({
    name: 'kube-controller-manager',
    command: tools.paths['kube-controller-manager'],
    logPath: path.join(dir, 'kube-controller-manager.log'),
    args: [
      `--kubeconfig=${kubeconfigPath}`,
      '--secure-port=0',
      '--leader-elect=false',
      '--use-service-account-credentials=true',
      `--root-ca-file=${pki.ca.certPath}`,
      `--service-account-private-key-file=${pki.serviceAccountKeyPath}`,
      // The CertificateSigningRequest API signs with the cluster CA, as in a kubeadm cluster.
      `--cluster-signing-cert-file=${pki.ca.certPath}`,
      `--cluster-signing-key-file=${pki.ca.keyPath}`,
      `--service-cluster-ip-range=${SERVICE_CIDR}`,
      ...(withNodes ? [
        // A node (node.ts): the node-lifecycle controller takes the node's not-ready taint off
        // once the kubelet reports Ready (and marks it NotReady when the kubelet stops). Pod
        // CIDRs come from the CNI configuration, not from node IPAM.
        '--controllers=*,-node-ipam-controller,-persistentvolume-attach-detach-controller',
      ] : [
        // Nothing here runs nodes: leave out the controllers that manage them.
        '--controllers=*,-node-ipam-controller,-node-lifecycle-controller,-persistentvolume-attach-detach-controller',
      ]),
    ],
  }));
}

/** Polls until ready, failing at once (with its log) if one of the processes exits. */
export async function waitReady(processes: readonly ManagedProcess[], what: string, timeoutMs: number, ready: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    const dead = processes.find((p) => p.status);
    if (dead) {
      throw new Error(`${dead.options.name} exited (code ${dead.status?.code}, signal ${dead.status?.signal}) during start-up\n` +
        `--- ${dead.options.name} log tail ---\n${dead.logTail()}`);
    }
    try {
      if (await ready()) return;
    } catch (err) {
      last = err; // not listening yet, or not ready: poll again
    }
    if (Date.now() >= deadline) {
      const p = processes[processes.length - 1];
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${String(last)})` : ''}\n` +
        `--- ${p.options.name} log tail ---\n${p.logTail()}`, { cause: last });
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

/** n distinct ports that were free a moment ago (test/helpers/net: below the ephemeral range). */
export async function freePorts(n: number): Promise<number[]> {
  const ports: number[] = [];
  for (let i = 0; i < n; i++) ports.push(await freePort());
  return ports;
}

/** [major, minor] of the etcd binary, e.g. [3, 7]. */
async function etcdVersion(tools: Tools): Promise<[number, number]> {
  const { stdout } = await run(tools.paths.etcd, ['--version']);
  const m = /etcd Version: (\d+)\.(\d+)/.exec(stdout);
  if (!m) throw new Error(`cannot read the version of ${tools.paths.etcd}: ${stdout}`);
  return [Number(m[1]), Number(m[2])];
}
