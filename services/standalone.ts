/**
 * The standalone role: gateway and broadcast in one process over the in-memory bus. This is what
 * `npm start` runs: a full chat server on 127.0.0.1:4000 with no other service.
 */
import { MemoryBus } from './bus';
import type { Config } from './control';
import { GatewayServer } from './gateway';
import { builtinPlugins } from './plugins';
import type { Logger } from './telemetry';

export function createStandalone(config: Config, log: Logger): GatewayServer {
  return new GatewayServer({
    config,
    bus: new MemoryBus({ historySize: config.historySize, historyRoomBytes: config.historyRoomBytes, historyTotalBytes: config.historyTotalBytes }),
    plugins: builtinPlugins(),
    log,
    role: 'standalone',
  });
}
