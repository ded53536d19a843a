/**
 * The `/stats` view: rates and a recent p99 computed from the hot-path counters once a second.
 *
 * Rates are over the last full second; latency percentiles and the error rate over a sliding
 * window of WINDOW_S seconds (cumulative histogram snapshots, one per second), so /stats answers
 * "how is it now" rather than "since start".
 */
import type { Counters } from './counters';
import { Histogram } from './histogram';
import { safeRssBytes } from './monitor';

const WINDOW_S = 10;

/** The origin's fields, exactly, plus ours. */
export interface StatsSnapshot {
  msg_per_sec: number;
  latency_p99: number;
  memory_mb: number;
  connections: number;
  error_rate: number;
  delivered_per_sec: number;
  latency_p50: number;
  bytes_in_per_sec: number;
  bytes_out_per_sec: number;
  messages_received_total: number;
  messages_delivered_total: number;
  errors_total: number;
  uptime_s: number;
  [extra: string]: unknown;
}

interface Sample {
  at: number;
  received: number;
  delivered: number;
  errors: number;
  bytesIn: number;
  bytesOut: number;
  latency: Float64Array;
}

export class StatsSampler {
  private readonly samples: Sample[] = [];
  private timer: NodeJS.Timeout | null = null;
  private readonly startedAt = Date.now();

  constructor(private readonly counters: Counters) {}

  start(intervalMs = 1000): void {
    this.sample();
    this.timer = setInterval(() => this.sample(), intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  sample(): void {
    const c = this.counters;
    this.samples.push({
      at: Date.now(),
      received: c.receivedTotal,
      delivered: c.delivered,
      errors: c.errorsTotal,
      bytesIn: c.bytesReceived,
      bytesOut: c.bytesSent,
      latency: Float64Array.from(c.deliveryLatency.counts),
    });
    if (this.samples.length > WINDOW_S + 1) this.samples.shift();
  }

  /** Latency over the window: the cumulative histogram minus the oldest snapshot. */
  windowLatency(): Histogram {
    const h = new Histogram(this.counters.deliveryLatency.bounds);
    const cur = this.counters.deliveryLatency.counts;
    const old = this.samples.length > 0 ? this.samples[0].latency : null;
    for (let i = 0; i < cur.length; i++) {
      const n = cur[i] - (old === null ? 0 : old[i]);
      h.counts[i] = n;
      h.count += n;
    }
    return h;
  }

  snapshot(extra: Record<string, unknown> = {}): StatsSnapshot {
    const c = this.counters;
    const now = Date.now();
    const last = this.samples[this.samples.length - 1];
    const prev = this.samples.length > 1 ? this.samples[this.samples.length - 2] : undefined;
    const rate = (pick: (s: Sample) => number) =>
      prev === undefined || last.at === prev.at ? 0 : ((pick(last) - pick(prev)) * 1000) / (last.at - prev.at);
    const first = this.samples[0];
    const recvWindow = first === undefined ? c.receivedTotal : c.receivedTotal - first.received;
    const errWindow = first === undefined ? c.errorsTotal : c.errorsTotal - first.errors;
    const lat = this.windowLatency();
    const ms = (q: number) => {
      const v = lat.quantile(q);
      return Number.isNaN(v) ? 0 : Math.round(v * 1e6) / 1e3;
    };
    const round = (v: number) => Math.round(v * 10) / 10;
    return {
      msg_per_sec: round(rate((s) => s.received)),
      latency_p99: ms(0.99),
      memory_mb: round(safeRssBytes() / (1024 * 1024)),
      connections: c.connections,
      error_rate: recvWindow === 0 ? 0 : Math.round((errWindow / recvWindow) * 1e4) / 1e4,
      delivered_per_sec: round(rate((s) => s.delivered)),
      latency_p50: ms(0.5),
      bytes_in_per_sec: round(rate((s) => s.bytesIn)),
      bytes_out_per_sec: round(rate((s) => s.bytesOut)),
      messages_received_total: c.receivedTotal,
      messages_delivered_total: c.delivered,
      errors_total: c.errorsTotal,
      uptime_s: Math.round((now - this.startedAt) / 1000),
      ...extra,
    };
  }
}
