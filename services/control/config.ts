/**
 * Configuration from the environment and an optional `.env` file.
 *
 * The origin's `.env` keys (`tcp_host`, `tcp_port`, `redis_host`, `redis_port`) work as they are:
 * keys are matched case-insensitively, and the process environment wins over `.env`. Every setting
 * is declared once in SETTINGS with its default and documentation; README.md's table is checked
 * against it by a test. An invalid value is a ConfigError naming the key and the expected form;
 * the CLI turns it into one line on stderr and exit code 2.
 */
import { readFileSync } from 'node:fs';

export class ConfigError extends Error {
  constructor(
    readonly key: string,
    readonly expected: string,
    readonly value: string,
  ) {
    super(`invalid ${key}=${JSON.stringify(value)}: expected ${expected}`);
    this.name = 'ConfigError';
  }
}

type Kind = 'port' | 'int' | 'string' | 'enum' | 'bool' | 'url';

interface Setting {
  readonly key: string;
  readonly kind: Kind;
  readonly default: string;
  readonly doc: string;
  readonly min?: number;
  readonly values?: readonly string[];
}

/** Every setting, in the order README.md documents them. */
export const SETTINGS: readonly Setting[] = [
  { key: 'TCP_HOST', kind: 'string', default: '127.0.0.1', doc: 'Address the client TCP listener binds (0.0.0.0 in containers).' },
  { key: 'TCP_PORT', kind: 'port', default: '4000', doc: 'Client TCP port (text, binary and HTTP on one port). 0 picks a free port.' },
  { key: 'ADMIN_HOST', kind: 'string', default: '', doc: 'Address of the admin HTTP listener; empty means TCP_HOST.' },
  { key: 'ADMIN_PORT', kind: 'port', default: '4001', doc: 'Admin HTTP port for /metrics, /stats, /healthz, /readyz. 0 picks a free port; -1 disables it.' },
  { key: 'SERVER_ID', kind: 'string', default: '', doc: 'Unique id of this process (gateway id in cluster mode); empty means hostname-pid-random.' },
  { key: 'AUTH_SECRET', kind: 'string', default: '', doc: 'HS256 secret for hello tokens (JWT, `sub` = user id). Empty: development mode, `user` taken as is.' },
  { key: 'AUTH_REQUIRE_EXP', kind: 'bool', default: 'false', doc: 'Refuse tokens without `exp`. Either way a session ends with `token_expired` at its token\'s `exp` unless refreshed (`refresh`).' },
  { key: 'MAX_FRAME_BYTES', kind: 'int', default: '1048576', min: 64, doc: 'Largest frame (text line or binary body) a client may send.' },
  { key: 'MAX_ROOMS_PER_CONNECTION', kind: 'int', default: '100', min: 1, doc: 'Rooms one connection may be in at once.' },
  { key: 'MAX_CONNECTIONS', kind: 'int', default: '0', min: 0, doc: 'Connections this process holds at once, client and HTTP on both ports; 0 derives it from the file-descriptor limit (RLIMIT_NOFILE: 90% of it, less 32).' },
  { key: 'MAX_ROOMS_TOTAL', kind: 'int', default: '100000', min: 1, doc: 'Rooms with members this process holds in total; joining one more is `too_many_rooms`.' },
  { key: 'FRAME_TIMEOUT_MS', kind: 'int', default: '10000', min: 100, doc: 'A frame must be complete within this time of its first byte, else `frame_timeout` and close. Partial frames do not reset the idle timer.' },
  { key: 'PARTIAL_FRAMES_BUDGET_BYTES', kind: 'int', default: '67108864', min: 0, doc: 'Bytes of incomplete frames held for all connections together; past it, connections growing a partial frame stop being read until it frees. 0: no budget.' },
  { key: 'MAX_JSON_DEPTH', kind: 'int', default: '64', min: 1, doc: 'Deepest nesting of objects and arrays a message may have; deeper is `bad_request`.' },
  { key: 'IDLE_TIMEOUT_MS', kind: 'int', default: '60000', min: 100, doc: 'A connection that sends no frame for this long is closed (reason idle_timeout).' },
  { key: 'HELLO_TIMEOUT_MS', kind: 'int', default: '10000', min: 100, doc: 'A connection must send hello within this time.' },
  { key: 'RATE_LIMIT_PER_SEC', kind: 'int', default: '2000', min: 1, doc: 'Sustained messages per second one connection may send (token bucket).' },
  { key: 'RATE_LIMIT_BURST', kind: 'int', default: '4000', min: 1, doc: 'Bucket size: messages a connection may send in a burst.' },
  { key: 'MAX_OUTBOUND_BYTES', kind: 'int', default: '4194304', min: 1024, doc: 'Bytes queued for one connection (ours plus the socket buffer) before it is a slow consumer.' },
  { key: 'SLOW_CONSUMER_POLICY', kind: 'enum', default: 'disconnect', values: ['disconnect', 'drop'], doc: 'disconnect: send slow_consumer and close; drop: drop messages for that client and count them.' },
  { key: 'HISTORY_SIZE', kind: 'int', default: '100', min: 0, doc: 'Messages kept per room for `history` and recovery after reconnect.' },
  { key: 'HISTORY_ROOM_BYTES', kind: 'int', default: '4194304', min: 0, doc: 'Standalone: estimated bytes of history kept per room (oldest messages go first).' },
  { key: 'HISTORY_TOTAL_BYTES', kind: 'int', default: '67108864', min: 0, doc: 'Standalone: estimated bytes of history kept over all rooms; over it the longest idle rooms lose their history first.' },
  { key: 'HTTP_HEADERS_TIMEOUT_MS', kind: 'int', default: '5000', min: 100, doc: 'HTTP (client and admin port): time from connecting to the end of the request headers; then 408 and close.' },
  { key: 'HTTP_REQUEST_TIMEOUT_MS', kind: 'int', default: '10000', min: 100, doc: 'HTTP: time to receive a whole request; then 408 and close.' },
  { key: 'HTTP_KEEPALIVE_TIMEOUT_MS', kind: 'int', default: '5000', min: 100, doc: 'HTTP: an idle keep-alive connection is closed after this long.' },
  { key: 'METRICS_ON_CLIENT_PORT', kind: 'bool', default: 'false', doc: 'Also serve /metrics on the client port (it is always on the admin port); /stats, /healthz and /readyz are served on both.' },
  { key: 'SHUTDOWN_DRAIN_MS', kind: 'int', default: '10000', min: 0, doc: 'On SIGTERM, how long to wait for clients to drain and leave before exiting.' },
  { key: 'COMPRESSION_THRESHOLD', kind: 'int', default: '512', min: 0, doc: 'Binary-mode frames with a body above this many bytes are compressed (negotiated codec) when that makes them smaller.' },
  { key: 'COMPRESSION_CODECS', kind: 'string', default: 'lz4,zstd', doc: 'Codecs the server offers in hello, most preferred first (lz4, zstd); empty disables compression.' },
  { key: 'FLAGS_FILE', kind: 'string', default: '', doc: 'Feature flags file (JSON or YAML), hot-reloaded; empty: no file. See docs/flags.md.' },
  { key: 'API_HOST', kind: 'string', default: '', doc: 'Address of the gRPC server API; empty means TCP_HOST.' },
  { key: 'API_PORT', kind: 'port', default: '4002', doc: 'gRPC server API port (switchboard.v1). 0 picks a free port; -1 disables it.' },
  { key: 'API_KEY', kind: 'string', default: '', doc: 'Key gRPC callers send as `x-api-key` (or `authorization: Bearer`). Empty: every API call is refused (UNAUTHENTICATED).' },
  { key: 'REDIS_URL', kind: 'url', default: '', doc: 'Redis for cluster roles (redis:// or rediss://). Overrides REDIS_HOST/REDIS_PORT.' },
  { key: 'REDIS_HOST', kind: 'string', default: '127.0.0.1', doc: 'Redis host for cluster roles when REDIS_URL is unset (origin key `redis_host`).' },
  { key: 'REDIS_PORT', kind: 'port', default: '6379', doc: 'Redis port for cluster roles when REDIS_URL is unset (origin key `redis_port`).' },
  { key: 'REDIS_CLUSTER', kind: 'bool', default: 'false', doc: 'Treat REDIS_URL as a seed node of a Redis Cluster (keys are hash-tagged for it).' },
  { key: 'STREAM_SHARDS', kind: 'int', default: '8', min: 1, doc: 'Ingress stream shards (sb:in:{N}); the same on every gateway. The unit of broadcast ownership and per-room order.' },
  { key: 'BROADCAST_BATCH', kind: 'int', default: '512', min: 1, doc: 'Ingress entries a broadcast worker reads and routes per batch.' },
  { key: 'REDIS_TIMEOUT_MS', kind: 'int', default: '2000', min: 100, doc: 'A Redis command that has no reply within this time fails: the client gets `unavailable`, and /readyz turns 503 while Redis stays stalled.' },
  { key: 'LEASE_MS', kind: 'int', default: '5000', min: 100, doc: 'Shard lease of a broadcast worker; a dead worker\'s shards move after this long.' },
  { key: 'HEARTBEAT_MS', kind: 'int', default: '2000', min: 100, doc: 'Gateway heartbeat period; a gateway silent for 3 periods is removed from routing.' },
  { key: 'INGRESS_MAXLEN', kind: 'int', default: '1000000', min: 1000, doc: 'Safety cap per ingress stream; the broadcast tier trims what it processed.' },
  { key: 'EGRESS_MAXLEN', kind: 'int', default: '100000', min: 100, doc: 'Approximate length kept of each gateway egress stream.' },
  { key: 'LOG_LEVEL', kind: 'enum', default: 'info', values: ['debug', 'info', 'warn', 'error', 'silent'], doc: 'Log verbosity; logs are JSON lines on stderr.' },
  { key: 'OVERLOAD_P99_LATENCY_MS', kind: 'int', default: '50', min: 0, doc: 'Overload when p99 delivery latency over one monitor interval exceeds this (ms); 0 disables. The origin used 1 ms.' },
  { key: 'OVERLOAD_EVENT_LOOP_LAG_MS', kind: 'int', default: '100', min: 0, doc: 'Overload when p99 event-loop delay over one interval exceeds this (ms); 0 disables.' },
  { key: 'OVERLOAD_MEMORY_PERCENT', kind: 'int', default: '85', min: 0, doc: 'Overload when RSS exceeds this percentage of the container memory limit (of RAM without one); 0 disables.' },
  { key: 'OVERLOAD_MEMORY_MB', kind: 'int', default: '0', min: 0, doc: 'Absolute RSS threshold in MiB; when set it replaces OVERLOAD_MEMORY_PERCENT. The origin used 15 MB.' },
  { key: 'OVERLOAD_HEAP_PERCENT', kind: 'int', default: '85', min: 0, doc: 'Overload when the V8 heap in use exceeds this percentage of its limit (heap_size_limit, --max-old-space-size); 0 disables.' },
  { key: 'OVERLOAD_MAX_MSG_PER_SEC', kind: 'int', default: '0', min: 0, doc: 'Overload when this process receives more messages per second than this (its capacity); 0 disables.' },
  { key: 'OVERLOAD_ERROR_RATE_PERCENT', kind: 'int', default: '1', min: 0, doc: 'Overload when server-side errors (internal, unavailable; each connection counted once per interval) exceed this percentage of messages; 0 disables.' },
  { key: 'OVERLOAD_INTERVAL_MS', kind: 'int', default: '1000', min: 50, doc: 'Performance monitor sampling interval.' },
  { key: 'OVERLOAD_ENTER_SAMPLES', kind: 'int', default: '3', min: 1, doc: 'Consecutive intervals with a breach before the process is overloaded.' },
  { key: 'OVERLOAD_EXIT_SAMPLES', kind: 'int', default: '5', min: 1, doc: 'Consecutive clear intervals before it recovers.' },
  { key: 'OVERLOAD_RECOVERY_PERCENT', kind: 'int', default: '80', min: 1, doc: 'Hysteresis: an interval is clear when every value is below this percentage of its threshold.' },
  { key: 'OVERLOAD_CONNECTION_MARGIN', kind: 'int', default: '100', min: 0, doc: 'While overloaded, sessions beyond the count at the onset plus this margin get `overloaded` in reply to hello and are closed.' },
];

/** Parsed configuration. Field docs repeat the defaults of SETTINGS. */
export interface Config {
  /** @default '127.0.0.1' */ tcpHost: string;
  /** @default 4000 */ tcpPort: number;
  /** @default tcpHost */ adminHost: string;
  /** @default 4001 (-1 disables) */ adminPort: number;
  /** @default `${hostname}-${pid}-${random}` */ serverId: string;
  /** @default '' (development mode) */ authSecret: string;
  /** @default false */ authRequireExp: boolean;
  /** @default 1048576 */ maxFrameBytes: number;
  /** @default 100 */ maxRoomsPerConnection: number;
  /** @default 0 (derived from the file-descriptor limit) */ maxConnections: number;
  /** @default 100000 */ maxRoomsTotal: number;
  /** @default 10000 */ frameTimeoutMs: number;
  /** @default 67108864 (0: no budget) */ partialFramesBudgetBytes: number;
  /** @default 64 */ maxJsonDepth: number;
  /** @default 60000 */ idleTimeoutMs: number;
  /** @default 10000 */ helloTimeoutMs: number;
  /** @default 2000 */ rateLimitPerSec: number;
  /** @default 4000 */ rateLimitBurst: number;
  /** @default 4194304 */ maxOutboundBytes: number;
  /** @default 'disconnect' */ slowConsumerPolicy: 'disconnect' | 'drop';
  /** @default 100 */ historySize: number;
  /** @default 4194304 */ historyRoomBytes: number;
  /** @default 67108864 */ historyTotalBytes: number;
  /** @default 5000 */ httpHeadersTimeoutMs: number;
  /** @default 10000 */ httpRequestTimeoutMs: number;
  /** @default 5000 */ httpKeepAliveTimeoutMs: number;
  /** @default false */ metricsOnClientPort: boolean;
  /** @default 10000 */ shutdownDrainMs: number;
  /** @default 512 */ compressionThreshold: number;
  /** @default ['lz4', 'zstd'] ([] disables compression) */ compressionCodecs: ('lz4' | 'zstd')[];
  /** @default '' (no flags file) */ flagsFile: string;
  /** @default tcpHost */ apiHost: string;
  /** @default 4002 (-1 disables) */ apiPort: number;
  /** @default '' (the API refuses every call) */ apiKey: string;
  /** @default 'redis://127.0.0.1:6379' built from REDIS_HOST/REDIS_PORT */ redisUrl: string;
  /** @default false */ redisCluster: boolean;
  /** @default 8 */ streamShards: number;
  /** @default 512 */ broadcastBatch: number;
  /** @default 2000 */ redisTimeoutMs: number;
  /** @default 5000 */ leaseMs: number;
  /** @default 2000 */ heartbeatMs: number;
  /** @default 1000000 */ ingressMaxLen: number;
  /** @default 100000 */ egressMaxLen: number;
  /** @default 'info' */ logLevel: 'debug' | 'info' | 'warn' | 'error' | 'silent';
  /** @default 50 (0 disables) */ overloadP99LatencyMs: number;
  /** @default 100 (0 disables) */ overloadEventLoopLagMs: number;
  /** @default 85 (percent of the memory limit; 0 disables) */ overloadMemoryPercent: number;
  /** @default 0 (use overloadMemoryPercent) */ overloadMemoryMb: number;
  /** @default 85 (percent of the V8 heap limit; 0 disables) */ overloadHeapPercent: number;
  /** @default 0 (off) */ overloadMaxMsgPerSec: number;
  /** @default 1 (0 disables) */ overloadErrorRatePercent: number;
  /** @default 1000 */ overloadIntervalMs: number;
  /** @default 3 */ overloadEnterSamples: number;
  /** @default 5 */ overloadExitSamples: number;
  /** @default 80 */ overloadRecoveryPercent: number;
  /** @default 100 */ overloadConnectionMargin: number;
}

/** Parse a `.env` file: KEY=value lines, # comments, optional quotes. Keys are upper-cased. */
export function parseDotEnv(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const eq = line.indexOf('=');
    if (eq <= 0) continue;
    const key = line.slice(0, eq).trim().replace(/^export\s+/, '').toUpperCase();
    let value = line.slice(eq + 1).trim();
    if (value.length >= 2 && (value[0] === '"' || value[0] === "'") && value[value.length - 1] === value[0]) {
      value = value.slice(1, -1);
    }
    out.set(key, value);
  }
  return out;
}

export interface LoadOptions {
  env?: NodeJS.ProcessEnv;
  /** Path of the .env file; `null` skips it. @default '.env' in the working directory */
  dotEnvPath?: string | null;
}

/** Raw string values after merging .env (lower precedence) and the environment. */
export function rawSettings(opts: LoadOptions = {}): Map<string, string> {
  const env = opts.env ?? process.env;
  const merged = new Map<string, string>();
  const path = opts.dotEnvPath === undefined ? '.env' : opts.dotEnvPath;
  if (path !== null) {
    let text: string | null = null;
    try {
      text = readFileSync(path, 'utf8');
    } catch {
      text = null;
    }
    if (text !== null) for (const [k, v] of parseDotEnv(text)) merged.set(k, v);
  }
  const known = new Set(SETTINGS.map((s) => s.key));
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined) continue;
    const upper = k.toUpperCase();
    // Only upper-case environment names count, except for our own keys in any case.
    if (k === upper || known.has(upper)) merged.set(upper, v);
  }
  return merged;
}

function parseValue(s: Setting, value: string): string | number | boolean {
  switch (s.kind) {
    case 'port': {
      if (!/^-?\d+$/.test(value)) throw new ConfigError(s.key, 'a port number 0-65535', value);
      const n = Number(value);
      const allowDisable = s.key === 'ADMIN_PORT' || s.key === 'API_PORT';
      if (n > 65535 || n < (allowDisable ? -1 : 0)) throw new ConfigError(s.key, 'a port number 0-65535', value);
      return n;
    }
    case 'int': {
      if (!/^-?\d+$/.test(value)) throw new ConfigError(s.key, `an integer >= ${s.min ?? 0}`, value);
      const n = Number(value);
      if (!Number.isSafeInteger(n) || n < (s.min ?? 0)) throw new ConfigError(s.key, `an integer >= ${s.min ?? 0}`, value);
      return n;
    }
    case 'enum':
      if (!s.values!.includes(value)) throw new ConfigError(s.key, `one of ${s.values!.join(', ')}`, value);
      return value;
    case 'bool':
      if (!/^(true|false|1|0)$/i.test(value)) throw new ConfigError(s.key, 'true or false', value);
      return /^(true|1)$/i.test(value);
    case 'url':
      if (value !== '' && !/^rediss?:\/\/[^\s]+$/.test(value)) throw new ConfigError(s.key, 'a redis:// or rediss:// URL', value);
      return value;
    default:
      return value;
  }
}

/** COMPRESSION_CODECS: a comma-separated list of known codecs without repeats. */
function parseCodecList(value: string): ('lz4' | 'zstd')[] {
  const out: ('lz4' | 'zstd')[] = [];
  for (const part of value.split(',')) {
    const c = part.trim();
    if (c === '') continue;
    if ((c !== 'lz4' && c !== 'zstd') || out.includes(c)) throw new ConfigError('COMPRESSION_CODECS', 'a comma-separated list of lz4, zstd (or empty)', value);
    out.push(c);
  }
  return out;
}

/** Load and validate the configuration. Throws ConfigError on the first invalid value. */
export function loadConfig(opts: LoadOptions = {}): Config {
  const raw = rawSettings(opts);
  const v = new Map<string, string | number | boolean>();
  for (const s of SETTINGS) v.set(s.key, parseValue(s, raw.get(s.key) ?? s.default));
  const str = (k: string) => v.get(k) as string;
  const num = (k: string) => v.get(k) as number;
  const tcpHost = str('TCP_HOST');
  const redisUrl = str('REDIS_URL') || `redis://${str('REDIS_HOST')}:${num('REDIS_PORT')}`;
  if (num('RATE_LIMIT_BURST') < num('RATE_LIMIT_PER_SEC') / 1000) {
    throw new ConfigError('RATE_LIMIT_BURST', 'at least RATE_LIMIT_PER_SEC/1000', String(num('RATE_LIMIT_BURST')));
  }
  return {
    tcpHost,
    tcpPort: num('TCP_PORT'),
    adminHost: str('ADMIN_HOST') || tcpHost,
    adminPort: num('ADMIN_PORT'),
    serverId: str('SERVER_ID'),
    authSecret: str('AUTH_SECRET'),
    authRequireExp: v.get('AUTH_REQUIRE_EXP') as boolean,
    maxFrameBytes: num('MAX_FRAME_BYTES'),
    maxRoomsPerConnection: num('MAX_ROOMS_PER_CONNECTION'),
    maxConnections: num('MAX_CONNECTIONS'),
    maxRoomsTotal: num('MAX_ROOMS_TOTAL'),
    frameTimeoutMs: num('FRAME_TIMEOUT_MS'),
    partialFramesBudgetBytes: num('PARTIAL_FRAMES_BUDGET_BYTES'),
    maxJsonDepth: num('MAX_JSON_DEPTH'),
    idleTimeoutMs: num('IDLE_TIMEOUT_MS'),
    helloTimeoutMs: num('HELLO_TIMEOUT_MS'),
    rateLimitPerSec: num('RATE_LIMIT_PER_SEC'),
    rateLimitBurst: num('RATE_LIMIT_BURST'),
    maxOutboundBytes: num('MAX_OUTBOUND_BYTES'),
    slowConsumerPolicy: str('SLOW_CONSUMER_POLICY') as Config['slowConsumerPolicy'],
    historySize: num('HISTORY_SIZE'),
    historyRoomBytes: num('HISTORY_ROOM_BYTES'),
    historyTotalBytes: num('HISTORY_TOTAL_BYTES'),
    httpHeadersTimeoutMs: num('HTTP_HEADERS_TIMEOUT_MS'),
    httpRequestTimeoutMs: num('HTTP_REQUEST_TIMEOUT_MS'),
    httpKeepAliveTimeoutMs: num('HTTP_KEEPALIVE_TIMEOUT_MS'),
    metricsOnClientPort: v.get('METRICS_ON_CLIENT_PORT') as boolean,
    shutdownDrainMs: num('SHUTDOWN_DRAIN_MS'),
    compressionThreshold: num('COMPRESSION_THRESHOLD'),
    compressionCodecs: parseCodecList(str('COMPRESSION_CODECS')),
    flagsFile: str('FLAGS_FILE'),
    apiHost: str('API_HOST') || tcpHost,
    apiPort: num('API_PORT'),
    apiKey: str('API_KEY'),
    redisUrl,
    redisCluster: v.get('REDIS_CLUSTER') as boolean,
    streamShards: num('STREAM_SHARDS'),
    broadcastBatch: num('BROADCAST_BATCH'),
    redisTimeoutMs: num('REDIS_TIMEOUT_MS'),
    leaseMs: num('LEASE_MS'),
    heartbeatMs: num('HEARTBEAT_MS'),
    ingressMaxLen: num('INGRESS_MAXLEN'),
    egressMaxLen: num('EGRESS_MAXLEN'),
    logLevel: str('LOG_LEVEL') as Config['logLevel'],
    overloadP99LatencyMs: num('OVERLOAD_P99_LATENCY_MS'),
    overloadEventLoopLagMs: num('OVERLOAD_EVENT_LOOP_LAG_MS'),
    overloadMemoryPercent: num('OVERLOAD_MEMORY_PERCENT'),
    overloadMemoryMb: num('OVERLOAD_MEMORY_MB'),
    overloadHeapPercent: num('OVERLOAD_HEAP_PERCENT'),
    overloadMaxMsgPerSec: num('OVERLOAD_MAX_MSG_PER_SEC'),
    overloadErrorRatePercent: num('OVERLOAD_ERROR_RATE_PERCENT'),
    overloadIntervalMs: num('OVERLOAD_INTERVAL_MS'),
    overloadEnterSamples: num('OVERLOAD_ENTER_SAMPLES'),
    overloadExitSamples: num('OVERLOAD_EXIT_SAMPLES'),
    overloadRecoveryPercent: num('OVERLOAD_RECOVERY_PERCENT'),
    overloadConnectionMargin: num('OVERLOAD_CONNECTION_MARGIN'),
  };
}

/** Defaults for tests and embedding, with overrides. Never reads the environment. */
export function defaultConfig(overrides: Partial<Config> = {}): Config {
  return { ...loadConfig({ env: {}, dotEnvPath: null }), ...overrides };
}

/** The configuration with secrets masked, for the start-up log line. */
export function redactedConfig(cfg: Config): Record<string, unknown> {
  return {
    ...cfg,
    authSecret: cfg.authSecret ? '<set>' : '',
    apiKey: cfg.apiKey ? '<set>' : '',
    redisUrl: cfg.redisUrl.replace(/\/\/([^@/]*)@/, '//<redacted>@'),
  };
}

/** One row of a settings table like SETTINGS (the operator declares its own table of these). */
export type SettingDefinition = Setting;

/**
 * Load another process's settings table (the operator's) by the same rules as SETTINGS: `.env`
 * and the environment merged the same way, the same kinds (so booleans parse alike), the same
 * ConfigError on the first invalid value. Values by key.
 */
export function loadSettingsTable(table: readonly SettingDefinition[], opts: LoadOptions = {}): Map<string, string | number | boolean> {
  const raw = rawSettings(opts);
  return new Map(table.map((s) => [s.key, parseValue(s, raw.get(s.key) ?? s.default)]));
}
