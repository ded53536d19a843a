/** Start a real gateway on 127.0.0.1, port 0, admin port disabled, with the built-in plugins. */
import type { Bus } from '../../services/bus';
import { defaultConfig, type Config, type FeatureFlags } from '../../services/control';
import { GatewayServer, type MessageProcessor } from '../../services/gateway';
import { builtinPlugins } from '../../services/plugins';

export interface TestServer {
  server: GatewayServer;
  port: number;
  config: Config;
  close(): Promise<void>;
}

export interface TestServerOptions {
  plugins?: readonly MessageProcessor[];
  bus?: Bus;
  /** The flags the server reads (a FlagStore the test feeds). */
  flags?: FeatureFlags;
}

export async function startServer(overrides: Partial<Config> = {}, opts: TestServerOptions = {}): Promise<TestServer> {
  const config = defaultConfig({ tcpHost: '127.0.0.1', tcpPort: 0, adminPort: -1, ...overrides });
  const server = new GatewayServer({ config, plugins: opts.plugins ?? builtinPlugins(), bus: opts.bus, flags: opts.flags });
  const addr = await server.start();
  let closed = false;
  return {
    server,
    port: addr.port,
    config,
    close: async () => {
      if (closed) return;
      closed = true;
      await server.shutdown(300);
    },
  };
}
