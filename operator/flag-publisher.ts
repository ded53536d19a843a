/**
 * Publishes FeatureFlags to the Redis of each Switchboard (the `sb:flags` hash plus a message on
 * `sb:flags:changed`, the same writes as `switchboard flags set`), so every gateway applies a
 * change within a second. A URL held in a Secret is read when needed and never logged.
 *
 * One connection per Switchboard (namespace/name), reused across reconciles while its URL stays
 * the same. A connection whose URL changed (a rotated password, another Redis) is closed when the
 * new one is made, and a deleted Switchboard's on `forget`: a client kept for a URL nobody uses
 * any more would reconnect, with old credentials, for as long as the operator runs.
 *
 * Publishing is a write like any other: `mayWrite` (the operator's leadership check) is asked
 * once before any command, and again by writeFlag/deleteFlag (`beforeWrite`) once the connection
 * is ready and the reads a write needs (HEXISTS, HLEN) are done, with nothing awaited between the
 * answer and the MULTI going out. A publish that started before a step-down, or was paused during
 * those reads, sends nothing.
 *
 * Every publish is bounded: each Redis command by `commandTimeoutMs` (connecting too), and the
 * whole publish (the Secret, connecting, the reads, the MULTI) by `publishTimeoutMs`, or sooner
 * when the caller's signal fires. Past that it fails (the FeatureFlag's RedisUnavailable, retried
 * with backoff) and the gate refuses its MULTI should the reads ever be answered: a Redis that
 * accepts connections and never answers made a publish wait for ever.
 */
import { deleteFlag, writeFlag } from '../services/control';
import type { FeatureFlag as ServerFlag } from '../services/control';
import { flagsRedis, type FlagsRedis } from '../services/control/flags-redis';
import type { Logger } from '../services/telemetry/log';
import type { Switchboard } from './api/types';
import { NotLeaderError, type Kube, type WriteGate } from './kube/client';
import { keyString, type ObjectKey } from './kube/key';

interface Connection {
  /** What it was made for: a change of either means a new connection. */
  readonly url: string;
  readonly cluster: boolean;
  readonly redis: FlagsRedis;
}

export interface FlagPublisherOptions {
  /** A Redis command (or connecting) without an answer within this time fails. @default 2000 */
  readonly commandTimeoutMs?: number;
  /** A whole publish or unpublish not done within this time fails. @default 5000 */
  readonly publishTimeoutMs?: number;
}

/** The error of a publish that passed publishTimeoutMs. */
export class PublishTimeoutError extends Error {
  constructor(what: string, ms: number) {
    super(`${what}: Redis did not answer within ${ms} ms`);
    this.name = 'PublishTimeoutError';
  }
}

export class FlagPublisher {
  private readonly conns = new Map<string, Connection>();
  private readonly commandTimeoutMs: number;
  private readonly publishTimeoutMs: number;

  constructor(
    private readonly kube: Pick<Kube, 'core'>,
    private readonly log: Logger,
    private readonly mayWrite: WriteGate = () => true,
    options: FlagPublisherOptions = {},
  ) {
    this.commandTimeoutMs = options.commandTimeoutMs ?? 2000;
    this.publishTimeoutMs = options.publishTimeoutMs ?? 5000;
  }

  /** Publish a flag to a Switchboard's Redis; `signal` (the reconcile's) ends it early. */
  async write(sb: Switchboard, flag: ServerFlag, signal?: AbortSignal): Promise<void> {
    await this.bounded(sb, `publish flag ${flag.name}`, signal, async (redis, gate) => {
      // Early, so a replica that does not lead does not even read; the check that counts is
      // beforeWrite's, right before the MULTI.
      gate();
      await writeFlag(redis, flag, { beforeWrite: gate });
    });
  }

  async remove(sb: Switchboard, name: string, signal?: AbortSignal): Promise<void> {
    await this.bounded(sb, `unpublish flag ${name}`, signal, async (redis, gate) => {
      gate();
      await deleteFlag(redis, name, { beforeWrite: gate });
    });
  }

  /**
   * Run `op` within publishTimeoutMs (or until `signal` fires). Its gate throws from then on, so
   * an op that is still waiting for Redis when it gives up never sends its MULTI.
   */
  private async bounded(sb: Switchboard, what: string, signal: AbortSignal | undefined, op: (redis: FlagsRedis, gate: () => void) => Promise<void>): Promise<void> {
    const target = `${what} to ${keyString(sb.metadata)}`;
    const ended = new AbortController();
    const end = (reason: unknown) => ended.abort(reason);
    const timer = setTimeout(() => end(new PublishTimeoutError(target, this.publishTimeoutMs)), this.publishTimeoutMs);
    timer.unref();
    const onSignal = () => end(signal?.reason ?? new Error(`${target}: aborted`));
    if (signal?.aborted) onSignal();
    signal?.addEventListener('abort', onSignal, { once: true });
    const gate = () => {
      if (ended.signal.aborted) throw ended.signal.reason;
      if (!this.mayWrite()) throw new NotLeaderError(target);
    };
    try {
      const work = (async () => {
        gate();
        await op(await this.redisFor(sb), gate);
      })();
      work.catch(() => undefined); // settles later when given up on; its error is not news then
      await Promise.race([
        work,
        new Promise<never>((_, reject) => {
          if (ended.signal.aborted) reject(ended.signal.reason);
          ended.signal.addEventListener('abort', () => reject(ended.signal.reason), { once: true });
        }),
      ]);
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onSignal);
      end(undefined); // nothing of this op may write any more
    }
  }

  /** The Switchboards it holds a connection for, as namespace/name. */
  get connected(): string[] {
    return [...this.conns.keys()].sort();
  }

  /** Close the connection of a Switchboard that is gone (deleted, or being deleted). */
  forget(key: ObjectKey): void {
    this.drop(keyString(key));
  }

  /** Close the connections of every Switchboard not in `live` (a backstop for a missed delete). */
  retain(live: readonly ObjectKey[]): void {
    const keep = new Set(live.map(keyString));
    for (const k of [...this.conns.keys()]) {
      if (!keep.has(k)) this.drop(k);
    }
  }

  async close(): Promise<void> {
    for (const c of this.conns.values()) c.redis.disconnect();
    this.conns.clear();
  }

  private async redisFor(sb: Switchboard): Promise<FlagsRedis> {
    const url = await this.urlOf(sb);
    const cluster = sb.spec.config?.REDIS_CLUSTER === 'true';
    // Synchronous from here: two reconciles that read the URL at once share one connection.
    const key = keyString(sb.metadata);
    const held = this.conns.get(key);
    if (held !== undefined && held.url === url && held.cluster === cluster) return held.redis;
    if (held !== undefined) held.redis.disconnect();
    const redis = flagsRedis(url, 'switchboard-operator', cluster, { commandTimeoutMs: this.commandTimeoutMs });
    redis.on('error', () => undefined); // failures surface on the commands; logged by the caller
    this.conns.set(key, { url, cluster, redis });
    this.log.info(held === undefined ? 'redis connection for flags' : 'redis connection for flags replaced (its URL changed)', { switchboard: key });
    return redis;
  }

  private drop(k: string): void {
    const c = this.conns.get(k);
    if (c === undefined) return;
    this.conns.delete(k);
    c.redis.disconnect();
    this.log.info('redis connection for flags closed', { switchboard: k });
  }

  private async urlOf(sb: Switchboard): Promise<string> {
    const r = sb.spec.redis;
    if (r.url) return r.url;
    if (!r.secretRef) throw new Error('spec.redis has neither url nor secretRef');
    const secret = await this.kube.core.readNamespacedSecret({ name: r.secretRef.name, namespace: sb.metadata.namespace });
    const b64 = secret.data?.[r.secretRef.key ?? 'url'];
    if (b64 === undefined) throw new Error(`secret ${r.secretRef.name} has no key ${r.secretRef.key ?? 'url'}`);
    return Buffer.from(b64, 'base64').toString('utf8').trim();
  }
}
