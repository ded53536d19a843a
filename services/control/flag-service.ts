/**
 * Flags for one process: the FlagStore a gateway was built with, fed by the flags file
 * (FLAGS_FILE, any role) and, in cluster mode, by Redis (`sb:flags`), and following the
 * performance monitor when there is one. The roles create the store, hand it to GatewayServer,
 * and call startFlags with it and the server's monitor.
 */
import type { Logger } from '../telemetry/log';
import type { Config } from './config';
import type { FlagStore, OverloadSignal } from './flags';
import { FlagsFileSource } from './flags-file';
import { RedisFlagsSource } from './flags-redis';

export interface FlagServiceOptions {
  config: Config;
  log: Logger;
  /** Read flags from Redis (cluster roles). @default false */
  redis?: boolean;
  /** Shed nonCritical flags while this says overloaded. @default none */
  monitor?: OverloadSignal;
  /** Redis resync period, ms. @default 30000 */
  resyncMs?: number;
}

export interface FlagService {
  readonly store: FlagStore;
  readonly file: FlagsFileSource | null;
  readonly redis: RedisFlagsSource | null;
  stop(): Promise<void>;
}

/** Start the sources that feed `store`, and follow the overload signal. */
export async function startFlags(store: FlagStore, opts: FlagServiceOptions): Promise<FlagService> {
  const log = opts.log.child({ component: 'flags' });
  const file = opts.config.flagsFile === '' ? null : new FlagsFileSource({ path: opts.config.flagsFile, store, log });
  const redis = opts.redis ? new RedisFlagsSource({ url: opts.config.redisUrl, cluster: opts.config.redisCluster, store, log, resyncMs: opts.resyncMs }) : null;
  if (file !== null) await file.start();
  if (redis !== null) await redis.start();
  if (opts.monitor !== undefined) store.attachMonitor(opts.monitor);
  store.on('change', () => log.debug('flags changed', { shedding: store.isShedding }));
  return {
    store,
    file,
    redis,
    async stop() {
      store.detachMonitor();
      file?.stop();
      await redis?.stop();
    },
  };
}
