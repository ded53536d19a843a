/**
 * The broadcast role's process: a BroadcastWorker plus its admin HTTP port (/healthz, /readyz,
 * /stats, /metrics), with graceful shutdown that releases the shard leases at once.
 */
import { AdminServer, adminConnectionCap, SharedBuild } from '../admin';
import type { Config } from '../control';
import type { Logger } from '../telemetry/log';
import { BroadcastMetrics } from '../telemetry/metrics';
import { safeRssBytes } from '../telemetry/monitor';
import { BroadcastWorker } from './worker';

export class BroadcastServer {
  readonly worker: BroadcastWorker;
  readonly metrics: BroadcastMetrics;
  private readonly admin: AdminServer | null;
  private readonly startedAt = Date.now();
  private lastPending = 0;
  /**
   * The pending count is one XPENDING per owned shard on the worker's command connection, the one
   * its leases and routing use: queried once a second at most, whatever the scrape rate (every
   * /stats and /metrics request ran them before, and a flood of them held routing up for seconds).
   */
  private readonly pendingRefresh = new SharedBuild(() => this.queryPending(), { perSecond: 1, maxAgeMs: 1000 });

  constructor(
    config: Config,
    private readonly log: Logger,
    workerId: string,
  ) {
    this.worker = new BroadcastWorker({
      url: config.redisUrl,
      cluster: config.redisCluster,
      workerId,
      shards: config.streamShards,
      leaseMs: config.leaseMs,
      batch: config.broadcastBatch,
      egressMaxLen: config.egressMaxLen,
      historySize: config.historySize,
      historyTtlSec: config.historyTtlSec,
      timeoutMs: config.redisTimeoutMs,
      log,
    });
    this.metrics = new BroadcastMetrics({ counters: this.worker.counters, pending: () => this.refreshPending() });
    this.admin =
      config.adminPort < 0
        ? null
        : new AdminServer(
            {
              stats: () => this.refreshPending().then(() => this.stats()),
              readiness: () => ({ ready: this.worker.ready, reasons: this.worker.ready ? [] : ['redis not connected or not answering'] }),
              metrics: () => this.metrics.expose(),
            },
            {
              host: config.adminHost,
              port: config.adminPort,
              timeouts: { headersTimeoutMs: config.httpHeadersTimeoutMs, requestTimeoutMs: config.httpRequestTimeoutMs, keepAliveTimeoutMs: config.httpKeepAliveTimeoutMs },
              onListenerError: (err) => log.warn('admin listener error', { code: err.code }),
              // Its Redis connections: one per shard it may own, the command and egress
              // connections, and a few more for reconnects in flight.
              maxConnections: adminConnectionCap(config.streamShards + 8),
            },
          );
  }

  stats(): Record<string, unknown> {
    const c = this.worker.counters;
    return {
      role: 'broadcast',
      worker: this.worker.opts.workerId,
      ready: this.worker.ready,
      shards: this.worker.ownedShards,
      live_workers: this.worker.live.length,
      entries_total: c.entries,
      routed_total: c.routed,
      reclaimed_total: c.reclaimed,
      failures_total: c.failures,
      epoch_restarts_total: c.epochRestarts,
      stream_pending: this.lastPending,
      memory_mb: Math.round(safeRssBytes() / 104857.6) / 10,
      uptime_s: Math.round((Date.now() - this.startedAt) / 1000),
    };
  }

  /** The pending count for /stats and the stream_pending metric, at most a second old. */
  refreshPending(): Promise<number> {
    return this.pendingRefresh.get();
  }

  /** Pending entries of the owned shards, from Redis; its builds counted for tests. */
  get pendingQueries(): number {
    return this.pendingRefresh.builds;
  }

  private async queryPending(): Promise<number> {
    try {
      this.lastPending = await this.worker.pending();
    } catch {
      // keep the last value while Redis is away
    }
    return this.lastPending;
  }

  async start(): Promise<number | null> {
    this.worker.start();
    if (this.admin === null) return null;
    const port = await this.admin.listen();
    this.log.info('broadcast listening', { adminPort: port, worker: this.worker.opts.workerId });
    return port;
  }

  async shutdown(): Promise<void> {
    await this.worker.stop();
    await this.admin?.close();
  }
}
