/**
 * The scaling policy, as a pure function so it can be table-tested: the Kubernetes HPA's
 * algorithm (pkg/controller/podautoscaler) over our metrics.
 *
 * - Per metric: ratio = observed per pod / target per pod. Within the tolerance band around 1.0
 *   the metric recommends the current count; otherwise ceil(current x ratio).
 * - The recommendation is the highest over the metrics.
 * - Stabilization: recommendations are remembered with their time. Scaling up uses the lowest
 *   recommendation within the scale-up window, scaling down the highest within the scale-down
 *   window, so a short dip does not remove pods and a short spike (with a window) does not add
 *   them.
 * - The result is bounded by min/max replicas and by a maximum step per decision.
 * - Missing metrics: no recommendation is recorded and the count stays (only raised to min if
 *   below it): never scale down on missing data.
 */

export interface MetricSample {
  /** Human name for logs and decisions (messagesPerPod, connectionsPerPod). */
  readonly name: string;
  /** Total over all pods. */
  readonly total: number;
  /** Target per pod. */
  readonly targetPerPod: number;
}

export interface Recommendation {
  readonly at: number;
  readonly replicas: number;
}

export interface ScalingInput {
  readonly now: number;
  /** Replicas the Deployment has now. */
  readonly current: number;
  /** Pods that reported metrics; the average per pod divides by this. */
  readonly readyPods: number;
  readonly minReplicas: number;
  readonly maxReplicas: number;
  /** null: metrics unavailable. */
  readonly metrics: readonly MetricSample[] | null;
  readonly history: readonly Recommendation[];
  readonly tolerance: number;
  readonly scaleUpWindowMs: number;
  readonly scaleDownWindowMs: number;
  readonly maxStep: number;
}

export type Direction = 'up' | 'down' | 'hold';

export interface ScalingDecision {
  readonly desired: number;
  readonly direction: Direction;
  /** The recommendation of this round before stabilization and bounds (null: no data). */
  readonly raw: number | null;
  /** History to keep for the next round (pruned to the longest window). */
  readonly history: Recommendation[];
  readonly reason: string;
}

function clamp(n: number, lo: number, hi: number): number {
  return Math.max(lo, Math.min(hi, n));
}

/** One metric's recommendation, HPA style. */
export function recommend(current: number, readyPods: number, m: MetricSample, tolerance: number): number {
  const pods = Math.max(1, readyPods);
  const ratio = m.total / pods / m.targetPerPod;
  if (Math.abs(ratio - 1) <= tolerance + 1e-9) return current;
  // Against the pods that reported, like the HPA: a Deployment scaled a moment ago whose new
  // pods report nothing yet does not look idle.
  return Math.max(0, Math.ceil(pods * ratio));
}

export function decide(input: ScalingInput): ScalingDecision {
  const { now, current, minReplicas, maxReplicas } = input;
  const keepFor = Math.max(input.scaleUpWindowMs, input.scaleDownWindowMs);
  const history = input.history.filter((r) => now - r.at <= keepFor);

  if (input.metrics === null || input.metrics.length === 0) {
    // Bounds are the user's own (an edited spec), so they still apply; metrics never lower it.
    const desired = clamp(current, minReplicas, maxReplicas);
    return {
      desired,
      direction: desired > current ? 'up' : desired < current ? 'down' : 'hold',
      raw: null,
      history,
      reason: desired !== current ? `outside bounds ${minReplicas}..${maxReplicas}; metrics unavailable` : 'metrics unavailable: keeping the current replicas',
    };
  }

  let raw = 0;
  let because = '';
  for (const m of input.metrics) {
    const r = recommend(current, input.readyPods, m, input.tolerance);
    if (r > raw || because === '') {
      raw = Math.max(raw, r);
      because = `${m.name} ${(m.total / Math.max(1, input.readyPods)).toFixed(1)}/pod vs target ${m.targetPerPod}`;
    }
  }
  history.push({ at: now, replicas: raw });

  let upRec = raw;
  let downRec = raw;
  for (const r of history) {
    if (now - r.at <= input.scaleUpWindowMs) upRec = Math.min(upRec, r.replicas);
    if (now - r.at <= input.scaleDownWindowMs) downRec = Math.max(downRec, r.replicas);
  }
  let desired = current;
  if (desired < upRec) desired = upRec;
  if (desired > downRec) desired = downRec;

  const step = Math.max(1, input.maxStep);
  desired = clamp(desired, current - step, current + step);
  desired = clamp(desired, minReplicas, maxReplicas);
  const direction: Direction = desired > current ? 'up' : desired < current ? 'down' : 'hold';
  let reason = because;
  if (direction === 'hold' && raw < current && downRec > raw) reason += `; holding: scale-down window keeps ${downRec}`;
  if (direction === 'hold' && raw > current && upRec < raw) reason += `; holding: scale-up window keeps ${upRec}`;
  return { desired, direction, raw, history, reason };
}
