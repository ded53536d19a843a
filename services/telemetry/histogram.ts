/**
 * A fixed-bucket latency histogram cheap enough for the delivery hot path: observing is a short
 * linear scan over 16 bounds and an add, and one observation may stand for many deliveries of
 * the same message (`observeMany`). It exports Prometheus-compatible cumulative buckets and a
 * quantile estimate (linear interpolation inside the bucket, as histogram_quantile does).
 */

/** Upper bounds in seconds, shared with the Prometheus histogram and the dashboards. */
export const LATENCY_BUCKETS: readonly number[] = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];

export class Histogram {
  readonly bounds: readonly number[];
  /** counts[i] for bucket i (non-cumulative); the last slot is +Inf. */
  readonly counts: Float64Array;
  sum = 0;
  count = 0;

  constructor(bounds: readonly number[] = LATENCY_BUCKETS) {
    this.bounds = bounds;
    this.counts = new Float64Array(bounds.length + 1);
  }

  observe(value: number): void {
    this.observeMany(value, 1);
  }

  observeMany(value: number, n: number): void {
    const b = this.bounds;
    let i = 0;
    while (i < b.length && value > b[i]) i++;
    this.counts[i] += n;
    this.sum += value * n;
    this.count += n;
  }

  reset(): void {
    this.counts.fill(0);
    this.sum = 0;
    this.count = 0;
  }

  /** Add another histogram with the same bounds into this one. */
  merge(other: Histogram): void {
    for (let i = 0; i < this.counts.length; i++) this.counts[i] += other.counts[i];
    this.sum += other.sum;
    this.count += other.count;
  }

  /** Estimated q-quantile in seconds, NaN when empty. */
  quantile(q: number): number {
    if (this.count === 0) return NaN;
    const rank = q * this.count;
    let cum = 0;
    for (let i = 0; i < this.counts.length; i++) {
      const c = this.counts[i];
      if (cum + c >= rank && c > 0) {
        if (i === this.bounds.length) return this.bounds[this.bounds.length - 1];
        const lo = i === 0 ? 0 : this.bounds[i - 1];
        const hi = this.bounds[i];
        return lo + (hi - lo) * ((rank - cum) / c);
      }
      cum += c;
    }
    return this.bounds[this.bounds.length - 1];
  }
}
