/**
 * The cluster gateway role: client connections, routed through Redis Streams (the Redis bus),
 * flags from Redis, and the gRPC API. Also the shared start of every gateway-shaped role.
 */
import { randomBytes } from 'node:crypto';
import { startApiServer } from '../api';
import { RedisBus } from '../bus/redis';
import { FlagStore, startFlags, type Config } from '../control';
import { defaultServerId, GatewayServer } from '../gateway';
import { builtinPlugins } from '../plugins';
import type { Logger } from '../telemetry';
import { runUntilSignal } from './lifecycle';

/**
 * The id a process is known by in Redis. A random suffix makes it unique per incarnation, so a
 * restarted pod with the same name never reads its predecessor's egress stream.
 */
export function incarnationId(configured: string): string {
  return `${configured || defaultServerId()}-${randomBytes(3).toString('hex')}`;
}

export function createClusterGateway(config: Config, log: Logger, flags: FlagStore = new FlagStore()): GatewayServer {
  const id = incarnationId(config.serverId);
  const bus = new RedisBus({
    url: config.redisUrl,
    cluster: config.redisCluster,
    gatewayId: id,
    shards: config.streamShards,
    ingressMaxLen: config.ingressMaxLen,
    egressMaxLen: config.egressMaxLen,
    heartbeatMs: config.heartbeatMs,
    roomTtlSec: config.historyTtlSec,
    timeoutMs: config.redisTimeoutMs,
    log,
  });
  return new GatewayServer({ config: { ...config, serverId: id }, bus, plugins: builtinPlugins(), log, role: 'gateway', flags });
}

/**
 * Serve a gateway until a signal drains it, then start its gRPC API. A port the API cannot bind
 * is logged as an error and the gateway goes on serving clients: client traffic matters more.
 */
export async function runGateway(server: GatewayServer, config: Config, log: Logger): Promise<void> {
  if (config.authSecret === '') log.warn('AUTH_SECRET is not set: development mode, hello.user is trusted as is');
  await runUntilSignal({ start: () => server.start(), stop: () => server.shutdown() }, log, 'draining');
  try {
    await startApiServer(server, config, log);
  } catch (err) {
    log.error('api not started: cannot listen', { port: config.apiPort, err: err instanceof Error ? err.message : String(err) });
  }
}

export async function gateway(config: Config, log: Logger): Promise<void> {
  const flags = new FlagStore();
  const server = createClusterGateway(config, log, flags);
  await startFlags(flags, { config, log, redis: true, monitor: server.monitor });
  await runGateway(server, config, log);
}
