#!/usr/bin/env node
/**
 * `switchboard <role>`: one entry point for every process of the system, so one image serves
 * every role. Configuration comes from the environment and `.env` (see README.md).
 */
import { ConfigError, loadConfig, redactedConfig, startFlags, type Config } from './control';
import { flagsCommand } from './control/flags-cli';
import type { GatewayServer } from './gateway';
import { createBroadcast, createClusterGateway } from './cluster';
import { startApiServer } from './api';
import { createStandalone } from './standalone';
import { createLogger, type Logger } from './telemetry';
import { initTracing, shutdownTracing } from './telemetry/tracing';

const USAGE = `Usage: switchboard [role] [--help]

Roles:
  standalone   gateway and broadcast in one process, in-memory bus (default)
  gateway      cluster gateway: client connections, routes through Redis Streams
  broadcast    cluster broadcast worker: consumes ingress shards, routes to gateways
  operator     Kubernetes operator

Commands:
  flags        read and write feature flags in Redis (switchboard flags --help)

Configuration is read from the environment and an optional .env file in the working
directory (environment wins). The most used settings:
  TCP_HOST (127.0.0.1)  TCP_PORT (4000)  ADMIN_PORT (4001)  AUTH_SECRET (unset: dev mode)
  REDIS_URL or REDIS_HOST/REDIS_PORT for the cluster roles
See README.md for the full table.`;

type RoleMain = (config: Config, log: Logger) => Promise<void>;

async function runGateway(server: GatewayServer, log: Logger): Promise<void> {
  const stop = (signal: string) => {
    log.info('signal received, draining', { signal });
    server
      .shutdown()
      .then(() => shutdownTracing())
      .then(
        () => process.exit(0),
        (err: unknown) => {
          log.error('shutdown failed', { err });
          process.exit(1);
        },
      );
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  await server.start();
}

/**
 * The gRPC API of a gateway role. A port that cannot be bound is logged as an error and the
 * gateway goes on serving clients without the API: client traffic matters more than the API.
 */
async function startApi(server: GatewayServer, config: Config, log: Logger): Promise<void> {
  try {
    await startApiServer(server, config, log);
  } catch (err) {
    log.error('api not started: cannot listen', { port: config.apiPort, err: err instanceof Error ? err.message : String(err) });
  }
}

const roles: Record<string, RoleMain> = {
  standalone: async (config, log) => {
    if (config.authSecret === '') log.warn('AUTH_SECRET is not set: development mode, hello.user is trusted as is');
    const server = createStandalone(config, log);
    const flags = await startFlags(server, { config, log, monitor: server.monitor });
    server.featureStates = () => flags.store.featureStates();
    await runGateway(server, log);
    await startApi(server, config, log);
  },
  gateway: async (config, log) => {
    if (config.authSecret === '') log.warn('AUTH_SECRET is not set: development mode, hello.user is trusted as is');
    const server = createClusterGateway(config, log);
    const flags = await startFlags(server, { config, log, redis: true, monitor: server.monitor });
    server.featureStates = () => flags.store.featureStates();
    await runGateway(server, log);
    await startApi(server, config, log);
  },
  broadcast: async (config, log) => {
    const server = createBroadcast(config, log);
    const stop = (signal: string) => {
      log.info('signal received, releasing shards', { signal });
      server
        .shutdown()
        .then(() => shutdownTracing())
        .then(
          () => process.exit(0),
          () => process.exit(1),
        );
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
    await server.start();
  },
  operator: async (_config, log) => {
    // Loaded here, not at the top: the other roles never pay for the Kubernetes client.
    const { Operator, loadOperatorConfig } = await import('../operator');
    const op = new Operator(loadOperatorConfig(), log);
    const stop = (signal: string) => {
      log.info('signal received, stepping down', { signal });
      op.stop().then(
        () => process.exit(0),
        () => process.exit(1),
      );
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
    await op.start();
  },
};

export async function main(argv: readonly string[]): Promise<number> {
  const args = argv.filter((a) => a !== '');
  if (args[0] === 'flags') return flagsCommand(args.slice(1));
  if (args.includes('--help') || args.includes('-h') || args[0] === 'help') {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  const role = args[0] ?? 'standalone';
  const start = roles[role];
  if (start === undefined) {
    process.stderr.write(`switchboard: unknown role "${role}"; known roles: ${Object.keys(roles).join(', ')}\n`);
    return 2;
  }
  let config: Config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`switchboard: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  if (role === 'operator') {
    try {
      (await import('../operator')).loadOperatorConfig();
    } catch (err) {
      if (err instanceof ConfigError) {
        process.stderr.write(`switchboard: ${err.message}\n`);
        return 2;
      }
      throw err;
    }
  }
  const log = createLogger(config.logLevel, { role });
  log.info('starting', { config: redactedConfig(config) });
  // OTEL_* variables configure tracing; off unless an exporter or endpoint is set.
  if (initTracing(`switchboard-${role}`)) log.info('tracing enabled', { sampler: process.env.OTEL_TRACES_SAMPLER ?? 'parentbased_traceidratio' });
  try {
    await start(config, log);
  } catch (err) {
    log.error('start failed', { err: err instanceof Error ? err.message : String(err) });
    return 1;
  }
  return -1; // running
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => {
      if (code >= 0) process.exit(code);
    },
    (err: unknown) => {
      process.stderr.write(`switchboard: ${err instanceof Error ? err.stack : String(err)}\n`);
      process.exit(1);
    },
  );
}
