/**
 * `switchboard flags ...`: read and write the cluster's flags in Redis (REDIS_URL) until the
 * operator does it. `set` merges the given options into the stored flag (a new flag starts fully
 * rolled out), writes it with HSET and publishes on `sb:flags:changed`, so every gateway applies
 * it within a round trip.
 */

import { parseArgs } from 'node:util';
import { argsErrorMessage } from './args';
import { ConfigError, loadConfig } from './config';
import { FlagError, parseFlag, type FeatureFlag } from './flags';
import { deleteFlag, FLAGS_KEY, flagsRedis, readFlags, writeFlag, type FlagsRedis } from './flags-redis';

export const FLAGS_USAGE = `Usage: switchboard flags <command>

  list                       every flag in Redis (sb:flags), one JSON object a line
  get <name>                 one flag
  set <name> [options]       create or update a flag, and notify every gateway
      --enabled true|false   --rollout 0-100   --beta user1,user2 (empty: none)
      --non-critical true|false   --description text
  delete <name>              remove a flag (it reverts to the default: on)

Redis is REDIS_URL (or REDIS_HOST/REDIS_PORT), as for the cluster roles.`;

interface Io {
  out(line: string): void;
  err(line: string): void;
}

/** `set`'s options; each maps onto one field of the flag. */
const SET_OPTIONS = {
  enabled: { type: 'string' },
  rollout: { type: 'string' },
  beta: { type: 'string' },
  'non-critical': { type: 'string' },
  description: { type: 'string' },
} as const;

function parseBool(opt: string, v: string): boolean {
  if (v === 'true' || v === '1') return true;
  if (v === 'false' || v === '0') return false;
  throw new FlagError(`${opt} must be true or false`);
}

/** Apply `--opt value` / `--opt=value` arguments to a flag (node:util parseArgs). */
export function applyFlagOptions(base: FeatureFlag, args: readonly string[]): FeatureFlag {
  let values: { [K in keyof typeof SET_OPTIONS]?: string };
  try {
    ({ values } = parseArgs({ args: [...args], options: SET_OPTIONS, strict: true, allowPositionals: false }));
  } catch (err) {
    throw new FlagError(argsErrorMessage(err));
  }
  const next: Record<string, unknown> = { ...base };
  if (values.enabled !== undefined) next.enabled = parseBool('--enabled', values.enabled);
  if (values['non-critical'] !== undefined) next.nonCritical = parseBool('--non-critical', values['non-critical']);
  if (values.rollout !== undefined) {
    // Fractions as the file and Redis take them (12.5), so the CLI can write back any flag it lists.
    if (!/^\d+(\.\d+)?$/.test(values.rollout)) throw new FlagError('--rollout must be a number 0-100');
    next.rolloutPercent = Number(values.rollout);
  }
  if (values.beta !== undefined) next.betaUsers = values.beta.split(',').map((u) => u.trim()).filter((u) => u !== '');
  if (values.description !== undefined) next.description = values.description;
  return parseFlag(next, base.name);
}

async function run(redis: FlagsRedis, args: readonly string[], io: Io): Promise<number> {
  const [cmd, name, ...rest] = args;
  switch (cmd) {
    case 'list': {
      const { flags, errors } = await readFlags(redis);
      for (const f of flags) io.out(JSON.stringify(f));
      for (const e of errors) io.err(`switchboard flags: invalid entry "${e.name}": ${e.error}`);
      return 0;
    }
    case 'get': {
      if (name === undefined) break;
      const raw = await redis.hget(FLAGS_KEY, name);
      if (raw === null) {
        io.err(`switchboard flags: no flag "${name}" (undefined flags are on)`);
        return 1;
      }
      io.out(JSON.stringify(parseFlag(JSON.parse(raw), name)));
      return 0;
    }
    case 'set': {
      if (name === undefined) break;
      const raw = await redis.hget(FLAGS_KEY, name);
      const base = raw === null ? parseFlag({}, name) : parseFlag(JSON.parse(raw), name);
      const flag = applyFlagOptions(base, rest);
      await writeFlag(redis, flag);
      io.out(JSON.stringify(flag));
      return 0;
    }
    case 'delete': {
      if (name === undefined) break;
      const existed = await deleteFlag(redis, name);
      if (!existed) io.err(`switchboard flags: no flag "${name}"`);
      return existed ? 0 : 1;
    }
  }
  io.err(FLAGS_USAGE);
  return 2;
}

/** Entry point of `switchboard flags`; returns the exit code. */
export async function flagsCommand(args: readonly string[], io: Io = { out: (l) => process.stdout.write(l + '\n'), err: (l) => process.stderr.write(l + '\n') }): Promise<number> {
  if (args.length === 0 || args.includes('--help') || args.includes('-h')) {
    io.out(FLAGS_USAGE);
    return args.length === 0 ? 2 : 0;
  }
  let url: string;
  let cluster: boolean;
  try {
    ({ redisUrl: url, redisCluster: cluster } = loadConfig());
  } catch (err) {
    if (err instanceof ConfigError) {
      io.err(`switchboard: ${err.message}`);
      return 2;
    }
    throw err;
  }
  const redis = flagsRedis(url, 'switchboard-flags-cli', cluster);
  redis.on('error', () => {});
  try {
    return await run(redis, args, io);
  } catch (err) {
    io.err(`switchboard flags: ${err instanceof FlagError ? err.message : `cannot reach Redis or bad data: ${(err as Error).message}`}`);
    return err instanceof FlagError ? 2 : 1;
  } finally {
    redis.disconnect();
  }
}
