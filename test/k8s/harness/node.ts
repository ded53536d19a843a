// A real single-node cluster for end-to-end tests (test/e2e): the control plane of
// control-plane.ts plus one node made of real parts on this machine:
//
//   containerd (Debian) + runc    own config, root, state and socket under the temp dir
//   CNI bridge + host-local       pods get 198.18.1.0/24 on bridge sbe2e0, whose 198.18.1.1 is
//                                 the node's address (no dummy interfaces on these machines)
//   kubelet                       cgroupfs, no QoS cgroups, registers the node, serves logs,
//                                 exec and port-forward to the API server
//   kube-scheduler, kube-proxy    kube-proxy in iptables mode: Services (198.19.0.0/16) and
//                                 NodePorts, also on 127.0.0.1
//   CoreDNS                       cluster DNS on 198.18.1.1:53 (kubelet's clusterDNS)
//
// Nothing leaves the machine: pods' only route out is the bridge to this host, forwarding from
// the bridge to any other interface is dropped, and the Service range is routed to the bridge.
//
// The addresses, bridge and iptables chains are fixed, so one node runs at a time per machine: a
// lock (flock on /run/switchboard-e2e-node.lock) makes a second one wait. stop() removes
// everything (pods, containers, mounts, network namespaces, interfaces, routes, iptables rules,
// sysctls it changed). If the Node process dies without stop() (kill -9, OOM, a CI timeout), a
// watchdog shell runs node-cleanup.js, which removes the same once the dead run's lock is free;
// and start() first removes whatever an earlier run still left.
//
// Needs root, containerd, runc, containernetworking-plugins, iptables, iproute2, flock, and
// `bash test/k8s/tools.sh node`. See docs/testing.md, "The node".
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import { waitFor } from './client';
import { freePorts, SERVICE_CIDR, waitReady } from './components';
import { ControlPlane } from './control-plane';
import { ManagedProcess } from './process';
import { findNodeTools, type NodeTools } from './tools';

const run = promisify(execFile);

/** The node's fixed network: see the header. */
export const NODE_NETWORK = {
  bridge: 'sbe2e0',
  /** The node's InternalIP: the bridge's address, the pods' gateway. */
  address: '198.18.1.1',
  podCidr: '198.18.1.0/24',
  /** Everything pods may be given, for kube-proxy's clusterCIDR. */
  clusterCidr: '198.18.0.0/16',
  serviceCidr: SERVICE_CIDR,
  /** Our own iptables chain, hooked into filter FORWARD. */
  forwardChain: 'SWITCHBOARD-E2E-FWD',
} as const;

const LOCK_FILE = '/run/switchboard-e2e-node.lock';
const CNI_BIN_DIRS = ['/usr/lib/cni', '/opt/cni/bin'];

export interface NodeClusterOptions {
  /** OCI archives to import into containerd, e.g. dist-image/switchboard.oci.tar. */
  readonly images?: readonly ImageArchive[];
  /** @default 'e2e-node' */
  readonly nodeName?: string;
  /** @default 180000 */
  readonly startTimeoutMs?: number;
  /** Keep the temp dir (logs) after stop(). @default SWITCHBOARD_K8S_KEEP=1 */
  readonly keepDir?: boolean;
  /** Called with each step's name and seconds, for the test's timings. */
  readonly onStep?: (step: string, seconds: number) => void;
  /** Also removed by the watchdog if this process dies without stop() (the test's own temp dirs). */
  readonly orphanCleanupPaths?: readonly string[];
}

export interface ImageArchive {
  readonly archive: string;
  /** The names the image must answer to in the CRI, e.g. ['docker.io/library/switchboard:0.1.0']. */
  readonly names: readonly string[];
}

/** A control plane with one node. */
export class NodeCluster {
  private stopped = false;
  private readonly processes: ManagedProcess[] = [];
  private readonly netnsBefore: Set<string>;

  private constructor(
    readonly cp: ControlPlane,
    readonly tools: NodeTools,
    /** The node's own temp dir (containerd, kubelet, CNI, logs). */
    readonly dir: string,
    readonly nodeName: string,
    private readonly lock: ChildProcess,
    private readonly watchdog: ChildProcess,
    private readonly keepDir: boolean,
    private readonly sysctlsBefore: ReadonlyMap<string, string>,
  ) {
    this.netnsBefore = new Set(listNetns());
  }

  get containerdSocket(): string {
    return path.join(this.dir, 'containerd', 'containerd.sock');
  }

  /** The node's address: where pods reach the API server, DNS and whatever the host serves them. */
  get address(): string {
    return NODE_NETWORK.address;
  }

  static async start(options: NodeClusterOptions = {}): Promise<NodeCluster> {
    if (process.getuid?.() !== 0) throw new Error('a node needs root (containerd, mounts, network)');
    const tools = findNodeTools();
    const timeoutMs = options.startTimeoutMs ?? 180_000;
    const step = stepTimer(options.onStep);
    const lock = await acquireLock(timeoutMs);
    const watchdog = startOrphanWatchdog(options.orphanCleanupPaths ?? []);
    let cluster: NodeCluster | undefined;
    let cp: ControlPlane | undefined;
    let dir: string | undefined;
    try {
      await cleanupLeftovers(tools);
      const sysctls = await setUpHostNetwork();
      step('host network');
      cp = await ControlPlane.start({ nodeAddress: NODE_NETWORK.address, startTimeoutMs: timeoutMs, keepDir: options.keepDir });
      step('control plane');
      dir = await mkdtemp(path.join(tmpdir(), 'switchboard-node-'));
      cluster = new NodeCluster(cp, tools, dir, options.nodeName ?? 'e2e-node', lock, watchdog,
        options.keepDir ?? process.env.SWITCHBOARD_K8S_KEEP === '1', sysctls);
      await cluster.startContainerd(timeoutMs);
      step('containerd');
      await cluster.importImage({ archive: tools.pauseArchive, names: [tools.pauseImage] });
      for (const image of options.images ?? []) await cluster.importImage(image);
      step('images');
      await cluster.startCoreDns(timeoutMs);
      await cluster.startKubelet(timeoutMs);
      step('kubelet (node Ready)');
      await cluster.startScheduler(timeoutMs);
      await cluster.startKubeProxy(timeoutMs);
      step('scheduler, kube-proxy, DNS');
      return cluster;
    } catch (err) {
      if (cluster) await cluster.stop();
      else {
        await cp?.stop();
        await tearDownHostNetwork(sysctlsLeftBehind()).catch(() => {});
        watchdog.kill('SIGKILL');
        releaseLock(lock);
      }
      throw err;
    }
  }

  /** The tail of a node component's log: containerd, kubelet, kube-scheduler, kube-proxy, coredns. */
  logTail(component: string, lines = 40): string {
    return this.processes.find((p) => p.options.name === component)?.logTail(lines) ?? this.cp.logTail(component, lines);
  }

  /** `ctr` against this node's containerd, namespace k8s.io (the CRI's). */
  async ctr(args: readonly string[]): Promise<string> {
    const { stdout } = await run('ctr', ['--address', this.containerdSocket, '--namespace', 'k8s.io', ...args], { maxBuffer: 16 << 20 });
    return stdout;
  }

  /** Imports an OCI archive into the CRI's image store under each of image.names. */
  async importImage(image: ImageArchive): Promise<void> {
    // An OCI archive's ref.name may be a bare tag ("switchboard:0.1.0"): ctr keeps it as is, and
    // the CRI, which looks images up by their normalized name, would not find it.
    const out = await this.ctr(['images', 'import', '--all-platforms', image.archive]);
    const source = [...out.matchAll(/unpacking (\S+) \(/g)].map((m) => m[1]).find((n) => !n.startsWith('import-'));
    if (!source) throw new Error(`ctr import of ${image.archive} named no image:\n${out}`);
    for (const name of image.names) {
      if (name !== source) await this.ctr(['images', 'tag', '--force', source, name]);
    }
    // The CRI only lists images whose name it can parse; check it sees each one.
    const names = await this.imageNames();
    const missing = image.names.filter((n) => !names.includes(n));
    if (missing.length > 0) throw new Error(`after importing ${image.archive}: ${missing.join(', ')} not in containerd (${names.join(', ')})`);
  }

  private async imageNames(): Promise<string[]> {
    return (await this.ctr(['images', 'list', '--quiet'])).split('\n').filter((l) => l !== '');
  }

  /**
   * Stops everything, in an order that leaves nothing behind: no new pods (scheduler and
   * controllers first), every pod removed through the kubelet (so the CRI tears down its network),
   * then any container left killed through containerd, the node's processes, mounts, network
   * namespaces, interfaces, iptables rules and sysctls; then the control plane. Safe to call twice.
   */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    const errors: unknown[] = [];
    const attempt = async (what: string, fn: () => Promise<unknown>): Promise<void> => {
      try {
        await fn();
      } catch (err) {
        errors.push(new Error(`${what}: ${(err as Error).message}`));
      }
    };
    const byName = (name: string) => this.processes.find((p) => p.options.name === name);
    await attempt('stop kube-scheduler', async () => byName('kube-scheduler')?.stop());
    await attempt('stop the controller-manager', async () => {
      // Through the control plane's own process list: no ReplicaSet may replace what goes now.
      await this.cp.stopComponent('kube-controller-manager');
    });
    if (byName('kubelet') && !byName('kubelet')?.status) {
      await attempt('remove the pods', () => this.removeAllPods());
    }
    await attempt('stop kubelet', async () => byName('kubelet')?.stop());
    await attempt('kill containers', () => this.killAllContainers());
    for (const p of [...this.processes].reverse()) await attempt(`stop ${p.options.name}`, () => p.stop());
    await attempt('kill shims and containers', () => killProcessesMentioning(this.dir));
    await attempt('kube-proxy --cleanup', () => run(this.tools.paths['kube-proxy'], ['--cleanup'], { timeout: 60_000 }));
    await attempt('unmount', () => unmountUnder(this.dir));
    await attempt('network namespaces', async () => {
      for (const ns of listNetns()) {
        if (!this.netnsBefore.has(ns) && ns.startsWith('cni-')) await removeNetns(ns);
      }
    });
    await attempt('host network', () => tearDownHostNetwork(this.sysctlsBefore));
    await attempt('control plane', () => this.cp.stop());
    if (!this.keepDir) await attempt('remove the temp dir', () => rm(this.dir, { recursive: true, force: true }));
    this.watchdog.kill('SIGKILL');
    releaseLock(this.lock);
    if (errors.length > 0) throw new AggregateError(errors, `node stop: ${errors.map((e) => (e as Error).message).join('; ')}`);
  }

  /**
   * What is still there after stop(), as lines (empty: nothing): processes whose command line
   * names this node's, the control plane's or one of `extraDirs` temp dirs; processes in the
   * containers' cgroups; mounts under those dirs; network namespaces of pods; the bridge, its
   * route, our chain and any KUBE-* chain; sysctls not put back; the temp dirs themselves. The
   * lock makes this the only node on the machine, so any KUBE-* chain or k8s.io cgroup is ours.
   */
  async leftovers(extraDirs: readonly string[] = []): Promise<string[]> {
    const out: string[] = [];
    const dirs = [this.dir, this.cp.dir, ...extraDirs];
    for (const pid of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
      if (Number(pid) === process.pid) continue;
      try {
        const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
        if (dirs.some((d) => cmd.includes(d))) out.push(`process ${pid}: ${cmd.replace(/\0/g, ' ').slice(0, 160)}`);
      } catch {
        // gone
      }
    }
    for (const controller of readdirSync('/sys/fs/cgroup')) {
      const k8s = path.join('/sys/fs/cgroup', controller, 'k8s.io');
      if (!existsSync(k8s)) continue;
      for (const id of readdirSync(k8s, { withFileTypes: true }).filter((e) => e.isDirectory())) {
        const procs = (() => {
          try {
            return readFileSync(path.join(k8s, id.name, 'cgroup.procs'), 'utf8').trim();
          } catch {
            return '';
          }
        })();
        if (procs !== '') out.push(`container processes in ${path.join(k8s, id.name)}: ${procs.split('\n').join(' ')}`);
      }
    }
    const mounts = (await readFile('/proc/self/mounts', 'utf8')).split('\n').map((l) => l.split(' ')[1] ?? '');
    for (const m of mounts) if (dirs.some((d) => m === d || m.startsWith(`${d}/`))) out.push(`mount ${m}`);
    for (const ns of listNetns()) if (!this.netnsBefore.has(ns) && ns.startsWith('cni-')) out.push(`network namespace ${ns}`);
    if (await sh('ip', ['link', 'show', NODE_NETWORK.bridge]).then(() => true, () => false)) out.push(`link ${NODE_NETWORK.bridge}`);
    const routes = await sh('ip', ['route', 'show', NODE_NETWORK.serviceCidr]).catch(() => '');
    if (routes.trim() !== '') out.push(`route ${routes.trim()}`);
    for (const cmd of ['iptables', 'ip6tables']) {
      for (const table of ['filter', 'nat', 'mangle']) {
        const rules = await sh(cmd, ['-w', '-t', table, '-S']).catch(() => '');
        for (const m of rules.matchAll(/^-N ((?:KUBE-|SWITCHBOARD-E2E)\S*)$/gm)) out.push(`${cmd} -t ${table} chain ${m[1]}`);
      }
    }
    for (const [key, value] of this.sysctlsBefore) {
      const now = readFileSync(`/proc/sys/${key}`, 'utf8').trim();
      if (now !== value) out.push(`sysctl ${key} = ${now}, was ${value}`);
    }
    if (!this.keepDir) for (const d of dirs) if (existsSync(d)) out.push(`directory ${d}`);
    return out;
  }

  // ---- start-up -------------------------------------------------------------------------------

  private async startContainerd(timeoutMs: number): Promise<void> {
    const base = path.join(this.dir, 'containerd');
    const cni = path.join(this.dir, 'cni');
    await mkdir(path.join(cni, 'net.d'), { recursive: true });
    await mkdir(base, { recursive: true });
    const [streamPort] = await freePorts(1);
    const cniBin = CNI_BIN_DIRS.find((d) => existsSync(path.join(d, 'bridge')));
    if (!cniBin) throw new Error(`no CNI bridge plugin in ${CNI_BIN_DIRS.join(' or ')} (apt-get install containernetworking-plugins)`);
    const q = JSON.stringify;
    await writeFile(path.join(base, 'config.toml'), [
      'version = 2',
      `root = ${q(path.join(base, 'root'))}`,
      `state = ${q(path.join(base, 'state'))}`,
      '[grpc]',
      `  address = ${q(this.containerdSocket)}`,
      '[ttrpc]',
      `  address = ${q(`${this.containerdSocket}.ttrpc`)}`,
      '[debug]',
      '  level = "info"',
      '[plugins."io.containerd.internal.v1.opt"]',
      `  path = ${q(path.join(base, 'opt'))}`,
      '[plugins."io.containerd.grpc.v1.cri"]',
      `  sandbox_image = ${q(this.tools.pauseImage)}`,
      // Lowering oom_score_adj is denied here even to root: without this, every sandbox fails
      // with runc's "can't get final child's PID from pipe: EOF".
      '  restrict_oom_score_adj = true',
      '  disable_apparmor = true',
      '  stream_server_address = "127.0.0.1"',
      `  stream_server_port = ${q(String(streamPort))}`,
      // Pods' network namespaces under the state dir, not /run/netns.
      '  netns_mounts_under_state_dir = true',
      '  [plugins."io.containerd.grpc.v1.cri".containerd]',
      '    snapshotter = "overlayfs"',
      '    default_runtime_name = "runc"',
      '    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]',
      '      runtime_type = "io.containerd.runc.v2"',
      '      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]',
      '        SystemdCgroup = false',
      '  [plugins."io.containerd.grpc.v1.cri".cni]',
      `    bin_dir = ${q(cniBin)}`,
      `    conf_dir = ${q(path.join(cni, 'net.d'))}`,
      '    max_conf_num = 1',
      '',
    ].join('\n'));
    await writeFile(path.join(cni, 'net.d', '10-switchboard-e2e.conflist'), JSON.stringify({
      cniVersion: '1.0.0',
      name: 'switchboard-e2e',
      plugins: [{
        type: 'bridge',
        bridge: NODE_NETWORK.bridge,
        isGateway: true,
        ipMasq: false,
        // A pod reaching itself through a Service.
        hairpinMode: true,
        ipam: {
          type: 'host-local',
          ranges: [[{ subnet: NODE_NETWORK.podCidr, gateway: NODE_NETWORK.address }]],
          routes: [{ dst: '0.0.0.0/0' }],
          dataDir: path.join(cni, 'ipam'),
        },
      }],
    }, null, 2));
    const containerd = this.spawn('containerd', 'containerd', ['--config', path.join(base, 'config.toml')]);
    await waitReady([containerd], 'containerd', timeoutMs, async () => {
      await this.ctr(['version']);
      return true;
    });
  }

  private async startCoreDns(timeoutMs: number): Promise<void> {
    const [healthPort, readyPort] = await freePorts(2);
    const corefile = path.join(this.dir, 'Corefile');
    await writeFile(corefile, [
      `.:53 {`,
      `    bind ${NODE_NETWORK.address}`,
      '    errors',
      `    health 127.0.0.1:${healthPort}`,
      `    ready 127.0.0.1:${readyPort}`,
      '    kubernetes cluster.local in-addr.arpa ip6.arpa {',
      `        kubeconfig ${this.cp.kubeconfigPath}`,
      '        pods insecure',
      '        fallthrough in-addr.arpa ip6.arpa',
      '        ttl 5',
      '    }',
      // No upstream: nothing resolves outside the cluster (there is no network to reach).
      '    cache 5',
      '}',
      '',
    ].join('\n'));
    const coredns = this.spawn('coredns', this.tools.paths.coredns, ['-conf', corefile]);
    await waitReady([coredns], 'CoreDNS /ready', timeoutMs, async () => (await fetch(`http://127.0.0.1:${readyPort}/ready`)).ok);
  }

  private async startKubelet(timeoutMs: number): Promise<void> {
    const kdir = path.join(this.dir, 'kubelet');
    await mkdir(kdir, { recursive: true });
    const cert = await this.cp.issueClientCertificate({ user: `system:node:${this.nodeName}`, groups: ['system:nodes'] });
    const kubeconfig = await this.cp.writeKubeconfig('kubelet', { certPem: cert.certPem, keyPem: cert.keyPem });
    const [port, healthzPort] = await freePorts(2);
    const resolvConf = path.join(kdir, 'resolv.conf');
    // The node's own resolver configuration, which pods' resolv.conf is built from: nothing but
    // the cluster DNS the kubelet adds.
    await writeFile(resolvConf, '');
    const config = path.join(kdir, 'config.yaml');
    await writeFile(config, stringify({
      apiVersion: 'kubelet.config.k8s.io/v1beta1',
      kind: 'KubeletConfiguration',
      address: NODE_NETWORK.address,
      port,
      readOnlyPort: 0,
      healthzBindAddress: '127.0.0.1',
      healthzPort,
      authentication: {
        anonymous: { enabled: false },
        webhook: { enabled: true },
        x509: { clientCAFile: this.cp.caPath },
      },
      authorization: { mode: 'Webhook' },
      containerRuntimeEndpoint: `unix://${this.containerdSocket}`,
      // cgroups are v1 on these machines, with no systemd; no per-QoS cgroups or node
      // allocatable enforcement (the kubelet cannot own the cgroup hierarchy here).
      failCgroupV1: false,
      cgroupDriver: 'cgroupfs',
      cgroupsPerQOS: false,
      enforceNodeAllocatable: [],
      failSwapOn: false,
      // The machine's disk and memory are shared with other work: evict only when really short.
      evictionHard: { 'memory.available': '100Mi', 'nodefs.available': '1%', 'nodefs.inodesFree': '1%', 'imagefs.available': '1%' },
      imageGCHighThresholdPercent: 100,
      imageGCLowThresholdPercent: 99,
      localStorageCapacityIsolation: false,
      clusterDNS: [NODE_NETWORK.address],
      clusterDomain: 'cluster.local',
      resolvConf,
      podLogsDir: path.join(this.dir, 'pod-logs'),
      volumePluginDir: path.join(kdir, 'volume-plugins'),
      staticPodPath: '',
      serializeImagePulls: false,
      nodeStatusUpdateFrequency: '5s',
      nodeStatusReportFrequency: '10s',
      syncFrequency: '10s',
      fileCheckFrequency: '10s',
      shutdownGracePeriod: '0s',
      protectKernelDefaults: false,
      oomScoreAdj: 0,
      maxPods: 60,
      rotateCertificates: false,
      serverTLSBootstrap: false,
    }));
    const kubelet = this.spawn('kubelet', this.tools.paths.kubelet, [
      `--config=${config}`,
      `--kubeconfig=${kubeconfig}`,
      `--root-dir=${kdir}`,
      `--cert-dir=${path.join(kdir, 'pki')}`,
      `--hostname-override=${this.nodeName}`,
      `--node-ip=${NODE_NETWORK.address}`,
      '--v=1',
    ]);
    // Ready, and the not-ready taint gone (the node-lifecycle controller's work): pods schedule.
    await waitReady([kubelet], `node ${this.nodeName} Ready and untainted`, timeoutMs, async () => {
      const node = await this.cp.client.request<NodeObject>('GET', `/api/v1/nodes/${this.nodeName}`);
      if (node.status !== 200) return false;
      const ready = node.body.status?.conditions?.find((c) => c.type === 'Ready')?.status === 'True';
      const tainted = (node.body.spec?.taints ?? []).some((t) => t.key.startsWith('node.kubernetes.io/'));
      return ready && !tainted;
    });
  }

  private async startScheduler(timeoutMs: number): Promise<void> {
    const cert = await this.cp.issueClientCertificate({ user: 'system:kube-scheduler' });
    const kubeconfig = await this.cp.writeKubeconfig('kube-scheduler', { certPem: cert.certPem, keyPem: cert.keyPem });
    const config = path.join(this.dir, 'kube-scheduler.yaml');
    await writeFile(config, stringify({
      apiVersion: 'kubescheduler.config.k8s.io/v1',
      kind: 'KubeSchedulerConfiguration',
      clientConnection: { kubeconfig },
      leaderElection: { leaderElect: false },
    }));
    const [port] = await freePorts(1);
    const scheduler = this.spawn('kube-scheduler', this.tools.paths['kube-scheduler'], [
      `--config=${config}`,
      '--bind-address=127.0.0.1',
      `--secure-port=${port}`,
      `--authentication-kubeconfig=${kubeconfig}`,
      `--authorization-kubeconfig=${kubeconfig}`,
      '--authentication-tolerate-lookup-failure',
    ]);
    await waitReady([scheduler], 'kube-scheduler /healthz', timeoutMs, async () => {
      const res = await fetchInsecure(`https://127.0.0.1:${port}/healthz`);
      return res === 200;
    });
  }

  private async startKubeProxy(timeoutMs: number): Promise<void> {
    const cert = await this.cp.issueClientCertificate({ user: 'system:kube-proxy' });
    const kubeconfig = await this.cp.writeKubeconfig('kube-proxy', { certPem: cert.certPem, keyPem: cert.keyPem });
    const [healthzPort, metricsPort] = await freePorts(2);
    const config = path.join(this.dir, 'kube-proxy.yaml');
    await writeFile(config, stringify({
      apiVersion: 'kubeproxy.config.k8s.io/v1alpha1',
      kind: 'KubeProxyConfiguration',
      clientConnection: { kubeconfig },
      mode: 'iptables',
      hostnameOverride: this.nodeName,
      bindAddress: NODE_NETWORK.address,
      clusterCIDR: NODE_NETWORK.clusterCidr,
      healthzBindAddress: `127.0.0.1:${healthzPort}`,
      metricsBindAddress: `127.0.0.1:${metricsPort}`,
      // NodePorts on the node's address and on 127.0.0.1 (kube-proxy sets route_localnet for
      // that; stop() puts it back).
      nodePortAddresses: ['127.0.0.0/8', `${NODE_NETWORK.address}/32`],
      iptables: { syncPeriod: '10s', minSyncPeriod: '0s', localhostNodePorts: true },
      // Leave the machine's conntrack settings alone.
      conntrack: { maxPerCore: 0, min: 0, tcpEstablishedTimeout: '0s', tcpCloseWaitTimeout: '0s' },
      oomScoreAdj: 0,
    }));
    const proxy = this.spawn('kube-proxy', this.tools.paths['kube-proxy'], [`--config=${config}`]);
    await waitReady([proxy], 'kube-proxy /healthz', timeoutMs, async () => (await fetch(`http://127.0.0.1:${healthzPort}/healthz`)).ok);
    // The "kubernetes" Service's rules are in place once pods could use it.
    await waitFor('kube-proxy to program the kubernetes Service', timeoutMs, async () => {
      const { stdout } = await run('iptables-save', ['-t', 'nat']);
      return stdout.includes('default/kubernetes:https');
    });
  }

  private spawn(name: string, command: string, args: readonly string[]): ManagedProcess {
    const p = ManagedProcess.start({ name, command, args, logPath: path.join(this.dir, `${name}.log`) });
    this.processes.push(p);
    return p;
  }

  // ---- tear-down ------------------------------------------------------------------------------

  private async removeAllPods(): Promise<void> {
    const client = this.cp.client;
    const pods = await client.request<{ items: { metadata: { name: string; namespace: string } }[] }>('GET', '/api/v1/pods');
    const items = pods.status === 200 ? pods.body.items : [];
    // Graceful first (preStop hooks and drains are part of what is tested elsewhere; here only
    // the teardown matters), bounded: then forced.
    await Promise.all(items.map((p) => client.request('DELETE', `/api/v1/namespaces/${p.metadata.namespace}/pods/${p.metadata.name}`,
      { body: { kind: 'DeleteOptions', apiVersion: 'v1', gracePeriodSeconds: 1 } })));
    try {
      await waitFor('the kubelet to stop every pod sandbox', 60_000, async () => (await this.runningSandboxes()) === 0);
    } catch {
      await Promise.all(items.map((p) => client.request('DELETE', `/api/v1/namespaces/${p.metadata.namespace}/pods/${p.metadata.name}`,
        { body: { kind: 'DeleteOptions', apiVersion: 'v1', gracePeriodSeconds: 0 } })));
      await waitFor('the kubelet to stop every pod sandbox (forced)', 30_000, async () => (await this.runningSandboxes()) === 0);
    }
  }

  /** Running tasks in containerd's k8s.io namespace (sandboxes and containers). */
  private async runningSandboxes(): Promise<number> {
    const out = await this.ctr(['tasks', 'list', '--quiet']).catch(() => '');
    return out.split('\n').filter((l) => l.trim() !== '').length;
  }

  private async killAllContainers(): Promise<void> {
    const containerd = this.processes.find((p) => p.options.name === 'containerd');
    if (!containerd || containerd.status) return;
    const ids = (await this.ctr(['tasks', 'list', '--quiet']).catch(() => '')).split('\n').filter((l) => l.trim() !== '');
    for (const id of ids) await this.ctr(['tasks', 'kill', '--signal', 'SIGKILL', id]).catch(() => {});
    await waitFor('containerd tasks to exit', 20_000, async () => {
      const out = await this.ctr(['tasks', 'list']).catch(() => '');
      return !/RUNNING|PAUSED|CREATED/.test(out);
    }).catch(() => {});
    for (const id of ids) await this.ctr(['tasks', 'delete', '--force', id]).catch(() => {});
  }
}

interface NodeObject {
  spec?: { taints?: { key: string; effect: string }[] };
  status?: { conditions?: { type: string; status: string }[] };
}

/** Shorthand for NodeCluster.start. */
export function startNodeCluster(options?: NodeClusterOptions): Promise<NodeCluster> {
  return NodeCluster.start(options);
}

// ---- host network ---------------------------------------------------------------------------

/** Where the values of SYSCTLS before a run are kept while it runs. */
const SYSCTL_STATE = '/run/switchboard-e2e-node.sysctls.json';
const SYSCTLS = [
  // Ours and kube-proxy's (localhost NodePorts).
  'net/ipv4/ip_forward', 'net/ipv4/conf/all/route_localnet', 'net/bridge/bridge-nf-call-iptables',
  // The kubelet's "kernel tunables" (protectKernelDefaults: false lets it set them; true would
  // make it refuse to start on this machine's values).
  'vm/overcommit_memory', 'vm/panic_on_oom', 'kernel/panic', 'kernel/panic_on_oops',
  'kernel/keys/root_maxkeys', 'kernel/keys/root_maxbytes',
];

async function sh(cmd: string, args: readonly string[]): Promise<string> {
  const { stdout } = await run(cmd, [...args]);
  return stdout;
}

/**
 * The bridge with the node's address (the CNI bridge plugin finds it and attaches pods), the
 * Service range routed to it, forwarding on but only within the bridge, bridged traffic seen by
 * iptables (kube-proxy's rules for pod-to-Service-to-pod on one bridge). Returns the sysctls'
 * values before, for tearDownHostNetwork.
 */
async function setUpHostNetwork(): Promise<Map<string, string>> {
  const before = new Map<string, string>();
  for (const key of SYSCTLS) {
    try {
      before.set(key, readFileSync(`/proc/sys/${key}`, 'utf8').trim());
    } catch {
      // not on this kernel
    }
  }
  // Kept on disk too, so that the next start can put them back after a run killed outright.
  await writeFile(SYSCTL_STATE, JSON.stringify(Object.fromEntries(before)));
  const { bridge, address, podCidr, serviceCidr, forwardChain } = NODE_NETWORK;
  await sh('ip', ['link', 'add', 'name', bridge, 'type', 'bridge']);
  await sh('ip', ['addr', 'add', `${address}/${podCidr.split('/')[1]}`, 'dev', bridge]);
  await sh('ip', ['link', 'set', bridge, 'up']);
  await sh('ip', ['route', 'add', serviceCidr, 'dev', bridge, 'src', address]);
  // Pods may talk to each other and to this host, nowhere else.
  await sh('iptables', ['-w', '-N', forwardChain]);
  await sh('iptables', ['-w', '-A', forwardChain, '-i', bridge, '-o', bridge, '-j', 'ACCEPT']);
  await sh('iptables', ['-w', '-A', forwardChain, '-i', bridge, '-j', 'DROP']);
  await sh('iptables', ['-w', '-A', forwardChain, '-o', bridge, '!', '-s', NODE_NETWORK.clusterCidr, '-j', 'DROP']);
  await sh('iptables', ['-w', '-I', 'FORWARD', '1', '-j', forwardChain]);
  await writeSysctl('net/ipv4/ip_forward', '1');
  if (before.has('net/bridge/bridge-nf-call-iptables')) await writeSysctl('net/bridge/bridge-nf-call-iptables', '1');
  return before;
}

/** The sysctls a killed run changed, from its SYSCTL_STATE file; empty if none. */
function sysctlsLeftBehind(): Map<string, string> {
  try {
    return new Map(Object.entries(JSON.parse(readFileSync(SYSCTL_STATE, 'utf8')) as Record<string, string>));
  } catch {
    return new Map();
  }
}

async function tearDownHostNetwork(sysctls: ReadonlyMap<string, string>): Promise<void> {
  const { bridge, serviceCidr, forwardChain } = NODE_NETWORK;
  // Pods' veths (their namespaces are gone by now, which removes the pairs; any left goes here).
  const links = await sh('ip', ['-o', 'link', 'show', 'master', bridge]).catch(() => '');
  for (const m of links.matchAll(/^\d+: ([^@:]+)/gm)) await sh('ip', ['link', 'del', m[1]]).catch(() => {});
  await sh('ip', ['route', 'del', serviceCidr]).catch(() => {});
  await sh('ip', ['link', 'del', bridge]).catch(() => {});
  while (await sh('iptables', ['-w', '-D', 'FORWARD', '-j', forwardChain]).then(() => true, () => false)) { /* every copy */ }
  await sh('iptables', ['-w', '-F', forwardChain]).catch(() => {});
  await sh('iptables', ['-w', '-X', forwardChain]).catch(() => {});
  for (const [key, value] of sysctls) await writeSysctl(key, value).catch(() => {});
  await rm(SYSCTL_STATE, { force: true });
  await removeKubeChains();
}

/**
 * The kubelet's own iptables chains (KUBE-FIREWALL, KUBE-KUBELET-CANARY, KUBE-IPTABLES-HINT),
 * which `kube-proxy --cleanup` leaves, with the rules jumping to them, for IPv4 and IPv6. Only
 * called once this machine's one node (the lock) has no kubelet or kube-proxy running.
 */
async function removeKubeChains(): Promise<void> {
  for (const cmd of ['iptables', 'ip6tables']) {
    for (const table of ['filter', 'nat', 'mangle']) {
      const rules = await sh(cmd, ['-w', '-t', table, '-S']).catch(() => '');
      const chains = [...rules.matchAll(/^-N (KUBE-\S+)$/gm)].map((m) => m[1]);
      if (chains.length === 0) continue;
      for (const builtin of [...rules.matchAll(/^-P (\S+) /gm)].map((m) => m[1])) {
        const listed = await sh(cmd, ['-w', '-t', table, '-L', builtin, '-n', '--line-numbers']).catch(() => '');
        const numbers = [...listed.matchAll(/^(\d+)\s+(KUBE-\S+)/gm)].map((m) => Number(m[1])).sort((a, b) => b - a);
        for (const n of numbers) await sh(cmd, ['-w', '-t', table, '-D', builtin, String(n)]).catch(() => {});
      }
      for (const c of chains) await sh(cmd, ['-w', '-t', table, '-F', c]).catch(() => {});
      for (const c of chains) await sh(cmd, ['-w', '-t', table, '-X', c]).catch(() => {});
    }
  }
}

async function writeSysctl(key: string, value: string): Promise<void> {
  await writeFile(`/proc/sys/${key}`, value);
}

/**
 * What an earlier run that was killed outright left: its processes (found by their temp dir in
 * their command line), mounts, network namespaces of its pods, the bridge, route and chains.
 */
async function cleanupLeftovers(tools: NodeTools): Promise<void> {
  const stale = (await readdir(tmpdir())).filter((n) => n.startsWith('switchboard-node-')).map((n) => path.join(tmpdir(), n));
  for (const dir of stale) {
    await killProcessesMentioning(dir);
    await unmountUnder(dir);
    await rm(dir, { recursive: true, force: true }).catch(() => {});
  }
  const bridgeExists = await sh('ip', ['link', 'show', NODE_NETWORK.bridge]).then(() => true, () => false);
  if (bridgeExists || stale.length > 0) {
    // Namespaces whose veth was on our bridge are gone with their pods' processes only if
    // containerd removed them; remove the CNI-named ones that no process uses.
    for (const ns of listNetns()) if (ns.startsWith('cni-') && !(await netnsInUse(ns))) await removeNetns(ns);
    await run(tools.paths['kube-proxy'], ['--cleanup'], { timeout: 60_000 }).catch(() => {});
  }
  await tearDownHostNetwork(sysctlsLeftBehind());
}

function listNetns(): string[] {
  try {
    return readdirSync('/run/netns');
  } catch {
    return [];
  }
}

async function netnsInUse(ns: string): Promise<boolean> {
  const { stdout } = await run('ip', ['netns', 'pids', ns]).catch(() => ({ stdout: '' }));
  return stdout.trim() !== '';
}

async function removeNetns(ns: string): Promise<void> {
  await run('ip', ['netns', 'delete', ns]).catch(async () => {
    await run('umount', ['-l', `/run/netns/${ns}`]).catch(() => {});
    await rm(`/run/netns/${ns}`, { force: true });
  });
}

/** Every mount point under dir, deepest first, lazily unmounted. */
async function unmountUnder(dir: string): Promise<void> {
  const mounts = (await readFile('/proc/self/mounts', 'utf8')).split('\n')
    .map((l) => l.split(' ')[1]?.replace(/\\040/g, ' '))
    .filter((m): m is string => m !== undefined && (m === dir || m.startsWith(`${dir}/`)))
    .sort((a, b) => b.length - a.length);
  for (const m of mounts) await run('umount', ['-l', m]).catch(() => {});
}

/**
 * SIGKILL, by pid, to every process of this node's temp dir: those whose command line mentions it
 * (containerd's shims carry its socket path), and the containers' processes, which outlive a
 * killed shim: they are found through their cgroups (/k8s.io/<container id>, the ids being those
 * under containerd's state dir there), which are then removed.
 */
async function killProcessesMentioning(dir: string): Promise<void> {
  for (const pid of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    if (Number(pid) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(dir)) process.kill(Number(pid), 'SIGKILL');
    } catch {
      // gone, or not ours to read
    }
  }
  let ids: string[] = [];
  try {
    ids = readdirSync(path.join(dir, 'containerd', 'state', 'io.containerd.runtime.v2.task', 'k8s.io'));
  } catch {
    return;
  }
  const cgroups: string[] = [];
  for (const controller of readdirSync('/sys/fs/cgroup')) {
    for (const id of ids) {
      const cg = path.join('/sys/fs/cgroup', controller, 'k8s.io', id);
      if (existsSync(cg)) cgroups.push(cg);
    }
  }
  for (const cg of cgroups) {
    for (const pid of readFileSync(path.join(cg, 'cgroup.procs'), 'utf8').split('\n').filter((l) => l !== '')) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        // gone
      }
    }
  }
  await waitFor('container processes to exit', 10_000, async () => cgroups.every((cg) => {
    try {
      return readFileSync(path.join(cg, 'cgroup.procs'), 'utf8').trim() === '';
    } catch {
      return true;
    }
  })).catch(() => {});
  for (const cg of cgroups) await rm(cg, { recursive: false }).catch(() => run('rmdir', [cg]).catch(() => {}));
}

/** Releases the lock: its holder (cat under flock) ends at the end of its input. */
function releaseLock(lock: ChildProcess): void {
  lock.stdin?.destroy();
  lock.kill('SIGKILL');
}

/**
 * A detached shell that outlives this process: when it is gone without stop() having killed the
 * shell, it runs node-cleanup.js (with `paths`), which cleans up as the next start() would.
 */
function startOrphanWatchdog(paths: readonly string[]): ChildProcess {
  const script = path.join(__dirname, 'node-cleanup.js');
  const child = spawn('sh', ['-c', 'while kill -0 "$1" 2>/dev/null; do sleep 1; done; shift; exec "$@"',
    'switchboard-node-watchdog', String(process.pid), process.execPath, script, ...paths], { stdio: 'ignore', detached: true });
  child.unref();
  return child;
}

/**
 * node-cleanup.js: what a node whose process died without stop() left, removed under the lock
 * (free once the dead process's lock holder has seen its input end), plus `paths`.
 */
export async function cleanupOrphanedNode(paths: readonly string[]): Promise<void> {
  const lock = await acquireLock(180_000);
  try {
    await cleanupLeftovers(findNodeTools());
    for (const p of paths) await rm(p, { recursive: true, force: true });
  } finally {
    releaseLock(lock);
  }
}

/** Holds the machine-wide node lock until the returned child is killed (or this process dies). */
async function acquireLock(timeoutMs: number): Promise<ChildProcess> {
  const child = spawn('flock', ['--wait', String(Math.ceil(timeoutMs / 1000)), LOCK_FILE, 'sh', '-c', 'echo locked; exec cat >/dev/null'],
    { stdio: ['pipe', 'pipe', 'pipe'] });
  child.unref();
  await new Promise<void>((resolve, reject) => {
    let err = '';
    child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
    child.stdout?.once('data', () => resolve());
    child.once('exit', (code) => reject(new Error(`could not take ${LOCK_FILE} (another node running?): flock exited ${code} ${err}`)));
    child.once('error', reject);
  });
  child.removeAllListeners('exit');
  // Held while this process lives, without keeping it alive.
  for (const s of [child.stdin, child.stdout, child.stderr]) (s as unknown as { unref?: () => void } | null)?.unref?.();
  return child;
}

/** GET with certificate checks off (a component's self-signed serving certificate); the status. */
function fetchInsecure(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const https = require('node:https') as typeof import('node:https');
    const req = https.get(url, { rejectUnauthorized: false, timeout: 5000 }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('timeout')));
  });
}

function stepTimer(onStep: ((step: string, seconds: number) => void) | undefined): (step: string) => void {
  let last = Date.now();
  return (step) => {
    const now = Date.now();
    onStep?.(step, (now - last) / 1000);
    last = now;
  };
}
