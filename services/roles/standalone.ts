/**
 * The standalone role: gateway and broadcast in one process over the in-memory bus. This is what
 * `npm start` runs: a full chat server on 127.0.0.1:4000 with no other service.
 */
import { MemoryBus } from '../bus';
import { FlagStore, startFlags, type Config } from '../control';
import { GatewayServer } from '../gateway';
import { builtinPlugins } from '../plugins';
import type { Logger } from '../telemetry';
import { runGateway } from './gateway';

export function createStandalone(config: Config, log: Logger, flags: FlagStore = new FlagStore()): GatewayServer {
  return new GatewayServer({
    config,
    bus: new MemoryBus({ historySize: config.historySize, historyRoomBytes: config.historyRoomBytes, historyTotalBytes: config.historyTotalBytes }),
    plugins: builtinPlugins(),
    log,
    role: 'standalone',
    flags,
  });
}

export async function standalone(config: Config, log: Logger): Promise<void> {
  const flags = new FlagStore();
  const server = createStandalone(config, log, flags);
  await startFlags(flags, { config, log, monitor: server.monitor });
  await runGateway(server, config, log);
}
