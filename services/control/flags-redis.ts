/**
 * The Redis flags source (cluster mode): the `sb:flags` hash holds one JSON flag per field, and a
 * message on `sb:flags:changed` tells every gateway to read the hash again. Whoever writes flags
 * (the `switchboard flags` CLI now, the operator later) does HSET then PUBLISH, so a change
 * reaches every gateway within a round trip, without a restart.
 *
 * Every notification re-reads the whole hash: flags are few, and a full read cannot be confused
 * by lost or reordered notifications. The hash is also re-read after the subscriber reconnects
 * (changes published while it was away are not replayed) and every `resyncMs` as a backstop.
 * An entry that does not validate is logged and the last good version of that flag is kept; a
 * hash of more than MAX_FLAGS flags is rejected whole and the flags in force stay (on the first
 * read there are none: start() says so, and startFlags refuses to start).
 */
import { Cluster, Redis, type RedisOptions } from 'ioredis';
import type { Logger } from '../telemetry/log';
import { FlagError, MAX_FLAGS, parseFlag, type FeatureFlag, type FlagStore } from './flags';

export const FLAGS_KEY = 'sb:flags';
export const FLAGS_CHANNEL = 'sb:flags:changed';
export const REDIS_SOURCE = 'redis';

/** A single Redis or a Redis Cluster (`sb:flags` is one key, so one slot either way). */
export type FlagsRedis = Redis | Cluster;

export interface FlagsRedisOptions {
  /**
   * A command without a reply within this time fails, as the gateways' REDIS_TIMEOUT_MS
   * (services/bus/redis-conn.ts), and so does connecting: a TCP connect, or a handshake with no
   * reply, past it closes the socket and reconnects with backoff. A Redis that accepts connections
   * and answers nothing (SIGSTOPped, wedged) is then an error within a bound, not a wait for ever.
   * @default 0 (no timeout: commands wait for Redis)
   */
  commandTimeoutMs?: number;
}

/**
 * A Redis connection for flags: fail fast while Redis is down, reconnect with capped backoff.
 * With `cluster`, `url` is a seed node of a Redis Cluster (REDIS_CLUSTER), and the hash is read
 * from whichever node owns its slot; PUBLISH reaches subscribers on every node.
 */
export function flagsRedis(url: string, name: string, cluster = false, options: FlagsRedisOptions = {}): FlagsRedis {
  const backoff = (times: number) => Math.min(50 * 2 ** Math.min(times, 6), 2000);
  const bound = options.commandTimeoutMs !== undefined && options.commandTimeoutMs > 0 ? options.commandTimeoutMs : undefined;
  const opts: RedisOptions = {
    connectionName: name,
    maxRetriesPerRequest: 1,
    enableOfflineQueue: true,
    retryStrategy: backoff,
    ...(bound === undefined ? {} : { commandTimeout: bound, connectTimeout: bound, socketTimeout: bound }),
  };
  if (!cluster) return new Redis(url, opts);
  const u = new URL(url);
  return new Cluster([{ host: u.hostname, port: Number(u.port || 6379) }], {
    redisOptions: {
      ...opts,
      username: u.username ? decodeURIComponent(u.username) : undefined,
      password: u.password ? decodeURIComponent(u.password) : undefined,
      tls: u.protocol === 'rediss:' ? {} : undefined,
    },
    enableOfflineQueue: true,
    clusterRetryStrategy: backoff,
    ...(bound === undefined ? {} : { slotsRefreshTimeout: bound }),
  });
}

/** Read every flag in `sb:flags`; invalid entries are returned as errors, not thrown. */
export async function readFlags(redis: FlagsRedis): Promise<{ flags: FeatureFlag[]; errors: { name: string; error: string }[] }> {
  const raw = await redis.hgetall(FLAGS_KEY);
  const flags: FeatureFlag[] = [];
  const errors: { name: string; error: string }[] = [];
  for (const [name, json] of Object.entries(raw)) {
    try {
      flags.push(parseFlag(JSON.parse(json), name));
    } catch (err) {
      errors.push({ name, error: (err as Error).message });
    }
  }
  flags.sort((a, b) => a.name.localeCompare(b.name));
  return { flags, errors };
}

export interface FlagWriteOptions {
  /**
   * Called immediately before the MULTI that changes the hash is sent, once the connection is
   * ready and every read the write needs is done; throwing aborts the write, and nothing is sent.
   * The operator asks its leadership here: a check made before the call would be stale after the
   * reads (and a connection still connecting), during which the process may have been paused and
   * lost the Lease.
   */
  beforeWrite?: () => void;
}

/**
 * Send a MULTI built by `build`, asking `beforeWrite` first. A client that is not ready would
 * keep the commands in its offline queue and send them whenever it connects, long after the
 * question was asked, so it is made ready first (a PING). From the question to the commands
 * being written to the socket nothing is awaited.
 */
async function guardedExec(redis: FlagsRedis, opts: FlagWriteOptions, build: () => ReturnType<FlagsRedis['multi']>) {
  if (opts.beforeWrite !== undefined && redis.status !== 'ready') await redis.ping();
  opts.beforeWrite?.();
  return build().exec();
}

/**
 * Write one flag and notify every gateway. A new flag is refused (FlagError) when the hash holds
 * MAX_FLAGS already: gateways would reject the whole hash and keep their current flags, so the
 * write would change nothing but an error log on every gateway. The check and the write are two
 * round trips; two writers racing for the last place can both get it, and the gateways' own
 * check still holds.
 */
export async function writeFlag(redis: FlagsRedis, flag: FeatureFlag, opts: FlagWriteOptions = {}): Promise<void> {
  if (!(await redis.hexists(FLAGS_KEY, flag.name))) {
    const count = await redis.hlen(FLAGS_KEY);
    if (count >= MAX_FLAGS) throw new FlagError(`${FLAGS_KEY} holds ${count} flags, the limit is ${MAX_FLAGS}: delete one before adding "${flag.name}"`);
  }
  await guardedExec(redis, opts, () => redis.multi().hset(FLAGS_KEY, flag.name, JSON.stringify(flag)).publish(FLAGS_CHANNEL, flag.name));
}

/** Remove a flag (it falls back to the default: on) and notify. Resolves whether it existed. */
export async function deleteFlag(redis: FlagsRedis, name: string, opts: FlagWriteOptions = {}): Promise<boolean> {
  const res = await guardedExec(redis, opts, () => redis.multi().hdel(FLAGS_KEY, name).publish(FLAGS_CHANNEL, name));
  return Number(res?.[0]?.[1] ?? 0) > 0;
}

/** What one read of the hash did: applied it, rejected it whole, or could not read it (Redis down, or stopped). */
export type LoadOutcome = 'applied' | 'rejected' | 'unreachable';

export interface RedisFlagsOptions {
  url: string;
  store: FlagStore;
  log: Logger;
  /** `url` is a seed node of a Redis Cluster. @default false */
  cluster?: boolean;
  /** Re-read the hash this often even without notifications. @default 30000 */
  resyncMs?: number;
}

export class RedisFlagsSource {
  private readonly cmd: FlagsRedis;
  private readonly sub: FlagsRedis;
  private timer: NodeJS.Timeout | null = null;
  private current = new Map<string, FeatureFlag>();
  private loading: Promise<LoadOutcome> | null = null;
  private again = false;
  private stopped = false;
  /** Completed reads of the hash, for tests. */
  loads = 0;
  /** Reads rejected whole (more than MAX_FLAGS flags). */
  rejects = 0;
  /** Why the last read was rejected whole (null after a good one): what a refused start reports. */
  lastError: string | null = null;

  constructor(private readonly opts: RedisFlagsOptions) {
    this.cmd = flagsRedis(opts.url, 'switchboard-flags', opts.cluster);
    this.sub = flagsRedis(opts.url, 'switchboard-flags-sub', opts.cluster);
    this.cmd.on('error', () => {}); // state changes are logged by the reload that fails
    this.sub.on('error', () => {});
    this.sub.on('message', (channel: string) => {
      if (channel === FLAGS_CHANNEL) void this.reload();
    });
    let subscribedOnce = false;
    this.sub.on('ready', () => {
      // After a reconnect (ioredis resubscribes by itself), catch up on missed changes.
      if (subscribedOnce) void this.reload();
      subscribedOnce = true;
    });
  }

  /**
   * Subscribe and load the current flags. Resolves false when the first read was rejected whole
   * (past MAX_FLAGS, alone or with the file's flags): there is no last good set to keep, so every
   * flag would be at its default, on, and startFlags refuses to start. Resolves true when Redis is
   * down: flags keep their defaults until it is back (a gateway needs Redis for everything else
   * too, and the hash may not be written yet).
   */
  async start(): Promise<boolean> {
    try {
      await this.sub.subscribe(FLAGS_CHANNEL);
    } catch (err) {
      this.opts.log.warn('flags: cannot subscribe to Redis yet, retrying in the background', { err: (err as Error).message });
    }
    if ((await this.reload()) === 'rejected') return false;
    const every = this.opts.resyncMs ?? 30_000;
    if (every > 0) {
      this.timer = setInterval(() => void this.reload(), every);
      this.timer.unref();
    }
    return true;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    this.cmd.disconnect();
    this.sub.disconnect();
  }

  /** Read the hash and apply it; reads never overlap, a notification during a read reads again after it. */
  reload(): Promise<LoadOutcome> {
    if (this.loading !== null) {
      this.again = true;
      return this.loading;
    }
    this.loading = this.load().finally(() => {
      this.loading = null;
      if (this.again && !this.stopped) {
        this.again = false;
        void this.reload();
      }
    });
    return this.loading;
  }

  private async load(): Promise<LoadOutcome> {
    if (this.stopped) return 'unreachable';
    const { store, log } = this.opts;
    let read: Awaited<ReturnType<typeof readFlags>>;
    try {
      // Count before reading: a hash past the cap is rejected whole, without fetching it.
      const count = await this.cmd.hlen(FLAGS_KEY);
      if (count > MAX_FLAGS) return this.reject(new FlagError(`${count} flags, more than the limit of ${MAX_FLAGS}`));
      read = await readFlags(this.cmd);
    } catch (err) {
      log.warn('flags: cannot read from Redis, keeping the current flags', { err: (err as Error).message });
      return 'unreachable';
    }
    const next = new Map<string, FeatureFlag>();
    for (const f of read.flags) next.set(f.name, f);
    for (const e of read.errors) {
      const last = this.current.get(e.name);
      log.error('flags: invalid flag in Redis rejected, keeping its last good value', { key: FLAGS_KEY, flag: e.name, err: e.error, kept: last !== undefined });
      if (last !== undefined) next.set(e.name, last);
    }
    try {
      // Also refuses a hash that grew past the cap after the count, or a set that is past it
      // together with the file's flags.
      store.setSource(REDIS_SOURCE, [...next.values()]);
    } catch (err) {
      return this.reject(err as Error);
    }
    this.current = next;
    this.lastError = null;
    this.loads++;
    log.debug('flags loaded', { source: REDIS_SOURCE, flags: next.size });
    return 'applied';
  }

  /** A whole read refused: the flags in force stay, as when Redis is down, and one error says why. */
  private reject(err: Error): 'rejected' {
    this.rejects++;
    this.lastError = err.message;
    this.opts.log.error('flags: Redis flag set rejected, keeping the current flags', { key: FLAGS_KEY, err: err.message });
    return 'rejected';
  }
}
