/**
 * The cluster roles: a gateway over the Redis Streams bus, and a broadcast worker. Both take
 * their Redis from REDIS_URL (or the origin's redis_host/redis_port) and a unique id.
 */
import { randomBytes } from 'node:crypto';
import { RedisBus } from './bus/redis';
import { BroadcastServer } from './broadcast';
import type { Config } from './control';
import { defaultServerId, GatewayServer } from './gateway';
import { builtinPlugins } from './plugins';
import { BroadcastMetrics, type Logger } from './telemetry';

/**
 * The id a process is known by in Redis. A random suffix makes it unique per incarnation, so a
 * restarted pod with the same name never reads its predecessor's egress stream.
 */
export function incarnationId(configured: string): string {
  return `${configured || defaultServerId()}-${randomBytes(3).toString('hex')}`;
}

export function createClusterGateway(config: Config, log: Logger): GatewayServer {
  const id = incarnationId(config.serverId);
  const bus = new RedisBus({
    url: config.redisUrl,
    cluster: config.redisCluster,
    gatewayId: id,
    shards: config.streamShards,
    ingressMaxLen: config.ingressMaxLen,
    egressMaxLen: config.egressMaxLen,
    heartbeatMs: config.heartbeatMs,
    timeoutMs: config.redisTimeoutMs,
    log,
  });
  return new GatewayServer({ config: { ...config, serverId: id }, bus, plugins: builtinPlugins(), log, role: 'gateway' });
}

export function createBroadcast(config: Config, log: Logger): BroadcastServer {
  const server = new BroadcastServer(config, log, incarnationId(config.serverId));
  const metrics = new BroadcastMetrics({ counters: server.worker.counters, pending: () => server.refreshPending() });
  server.metricsHandler = () => metrics.expose();
  return server;
}
