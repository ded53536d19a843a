/** The broadcast role: one worker of the tier that routes ingress shards to gateways. */
import { BroadcastServer } from '../broadcast';
import type { Config } from '../control';
import type { Logger } from '../telemetry';
import { incarnationId } from './gateway';
import { runUntilSignal } from './lifecycle';

export function createBroadcast(config: Config, log: Logger): BroadcastServer {
  return new BroadcastServer(config, log, incarnationId(config.serverId));
}

export async function broadcast(config: Config, log: Logger): Promise<void> {
  const server = createBroadcast(config, log);
  await runUntilSignal({ start: () => server.start(), stop: () => server.shutdown() }, log, 'releasing shards');
}
