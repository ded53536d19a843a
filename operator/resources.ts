/**
 * The objects a Switchboard owns, as pure functions of its spec and the replicas the scaling
 * loop chose: one ConfigMap of server settings, the gateway and broadcast Deployments, the
 * client Service, the gRPC API Service and the metrics Service. Names, labels and ports are the
 * contract in docs/operator.md (the chart, dashboards and alerts rely on them).
 *
 * The gRPC API (one static API_KEY that may publish as anyone) has its own ClusterIP Service:
 * the client Service may be a LoadBalancer or NodePort, and whatever is on it faces the internet.
 */
import { createHash } from 'node:crypto';
import type { V1ConfigMap, V1Container, V1Deployment, V1EnvVar, V1OwnerReference, V1ResourceRequirements, V1Service } from '@kubernetes/client-node';
import { cpuQuantity, gcFlags } from '../services/control/gc-threads';
import { API_VERSION, labelsFor, selectorFor, type Switchboard, type Tier } from './api/types';

export const PORTS = { tcp: 4000, admin: 4001, grpc: 4002 } as const;
/** Gateway pods sleep this long in preStop so endpoints drop them before SIGTERM starts the drain. */
export const PRE_STOP_SECONDS = 5;
export const SHUTDOWN_DRAIN_MS = 10_000;
export const GRACE_SECONDS = 30;

export const names = {
  config: (sb: string) => `${sb}-config`,
  deployment: (sb: string, tier: Tier) => `${sb}-${tier}`,
  gatewayService: (sb: string) => `${sb}-gateway`,
  apiService: (sb: string) => `${sb}-api`,
  metricsService: (sb: string) => `${sb}-metrics`,
};

/**
 * The longest Switchboard name every object above can be named from: Services must be DNS-1035
 * labels (at most 63 characters), and the longest suffix decides. The CRD's metadata.name
 * maxLength is this number (test/operator/resources.test.ts holds them equal).
 */
export const MAX_SWITCHBOARD_NAME = 63 - Math.max(
  ...[names.config(''), names.deployment('', 'gateway'), names.deployment('', 'broadcast'), names.gatewayService(''), names.apiService(''), names.metricsService('')].map((s) => s.length),
);

/**
 * Pod-template annotation holding a hash of the ConfigMap's data: pods read the ConfigMap only
 * when they start (envFrom), so a changed setting must change the template for the Deployment
 * to roll them; otherwise only pods that happen to restart get it, and run beside the old ones.
 */
export const CONFIG_CHECKSUM_ANNOTATION = 'switchboard.dev/config-checksum';

/** A hash of a ConfigMap's data, independent of key order. */
export function configChecksum(cm: V1ConfigMap): string {
  const data = cm.data ?? {};
  const canonical = JSON.stringify(Object.keys(data).sort().map((k) => [k, data[k]]));
  return createHash('sha256').update(canonical).digest('hex');
}

export function ownerRef(sb: Switchboard): V1OwnerReference {
  return { apiVersion: API_VERSION, kind: 'Switchboard', name: sb.metadata.name, uid: sb.metadata.uid!, controller: true, blockOwnerDeletion: true };
}

function meta(sb: Switchboard, name: string, tier?: Tier) {
  return { name, namespace: sb.metadata.namespace, labels: labelsFor(sb.metadata.name, tier), ownerReferences: [ownerRef(sb)] };
}

/** Settings every pod reads (envFrom); the operator's own keys win over spec.config. */
export function configMap(sb: Switchboard): V1ConfigMap {
  const data: Record<string, string> = {
    LOG_LEVEL: 'info',
    ...(sb.spec.config ?? {}),
    TCP_HOST: '0.0.0.0',
    TCP_PORT: String(sb.spec.gateway.port),
    ADMIN_HOST: '0.0.0.0',
    ADMIN_PORT: String(PORTS.admin),
    API_PORT: String(PORTS.grpc),
    STREAM_SHARDS: String(sb.spec.broadcast.shards),
    SHUTDOWN_DRAIN_MS: String(SHUTDOWN_DRAIN_MS),
  };
  return { apiVersion: 'v1', kind: 'ConfigMap', metadata: meta(sb, names.config(sb.metadata.name)), data };
}

function redisEnv(sb: Switchboard): V1EnvVar {
  const r = sb.spec.redis;
  if (r.secretRef) return { name: 'REDIS_URL', valueFrom: { secretKeyRef: { name: r.secretRef.name, key: r.secretRef.key ?? 'url' } } };
  return { name: 'REDIS_URL', value: r.url };
}

/** What a tier's pods get when the Switchboard names no resources. */
export const DEFAULT_RESOURCES: V1ResourceRequirements = { requests: { cpu: '250m', memory: '256Mi' }, limits: { memory: '1Gi' } };

/** The variable the image's `switchboard` launcher puts on node's command line. */
export const NODE_FLAGS_ENV = 'SWITCHBOARD_NODE_FLAGS';

/**
 * Garbage-collector threads matched to the pod's CPU limit (services/control/gc-threads.ts): the
 * quota the kernel enforces, as Go's automaxprocs reads it. None without a CPU limit (a request
 * alone lets the pod use idle cores, where Node's own pool is right), or when the Switchboard
 * sets the variable itself, in spec.env or spec.config (the user's choice wins, whole: an env
 * entry would override the ConfigMap's value).
 */
function nodeFlagsEnv(sb: Switchboard, resources: V1ResourceRequirements): V1EnvVar[] {
  if ((sb.spec.env ?? []).some((e) => e.name === NODE_FLAGS_ENV) || sb.spec.config?.[NODE_FLAGS_ENV] !== undefined) return [];
  const cpus = cpuQuantity(resources.limits?.cpu);
  return cpus === undefined ? [] : [{ name: NODE_FLAGS_ENV, value: gcFlags(cpus).join(' ') }];
}

function container(sb: Switchboard, tier: Tier): V1Container {
  const gateway = tier === 'gateway';
  const ports: NonNullable<V1Container['ports']> = [{ name: 'admin', containerPort: PORTS.admin, protocol: 'TCP' }];
  if (gateway) ports.unshift({ name: 'tcp', containerPort: sb.spec.gateway.port, protocol: 'TCP' }, { name: 'grpc', containerPort: PORTS.grpc, protocol: 'TCP' });
  const resources = (gateway ? sb.spec.gateway.resources : sb.spec.broadcast.resources) ?? DEFAULT_RESOURCES;
  const c: V1Container = {
    name: 'switchboard',
    image: sb.spec.image,
    imagePullPolicy: sb.spec.imagePullPolicy ?? 'IfNotPresent',
    args: [tier],
    envFrom: [{ configMapRef: { name: names.config(sb.metadata.name) } }],
    env: [
      { name: 'SERVER_ID', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
      redisEnv(sb),
      ...nodeFlagsEnv(sb, resources),
      ...(sb.spec.env ?? []),
    ],
    ports,
    livenessProbe: { httpGet: { path: '/healthz', port: 'admin' }, periodSeconds: 10, failureThreshold: 3 },
    readinessProbe: { httpGet: { path: '/readyz', port: 'admin' }, periodSeconds: 5, failureThreshold: 2 },
    resources,
    securityContext: {
      runAsNonRoot: true,
      runAsUser: 10001,
      runAsGroup: 10001,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ['ALL'] },
      seccompProfile: { type: 'RuntimeDefault' },
    },
    volumeMounts: [{ name: 'tmp', mountPath: '/tmp' }],
  };
  if (gateway) c.lifecycle = { preStop: { sleep: { seconds: PRE_STOP_SECONDS } } };
  return c;
}

export function deployment(sb: Switchboard, tier: Tier, replicas: number): V1Deployment {
  const name = sb.metadata.name;
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: meta(sb, names.deployment(name, tier), tier),
    spec: {
      replicas,
      selector: { matchLabels: selectorFor(name, tier) },
      strategy: { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 0, maxSurge: 1 } },
      template: {
        metadata: {
          labels: labelsFor(name, tier),
          annotations: {
            'prometheus.io/scrape': 'true', 'prometheus.io/port': String(PORTS.admin), 'prometheus.io/path': '/metrics',
            [CONFIG_CHECKSUM_ANNOTATION]: configChecksum(configMap(sb)),
          },
        },
        spec: {
          automountServiceAccountToken: false,
          enableServiceLinks: false,
          terminationGracePeriodSeconds: tier === 'gateway' ? GRACE_SECONDS : 15,
          securityContext: { runAsNonRoot: true, runAsUser: 10001, runAsGroup: 10001, fsGroup: 10001, seccompProfile: { type: 'RuntimeDefault' } },
          containers: [container(sb, tier)],
          volumes: [{ name: 'tmp', emptyDir: { sizeLimit: '64Mi' } }],
        },
      },
    },
  };
}

/** The client Service: the client TCP port only, of the type the spec asks for. */
export function gatewayService(sb: Switchboard): V1Service {
  const svc = sb.spec.gateway.service ?? { type: 'ClusterIP' };
  const tcp: NonNullable<V1Service['spec']>['ports'] = [
    { name: 'tcp', port: sb.spec.gateway.port, targetPort: 'tcp', protocol: 'TCP', ...(svc.nodePort ? { nodePort: svc.nodePort } : {}) },
  ];
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { ...meta(sb, names.gatewayService(sb.metadata.name), 'gateway'), annotations: svc.annotations },
    spec: { type: svc.type, selector: selectorFor(sb.metadata.name, 'gateway'), ports: tcp },
  };
}

/**
 * The gateways' gRPC API port, always ClusterIP whatever spec.gateway.service says: callers
 * inside the cluster (or a port-forward) only.
 */
export function apiService(sb: Switchboard): V1Service {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: meta(sb, names.apiService(sb.metadata.name), 'gateway'),
    spec: {
      type: 'ClusterIP',
      selector: selectorFor(sb.metadata.name, 'gateway'),
      ports: [{ name: 'grpc', port: PORTS.grpc, targetPort: 'grpc', protocol: 'TCP' }],
    },
  };
}

export function metricsService(sb: Switchboard): V1Service {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: meta(sb, names.metricsService(sb.metadata.name)),
    spec: {
      type: 'ClusterIP',
      selector: { 'app.kubernetes.io/name': 'switchboard', 'app.kubernetes.io/instance': sb.metadata.name },
      ports: [{ name: 'admin', port: PORTS.admin, targetPort: 'admin', protocol: 'TCP' }],
    },
  };
}
