/**
 * The performance monitor (the origin's "performance monitor" service): once per interval it
 * samples event-loop delay, p99 delivery latency, RSS, throughput and the server-side error rate,
 * compares them with thresholds, and decides whether this process is overloaded.
 *
 * Decisions have hysteresis so that a process near a threshold does not flap: it becomes
 * overloaded after `enterSamples` consecutive intervals with a breach, and recovers after
 * `exitSamples` consecutive intervals in which every value is below `recoveryPercent` of its
 * threshold. Other modules subscribe to the transitions: `monitor.on('overloaded', ...)`,
 * `monitor.on('recovered', ...)`, or read `monitor.overloaded`. The gateway refuses new sessions
 * beyond a margin while overloaded; the flags module sheds non-critical features.
 *
 * Event-loop delay is measured with a timer chain (drift of a short timeout) rather than
 * perf_hooks.monitorEventLoopDelay, which misses long blocks on some sandboxed kernels.
 *
 * Nothing here may throw from a timer: RSS is read from /proc (an open(2)), which fails with
 * EMFILE when the process is out of descriptors, exactly when it is under a connection flood.
 * Every such read goes through a guard that keeps the last good value (safeRssBytes).
 */
import { EventEmitter } from 'node:events';
import { totalmem } from 'node:os';
import { getHeapStatistics } from 'node:v8';
import type { Counters } from './counters';
import { Histogram } from './histogram';

/** Thresholds; 0 disables a check. Defaults are in services/control/config.ts (SETTINGS). */
export interface OverloadThresholds {
  /** p99 delivery latency over one interval, ms. @default 50 */
  p99LatencyMs: number;
  /** p99 event-loop delay over one interval, ms. @default 100 */
  eventLoopLagMs: number;
  /** Resident set size, bytes. @default 85% of the container memory limit (or of RAM) */
  memoryBytes: number;
  /** V8 heap in use, percent of its limit (heap_size_limit). @default 85; 0 disables */
  heapPercent?: number;
  /** Messages received per second above which this process is over capacity. @default 0 (off) */
  maxMsgPerSec: number;
  /**
   * Server-side errors (ErrorInfo[code].serverSide: internal, unavailable) per message received,
   * percent, each connection counted at most once per interval. @default 1
   */
  errorRatePercent: number;
}

export interface MonitorOptions extends OverloadThresholds {
  /** Sampling interval, ms. @default 1000 */
  intervalMs: number;
  /** Consecutive breaching intervals before overload. @default 3 */
  enterSamples: number;
  /** Consecutive clear intervals before recovery. @default 5 */
  exitSamples: number;
  /** "Clear" means below this percentage of every threshold. @default 80 */
  recoveryPercent: number;
}

/** One interval's measurements. */
export interface MonitorSample {
  at: number;
  eventLoopLagMs: number;
  /** NaN when nothing was delivered in the interval. */
  p99LatencyMs: number;
  rssBytes: number;
  /** V8 heap in use (used_heap_size) and its limit (heap_size_limit). */
  heapUsedBytes: number;
  heapLimitBytes: number;
  msgPerSec: number;
  /** Percent; NaN when too few messages were received in the interval to tell. */
  errorRatePercent: number;
}

export interface OverloadEvent {
  /** The breaches that caused the transition (empty on recovery). */
  reasons: string[];
  sample: MonitorSample;
}

export interface PerformanceMonitorEvents {
  overloaded: [OverloadEvent];
  recovered: [OverloadEvent];
  sample: [MonitorSample];
}

/** An error rate computed from fewer messages than this is noise. */
const MIN_MESSAGES_FOR_ERROR_RATE = 100;
/** Period of the event-loop probe timer. */
const PROBE_MS = 20;

let lastRss = 0;
let rssReadFailures = 0;

/**
 * process.memoryUsage.rss() that never throws: it opens /proc/self/stat, which fails with EMFILE
 * when descriptors run out (a connection flood) and used to crash the process from the monitor's
 * timer. On failure the last good value is returned (0 before the first).
 */
export function safeRssBytes(): number {
  try {
    lastRss = process.memoryUsage.rss();
  } catch {
    rssReadFailures++;
  }
  return lastRss;
}

/** RSS reads that failed since start (EMFILE and the like). */
export function rssReadFailureCount(): number {
  return rssReadFailures;
}

/** V8 heap in use and its limit; getHeapStatistics reads no file and cannot fail for lack of descriptors. */
export function heapUsage(): { used: number; limit: number } {
  const h = getHeapStatistics();
  return { used: h.used_heap_size, limit: h.heap_size_limit };
}

/** Memory this process may use: the cgroup (container) limit when there is one, else the RAM. */
export function memoryLimitBytes(): number {
  const ram = totalmem();
  const cgroup = typeof process.constrainedMemory === 'function' ? process.constrainedMemory() : undefined;
  // Unlimited cgroups report 2^64-ish (or 0/undefined): fall back to the RAM.
  return cgroup !== undefined && cgroup > 0 && cgroup < ram ? cgroup : ram;
}

/** The RSS threshold: `percent` of memoryLimitBytes(), or `mib` when it is set (> 0). */
export function memoryThresholdBytes(mib: number, percent: number): number {
  return mib > 0 ? mib * 1048576 : Math.floor((memoryLimitBytes() * percent) / 100);
}

export class PerformanceMonitor extends EventEmitter<PerformanceMonitorEvents> {
  private state = false;
  private breachStreak = 0;
  private clearStreak = 0;
  private reasonList: string[] = [];
  private last: MonitorSample | null = null;
  private timer: NodeJS.Timeout | null = null;
  private probe: NodeJS.Timeout | null = null;
  private probeExpected = 0;
  private lagSamples: number[] = [];
  private prevAt = 0;
  private prevReceived = 0;
  private prevErrors = 0;
  private readonly prevLatency: Float64Array;
  /** Samples that threw (see onInterval); the last error, for diagnosis. */
  sampleFailures = 0;
  lastSampleError: unknown = undefined;

  constructor(
    private readonly counters: Counters,
    readonly options: MonitorOptions,
  ) {
    super();
    this.prevLatency = new Float64Array(counters.deliveryLatency.counts.length);
  }

  /** True while overloaded. */
  get overloaded(): boolean {
    return this.state;
  }

  /** Breaches behind the current overload (empty when not overloaded). */
  get reasons(): readonly string[] {
    return this.reasonList;
  }

  get latest(): MonitorSample | null {
    return this.last;
  }

  start(): void {
    if (this.timer !== null) return;
    this.resetBaseline();
    this.armProbe();
    this.timer = setInterval(onInterval, this.options.intervalMs, this);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    if (this.probe !== null) clearTimeout(this.probe);
    this.timer = null;
    this.probe = null;
  }

  private armProbe(): void {
    this.probeExpected = performance.now() + PROBE_MS;
    this.probe = setTimeout(onProbe, PROBE_MS, this);
    this.probe.unref();
  }

  /** @internal timer callback */
  probeFired(): void {
    this.lagSamples.push(Math.max(0, performance.now() - this.probeExpected));
    this.armProbe();
  }

  private resetBaseline(): void {
    const c = this.counters;
    this.prevAt = performance.now();
    this.prevReceived = c.receivedTotal;
    this.prevErrors = c.serverErrorsForOverload;
    this.prevLatency.set(c.deliveryLatency.counts);
    this.lagSamples.length = 0;
  }

  /** Take one sample and update the state; called by the interval timer (public for tests). */
  sample(): MonitorSample {
    const c = this.counters;
    const now = performance.now();
    const dt = Math.max(1, now - this.prevAt) / 1000;
    const received = c.receivedTotal - this.prevReceived;
    const errors = c.serverErrorsForOverload - this.prevErrors;
    const window = new Histogram(c.deliveryLatency.bounds);
    const cur = c.deliveryLatency.counts;
    for (let i = 0; i < cur.length; i++) {
      window.counts[i] = cur[i] - this.prevLatency[i];
      window.count += window.counts[i];
    }
    const lag = this.lagSamples.sort((a, b) => a - b);
    const heap = heapUsage();
    const s: MonitorSample = {
      at: Date.now(),
      eventLoopLagMs: lag.length === 0 ? 0 : lag[Math.min(lag.length - 1, Math.floor(lag.length * 0.99))],
      p99LatencyMs: window.quantile(0.99) * 1000,
      rssBytes: safeRssBytes(),
      heapUsedBytes: heap.used,
      heapLimitBytes: heap.limit,
      msgPerSec: received / dt,
      errorRatePercent: received < MIN_MESSAGES_FOR_ERROR_RATE ? NaN : (errors / received) * 100,
    };
    this.resetBaseline();
    // A new interval: every connection may again count once toward the server error rate.
    c.epoch++;
    this.last = s;
    this.evaluate(s);
    this.emit('sample', s);
    return s;
  }

  private evaluate(s: MonitorSample): void {
    const o = this.options;
    const checks: [string, number, number, string][] = [
      ['p99_latency', s.p99LatencyMs, o.p99LatencyMs, 'ms'],
      ['event_loop_lag', s.eventLoopLagMs, o.eventLoopLagMs, 'ms'],
      ['memory', s.rssBytes / 1048576, o.memoryBytes / 1048576, 'MiB'],
      ['heap', s.heapLimitBytes > 0 ? (s.heapUsedBytes / s.heapLimitBytes) * 100 : 0, o.heapPercent ?? 0, '%'],
      ['throughput', s.msgPerSec, o.maxMsgPerSec, 'msg/s'],
      ['error_rate', s.errorRatePercent, o.errorRatePercent, '%'],
    ];
    const breaches: string[] = [];
    let clear = true;
    for (const [name, value, limit, unit] of checks) {
      if (limit <= 0 || Number.isNaN(value)) continue;
      if (value > limit) breaches.push(`${name} ${round(value)}${unit} > ${round(limit)}${unit}`);
      if (value > (limit * o.recoveryPercent) / 100) clear = false;
    }
    if (!this.state) {
      this.breachStreak = breaches.length > 0 ? this.breachStreak + 1 : 0;
      if (this.breachStreak >= o.enterSamples) {
        this.state = true;
        this.breachStreak = 0;
        this.clearStreak = 0;
        this.reasonList = breaches;
        this.emit('overloaded', { reasons: breaches, sample: s });
      }
      return;
    }
    if (breaches.length > 0) this.reasonList = breaches;
    this.clearStreak = clear ? this.clearStreak + 1 : 0;
    if (this.clearStreak >= o.exitSamples) {
      this.state = false;
      this.clearStreak = 0;
      this.reasonList = [];
      this.emit('recovered', { reasons: [], sample: s });
    }
  }

  /** Fields for /stats. */
  statsFields(): Record<string, unknown> {
    const s = this.last;
    return {
      overloaded: this.state,
      overload_reasons: this.reasonList,
      event_loop_lag_ms: s === null ? 0 : round(s.eventLoopLagMs),
      heap_used_percent: s === null || s.heapLimitBytes === 0 ? 0 : round((s.heapUsedBytes / s.heapLimitBytes) * 100),
      // RSS reads that failed (EMFILE under a connection flood) and samples that threw: survived.
      monitor_read_failures: rssReadFailures + this.sampleFailures,
    };
  }
}

function onInterval(m: PerformanceMonitor): void {
  // A timer must never throw: an exception here (a failed read, a throwing subscriber) would
  // end the process. The next interval tries again.
  try {
    m.sample();
  } catch (err) {
    m.sampleFailures++;
    m.lastSampleError = err;
  }
}

function onProbe(m: PerformanceMonitor): void {
  m.probeFired();
}

function round(v: number): number {
  return Math.round(v * 100) / 100;
}
