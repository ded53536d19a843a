/**
 * The cluster gateway role: client connections, routed through Redis Streams (the Redis bus),
 * flags from Redis, and the gRPC API. Also the shared start of every gateway-shaped role.
 */
import { randomBytes } from 'node:crypto';
import { startApiServer, type ApiServer } from '../api';
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

/** How long in-flight gRPC calls may take to finish once a drain starts. */
const API_STOP_GRACE_MS = 2000;

/**
 * Serve a gateway until a signal drains it, then start its gRPC API. A port the API cannot bind
 * is logged as an error and the gateway goes on serving clients: client traffic matters more.
 * The drain stops the API with the client port: new calls are refused (HTTP/2 GOAWAY: callers
 * see UNAVAILABLE and go elsewhere), calls in flight get API_STOP_GRACE_MS to finish, and watch
 * streams end. It was never stopped: a draining gateway kept accepting Publish calls for members
 * it was sending away, and cut the calls without a status at exit.
 */
export async function runGateway(server: GatewayServer, config: Config, log: Logger): Promise<void> {
  if (config.authSecret === '') log.warn('AUTH_SECRET is not set: development mode, hello.user is trusted as is');
  let api: ApiServer | null = null;
  const stop = async (): Promise<void> => {
    await Promise.all([api?.stop(Math.min(API_STOP_GRACE_MS, config.shutdownDrainMs)), server.shutdown()]);
  };
  await runUntilSignal({ start: () => server.start(), stop }, log, 'draining');
  try {
    api = await startApiServer(server, config, log);
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
