/**
 * The Prometheus view of one server: a prom-client Registry of its own (tests run several servers
 * in one process, so the global registry is never used) whose metrics read the plain-number
 * Counters at scrape time.
 *
 * The hot path only increments Counters fields; nothing here runs per message. Label children
 * are resolved once (error codes and drop reasons up front, message types and flags the first
 * time they appear) and kept, as centrifuge's metrics.go does. Counters are fed by the delta since
 * the previous scrape; the latency histogram is exported straight from the hot-path Histogram,
 * with the same bucket bounds (LATENCY_BUCKETS).
 *
 * Metric names are a public interface: dashboards, alerts and the operator query them.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram as PromHistogram, Registry } from 'prom-client';
import { ALL_ERROR_CODES } from '../protocol';
import { DropReason, Limit, RejectReason, type Counters } from './counters';
import type { Histogram } from './histogram';
import { heapUsage } from './monitor';

export const METRIC_PREFIX = 'switchboard_';

/** What the metrics read, besides the counters; every function is called at scrape time only. */
export interface MetricsSource {
  readonly counters: Counters;
  /** 1 while the performance monitor reports overload. */
  overloaded(): boolean;
  /** Event-loop delay (p99 of the monitor's last interval), seconds. */
  eventLoopLagSeconds(): number;
  /** Entries read from a stream but not yet acknowledged (cluster mode); 0 on the memory bus. */
  streamPending(): number;
  /** Effective global state of each feature flag (flags module). @default none */
  features?(): Iterable<readonly [string, boolean]>;
  /** The effective MAX_CONNECTIONS (derived from the descriptor limit when the setting is 0); 0: none. */
  connectionsMax?(): number;
  /** Rooms with local members (MAX_ROOMS_TOTAL). */
  rooms?(): number;
  /** History kept by this process (the embedded bus): estimated bytes, and messages evicted by a byte budget. */
  history?(): { readonly bytes: number; readonly evicted: number };
}

export interface MetricsOptions {
  /** Also register prom-client's default process_* and nodejs_* metrics. @default true */
  defaultMetrics?: boolean;
}

export interface Exposition {
  contentType: string;
  body: string;
}

const LINT_FAILING_DEFAULTS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

type Inc = { inc(value: number): void };

function noop(): void {}

/** Feeds a prom-client counter (or child) from a monotonically growing plain number. */
class CounterFeed {
  private last = 0;
  constructor(
    private readonly target: Inc,
    private readonly read: () => number,
  ) {}
  sync(): void {
    const v = this.read();
    if (v > this.last) {
      this.target.inc(v - this.last);
      this.last = v;
    }
  }
}

function syncAll(feeds: readonly CounterFeed[]): void {
  for (let i = 0; i < feeds.length; i++) feeds[i].sync();
}

type HistogramSnapshot = Awaited<ReturnType<PromHistogram<string>['get']>>;

/**
 * A prom-client histogram whose values come from a hot-path Histogram instead of observe():
 * the registry asks it for its values (getForPromString for the text format, get for JSON) and
 * it answers with the cumulative buckets, sum and count of the source.
 */
class MirroredHistogram extends PromHistogram<string> {
  constructor(
    private readonly metricName: string,
    private readonly metricHelp: string,
    private readonly source: Histogram,
  ) {
    super({ name: metricName, help: metricHelp, buckets: [...source.bounds], registers: [] });
  }

  private snapshot(): HistogramSnapshot {
    const h = this.source;
    const name = this.metricName;
    const values: HistogramSnapshot['values'] = [];
    let cum = 0;
    for (let i = 0; i < h.bounds.length; i++) {
      cum += h.counts[i];
      values.push({ metricName: `${name}_bucket`, labels: { le: h.bounds[i] }, value: cum });
    }
    values.push({ metricName: `${name}_bucket`, labels: { le: '+Inf' }, value: h.count });
    values.push({ metricName: `${name}_sum`, labels: {}, value: h.sum });
    values.push({ metricName: `${name}_count`, labels: {}, value: h.count });
    // prom-client types `type` as a numeric enum, but the registry writes the string as is.
    const type = 'histogram' as unknown as HistogramSnapshot['type'];
    return { name, help: this.metricHelp, type, values, aggregator: 'sum', collect: noop };
  }

  override async get(): Promise<HistogramSnapshot> {
    return this.snapshot();
  }

  /** Used by Registry.metrics() in preference to get(). */
  async getForPromString(): Promise<HistogramSnapshot> {
    return this.snapshot();
  }
}

export class GatewayMetrics {
  readonly registry = new Registry();
  private readonly receivedByType = new Map<string, CounterFeed>();
  private readonly featureChildren = new Map<string, { set(v: number): void }>();

  constructor(
    private readonly source: MetricsSource,
    opts: MetricsOptions = {},
  ) {
    const reg = this.registry;
    const c = source.counters;
    const p = METRIC_PREFIX;
    if (opts.defaultMetrics ?? true) {
      collectDefaultMetrics({ register: reg });
      // These three are gauges named like counters, which promtool rejects; the same numbers
      // are sum(nodejs_active_handles) and friends, by type.
      for (const name of LINT_FAILING_DEFAULTS) reg.removeSingleMetric(name);
    }

    new Gauge({ name: `${p}connections`, help: 'Open client connections.', registers: [reg], collect() { this.set(c.connections); } });
    this.counter(`${p}connections_opened_total`, 'Client connections accepted since start.', () => c.connectionsOpened);

    const received: Counter<'type'> = new Counter({
      name: `${p}messages_received_total`,
      help: 'Messages received from clients, by type ("unknown" for types no handler knows, "invalid" for unparseable ones).',
      labelNames: ['type'],
      registers: [reg],
      collect: () => this.syncReceived(received),
    });
    this.counter(`${p}messages_delivered_total`, 'Messages written to client sockets (one per recipient).', () => c.delivered);
    reg.registerMetric(
      new MirroredHistogram(
        `${p}delivery_latency_seconds`,
        "Time from the origin gateway accepting a message to the recipient's gateway writing it to the socket.",
        c.deliveryLatency,
      ),
    );

    const errors: Counter<'code'> = new Counter({ name: `${p}errors_total`, help: 'Error replies sent to clients, by code.', labelNames: ['code'], registers: [reg], collect: () => syncAll(errorFeeds) });
    const errorFeeds: CounterFeed[] = ALL_ERROR_CODES.map((code) => new CounterFeed(errors.labels(code), () => c.errors[code]));
    const dropped: Counter<'reason'> = new Counter({ name: `${p}dropped_total`, help: 'Messages dropped, by reason.', labelNames: ['reason'], registers: [reg], collect: () => syncAll(dropFeeds) });
    const dropFeeds: CounterFeed[] = Object.values(DropReason).map((reason) => new CounterFeed(dropped.labels(reason), () => c.dropped[reason]));
    // Expose the zero series from the first scrape, so rate() works before the first error.
    for (const code of ALL_ERROR_CODES) errors.labels(code).inc(0);
    for (const reason of Object.values(DropReason)) dropped.labels(reason).inc(0);

    // The budgets of "Limits and abuse" (docs/operations.md): one series per setting, from the start.
    const limits: Counter<'limit'> = new Counter({ name: `${p}limit_exceeded_total`, help: 'Times a client ran into a budget, by the setting that sets it.', labelNames: ['limit'], registers: [reg], collect: () => syncAll(limitFeeds) });
    const limitFeeds: CounterFeed[] = Object.values(Limit).map((l) => new CounterFeed(limits.labels(l), () => c.limitHits[l]));
    for (const l of Object.values(Limit)) limits.labels(l).inc(0);
    const rejected: Counter<'reason'> = new Counter({ name: `${p}connections_rejected_total`, help: 'Connections closed as soon as they were accepted (or that could not be accepted), by reason.', labelNames: ['reason'], registers: [reg], collect: () => syncAll(rejectFeeds) });
    const rejectFeeds: CounterFeed[] = Object.values(RejectReason).map((r) => new CounterFeed(rejected.labels(r), () => c.rejected[r]));
    for (const r of Object.values(RejectReason)) rejected.labels(r).inc(0);
    new Gauge({ name: `${p}connections_max`, help: 'Connections this process accepts at once (MAX_CONNECTIONS, or derived from the descriptor limit); 0 means no limit.', registers: [reg], collect() { this.set(source.connectionsMax?.() ?? 0); } });
    new Gauge({ name: `${p}http_connections`, help: 'Open HTTP connections (client port, admin port and gRPC API port); they count against MAX_CONNECTIONS.', registers: [reg], collect() { this.set(c.httpConnections); } });
    new Gauge({ name: `${p}partial_frame_bytes`, help: 'Bytes of incomplete frames held for all connections (PARTIAL_FRAMES_BUDGET_BYTES).', registers: [reg], collect() { this.set(c.partialFrameBytes); } });
    new Gauge({ name: `${p}outbound_pending_bytes`, help: 'Output pending for all connections together, each one\'s summed (OUTBOUND_BUDGET_BYTES), as of the last check.', registers: [reg], collect() { this.set(c.outboundPendingBytes); } });
    new Gauge({ name: `${p}rooms`, help: 'Rooms with members on this process (MAX_ROOMS_TOTAL).', registers: [reg], collect() { this.set(source.rooms?.() ?? 0); } });
    new Gauge({ name: `${p}history_bytes`, help: 'Estimated bytes of room history held by this process (HISTORY_ROOM_BYTES, HISTORY_TOTAL_BYTES; 0 in cluster mode, where history is in Redis).', registers: [reg], collect() { this.set(source.history?.().bytes ?? 0); } });
    this.counter(`${p}history_evicted_total`, 'Messages evicted from history because a byte budget (HISTORY_ROOM_BYTES, HISTORY_TOTAL_BYTES) was reached.', () => source.history?.().evicted ?? 0);
    new Gauge({ name: `${p}heap_used_bytes`, help: 'V8 heap in use (the overload monitor compares it with the heap limit).', registers: [reg], collect() { this.set(heapUsage().used); } });
    new Gauge({ name: `${p}heap_limit_bytes`, help: 'V8 heap limit (heap_size_limit, set by --max-old-space-size).', registers: [reg], collect() { this.set(heapUsage().limit); } });

    this.counter(`${p}bytes_received_total`, 'Bytes read from client sockets.', () => c.bytesReceived);
    this.counter(`${p}bytes_sent_total`, 'Bytes written to client sockets.', () => c.bytesSent);
    new Gauge({ name: `${p}stream_pending`, help: 'Stream entries delivered to this process but not yet acknowledged (cluster mode).', registers: [reg], collect() { this.set(source.streamPending()); } });
    new Gauge({ name: `${p}event_loop_lag_seconds`, help: "Event-loop delay, p99 over the performance monitor's last interval.", registers: [reg], collect() { this.set(source.eventLoopLagSeconds()); } });
    new Gauge({ name: `${p}overloaded`, help: '1 while the performance monitor reports overload, else 0.', registers: [reg], collect() { this.set(source.overloaded() ? 1 : 0); } });
    const features: Gauge<'flag'> = new Gauge({ name: `${p}feature_enabled`, help: 'Effective state of each feature flag (1 on, 0 off or shed).', labelNames: ['flag'], registers: [reg], collect: () => this.syncFeatures(features) });
  }

  private counter(name: string, help: string, read: () => number): void {
    const counter: Counter = new Counter({ name, help, registers: [this.registry], collect: () => feed.sync() });
    const feed: CounterFeed = new CounterFeed(counter, read);
  }

  private syncReceived(metric: Counter<'type'>): void {
    const received = this.source.counters.received;
    for (const type of received.keys()) {
      let feed = this.receivedByType.get(type);
      if (feed === undefined) {
        feed = new CounterFeed(metric.labels(type), () => received.get(type) ?? 0);
        this.receivedByType.set(type, feed);
      }
      feed.sync();
    }
  }

  private syncFeatures(metric: Gauge<'flag'>): void {
    const list = this.source.features?.();
    if (list === undefined) return;
    for (const [flag, on] of list) {
      let child = this.featureChildren.get(flag);
      if (child === undefined) {
        child = metric.labels(flag);
        this.featureChildren.set(flag, child);
      }
      child.set(on ? 1 : 0);
    }
  }

  /** The text exposition, for GET /metrics. */
  async expose(): Promise<Exposition> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}

/** What the broadcast role's metrics read (BroadcastWorker's counters and its pending count). */
export interface BroadcastMetricsSource {
  readonly counters: { readonly entries: number; readonly routed: number; readonly reclaimed: number; readonly failures: number; readonly epochRestarts: number };
  /** Ingress entries read and not yet acknowledged; may query Redis (called at scrape time). */
  pending(): number | Promise<number>;
}

/** The broadcast role's registry: the stream backlog the operator scales on, plus its own work. */
export class BroadcastMetrics {
  readonly registry = new Registry();

  constructor(source: BroadcastMetricsSource, opts: MetricsOptions = {}) {
    const reg = this.registry;
    const p = METRIC_PREFIX;
    const c = source.counters;
    if (opts.defaultMetrics ?? true) {
      collectDefaultMetrics({ register: reg });
      for (const name of LINT_FAILING_DEFAULTS) reg.removeSingleMetric(name);
    }
    new Gauge({
      name: `${p}stream_pending`,
      help: 'Ingress stream entries read by this worker but not yet acknowledged.',
      registers: [reg],
      async collect() {
        this.set(await source.pending());
      },
    });
    const counter = (name: string, help: string, read: () => number) => {
      const m: Counter = new Counter({ name: `${p}${name}`, help, registers: [reg], collect: () => feed.sync() });
      const feed: CounterFeed = new CounterFeed(m, read);
    };
    counter('broadcast_entries_total', 'Ingress entries routed and acknowledged.', () => c.entries);
    counter('broadcast_routed_total', 'Egress entries written (one per member gateway per message).', () => c.routed);
    counter('broadcast_reclaimed_total', 'Pending entries taken over from a previous shard owner.', () => c.reclaimed);
    counter('broadcast_failures_total', 'Shard batches that failed and were retried.', () => c.failures);
    counter('broadcast_epoch_restarts_total', 'Rooms this worker had sequenced that started again in a new epoch below the seq it had seen: Redis lost writes.', () => c.epochRestarts);
  }

  async expose(): Promise<Exposition> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
