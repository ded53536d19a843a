/** The broadcast role: one worker of the tier that routes ingress shards to gateways. */
import { BroadcastServer } from '../broadcast';
import type { Config } from '../control';
import { BroadcastMetrics, type Logger } from '../telemetry';
import { incarnationId } from './gateway';
import { runUntilSignal } from './lifecycle';

export function createBroadcast(config: Config, log: Logger): BroadcastServer {
  const server = new BroadcastServer(config, log, incarnationId(config.serverId));
  const metrics = new BroadcastMetrics({ counters: server.worker.counters, pending: () => server.refreshPending() });
  server.metricsHandler = () => metrics.expose();
  return server;
}

export async function broadcast(config: Config, log: Logger): Promise<void> {
  const server = createBroadcast(config, log);
  await runUntilSignal({ start: () => server.start(), stop: () => server.shutdown() }, log, 'releasing shards');
}
