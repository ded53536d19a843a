/**
 * Flags for one process: the FlagStore a gateway was built with, fed by the flags file
 * (FLAGS_FILE, any role) and, in cluster mode, by Redis (`sb:flags`), and following the
 * performance monitor when there is one. The roles create the store, hand it to GatewayServer,
 * and call startFlags with it and the server's monitor.
 */
import type { Logger } from '../telemetry/log';
import type { Config } from './config';
import { MAX_FLAGS, type FlagStore, type OverloadSignal } from './flags';
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

/**
 * A configured flags source whose first load was rejected. The process must not serve: with no
 * last good set every flag would be at its default, on, and a flag an operator set
 * `enabled: false` as a kill switch would be on for everyone because of a typo elsewhere in the
 * same file. The roles let it propagate: `start failed`, exit code 1.
 */
export class FlagsStartError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FlagsStartError';
  }
}

/**
 * Start the sources that feed `store`, and follow the overload signal. Rejects with a
 * FlagsStartError, with every source stopped, when the flags file or the Redis hash is rejected
 * on the first load. A missing file and an unreachable Redis are not rejections: the first is
 * an empty set, the second is read again once Redis is back.
 */
export async function startFlags(store: FlagStore, opts: FlagServiceOptions): Promise<FlagService> {
  const log = opts.log.child({ component: 'flags' });
  const file = opts.config.flagsFile === '' ? null : new FlagsFileSource({ path: opts.config.flagsFile, store, log });
  const redis = opts.redis ? new RedisFlagsSource({ url: opts.config.redisUrl, cluster: opts.config.redisCluster, store, log, resyncMs: opts.resyncMs }) : null;
  if (file !== null && !(await file.start())) {
    file.stop();
    throw new FlagsStartError(`FLAGS_FILE ${opts.config.flagsFile} rejected (${file.lastError}); not starting with every flag at its default (on): fix the file, or unset FLAGS_FILE to run without one`);
  }
  if (redis !== null && !(await redis.start())) {
    file?.stop();
    await redis.stop();
    throw new FlagsStartError(`flags in Redis (sb:flags) rejected (${redis.lastError}); not starting with every flag at its default (on): delete flags from the hash until it and the flags file hold at most ${MAX_FLAGS} together`);
  }
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
