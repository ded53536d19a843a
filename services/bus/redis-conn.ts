/**
 * Redis connections for the cluster roles: one place that decides between a single Redis and
 * Redis Cluster, and sets the reconnect and failure behaviour every role relies on:
 * - reconnect forever with capped exponential backoff, logging state changes (not every try);
 * - no offline queue: while Redis is down, commands fail at once, so a client gets `unavailable`
 *   instead of a false `ok` or a request hanging until Redis returns;
 * - commands in flight when the connection drops are failed, not resent, so a publish is never
 *   silently applied twice.
 */
import { Cluster, Redis, type RedisOptions } from 'ioredis';
import type { Logger } from '../telemetry/log';

export type RedisClient = Redis | Cluster;

export interface RedisConnOptions {
  url: string;
  /** Treat `url` as a seed node of a Redis Cluster. */
  cluster: boolean;
  /** Name shown in logs and CLIENT LIST. */
  name: string;
  log: Logger;
  /** Blocking readers must not auto-pipeline (a blocked command would hold up the batch). */
  autoPipelining?: boolean;
  /**
   * A command without a reply within this time fails (a stalled Redis must turn into
   * `unavailable` within a bound, not a request hanging for as long as the stall). Blocking
   * readers leave it unset: their reads are allowed to wait, and nobody waits on them.
   * @default 0 (no timeout)
   */
  commandTimeoutMs?: number;
}

function backoff(times: number): number {
  return Math.min(50 * 2 ** Math.min(times, 6), 2000);
}

export function createRedis(opts: RedisConnOptions): RedisClient {
  const u = new URL(opts.url);
  const base: RedisOptions = {
    connectionName: opts.name,
    username: u.username ? decodeURIComponent(u.username) : undefined,
    password: u.password ? decodeURIComponent(u.password) : undefined,
    tls: u.protocol === 'rediss:' ? {} : undefined,
    // RESP2: stream replies keep their documented nested-array shape (RESP3 maps are flattened).
    protocol: 2,
    enableOfflineQueue: false,
    autoResendUnfulfilledCommands: false,
    maxRetriesPerRequest: 0,
    retryStrategy: backoff,
    enableAutoPipelining: opts.autoPipelining ?? true,
    lazyConnect: false,
    commandTimeout: opts.commandTimeoutMs !== undefined && opts.commandTimeoutMs > 0 ? opts.commandTimeoutMs : undefined,
    // A peer that vanished without a FIN (a node gone, a partition) is noticed by TCP keepalive.
    keepAlive: 10_000,
  };
  let client: RedisClient;
  if (opts.cluster) {
    client = new Cluster([{ host: u.hostname, port: Number(u.port || 6379) }], {
      redisOptions: base,
      enableOfflineQueue: false,
      enableAutoPipelining: opts.autoPipelining ?? true,
      clusterRetryStrategy: backoff,
      slotsRefreshTimeout: 2000,
    });
  } else {
    const db = u.pathname.length > 1 ? Number(u.pathname.slice(1)) : 0;
    client = new Redis({ ...base, host: u.hostname, port: Number(u.port || 6379), db });
  }
  if (opts.cluster) watchCluster(client as Cluster, opts);
  let wasReady = false;
  let warned = false;
  client.on('ready', () => {
    wasReady = true;
    warned = false;
    opts.log.info('redis connected', { conn: opts.name });
  });
  client.on('error', (err: Error) => {
    if (!warned) {
      warned = true;
      opts.log.warn(wasReady ? 'redis connection lost, reconnecting' : 'redis unreachable, retrying with backoff', {
        conn: opts.name,
        err: err.message,
      });
    }
  });
  return client;
}

/**
 * ioredis' Cluster can end up in status `close` with no reconnect scheduled: when the ready check
 * fails right after the slots refresh (a freshly created or resharding cluster), the connection
 * pool's late `drain` event sets `close` after the retry timer was armed, and the client stays
 * down for good (seen with ioredis 6.0.0 against a 3-master cluster on a busy machine). A role
 * must never stay unready while Redis is up, so a watchdog restarts the connect cycle when the
 * client has been closed without our asking for it. `disconnect()`/`quit()` stop the watchdog.
 */
function watchCluster(client: Cluster, opts: RedisConnOptions): void {
  let closing = false;
  let stuckSince = 0;
  const timer = setInterval(() => {
    if (closing) return;
    if (client.status !== 'close' && client.status !== 'end') {
      stuckSince = 0;
      return;
    }
    const now = Date.now();
    if (stuckSince === 0) stuckSince = now;
    else if (now - stuckSince >= 1000) {
      stuckSince = 0;
      opts.log.warn('redis cluster client closed without a retry pending: reconnecting', { conn: opts.name });
      client.connect().catch(() => undefined);
    }
  }, 500);
  timer.unref();
  const stop = () => {
    closing = true;
    clearInterval(timer);
  };
  const disconnect = client.disconnect.bind(client);
  client.disconnect = (reconnect?: boolean) => {
    if (!reconnect) stop();
    disconnect(reconnect);
  };
  const quit = client.quit.bind(client);
  client.quit = ((...args: Parameters<Cluster['quit']>) => {
    stop();
    return quit(...args);
  }) as Cluster['quit'];
}

/**
 * Whether a command failed because Redis gave no reply within its commandTimeout (REDIS_TIMEOUT_MS):
 * it may still be applied, unlike a command refused because the connection was down.
 */
export function isRedisTimeout(err: unknown): boolean {
  return err instanceof Error && /timed out/i.test(err.message);
}

export function isReady(client: RedisClient): boolean {
  return client.status === 'ready';
}

/**
 * Whether Redis answers, not just whether the socket is up: a SIGSTOPped or overloaded Redis
 * keeps its connections open while answering nothing. Pings every third of the bound; healthy
 * while the last ping was answered within the bound and no ping has been outstanding longer.
 * Readiness uses this, so a pod stops getting traffic while its Redis cannot serve it.
 */
export class RedisHealth {
  private timer: NodeJS.Timeout | null = null;
  private outstandingSince = 0;
  private lastOk = 0;

  constructor(
    private readonly client: RedisClient,
    private readonly boundMs: number,
  ) {}

  start(): void {
    this.timer = setInterval(() => this.probe(), Math.max(50, Math.floor(this.boundMs / 3)));
    this.timer.unref();
    this.probe();
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  get healthy(): boolean {
    if (!isReady(this.client)) return false;
    const now = Date.now();
    if (this.outstandingSince !== 0 && now - this.outstandingSince > this.boundMs) return false;
    return now - this.lastOk <= this.boundMs + Math.max(50, Math.floor(this.boundMs / 3));
  }

  private probe(): void {
    if (this.outstandingSince !== 0 || !isReady(this.client)) return;
    this.outstandingSince = Date.now();
    this.client.ping().then(
      () => {
        this.lastOk = Date.now();
        this.outstandingSince = 0;
      },
      () => {
        this.outstandingSince = 0;
      },
    );
  }
}

export type StreamEntry = [id: string, fields: string[]];
