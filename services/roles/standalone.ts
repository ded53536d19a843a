/**
 * The standalone role: gateway and broadcast in one process over the in-memory bus. This is what
 * `npm start` runs: a full chat server on 127.0.0.1:4000 with no other service.
 */
import { MemoryBus } from '../bus';
import { startFlags, type Config } from '../control';
import { GatewayServer } from '../gateway';
import { builtinPlugins } from '../plugins';
import type { Logger } from '../telemetry';
import { runGateway } from './gateway';

export function createStandalone(config: Config, log: Logger): GatewayServer {
  return new GatewayServer({
    config,
    bus: new MemoryBus({ historySize: config.historySize, historyRoomBytes: config.historyRoomBytes, historyTotalBytes: config.historyTotalBytes }),
    plugins: builtinPlugins(),
    log,
    role: 'standalone',
  });
}

export async function standalone(config: Config, log: Logger): Promise<void> {
  const server = createStandalone(config, log);
  const flags = await startFlags(server, { config, log, monitor: server.monitor });
  server.featureStates = () => flags.store.featureStates();
  await runGateway(server, config, log);
}
