/**
 * The operator's API types: the Switchboard and FeatureFlag resources as the CRDs in k8s/crds/
 * define them (group switchboard.dev, version v1alpha1), after the API server applied the
 * schema defaults. Condition types, reasons and labels live here too, so every controller and
 * test spells them the same way. Reasons are stable strings, like the server's error codes.
 */
import type { V1EnvVar, V1ObjectMeta, V1ResourceRequirements } from '@kubernetes/client-node';

export const GROUP = 'switchboard.dev';
export const VERSION = 'v1alpha1';
export const API_VERSION = `${GROUP}/${VERSION}`;
export const FIELD_MANAGER = 'switchboard-operator';
/** On FeatureFlags: the flag is removed from every Redis it was published to before it goes. */
export const FLAG_FINALIZER = 'switchboard.dev/unpublish';

export const Kind = { Switchboard: 'Switchboard', FeatureFlag: 'FeatureFlag' } as const;
export type Kind = (typeof Kind)[keyof typeof Kind];
export const Plural = { Switchboard: 'switchboards', FeatureFlag: 'featureflags' } as const;

export type Tier = 'gateway' | 'broadcast';

export interface SwitchboardSpec {
  image: string;
  imagePullPolicy: 'Always' | 'IfNotPresent' | 'Never';
  config?: Record<string, string>;
  env?: V1EnvVar[];
  redis: { url?: string; secretRef?: { name: string; key: string } };
  gateway: {
    minReplicas: number;
    maxReplicas: number;
    port: number;
    service: { type: 'ClusterIP' | 'NodePort' | 'LoadBalancer'; nodePort?: number; annotations?: Record<string, string> };
    resources?: V1ResourceRequirements;
  };
  broadcast: { minReplicas: number; maxReplicas: number; shards: number; resources?: V1ResourceRequirements };
  prometheus?: { url: string; interval: string; rateWindow: string };
  thresholds: { p99LatencyMs: number; memoryMiB: number; minThroughput: number; maxErrorRate: number; holdSeconds: number };
  scaling: {
    targetMessagesPerPod: number;
    targetConnectionsPerPod: number;
    scaleUpStabilizationSeconds: number;
    scaleDownStabilizationSeconds: number;
    maxStep: number;
    tolerance: number;
  };
}

export interface Condition {
  type: ConditionType;
  status: 'True' | 'False' | 'Unknown';
  observedGeneration?: number;
  lastTransitionTime: string;
  reason: string;
  message: string;
}

export interface ObservedMetrics {
  p99LatencyMs: number;
  memoryMiB: number;
  messagesPerSecond: number;
  connections: number;
  errorRate: number;
  pods: number;
  time: string;
}

export interface SwitchboardStatus {
  observedGeneration?: number;
  conditions?: Condition[];
  replicas?: Record<Tier, number>;
  desiredReplicas?: Record<Tier, number>;
  observed?: ObservedMetrics;
  overloaded?: boolean;
  breaches?: string[];
  lastBreachTime?: string;
  shedFlags?: string[];
  lastScaleTime?: string;
}

export interface Switchboard {
  apiVersion: typeof API_VERSION;
  kind: 'Switchboard';
  metadata: V1ObjectMeta & { name: string; namespace: string };
  spec: SwitchboardSpec;
  status?: SwitchboardStatus;
}

export interface FeatureFlagSpec {
  flagName?: string;
  switchboards?: string[];
  enabled: boolean;
  rolloutPercent: number;
  betaUsers?: string[];
  nonCritical: boolean;
  description?: string;
}

export interface FeatureFlagStatus {
  observedGeneration?: number;
  effective?: boolean;
  reason?: FlagReason;
  message?: string;
  publishedTo?: string[];
}

export interface FeatureFlag {
  apiVersion: typeof API_VERSION;
  kind: 'FeatureFlag';
  metadata: V1ObjectMeta & { name: string; namespace: string };
  spec: FeatureFlagSpec;
  status?: FeatureFlagStatus;
}

export const ConditionType = {
  Ready: 'Ready',
  Scaling: 'Scaling',
  Overloaded: 'Overloaded',
  MetricsUnavailable: 'MetricsUnavailable',
} as const;
export type ConditionType = (typeof ConditionType)[keyof typeof ConditionType];

/** Event and condition reasons (CamelCase, as Kubernetes spells them). Never reuse one. */
export const Reason = {
  /** Ready again after a failed reconcile (Normal Event). */
  Reconciled: 'Reconciled',
  /** A step before the applies failed, e.g. reading the Deployments (Ready=False, Warning). */
  ReconcileFailed: 'ReconcileFailed',
  /** The API server refused a server-side apply of an owned object (Ready=False, Warning). */
  ApplyFailed: 'ApplyFailed',
  /** The status subresource could not be written (Warning Event only: there is no status). */
  StatusUpdateFailed: 'StatusUpdateFailed',
  Available: 'Available',
  Unavailable: 'Unavailable',
  ScaledUp: 'ScaledUp',
  ScaledDown: 'ScaledDown',
  Stable: 'Stable',
  ThresholdBreached: 'ThresholdBreached',
  Recovered: 'Recovered',
  WithinThresholds: 'WithinThresholds',
  MetricsUnavailable: 'MetricsUnavailable',
  MetricsAvailable: 'MetricsAvailable',
  /** MetricsUnavailable is Unknown: the scale handler has not finished its first query yet. */
  MetricsPending: 'MetricsPending',
  NoPrometheus: 'NoPrometheus',
  FlagsShed: 'FlagsShed',
  FlagsRestored: 'FlagsRestored',
} as const;
export type Reason = (typeof Reason)[keyof typeof Reason];

export const FlagReason = {
  Enabled: 'Enabled',
  Disabled: 'Disabled',
  Overloaded: 'Overloaded',
  NoSwitchboard: 'NoSwitchboard',
  RedisUnavailable: 'RedisUnavailable',
} as const;
export type FlagReason = (typeof FlagReason)[keyof typeof FlagReason];

export function labelsFor(name: string, component?: Tier): Record<string, string> {
  const l: Record<string, string> = {
    'app.kubernetes.io/name': 'switchboard',
    'app.kubernetes.io/instance': name,
    'app.kubernetes.io/managed-by': 'switchboard-operator',
  };
  if (component) l['app.kubernetes.io/component'] = component;
  return l;
}

export function selectorFor(name: string, component: Tier): Record<string, string> {
  return { 'app.kubernetes.io/name': 'switchboard', 'app.kubernetes.io/instance': name, 'app.kubernetes.io/component': component };
}

/** The server-side flag name of a FeatureFlag. */
export function flagNameOf(ff: FeatureFlag): string {
  return ff.spec.flagName ?? ff.metadata.name;
}

/** Duration strings as the CRDs accept them: 15s, 1m, 1m30s, 500ms. */
export function parseDuration(s: string): number {
  const re = /([0-9]+)(ms|s|m|h)/g;
  const unit: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  let total = 0;
  let matched = '';
  for (let m = re.exec(s); m !== null; m = re.exec(s)) {
    total += Number(m[1]) * unit[m[2]];
    matched += m[0];
  }
  if (matched !== s || s.length === 0) throw new Error(`invalid duration ${JSON.stringify(s)}`);
  return total;
}
