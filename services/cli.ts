#!/usr/bin/env node
/**
 * `switchboard <role>`: one entry point for every process of the system, so one image serves
 * every role. Configuration comes from the environment and `.env` (see README.md); each role is
 * set up in services/roles/.
 */
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig, redactedConfig, type Config } from './control';
import { argsErrorMessage } from './control/args';
import { flagsCommand } from './control/flags-cli';
import { roles } from './roles';
import { createLogger } from './telemetry';
import { initTracing } from './telemetry/tracing';

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

/** The role named on the command line, 'help', or a usage error (exit code 2). */
function parseRoleArgs(args: string[]): { role: string } | { help: true } | { error: string } {
  let parsed;
  try {
    parsed = parseArgs({ args, options: { help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true });
  } catch (err) {
    return { error: `${argsErrorMessage(err)} (switchboard --help)` };
  }
  const { values, positionals } = parsed;
  if (values.help === true || positionals[0] === 'help') return { help: true };
  if (positionals.length > 1) return { error: `unexpected argument "${positionals[1]}": one role at most (switchboard --help)` };
  return { role: positionals[0] ?? 'standalone' };
}

export async function main(argv: readonly string[]): Promise<number> {
  const args = argv.filter((a) => a !== '');
  // `flags` has options of its own: everything after it is its business.
  if (args[0] === 'flags') return flagsCommand(args.slice(1));
  const cmd = parseRoleArgs(args);
  if ('help' in cmd) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  if ('error' in cmd) {
    process.stderr.write(`switchboard: ${cmd.error}\n`);
    return 2;
  }
  const role = cmd.role;
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
