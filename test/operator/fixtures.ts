/**
 * In-memory fakes for the operator's unit tests (no API server, no Prometheus): a Switchboard as
 * the API server returns it after the CRD's defaults, metrics, an event sink that remembers, and
 * a timer whose rounds the test runs by hand.
 */
import type { Switchboard, SwitchboardSpec } from '../../operator/api/types';
import type { EventTarget } from '../../operator/kube/events';
import type { ClusterMetrics } from '../../operator/prometheus';

type DeepPartial<T> = { [K in keyof T]?: NonNullable<T[K]> extends object ? DeepPartial<NonNullable<T[K]>> | undefined : T[K] };

export function sbFixture(name = 'chat', namespace = 'ns', spec: DeepPartial<SwitchboardSpec> = {}): Switchboard {
  const base: SwitchboardSpec = {
    image: 'ghcr.io/switchboard-dev/switchboard:0.1.0',
    imagePullPolicy: 'IfNotPresent',
    redis: { url: 'redis://127.0.0.1:6379' },
    gateway: { minReplicas: 1, maxReplicas: 5, port: 4000, service: { type: 'ClusterIP' } },
    broadcast: { minReplicas: 1, maxReplicas: 2, shards: 16 },
    prometheus: { url: 'http://prometheus.invalid:9090', interval: '1s', rateWindow: '1m' },
    thresholds: { p99LatencyMs: 50, memoryMiB: 1024, minThroughput: 0, maxErrorRate: 0.01, holdSeconds: 10 },
    scaling: { targetMessagesPerPod: 1000, targetConnectionsPerPod: 500, scaleUpStabilizationSeconds: 0, scaleDownStabilizationSeconds: 0, maxStep: 4, tolerance: 0.1 },
  };
  const merged = { ...base } as unknown as Record<string, unknown>;
  for (const [k, v] of Object.entries(spec)) {
    const b = (base as unknown as Record<string, unknown>)[k];
    merged[k] = v === undefined ? undefined : typeof v === 'object' && v !== null && typeof b === 'object' && b !== null ? { ...b, ...v } : v;
  }
  return {
    apiVersion: 'switchboard.dev/v1alpha1',
    kind: 'Switchboard',
    metadata: { name, namespace, uid: `uid-${name}`, generation: 1 },
    spec: merged as unknown as SwitchboardSpec,
  };
}

/** Quiet metrics from 2 gateway and 1 broadcast pods; `over` replaces any value. */
export function metricsFixture(over: Partial<ClusterMetrics> = {}): ClusterMetrics {
  return {
    gatewayPods: 2, broadcastPods: 1, deliveredPerSecond: 2000, receivedPerSecond: 200,
    connections: 100, p99LatencyMs: 5, memoryMiB: 100, errorRate: 0, ...over,
  };
}

export interface RecordedEvent {
  readonly object: string;
  readonly type: 'Normal' | 'Warning';
  readonly reason: string;
  readonly message: string;
}

export class EventLog {
  readonly events: RecordedEvent[] = [];
  record(obj: EventTarget, type: 'Normal' | 'Warning', reason: string, message: string): void {
    this.events.push({ object: `${obj.kind}/${obj.metadata.namespace}/${obj.metadata.name}`, type, reason, message });
  }
  reasons(): string[] {
    return this.events.map((e) => `${e.type} ${e.reason}`);
  }
}

/** Stands in for setInterval: the test runs rounds itself; cancellation is recorded. */
export class ManualTimers {
  readonly started: Array<{ ms: number; cancelled: boolean }> = [];
  every = (_fn: () => void, ms: number): (() => void) => {
    const t = { ms, cancelled: false };
    this.started.push(t);
    return () => (t.cancelled = true);
  };
  get active(): number {
    return this.started.filter((t) => !t.cancelled).length;
  }
}
