// A real Kubernetes control plane for one test file, the way controller-runtime's envtest does
// it: etcd and kube-apiserver (optionally kube-controller-manager) started on free ports from
// the binaries test/k8s/tools.sh builds, with generated certificates, RBAC on, an admin client
// certificate and TokenRequest-minted ServiceAccount tokens. Everything lives in one temp
// directory and is stopped by stop(). With SWITCHBOARD_K8S_KUBECONFIG set, the same API connects
// to an existing cluster instead (see kubeconfig.ts).
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { KubeApiError, KubeClient, type ApplyOptions, type Credentials, type KubeObject } from './client';
import { freePorts, KUBERNETES_SERVICE_IP, startApiserver, startControllerManager, startEtcd, waitReady } from './components';
import { readKubeconfig, renderKubeconfig } from './kubeconfig';
import { issueThroughCsrApi, Pki, type CertFiles, type ClientIdentity } from './pki';
import type { ManagedProcess } from './process';
import { findTools, type Tools } from './tools';

const run = promisify(execFile);

export interface ControlPlaneOptions {
  /**
   * Also run kube-controller-manager: Deployments get ReplicaSets (pods stay Pending: there is
   * no scheduler or kubelet), deleted owners are garbage-collected, namespaces finish deleting,
   * every namespace gets its default ServiceAccount.
   * @default false
   */
  readonly controllerManager?: boolean;
  /** Extra kube-apiserver flags, e.g. ['--feature-gates=Foo=true']. @default [] */
  readonly apiserverArgs?: readonly string[];
  /** How long to wait for the control plane to become ready. @default 120000 */
  readonly startTimeoutMs?: number;
  /** Keep the temp dir (logs, certificates, kubeconfig) after stop(). @default SWITCHBOARD_K8S_KEEP=1 */
  readonly keepDir?: boolean;
  /**
   * Prepare for a node (test/k8s/harness/node.ts) at this address: the apiserver listens on all
   * addresses and advertises this one (pods reach it through the "kubernetes" Service), the Node
   * authorizer and NodeRestriction are on, and the controller-manager (implied) runs the
   * node-lifecycle controller. Not for an external cluster.
   */
  readonly nodeAddress?: string;
}

export interface ExecResult {
  readonly stdout: string;
  readonly stderr: string;
}

/** The identity the admin client certificate carries: a member of system:masters. */
export const ADMIN: ClientIdentity = { user: 'switchboard-admin', groups: ['system:masters'] };

/** What only a control plane this harness started has. */
interface LocalParts {
  readonly pki: Pki;
  readonly processes: ManagedProcess[];
  readonly keepDir: boolean;
}

export class ControlPlane {
  private stopped = false;
  private readonly namespaces: string[] = [];

  private constructor(
    readonly tools: Tools,
    /** Temp dir holding certificates, logs (*.log), data and kubeconfigs. */
    readonly dir: string,
    /** https://127.0.0.1:<port> for a local control plane. */
    readonly server: string,
    /** PEM of the cluster's CA; undefined for an external cluster whose certificate is publicly trusted. */
    readonly caPem: string | undefined,
    /** Admin credentials: the ADMIN client certificate locally, whatever the kubeconfig holds otherwise. */
    readonly admin: Credentials,
    /** Admin kubeconfig, for helm, kubectl or any client library. */
    readonly kubeconfigPath: string,
    /** REST client as admin. */
    readonly client: KubeClient,
    private readonly local: LocalParts | undefined,
  ) {}

  /** True when connected to an existing cluster (SWITCHBOARD_K8S_KUBECONFIG) rather than one started here. */
  get external(): boolean {
    return this.local === undefined;
  }

  /**
   * Starts a local control plane, or connects to the cluster of SWITCHBOARD_K8S_KUBECONFIG
   * (context SWITCHBOARD_K8S_CONTEXT, default its current one) when that is set.
   */
  static async start(options: ControlPlaneOptions = {}): Promise<ControlPlane> {
    const external = process.env.SWITCHBOARD_K8S_KUBECONFIG;
    if (external) return ControlPlane.connect(external, process.env.SWITCHBOARD_K8S_CONTEXT);
    const tools = findTools();
    const dir = await mkdtemp(path.join(tmpdir(), 'switchboard-k8s-'));
    const processes: ManagedProcess[] = [];
    const keepDir = options.keepDir ?? process.env.SWITCHBOARD_K8S_KEEP === '1';
    const timeoutMs = options.startTimeoutMs ?? 120_000;
    try {
      const pki = await Pki.create(dir);
      const nodeAddress = options.nodeAddress;
      const serving = await pki.serving('apiserver', [KUBERNETES_SERVICE_IP, ...(nodeAddress ? [nodeAddress] : [])]);
      const admin = await pki.client('admin', ADMIN);
      // How the apiserver reaches kubelets (logs, exec, port-forward), as kubeadm's
      // apiserver-kubelet-client: authorized by the kubelet's webhook against RBAC.
      const node = nodeAddress
        ? { address: nodeAddress, kubeletClient: await pki.client('apiserver-kubelet-client', { user: 'kube-apiserver-kubelet-client', groups: ['system:masters'] }) }
        : undefined;
      const etcdUrl = await startEtcd(tools, dir, processes, timeoutMs);
      const [apiPort] = await freePorts(1);
      const server = `https://127.0.0.1:${apiPort}`;
      startApiserver(tools, dir, processes, { etcdUrl, port: apiPort, pki, serving, extraArgs: options.apiserverArgs ?? [], node });
      const client = new KubeClient(server, pki.ca.certPem, { certPem: admin.certPem, keyPem: admin.keyPem });
      await waitReady(processes, 'kube-apiserver /readyz', timeoutMs, async () => {
        const res = await client.request('GET', '/readyz');
        return res.status === 200;
      });

      const kubeconfigPath = path.join(dir, 'kubeconfig');
      await writeFile(kubeconfigPath, renderKubeconfig(server, pki.ca.certPem, 'admin', admin), { mode: 0o600 });
      const adminCredentials = { certPem: admin.certPem, keyPem: admin.keyPem };
      const cp = new ControlPlane(tools, dir, server, pki.ca.certPem, adminCredentials, kubeconfigPath, client,
        { pki, processes, keepDir });
      if (options.controllerManager || nodeAddress) await cp.startControllerManager(timeoutMs, nodeAddress !== undefined);
      return cp;
    } catch (err) {
      await Promise.all(processes.map((p) => p.stop()));
      if (!keepDir) await rm(dir, { recursive: true, force: true });
      throw err;
    }
  }

  private static async connect(kubeconfigFile: string, context: string | undefined): Promise<ControlPlane> {
    // Only helm and kubectl are used; from the cache if built, else from PATH.
    const tools = findTools([]);
    const conn = await readKubeconfig(kubeconfigFile, context);
    const dir = await mkdtemp(path.join(tmpdir(), 'switchboard-k8s-'));
    const kubeconfigPath = path.join(dir, 'kubeconfig');
    await writeFile(kubeconfigPath, renderKubeconfig(conn.server, conn.caPem, 'admin', conn.credentials), { mode: 0o600 });
    const client = new KubeClient(conn.server, conn.caPem, conn.credentials);
    const cp = new ControlPlane(tools, dir, conn.server, conn.caPem, conn.credentials, kubeconfigPath, client, undefined);
    try {
      const readyz = await client.request('GET', '/readyz');
      if (readyz.status !== 200) throw new Error(`${conn.server}/readyz answered ${readyz.status}: ${JSON.stringify(readyz.body)}`);
    } catch (err) {
      await cp.stop();
      throw new Error(`cannot use the cluster of ${kubeconfigFile}: ${(err as Error).message}`, { cause: err });
    }
    return cp;
  }

  /**
   * Creates a namespace (an existing one is fine) and returns its name. On an external cluster
   * stop() deletes the namespaces made here; a local control plane is thrown away whole.
   */
  async createNamespace(name: string): Promise<string> {
    const res = await this.client.request('POST', '/api/v1/namespaces', {
      body: { apiVersion: 'v1', kind: 'Namespace', metadata: { name } },
    });
    if (res.status !== 201 && res.status !== 409) throw new KubeApiError('POST', '/api/v1/namespaces', res.status, res.body);
    if (res.status === 201) this.namespaces.push(name);
    return name;
  }

  /**
   * A bearer token for ServiceAccount namespace/name from the TokenRequest API, creating the
   * ServiceAccount if needed. It has exactly the permissions RBAC gives that ServiceAccount.
   */
  async mintServiceAccountToken(namespace: string, name: string, expirationSeconds = 3600): Promise<string> {
    const sas = `/api/v1/namespaces/${encodeURIComponent(namespace)}/serviceaccounts`;
    const created = await this.client.request('POST', sas, {
      body: { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name } },
    });
    if (created.status !== 201 && created.status !== 409) throw new KubeApiError('POST', sas, created.status, created.body);
    const tr = await this.client.create<{ status: { token: string } }>(`${sas}/${encodeURIComponent(name)}/token`, {
      apiVersion: 'authentication.k8s.io/v1',
      kind: 'TokenRequest',
      spec: { expirationSeconds },
    });
    return tr.status.token;
  }

  /**
   * A client certificate for any user and groups (no RBAC bindings are made): signed with the
   * local CA, or on an external cluster through the CertificateSigningRequest API (which will
   * not sign system:masters).
   */
  issueClientCertificate(identity: ClientIdentity): Promise<CertFiles> {
    const file = `user-${identity.user.replace(/[^\w.-]/g, '_')}`;
    return this.local ? this.local.pki.client(file, identity) : issueThroughCsrApi(this.client, this.dir, file, identity);
  }

  /** A REST client as someone else. */
  clientFor(credentials: Credentials): KubeClient {
    return this.client.as(credentials);
  }

  /** Writes a kubeconfig for other credentials (e.g. a minted token) and returns its path. */
  async writeKubeconfig(name: string, credentials: Credentials): Promise<string> {
    const file = path.join(this.dir, `kubeconfig-${name.replace(/[^\w.-]/g, '_')}`);
    await writeFile(file, renderKubeconfig(this.server, this.caPem, name, credentials), { mode: 0o600 });
    return file;
  }

  /** Server-side apply as admin; see KubeClient.apply. */
  apply(input: string | KubeObject | readonly KubeObject[], options?: ApplyOptions): Promise<KubeObject[]> {
    return this.client.apply(input, options);
  }

  /** Environment for running helm or kubectl against this control plane. */
  env(kubeconfigPath = this.kubeconfigPath): NodeJS.ProcessEnv {
    return {
      ...process.env,
      KUBECONFIG: kubeconfigPath,
      // Keep helm's repositories, cache and plugins out of the user's home.
      HELM_CACHE_HOME: path.join(this.dir, 'helm', 'cache'),
      HELM_CONFIG_HOME: path.join(this.dir, 'helm', 'config'),
      HELM_DATA_HOME: path.join(this.dir, 'helm', 'data'),
      PATH: `${this.tools.binDir}${path.delimiter}${process.env.PATH ?? ''}`,
    };
  }

  /** Runs the cached helm; rejects with its stderr on a non-zero exit. */
  helm(args: readonly string[], kubeconfigPath?: string): Promise<ExecResult> {
    return this.exec(this.tools.paths.helm, args, kubeconfigPath);
  }

  /** Runs the cached kubectl; rejects with its stderr on a non-zero exit. */
  kubectl(args: readonly string[], kubeconfigPath?: string): Promise<ExecResult> {
    return this.exec(this.tools.paths.kubectl, args, kubeconfigPath);
  }

  /** The tail of a component's log: 'etcd', 'kube-apiserver' or 'kube-controller-manager'. */
  logTail(component: string, lines = 30): string {
    return this.local?.processes.find((p) => p.options.name === component)?.logTail(lines) ?? `(no ${component} log)`;
  }

  /** Stops one local component (e.g. 'kube-controller-manager') ahead of stop(); no-op if absent. */
  async stopComponent(component: string): Promise<void> {
    await this.local?.processes.find((p) => p.options.name === component)?.stop();
  }

  /**
   * Stops every process and removes the temp dir; on an external cluster, deletes the
   * namespaces createNamespace made instead. Safe to call twice.
   */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.local) {
      // Reverse start order: controllers, then the apiserver, then its storage.
      for (const p of [...this.local.processes].reverse()) await p.stop();
    } else {
      await Promise.all(this.namespaces.map((ns) => this.client.request('DELETE', `/api/v1/namespaces/${ns}`)));
    }
    if (!this.local?.keepDir) await rm(this.dir, { recursive: true, force: true });
  }

  private async exec(file: string, args: readonly string[], kubeconfigPath?: string): Promise<ExecResult> {
    try {
      const { stdout, stderr } = await run(file, [...args], { env: this.env(kubeconfigPath), maxBuffer: 64 << 20 });
      return { stdout, stderr };
    } catch (err) {
      const e = err as Error & { stderr?: string; stdout?: string };
      throw new Error(`${path.basename(file)} ${args.join(' ')} failed: ${e.stderr || e.stdout || e.message}`, { cause: err });
    }
  }

  /** The cluster CA certificate's file (local control plane only). */
  get caPath(): string {
    if (!this.local) throw new Error('caPath: an external cluster\'s CA file is not known');
    return this.local.pki.ca.certPath;
  }

  /** The API server's port. */
  get port(): number {
    return Number(new URL(this.server).port);
  }

  private async startControllerManager(timeoutMs: number, withNodes: boolean): Promise<void> {
    if (!this.local) return;
    const { pki, processes } = this.local;
    const cert = await pki.client('kube-controller-manager', { user: 'system:kube-controller-manager' });
    const config = await this.writeKubeconfig('kube-controller-manager', { certPem: cert.certPem, keyPem: cert.keyPem });
    startControllerManager(this.tools, this.dir, processes, pki, config, withNodes);
    // The serviceaccount controller gives every namespace a "default" ServiceAccount: once the
    // one in "default" exists, the controllers are running.
    await waitReady(processes, 'kube-controller-manager (default ServiceAccount)', timeoutMs, async () => {
      const res = await this.client.request('GET', '/api/v1/namespaces/default/serviceaccounts/default');
      return res.status === 200;
    });
  }
}

/** Shorthand for ControlPlane.start. */
export function startControlPlane(options?: ControlPlaneOptions): Promise<ControlPlane> {
  return ControlPlane.start(options);
}
