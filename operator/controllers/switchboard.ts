/**
 * The Switchboard controller, in KEDA's order: get; not found -> forget; being deleted -> leave
 * it to the garbage collector (every child has an ownerReference); compute (replicas from the
 * metrics loop, bounded by the spec); apply the children; conditions; events; status.
 *
 * Beside reconcile runs one metrics loop per Switchboard: every spec.prometheus.interval it
 * queries Prometheus, runs the scaling policy for each tier, tracks threshold breaches with a
 * hold period, and queues a reconcile when something changed. Only the leader runs either.
 */
import type { V1Deployment } from '@kubernetes/client-node';
import type { Logger } from '../../services/telemetry/log';
import {
  ConditionType, Plural, Reason, parseDuration,
  type Condition, type FeatureFlag, type ObservedMetrics, type Switchboard, type SwitchboardStatus, type Tier,
} from '../api/types';
import { apply, describe, isNotFound, patchStatus, type Kube } from '../kube/client';
import type { EventRecorder } from '../kube/events';
import type { OperatorMetrics } from '../metrics';
import { MetricsError, PrometheusClient, type ClusterMetrics } from '../prometheus';
import { configMap, deployment, gatewayService, metricsService, names } from '../resources';
import { decide, type MetricSample, type Recommendation } from '../scaling/policy';

const TIERS: readonly Tier[] = ['gateway', 'broadcast'];

/** What the operator remembers about one Switchboard between reconciles (lost on restart). */
interface RuntimeState {
  desired: Record<Tier, number>;
  history: Record<Tier, Recommendation[]>;
  lastScaleTime?: string;
  lastDirection?: 'up' | 'down';
  overloaded: boolean;
  breaches: string[];
  lastBreachAt: number;
  metrics: 'unknown' | 'available' | 'unavailable';
  metricsMessage: string;
  observed?: ObservedMetrics;
  loop: NodeJS.Timeout | null;
  loopKey: string;
  polling: boolean;
}

export interface SwitchboardControllerDeps {
  readonly kube: Kube;
  readonly log: Logger;
  readonly events: EventRecorder;
  readonly metrics: OperatorMetrics;
  readonly get: (namespace: string, name: string) => Switchboard | undefined;
  /** FeatureFlags in a namespace (to report shed flags and to requeue them). */
  readonly flagsIn: (namespace: string) => readonly FeatureFlag[];
  readonly enqueue: (key: string) => void;
  readonly enqueueFlag: (key: string) => void;
}

export class SwitchboardController {
  private readonly states = new Map<string, RuntimeState>();

  constructor(private readonly d: SwitchboardControllerDeps) {}

  /** Whether a Switchboard is shedding nonCritical flags now. */
  overloaded(namespace: string, name: string): boolean {
    return this.states.get(`${namespace}/${name}`)?.overloaded ?? false;
  }

  /** Stop every metrics loop (on losing leadership or shutdown). */
  stopAll(): void {
    for (const s of this.states.values()) if (s.loop !== null) clearInterval(s.loop);
    this.states.clear();
  }

  async reconcile(key: string): Promise<void> {
    const [namespace, name] = key.split('/');
    const sb = this.d.get(namespace, name);
    if (sb === undefined) {
      this.forget(key, namespace, name);
      return;
    }
    if (sb.metadata.deletionTimestamp) return; // children go with it (ownerReferences)

    const state = this.states.get(key) ?? (await this.initState(sb));
    this.states.set(key, state);
    for (const tier of TIERS) state.desired[tier] = clamp(state.desired[tier], sb.spec[tier].minReplicas, sb.spec[tier].maxReplicas);

    const { kube } = this.d;
    await apply(kube, configMap(sb));
    const deps: Record<Tier, V1Deployment> = {
      gateway: await apply(kube, deployment(sb, 'gateway', state.desired.gateway)),
      broadcast: await apply(kube, deployment(sb, 'broadcast', state.desired.broadcast)),
    };
    await apply(kube, gatewayService(sb));
    await apply(kube, metricsService(sb));
    this.ensureLoop(key, sb, state);

    const replicas = { gateway: deps.gateway.spec?.replicas ?? 0, broadcast: deps.broadcast.spec?.replicas ?? 0 };
    for (const tier of TIERS) {
      const labels = { namespace, switchboard: name, tier };
      this.d.metrics.current.set(labels, replicas[tier]);
      this.d.metrics.desired.set(labels, state.desired[tier]);
    }
    const shed = this.shedFlags(sb, state);
    this.d.metrics.overloaded.set({ namespace, switchboard: name }, state.overloaded ? 1 : 0);
    this.d.metrics.flagsShed.set({ namespace, switchboard: name }, shed.length);

    const status: SwitchboardStatus = {
      observedGeneration: sb.metadata.generation,
      conditions: this.conditions(sb, state, deps),
      replicas,
      desiredReplicas: { ...state.desired },
      overloaded: state.overloaded,
      breaches: state.breaches,
      shedFlags: shed,
      ...(state.observed ? { observed: state.observed } : {}),
      ...(state.lastScaleTime ? { lastScaleTime: state.lastScaleTime } : {}),
      ...(state.lastBreachAt > 0 ? { lastBreachTime: new Date(state.lastBreachAt).toISOString() } : {}),
    };
    await patchStatus(kube, Plural.Switchboard, namespace, name, status);
  }

  private forget(key: string, namespace: string, name: string): void {
    const s = this.states.get(key);
    if (s?.loop) clearInterval(s.loop);
    this.states.delete(key);
    this.d.metrics.forget(namespace, name);
    for (const ff of this.d.flagsIn(namespace)) this.d.enqueueFlag(`${namespace}/${ff.metadata.name}`);
  }

  private async initState(sb: Switchboard): Promise<RuntimeState> {
    const desired = { gateway: sb.spec.gateway.minReplicas, broadcast: sb.spec.broadcast.minReplicas };
    // A restarted operator (or a new leader) continues from the replicas the Deployments have.
    for (const tier of TIERS) {
      try {
        const dep = await this.d.kube.apps.readNamespacedDeployment({ name: names.deployment(sb.metadata.name, tier), namespace: sb.metadata.namespace });
        if (typeof dep.spec?.replicas === 'number') desired[tier] = dep.spec.replicas;
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
    }
    const prev = sb.status;
    return {
      desired,
      history: { gateway: [], broadcast: [] },
      lastScaleTime: prev?.lastScaleTime,
      overloaded: prev?.overloaded ?? false,
      breaches: prev?.breaches ?? [],
      lastBreachAt: prev?.lastBreachTime ? Date.parse(prev.lastBreachTime) : 0,
      metrics: 'unknown',
      metricsMessage: 'no query yet',
      observed: prev?.observed,
      loop: null,
      loopKey: '',
      polling: false,
    };
  }

  private ensureLoop(key: string, sb: Switchboard, state: RuntimeState): void {
    const interval = sb.spec.prometheus ? parseDuration(sb.spec.prometheus.interval) : 15_000;
    const loopKey = `${sb.spec.prometheus?.url ?? ''}|${interval}`;
    if (state.loop !== null && state.loopKey === loopKey) return;
    if (state.loop !== null) clearInterval(state.loop);
    state.loopKey = loopKey;
    state.loop = setInterval(() => void this.poll(key), Math.max(100, interval));
    state.loop.unref();
    void this.poll(key);
  }

  /** One round of the metrics loop. */
  private async poll(key: string): Promise<void> {
    const state = this.states.get(key);
    const [namespace, name] = key.split('/');
    const sb = this.d.get(namespace, name);
    if (state === undefined || sb === undefined || state.polling) return;
    state.polling = true;
    try {
      await this.pollOnce(sb, state);
    } catch (err) {
      this.d.log.error('metrics loop failed', { switchboard: key, err: describe(err) });
    } finally {
      state.polling = false;
    }
  }

  private async pollOnce(sb: Switchboard, state: RuntimeState): Promise<void> {
    const key = `${sb.metadata.namespace}/${sb.metadata.name}`;
    const labels = { namespace: sb.metadata.namespace, switchboard: sb.metadata.name };
    const now = Date.now();
    let m: ClusterMetrics | null = null;
    const wasAvailable = state.metrics;
    if (!sb.spec.prometheus) {
      state.metrics = 'unavailable';
      state.metricsMessage = 'spec.prometheus is not set: replicas stay at minReplicas';
    } else {
      try {
        m = await new PrometheusClient(sb.spec.prometheus.url).clusterMetrics({ namespace: sb.metadata.namespace, name: sb.metadata.name }, sb.spec);
        state.metrics = m === null ? 'unavailable' : 'available';
        state.metricsMessage = m === null ? 'Prometheus has no data for this Switchboard\'s pods' : 'metrics queried';
      } catch (err) {
        state.metrics = 'unavailable';
        state.metricsMessage = err instanceof MetricsError ? err.message : `metrics query failed: ${describe(err)}`;
      }
      if (m === null) this.d.metrics.queryErrors.inc(labels);
    }
    if (state.metrics !== wasAvailable) {
      if (state.metrics === 'unavailable') void this.d.events.record(sb, 'Warning', Reason.MetricsUnavailable, `${state.metricsMessage}; keeping the current replicas`);
      else if (wasAvailable === 'unavailable') void this.d.events.record(sb, 'Normal', Reason.MetricsAvailable, 'metrics are back');
    }

    if (m !== null) {
      state.observed = {
        p99LatencyMs: round(m.p99LatencyMs),
        memoryMiB: round(m.memoryMiB),
        messagesPerSecond: round(m.deliveredPerSecond),
        connections: Math.round(m.connections),
        errorRate: round(m.errorRate, 4),
        pods: Math.round(m.gatewayPods),
        time: new Date(now).toISOString(),
      };
      this.trackThresholds(sb, state, m, now);
    }

    const s = sb.spec.scaling;
    const inputs: Record<Tier, { metrics: MetricSample[] | null; pods: number }> = {
      gateway: {
        metrics: m === null ? null : [
          { name: 'messagesPerPod', total: m.deliveredPerSecond, targetPerPod: s.targetMessagesPerPod },
          { name: 'connectionsPerPod', total: m.connections, targetPerPod: s.targetConnectionsPerPod },
        ],
        pods: m?.gatewayPods ?? 0,
      },
      broadcast: {
        // The broadcast tier's work is the ingress rate; without broadcast pods reporting there
        // is nothing to divide by, so it is treated as missing data (no change).
        metrics: m === null || m.broadcastPods === 0 ? null : [{ name: 'ingressPerPod', total: m.receivedPerSecond, targetPerPod: s.targetMessagesPerPod }],
        pods: m?.broadcastPods ?? 0,
      },
    };
    for (const tier of TIERS) {
      const current = state.desired[tier];
      const d = decide({
        now,
        current,
        readyPods: inputs[tier].pods,
        minReplicas: sb.spec[tier].minReplicas,
        maxReplicas: sb.spec[tier].maxReplicas,
        metrics: inputs[tier].metrics,
        history: state.history[tier],
        tolerance: s.tolerance,
        scaleUpWindowMs: s.scaleUpStabilizationSeconds * 1000,
        scaleDownWindowMs: s.scaleDownStabilizationSeconds * 1000,
        maxStep: s.maxStep,
      });
      state.history[tier] = d.history;
      this.d.metrics.decisions.inc({ ...labels, tier, direction: d.direction });
      if (d.desired !== current) {
        state.desired[tier] = d.desired;
        state.lastScaleTime = new Date(now).toISOString();
        state.lastDirection = d.desired > current ? 'up' : 'down';
        this.d.log.info('scaling', { switchboard: key, tier, from: current, to: d.desired, reason: d.reason });
        void this.d.events.record(sb, 'Normal', d.desired > current ? Reason.ScaledUp : Reason.ScaledDown, `${tier} ${current} -> ${d.desired}: ${d.reason}`);
      }
    }
    // Status carries the observed metrics, so every round ends in a reconcile (cheap: applies
    // that change nothing are no-ops on the server).
    this.d.enqueue(key);
  }

  /** Update the breach state; when overloaded flips, the flags are republished. */
  private trackThresholds(sb: Switchboard, state: RuntimeState, m: ClusterMetrics, now: number): void {
    const t = sb.spec.thresholds;
    const breaches: string[] = [];
    if (m.p99LatencyMs > t.p99LatencyMs) breaches.push(`p99 latency ${round(m.p99LatencyMs)} ms > ${t.p99LatencyMs} ms`);
    if (m.memoryMiB > t.memoryMiB) breaches.push(`memory ${round(m.memoryMiB)} MiB > ${t.memoryMiB} MiB`);
    if (m.errorRate > t.maxErrorRate) breaches.push(`error rate ${round(m.errorRate, 4)} > ${t.maxErrorRate}`);
    if (t.minThroughput > 0 && m.receivedPerSecond > 0 && m.deliveredPerSecond < t.minThroughput) {
      breaches.push(`throughput ${round(m.deliveredPerSecond)} msg/s < ${t.minThroughput} msg/s`);
    }
    state.breaches = breaches;
    if (breaches.length > 0) state.lastBreachAt = now;
    const before = state.overloaded;
    if (breaches.length > 0) state.overloaded = true;
    else if (state.overloaded && now - state.lastBreachAt >= t.holdSeconds * 1000) state.overloaded = false;
    if (before === state.overloaded) return;
    const key = `${sb.metadata.namespace}/${sb.metadata.name}`;
    this.d.log.warn(state.overloaded ? 'threshold breached: shedding nonCritical flags' : 'thresholds clear for the hold period: restoring flags', { switchboard: key, breaches });
    void this.d.events.record(
      sb,
      state.overloaded ? 'Warning' : 'Normal',
      state.overloaded ? Reason.ThresholdBreached : Reason.Recovered,
      state.overloaded ? `${breaches.join('; ')}: shedding nonCritical flags` : `thresholds clear for ${t.holdSeconds}s: flags restored`,
    );
    for (const ff of this.d.flagsIn(sb.metadata.namespace)) this.d.enqueueFlag(`${sb.metadata.namespace}/${ff.metadata.name}`);
  }

  private shedFlags(sb: Switchboard, state: RuntimeState): string[] {
    if (!state.overloaded) return [];
    return this.d.flagsIn(sb.metadata.namespace)
      .filter((ff) => ff.spec.enabled && ff.spec.nonCritical && (!ff.spec.switchboards?.length || ff.spec.switchboards.includes(sb.metadata.name)))
      .map((ff) => ff.metadata.name)
      .sort();
  }

  private conditions(sb: Switchboard, state: RuntimeState, deps: Record<Tier, V1Deployment>): Condition[] {
    const prev = new Map((sb.status?.conditions ?? []).map((c) => [c.type, c]));
    const gen = sb.metadata.generation;
    const cond = (type: ConditionType, ok: boolean, reason: string, message: string): Condition => {
      const status = ok ? 'True' : 'False';
      const p = prev.get(type);
      const lastTransitionTime = p && p.status === status ? p.lastTransitionTime : new Date().toISOString();
      return { type, status, observedGeneration: gen, lastTransitionTime, reason, message };
    };
    const available = TIERS.map((t) => deps[t].status?.availableReplicas ?? 0);
    const ready = available.every((n) => n > 0);
    const scaling = TIERS.some((t) => (deps[t].spec?.replicas ?? 0) !== (deps[t].status?.replicas ?? 0));
    return [
      cond(ConditionType.Ready, ready, ready ? Reason.Available : Reason.Unavailable,
        `gateway ${available[0]}/${deps.gateway.spec?.replicas ?? 0} available, broadcast ${available[1]}/${deps.broadcast.spec?.replicas ?? 0} available`),
      cond(ConditionType.Scaling, scaling, scaling ? (state.lastDirection === 'down' ? Reason.ScaledDown : state.lastDirection === 'up' ? Reason.ScaledUp : Reason.Reconciled) : Reason.Stable,
        `desired gateway ${state.desired.gateway}, broadcast ${state.desired.broadcast}`),
      cond(ConditionType.Overloaded, state.overloaded, state.overloaded ? Reason.ThresholdBreached : Reason.WithinThresholds,
        state.breaches.length > 0 ? state.breaches.join('; ') : state.overloaded ? `holding for ${sb.spec.thresholds.holdSeconds}s after the last breach` : 'all thresholds clear'),
      cond(ConditionType.MetricsUnavailable, state.metrics === 'unavailable', sb.spec.prometheus ? (state.metrics === 'unavailable' ? Reason.MetricsUnavailable : Reason.MetricsAvailable) : Reason.NoPrometheus,
        state.metricsMessage),
    ];
  }
}

function clamp(n: number, lo: number, hi: number): number {
  return Math.max(lo, Math.min(hi, n));
}

function round(n: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}
