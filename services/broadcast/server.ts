/**
 * The broadcast role's process: a BroadcastWorker plus its admin HTTP port (/healthz, /readyz,
 * /stats, /metrics), with graceful shutdown that releases the shard leases at once.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Config } from '../control';
import { createHttpHandler, type HttpEndpoints } from '../gateway/http';
import type { Logger } from '../telemetry/log';
import { safeRssBytes } from '../telemetry/monitor';
import { BroadcastWorker } from './worker';

export class BroadcastServer {
  readonly worker: BroadcastWorker;
  private admin: Server | null = null;
  private readonly startedAt = Date.now();
  private lastPending = 0;
  metricsHandler: HttpEndpoints['metrics'] = undefined;
  readonly statsExtras: (() => Record<string, unknown>)[] = [];

  constructor(
    private readonly config: Config,
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
      timeoutMs: config.redisTimeoutMs,
      log,
    });
  }

  stats(): Record<string, unknown> {
    const c = this.worker.counters;
    const out: Record<string, unknown> = {
      role: 'broadcast',
      worker: this.worker.opts.workerId,
      ready: this.worker.ready,
      shards: this.worker.ownedShards,
      live_workers: this.worker.live.length,
      entries_total: c.entries,
      routed_total: c.routed,
      reclaimed_total: c.reclaimed,
      failures_total: c.failures,
      stream_pending: this.lastPending,
      memory_mb: Math.round(safeRssBytes() / 104857.6) / 10,
      uptime_s: Math.round((Date.now() - this.startedAt) / 1000),
    };
    for (const f of this.statsExtras) Object.assign(out, f());
    return out;
  }

  /** Refresh the pending count (used by /stats and the stream_pending metric). */
  async refreshPending(): Promise<number> {
    try {
      this.lastPending = await this.worker.pending();
    } catch {
      // keep the last value while Redis is away
    }
    return this.lastPending;
  }

  async start(): Promise<number | null> {
    this.worker.start();
    if (this.config.adminPort < 0) return null;
    const handler = createHttpHandler({
      stats: () => this.stats(),
      readiness: () => ({ ready: this.worker.ready, reasons: this.worker.ready ? [] : ['redis not connected or not answering'] }),
      metrics: () => (this.metricsHandler ? this.metricsHandler() : Promise.reject(new Error('metrics are not enabled'))),
    });
    const admin = createServer((req, res) => {
      if ((req.url ?? '').startsWith('/stats')) void this.refreshPending().then(() => handler(req, res));
      else handler(req, res);
    });
    this.admin = admin;
    await new Promise<void>((resolve, reject) => {
      admin.once('error', reject);
      admin.listen({ host: this.config.adminHost, port: this.config.adminPort }, () => resolve());
    });
    const port = (admin.address() as AddressInfo).port;
    this.log.info('broadcast listening', { adminPort: port, worker: this.worker.opts.workerId });
    return port;
  }

  async shutdown(): Promise<void> {
    await this.worker.stop();
    if (this.admin !== null) {
      this.admin.closeAllConnections();
      await new Promise<void>((r) => this.admin!.close(() => r()));
    }
  }
}
