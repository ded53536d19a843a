/**
 * The scale handler (KEDA's ScaleHandler, pkg/scaling): everything about a Switchboard that
 * changes between reconciles without the Switchboard changing. One metrics loop per Switchboard,
 * every spec.prometheus.interval: query Prometheus, run the scaling policy for each tier, track
 * threshold breaches with their hold period, and ask for a reconcile (status carries what it
 * saw) or for the flags to be republished (when overloaded flips). The controller only reads its
 * decision: `handle(sb)` on every reconcile, `delete(key)` when the Switchboard is gone.
 *
 * The state is in memory (lost on restart): a new handler is seeded with the replicas the
 * Deployments have and the last status, so a new leader continues where the old one was.
 */
import type { Logger } from '../../services/telemetry/log';
import { Reason, parseDuration, type ObservedMetrics, type Switchboard, type SwitchboardSpec, type Tier } from '../api/types';
import { describe } from '../kube/client';
import type { EventTarget } from '../kube/events';
import { keyString, type ObjectKey } from '../kube/key';
import type { OperatorMetrics } from '../metrics';
import { clip, MetricsError, PrometheusClient, redactCredentials, type ClusterMetrics } from '../prometheus';
import { decide, type MetricSample, type Recommendation } from './policy';

export const TIERS: readonly Tier[] = ['gateway', 'broadcast'];

export type MetricsState = 'unknown' | 'available' | 'unavailable';

/**
 * The metrics loop's period is clamped to this range. Below the minimum (1 s, Prometheus' own
 * finest useful scrape interval) a loop costs more than it tells: the CRD admits "0s", which ran
 * a round every 100 ms. A round still running when the next is due is not doubled (poll awaits it),
 * so a slow Prometheus is asked at most once per round's timeout. Above the maximum Node's timers
 * overflow (a delay over 2^31-1 ms, about 24.8 days, fires after 1 ms), so a
 * spec.prometheus.interval of 597h would query Prometheus every millisecond. The CRD refuses an
 * interval above an hour; this covers objects stored before that rule.
 */
export const LOOP_INTERVAL_MS = { min: 1000, max: 3_600_000 } as const;

/** The loop's period for a spec.prometheus.interval in ms (default 15 s), within LOOP_INTERVAL_MS. */
export function loopInterval(ms: number | undefined): number {
  if (ms === undefined || !Number.isFinite(ms)) return ms === undefined ? 15_000 : LOOP_INTERVAL_MS.max;
  return clamp(ms, LOOP_INTERVAL_MS.min, LOOP_INTERVAL_MS.max);
}

/** What the handler decided and saw for one Switchboard (a copy: changing it changes nothing). */
export interface ScaleState {
  readonly desired: Readonly<Record<Tier, number>>;
  readonly lastScaleTime?: string;
  readonly lastDirection?: 'up' | 'down';
  readonly overloaded: boolean;
  readonly breaches: readonly string[];
  /** Epoch ms of the last breach; 0: none. */
  readonly lastBreachAt: number;
  readonly metrics: MetricsState;
  readonly metricsMessage: string;
  readonly observed?: ObservedMetrics;
}

export interface ScaleHandler {
  /** Whether it tracks this Switchboard already (a new one wants a seed). */
  has(key: ObjectKey): boolean;
  /**
   * Track a Switchboard, or take its newest spec: the loop starts (or restarts when the
   * Prometheus URL or interval changed) and the desired replicas are bounded by the spec. `seed`
   * (the Deployments' replicas) is used only when it starts tracking. Returns the state now.
   */
  handle(sb: Switchboard, seed?: Partial<Record<Tier, number>>): ScaleState;
  /** The state of a tracked Switchboard. */
  state(key: ObjectKey): ScaleState | undefined;
  /** Whether a Switchboard is shedding nonCritical flags now (false when not tracked). */
  overloaded(key: ObjectKey): boolean;
  /** Stop its loop and forget it. */
  delete(key: ObjectKey): void;
  /** Stop every loop and forget everything (on losing leadership or shutdown). */
  stopAll(): void;
}

export interface EventSink {
  record(obj: EventTarget, type: 'Normal' | 'Warning', reason: Reason, message: string): Promise<void> | void;
}

export interface MetricsScaleHandlerDeps {
  readonly log: Logger;
  readonly events: EventSink;
  readonly metrics: Pick<OperatorMetrics, 'decisions' | 'queryErrors'>;
  /** A round ended: the Switchboard's status should show it (a reconcile). */
  readonly onUpdate: (key: ObjectKey) => void;
  /** Overloaded flipped: the flags of that namespace must be republished. */
  readonly onOverloadChange: (key: ObjectKey) => void;
  /** The metrics of one Switchboard; null: no data. @default Prometheus at spec.prometheus.url */
  readonly query?: (sb: Switchboard) => Promise<ClusterMetrics | null>;
  /** @default Date.now */
  readonly now?: () => number;
  /** Run `fn` every `ms`; returns a cancel function. @default an unref'd setInterval */
  readonly every?: (fn: () => void, ms: number) => () => void;
}

interface Entry {
  sb: Switchboard;
  desired: Record<Tier, number>;
  history: Record<Tier, Recommendation[]>;
  lastScaleTime?: string;
  lastDirection?: 'up' | 'down';
  overloaded: boolean;
  breaches: string[];
  lastBreachAt: number;
  metrics: MetricsState;
  metricsMessage: string;
  observed?: ObservedMetrics;
  loopKey: string;
  cancel: (() => void) | null;
  inflight: Promise<void> | null;
}

function prometheusQuery(sb: Switchboard): Promise<ClusterMetrics | null> {
  return new PrometheusClient(sb.spec.prometheus!.url).clusterMetrics({ namespace: sb.metadata.namespace, name: sb.metadata.name }, sb.spec);
}

function interval(ms: number, fn: () => void): () => void {
  const t = setInterval(fn, ms);
  t.unref();
  return () => clearInterval(t);
}

export class MetricsScaleHandler implements ScaleHandler {
  private readonly entries = new Map<string, Entry>();
  private readonly query: (sb: Switchboard) => Promise<ClusterMetrics | null>;
  private readonly now: () => number;
  private readonly every: (fn: () => void, ms: number) => () => void;

  constructor(private readonly d: MetricsScaleHandlerDeps) {
    this.query = d.query ?? prometheusQuery;
    this.now = d.now ?? Date.now;
    this.every = d.every ?? ((fn, ms) => interval(ms, fn));
  }

  has(key: ObjectKey): boolean {
    return this.entries.has(keyString(key));
  }

  handle(sb: Switchboard, seed: Partial<Record<Tier, number>> = {}): ScaleState {
    const key = keyString(sb.metadata);
    let e = this.entries.get(key);
    if (e === undefined) {
      e = this.seeded(sb, seed);
      this.entries.set(key, e);
    }
    e.sb = sb;
    for (const tier of TIERS) e.desired[tier] = clamp(e.desired[tier], sb.spec[tier].minReplicas, sb.spec[tier].maxReplicas);
    const ms = loopInterval(sb.spec.prometheus ? parseDuration(sb.spec.prometheus.interval) : undefined);
    const loopKey = `${sb.spec.prometheus?.url ?? ''}|${ms}`;
    if (e.cancel === null || e.loopKey !== loopKey) {
      e.cancel?.();
      e.loopKey = loopKey;
      const k: ObjectKey = { namespace: sb.metadata.namespace, name: sb.metadata.name };
      e.cancel = this.every(() => void this.poll(k), ms);
      void this.poll(k);
    }
    return snapshot(e);
  }

  state(key: ObjectKey): ScaleState | undefined {
    const e = this.entries.get(keyString(key));
    return e && snapshot(e);
  }

  overloaded(key: ObjectKey): boolean {
    return this.entries.get(keyString(key))?.overloaded ?? false;
  }

  delete(key: ObjectKey): void {
    const k = keyString(key);
    this.entries.get(k)?.cancel?.();
    this.entries.delete(k);
  }

  stopAll(): void {
    for (const e of this.entries.values()) e.cancel?.();
    this.entries.clear();
  }

  /**
   * One round of the loop for a tracked Switchboard (a round already running is awaited
   * instead of starting a second). Never rejects: a failure is logged.
   */
  poll(key: ObjectKey): Promise<void> {
    const e = this.entries.get(keyString(key));
    if (e === undefined) return Promise.resolve();
    if (e.inflight !== null) return e.inflight;
    e.inflight = this.round(key, e)
      .catch((err: unknown) => this.d.log.error('metrics loop failed', { switchboard: keyString(key), err: describe(err) }))
      .finally(() => (e.inflight = null));
    return e.inflight;
  }

  private seeded(sb: Switchboard, seed: Partial<Record<Tier, number>>): Entry {
    const prev = sb.status;
    return {
      sb,
      desired: { gateway: seed.gateway ?? sb.spec.gateway.minReplicas, broadcast: seed.broadcast ?? sb.spec.broadcast.minReplicas },
      history: { gateway: [], broadcast: [] },
      lastScaleTime: prev?.lastScaleTime,
      overloaded: prev?.overloaded ?? false,
      breaches: prev?.breaches ?? [],
      lastBreachAt: prev?.lastBreachTime ? Date.parse(prev.lastBreachTime) : 0,
      metrics: 'unknown',
      metricsMessage: 'no query yet',
      observed: prev?.observed,
      loopKey: '',
      cancel: null,
      inflight: null,
    };
  }

  private async round(key: ObjectKey, e: Entry): Promise<void> {
    const sb = e.sb;
    const labels = { namespace: key.namespace, switchboard: key.name };
    const now = this.now();
    const answer = await this.measure(sb);
    if (this.entries.get(keyString(key)) !== e) return; // deleted while Prometheus answered
    const m = answer.metrics;
    if (m === null && sb.spec.prometheus) this.d.metrics.queryErrors.inc(labels);
    this.availability(e, answer.state, answer.message);

    if (m !== null) {
      e.observed = observedOf(m, now);
      const breaches = breachesOf(sb.spec.thresholds, m);
      const next = nextOverload(e, breaches, now, sb.spec.thresholds.holdSeconds * 1000);
      const flipped = next.overloaded !== e.overloaded;
      e.breaches = breaches;
      e.overloaded = next.overloaded;
      e.lastBreachAt = next.lastBreachAt;
      if (flipped) this.overloadFlipped(key, e);
    }

    const inputs = scalingInputs(sb.spec, m);
    const s = sb.spec.scaling;
    for (const tier of TIERS) {
      const current = e.desired[tier];
      const d = decide({
        now,
        current,
        readyPods: inputs[tier].pods,
        minReplicas: sb.spec[tier].minReplicas,
        maxReplicas: sb.spec[tier].maxReplicas,
        metrics: inputs[tier].metrics,
        history: e.history[tier],
        tolerance: s.tolerance,
        scaleUpWindowMs: s.scaleUpStabilizationSeconds * 1000,
        scaleDownWindowMs: s.scaleDownStabilizationSeconds * 1000,
        maxStep: s.maxStep,
      });
      e.history[tier] = d.history;
      this.d.metrics.decisions.inc({ ...labels, tier, direction: d.direction });
      if (d.desired === current) continue;
      e.desired[tier] = d.desired;
      e.lastScaleTime = new Date(now).toISOString();
      e.lastDirection = d.desired > current ? 'up' : 'down';
      this.d.log.info('scaling', { switchboard: keyString(key), tier, from: current, to: d.desired, reason: d.reason });
      void this.d.events.record(sb, 'Normal', d.desired > current ? Reason.ScaledUp : Reason.ScaledDown, `${tier} ${current} -> ${d.desired}: ${d.reason}`);
    }
    // Status carries the observed metrics, so every round ends in a reconcile (cheap: applies
    // that change nothing are no-ops on the server).
    this.d.onUpdate(key);
  }

  /** Query the metrics: what they are (null: no data), and whether they are available and why. */
  private async measure(sb: Switchboard): Promise<{ metrics: ClusterMetrics | null; state: MetricsState; message: string }> {
    if (!sb.spec.prometheus) return { metrics: null, state: 'unavailable', message: 'spec.prometheus is not set: replicas stay at minReplicas' };
    try {
      const m = await this.query(sb);
      if (m === null) return { metrics: null, state: 'unavailable', message: 'Prometheus has no data for this Switchboard\'s pods' };
      return { metrics: m, state: 'available', message: 'metrics queried' };
    } catch (err) {
      // Masked again: a query other than PrometheusClient's may quote its URL too.
      return { metrics: null, state: 'unavailable', message: clip(redactCredentials(err instanceof MetricsError ? err.message : `metrics query failed: ${describe(err)}`), 1024) };
    }
  }

  /** A change of availability is an Event (unavailable: Warning; back: Normal). */
  private availability(e: Entry, state: MetricsState, message: string): void {
    const before = e.metrics;
    e.metrics = state;
    e.metricsMessage = message;
    if (state === before) return;
    if (state === 'unavailable') void this.d.events.record(e.sb, 'Warning', Reason.MetricsUnavailable, `${message}; keeping the current replicas`);
    else if (before === 'unavailable') void this.d.events.record(e.sb, 'Normal', Reason.MetricsAvailable, 'metrics are back');
  }

  private overloadFlipped(key: ObjectKey, e: Entry): void {
    const hold = e.sb.spec.thresholds.holdSeconds;
    this.d.log.warn(e.overloaded ? 'threshold breached: shedding nonCritical flags' : 'thresholds clear for the hold period: restoring flags', { switchboard: keyString(key), breaches: e.breaches });
    void this.d.events.record(
      e.sb,
      e.overloaded ? 'Warning' : 'Normal',
      e.overloaded ? Reason.ThresholdBreached : Reason.Recovered,
      e.overloaded ? `${e.breaches.join('; ')}: shedding nonCritical flags` : `thresholds clear for ${hold}s: flags restored`,
    );
    this.d.onOverloadChange(key);
  }
}

/** The thresholds a round of metrics breaches, each as a sentence for the status. */
export function breachesOf(t: SwitchboardSpec['thresholds'], m: ClusterMetrics): string[] {
  const breaches: string[] = [];
  if (m.p99LatencyMs > t.p99LatencyMs) breaches.push(`p99 latency ${round(m.p99LatencyMs)} ms > ${t.p99LatencyMs} ms`);
  if (m.memoryMiB > t.memoryMiB) breaches.push(`memory ${round(m.memoryMiB)} MiB > ${t.memoryMiB} MiB`);
  if (m.errorRate > t.maxErrorRate) breaches.push(`error rate ${round(m.errorRate, 4)} > ${t.maxErrorRate}`);
  if (t.minThroughput > 0 && m.receivedPerSecond > 0 && m.deliveredPerSecond < t.minThroughput) {
    breaches.push(`throughput ${round(m.deliveredPerSecond)} msg/s < ${t.minThroughput} msg/s`);
  }
  return breaches;
}

/** Overloaded at once on a breach; clear only once no breach was seen for `holdMs`. */
export function nextOverload(
  prev: { readonly overloaded: boolean; readonly lastBreachAt: number },
  breaches: readonly string[],
  now: number,
  holdMs: number,
): { overloaded: boolean; lastBreachAt: number } {
  if (breaches.length > 0) return { overloaded: true, lastBreachAt: now };
  const overloaded = prev.overloaded && now - prev.lastBreachAt < holdMs;
  return { overloaded, lastBreachAt: prev.lastBreachAt };
}

/** What each tier scales on (null metrics: no data, so no change). */
export function scalingInputs(spec: SwitchboardSpec, m: ClusterMetrics | null): Record<Tier, { metrics: MetricSample[] | null; pods: number }> {
  const s = spec.scaling;
  return {
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
}

function observedOf(m: ClusterMetrics, now: number): ObservedMetrics {
  return {
    p99LatencyMs: round(m.p99LatencyMs),
    memoryMiB: round(m.memoryMiB),
    messagesPerSecond: round(m.deliveredPerSecond),
    connections: Math.round(m.connections),
    errorRate: round(m.errorRate, 4),
    pods: Math.round(m.gatewayPods),
    time: new Date(now).toISOString(),
  };
}

function snapshot(e: Entry): ScaleState {
  return {
    desired: { ...e.desired },
    ...(e.lastScaleTime ? { lastScaleTime: e.lastScaleTime } : {}),
    ...(e.lastDirection ? { lastDirection: e.lastDirection } : {}),
    overloaded: e.overloaded,
    breaches: [...e.breaches],
    lastBreachAt: e.lastBreachAt,
    metrics: e.metrics,
    metricsMessage: e.metricsMessage,
    ...(e.observed ? { observed: e.observed } : {}),
  };
}

function clamp(n: number, lo: number, hi: number): number {
  return Math.max(lo, Math.min(hi, n));
}

function round(n: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}
