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

export class FlagPublisher {
  private readonly conns = new Map<string, Connection>();

  constructor(
    private readonly kube: Pick<Kube, 'core'>,
    private readonly log: Logger,
    private readonly mayWrite: WriteGate = () => true,
  ) {}

  async write(sb: Switchboard, flag: ServerFlag): Promise<void> {
    const redis = await this.redisFor(sb);
    const gate = () => this.gate(sb, `publish flag ${flag.name}`);
    // Early, so a replica that does not lead does not even read; the check that counts is
    // beforeWrite's, right before the MULTI.
    gate();
    await writeFlag(redis, flag, { beforeWrite: gate });
  }

  async remove(sb: Switchboard, name: string): Promise<void> {
    const redis = await this.redisFor(sb);
    const gate = () => this.gate(sb, `unpublish flag ${name}`);
    gate();
    await deleteFlag(redis, name, { beforeWrite: gate });
  }

  private gate(sb: Switchboard, what: string): void {
    if (!this.mayWrite()) throw new NotLeaderError(`${what} to ${keyString(sb.metadata)}`);
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
    const redis = flagsRedis(url, 'switchboard-operator', cluster);
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
