/**
 * Publishes FeatureFlags to the Redis of each Switchboard (the `sb:flags` hash plus a message on
 * `sb:flags:changed`, the same writes as `switchboard flags set`), so every gateway applies a
 * change within a second. One connection per Redis URL, reused across reconciles. A URL held in
 * a Secret is read when needed and never logged.
 */
import { deleteFlag, writeFlag } from '../services/control';
import type { FeatureFlag as ServerFlag } from '../services/control';
import { flagsRedis, type FlagsRedis } from '../services/control/flags-redis';
import type { Logger } from '../services/telemetry/log';
import type { Switchboard } from './api/types';
import type { Kube } from './kube/client';

export class FlagPublisher {
  private readonly conns = new Map<string, FlagsRedis>();

  constructor(
    private readonly kube: Kube,
    private readonly log: Logger,
  ) {}

  async write(sb: Switchboard, flag: ServerFlag): Promise<void> {
    await writeFlag(await this.redisFor(sb), flag);
  }

  async remove(sb: Switchboard, name: string): Promise<void> {
    await deleteFlag(await this.redisFor(sb), name);
  }

  async close(): Promise<void> {
    for (const c of this.conns.values()) c.disconnect();
    this.conns.clear();
  }

  private async redisFor(sb: Switchboard): Promise<FlagsRedis> {
    const url = await this.urlOf(sb);
    let c = this.conns.get(url);
    if (c === undefined) {
      c = flagsRedis(url, 'switchboard-operator', sb.spec.config?.REDIS_CLUSTER === 'true');
      c.on('error', () => undefined); // failures surface on the commands; logged by the caller
      this.conns.set(url, c);
      this.log.info('redis connection for flags', { switchboard: `${sb.metadata.namespace}/${sb.metadata.name}` });
    }
    return c;
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
