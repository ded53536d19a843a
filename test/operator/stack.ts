/**
 * Real components for the operator tests: the operator as a child process (`switchboard
 * operator`) talking to the test's kube-apiserver with a ServiceAccount token bound only to the
 * RBAC in k8s/rbac/, and a Switchboard's data plane as local processes (redis-server, gateway,
 * broadcast) scraped by a real Prometheus with the namespace/pod labels a cluster would attach.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { projectCrdsYaml, repoRoot, startControlPlane, type ControlPlane, type KubeObject } from '../k8s/harness';
import { spawnCli, type CliProcess } from '../helpers/cli';
import { freePort } from '../helpers/net';
import { PrometheusProcess } from '../helpers/prometheus';
import { RedisProcess } from '../helpers/redis';
import { waitFor } from '../helpers/wait';

export const OPERATOR_NS = 'switchboard-system';
export const OPERATOR_SA = 'switchboard-operator';

/** A control plane with the project's CRDs installed and Established. */
export async function controlPlaneWithCrds(controllerManager = false): Promise<ControlPlane> {
  const cp = await startControlPlane({ controllerManager });
  await cp.apply(projectCrdsYaml());
  await cp.kubectl(['wait', '--for=condition=Established', '--timeout=60s', 'crd/switchboards.switchboard.dev', 'crd/featureflags.switchboard.dev']);
  return cp;
}

/** Apply k8s/rbac as it ships and return a kubeconfig holding the operator's SA token. */
export async function operatorKubeconfig(cp: ControlPlane): Promise<string> {
  await cp.createNamespace(OPERATOR_NS);
  const dir = path.join(repoRoot(), 'k8s', 'rbac');
  const docs = readdirSync(dir).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml').sort()
    .map((f) => readFileSync(path.join(dir, f), 'utf8')).join('\n---\n');
  await cp.apply(docs);
  const token = await cp.mintServiceAccountToken(OPERATOR_NS, OPERATOR_SA);
  return cp.writeKubeconfig(`operator-${Date.now()}`, { token });
}

export interface OperatorProcess {
  cli: CliProcess;
  adminPort: number;
  identity: string;
  metrics(): Promise<string>;
  metric(series: string): Promise<number | undefined>;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

export async function startOperator(kubeconfig: string, env: Record<string, string> = {}): Promise<OperatorProcess> {
  const adminPort = await freePort();
  const identity = `operator-${adminPort}`;
  const cli = spawnCli(['operator'], {
    KUBECONFIG: kubeconfig,
    OPERATOR_ADMIN_HOST: '127.0.0.1',
    OPERATOR_ADMIN_PORT: String(adminPort),
    OPERATOR_NAMESPACE: OPERATOR_NS,
    POD_NAME: identity,
    LEASE_DURATION_MS: '3000',
    RESYNC_MS: '2000',
    LOG_LEVEL: 'info',
    ...env,
  });
  await waitFor(() => cli.logs().some((l) => l.msg === 'operator started') || exited(cli), 30_000, 'the operator to start');
  if (exited(cli)) throw new Error(`operator exited:\n${cli.stderr.join('\n')}`);
  const metrics = async () => (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
  return {
    cli,
    adminPort,
    identity,
    metrics,
    async metric(series: string) {
      const line = (await metrics()).split('\n').find((l) => l.startsWith(series + ' ') || l.startsWith(series + '{') && l.split(' ')[0] === series);
      return line === undefined ? undefined : Number(line.split(' ').pop());
    },
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (exited(cli)) return;
      cli.child.kill(signal);
      await cli.exited;
    },
  };
}

function exited(cli: CliProcess): boolean {
  return cli.child.exitCode !== null || cli.child.signalCode !== null;
}

/** A Switchboard's data plane as local processes, scraped by a real Prometheus. */
export class DataPlane {
  private constructor(
    readonly redis: RedisProcess,
    readonly gateway: CliProcess,
    readonly gatewayPort: number,
    readonly gatewayAdmin: number,
    readonly broadcast: CliProcess,
    readonly broadcastAdmin: number,
    readonly prometheus: PrometheusProcess,
  ) {}

  /**
   * Pods are named as the operator's Deployments would name them, so the operator's PromQL
   * (`namespace="NS", pod=~"NAME-gateway-.+"`) selects them.
   */
  static async start(namespace: string, name: string, gatewayEnv: Record<string, string> = {}): Promise<DataPlane> {
    const redis = await RedisProcess.start();
    const common = { REDIS_URL: redis.url, HEARTBEAT_MS: '300', LEASE_MS: '1000', STREAM_SHARDS: '4', API_PORT: '-1', LOG_LEVEL: 'warn' };
    const gatewayAdmin = await freePort();
    const gateway = spawnCli(['gateway'], {
      ...common,
      TCP_HOST: '127.0.0.1', TCP_PORT: '0', ADMIN_PORT: String(gatewayAdmin),
      // The process's own overload monitor stays out of the way: these tests watch the operator's.
      OVERLOAD_P99_LATENCY_MS: '0', OVERLOAD_EVENT_LOOP_LAG_MS: '0', OVERLOAD_MEMORY_PERCENT: '0', OVERLOAD_ERROR_RATE_PERCENT: '0',
      LOG_LEVEL: 'info',
      ...gatewayEnv,
    });
    const gatewayPort = await gateway.listening(20_000);
    const broadcastAdmin = await freePort();
    const broadcast = spawnCli(['broadcast'], { ...common, TCP_HOST: '127.0.0.1', ADMIN_PORT: String(broadcastAdmin) });
    await waitFor(async () => (await fetch(`http://127.0.0.1:${broadcastAdmin}/readyz`).catch(() => null))?.status === 200, 20_000, 'broadcast ready', 50);
    await waitFor(async () => (await fetch(`http://127.0.0.1:${gatewayAdmin}/readyz`).catch(() => null))?.status === 200, 20_000, 'gateway ready', 50);
    const prometheus = await PrometheusProcess.start({
      scrapeIntervalMs: 500,
      targets: [
        { address: `127.0.0.1:${gatewayAdmin}`, labels: { namespace, pod: `${name}-gateway-7d9f-0` } },
        { address: `127.0.0.1:${broadcastAdmin}`, labels: { namespace, pod: `${name}-broadcast-5c4b-0` } },
      ],
    });
    await waitFor(async () => (await prometheus.query(`up{namespace="${namespace}"} == 1`)).length === 2, 20_000, 'prometheus to scrape both', { intervalMs: 200, retryErrors: true });
    return new DataPlane(redis, gateway, gatewayPort, gatewayAdmin, broadcast, broadcastAdmin, prometheus);
  }

  async stop(): Promise<void> {
    for (const p of [this.gateway, this.broadcast]) {
      if (p.child.exitCode === null && p.child.signalCode === null) {
        p.child.kill('SIGTERM');
        await Promise.race([p.exited, new Promise((r) => setTimeout(r, 5000))]);
        p.kill();
      }
    }
    await this.prometheus.stop();
    await this.redis.stop();
  }
}

export interface SwitchboardOverrides {
  [key: string]: unknown;
}

export function switchboard(name: string, spec: Record<string, unknown>): KubeObject {
  return { apiVersion: 'switchboard.dev/v1alpha1', kind: 'Switchboard', metadata: { name }, spec: { image: 'ghcr.io/switchboard-dev/switchboard:0.1.0', ...spec } };
}

export function featureFlag(name: string, spec: Record<string, unknown>): KubeObject {
  return { apiVersion: 'switchboard.dev/v1alpha1', kind: 'FeatureFlag', metadata: { name }, spec };
}

export interface Cond {
  type: string;
  status: string;
  reason: string;
  message: string;
}

export async function getObject<T = KubeObject & { status?: Record<string, unknown> }>(cp: ControlPlane, path: string): Promise<T | undefined> {
  const res = await cp.client.request('GET', path);
  if (res.status === 404) return undefined;
  if (res.status !== 200) throw new Error(`GET ${path}: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body as T;
}

export function condition(obj: { status?: { conditions?: Cond[] } } | undefined, type: string): Cond | undefined {
  return obj?.status?.conditions?.find((c) => c.type === type);
}
