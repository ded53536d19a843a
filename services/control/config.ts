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
import { parse as parseEnv } from 'dotenv';

export class ConfigError extends Error {
  constructor(
    readonly key: string,
    readonly expected: string,
    readonly value: string,
    /** What the message shows of the value (a URL's credentials masked). */
    shown = value,
  ) {
    super(`invalid ${key}=${JSON.stringify(shown)}: expected ${expected}`);
    this.name = 'ConfigError';
  }
}

/**
 * A URL with whatever precedes its last `@` masked: the credentials, even when the password holds
 * an `@` itself (URL parsing splits at the last one) or the scheme is missing. For logs and errors.
 */
export function redactUrl(url: string): string {
  const at = url.lastIndexOf('@');
  if (at === -1) return url;
  const scheme = /^[a-z][a-z0-9+.-]*:\/\//i.exec(url);
  return `${scheme === null || scheme[0].length > at ? '' : scheme[0]}<redacted>${url.slice(at)}`;
}

type Kind = 'port' | 'int' | 'string' | 'enum' | 'bool' | 'url' | 'list';

/**
 * The longest delay a Node timer takes: 2^31-1 ms, about 24.8 days. setTimeout and setInterval
 * (and socket timeouts) take anything longer as 1 ms, with a TimeoutOverflowWarning, so a
 * setting meant as "practically never" fired all the time.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;
/** The same bound for a duration in seconds that becomes a timer. */
export const MAX_TIMER_SEC = Math.floor(MAX_TIMER_MS / 1000);
/** The longest Redis TTL in seconds we send (about 68 years; 0 is "never" where a setting allows it). */
export const MAX_REDIS_TTL_SEC = 2 ** 31 - 1;

/** The unit of a duration setting; it decides the setting's maximum unless the row sets one. */
type Unit = 'ms' | 's';

interface Setting {
  readonly key: string;
  /** Its field in Config (camelCase); operator tables leave it out. */
  readonly field?: string;
  readonly kind: Kind;
  readonly default: string;
  readonly doc: string;
  readonly min?: number;
  readonly max?: number;
  readonly values?: readonly string[];
  /**
   * A duration (every *_MS and *_SEC setting that is not a rate): its maximum is MAX_TIMER_MS
   * (MAX_TIMER_SEC for seconds) unless the row sets a lower one, or another for a Redis TTL.
   */
  readonly unit?: Unit;
}

/** A setting's maximum: the row's own, else its unit's, else none. */
export function settingMax(s: Setting): number | undefined {
  return s.max ?? (s.unit === 'ms' ? MAX_TIMER_MS : s.unit === 's' ? MAX_TIMER_SEC : undefined);
}

/**
 * Every setting, in the order README.md documents them. `Config` is derived from this table (a
 * field per row, typed by its kind), so a setting is declared once.
 */
const SETTINGS_TABLE = [
  { key: 'TCP_HOST', field: 'tcpHost', kind: 'string', default: '127.0.0.1', doc: 'Address the client TCP listener binds (0.0.0.0 in containers).' },
  { key: 'TCP_PORT', field: 'tcpPort', kind: 'port', default: '4000', doc: 'Client TCP port (text, binary and HTTP on one port). 0 picks a free port.' },
  { key: 'ADMIN_HOST', field: 'adminHost', kind: 'string', default: '', doc: 'Address of the admin HTTP listener; empty means TCP_HOST.' },
  { key: 'ADMIN_PORT', field: 'adminPort', kind: 'port', default: '4001', doc: 'Admin HTTP port for /metrics, /stats, /healthz, /readyz. 0 picks a free port; -1 disables it.' },
  { key: 'SERVER_ID', field: 'serverId', kind: 'string', default: '', doc: 'Unique id of this process (gateway id in cluster mode); empty means hostname-pid-random.' },
  { key: 'AUTH_SECRET', field: 'authSecret', kind: 'string', default: '', doc: 'HS256 secret for hello tokens (JWT, `sub` = user id). Empty: development mode, `user` taken as is.' },
  { key: 'AUTH_REQUIRE_EXP', field: 'authRequireExp', kind: 'bool', default: 'false', doc: 'Refuse tokens without `exp`. Either way a session ends with `token_expired` at its token\'s `exp` unless refreshed (`refresh`).' },
  { key: 'MAX_FRAME_BYTES', field: 'maxFrameBytes', kind: 'int', default: '1048576', min: 64, doc: 'Largest frame (text line or binary body) a client may send.' },
  { key: 'MAX_ROOMS_PER_CONNECTION', field: 'maxRoomsPerConnection', kind: 'int', default: '100', min: 1, doc: 'Rooms one connection may be in at once.' },
  { key: 'MAX_CONNECTIONS', field: 'maxConnections', kind: 'int', default: '0', min: 0, doc: 'Connections this process holds at once, client and HTTP on both ports; 0 derives it from the file-descriptor limit (RLIMIT_NOFILE: 90% of it, less 32).' },
  { key: 'MAX_CONNECTIONS_PER_USER', field: 'maxConnectionsPerUser', kind: 'int', default: '64', min: 0, doc: 'Connections one user may hold on this process at once (each gets every direct message to the user); one more hello is `too_many_connections` and closed. 0: no cap.' },
  { key: 'MAX_ROOMS_TOTAL', field: 'maxRoomsTotal', kind: 'int', default: '100000', min: 1, doc: 'Rooms with members this process holds in total; joining one more is `too_many_rooms`.' },
  { key: 'FRAME_TIMEOUT_MS', field: 'frameTimeoutMs', kind: 'int', default: '10000', min: 100, unit: 'ms', doc: 'A frame must be complete within this time of its first byte, else `frame_timeout` and close. Partial frames do not reset the idle timer.' },
  { key: 'PARTIAL_FRAMES_BUDGET_BYTES', field: 'partialFramesBudgetBytes', kind: 'int', default: '67108864', min: 0, doc: 'Bytes of incomplete frames held for all connections together; past it, connections growing a partial frame stop being read until it frees, and past it by a quarter the largest partial frames are refused (`overloaded`) and their connections closed. 0: no budget.' },
  { key: 'MAX_JSON_DEPTH', field: 'maxJsonDepth', kind: 'int', default: '64', min: 1, doc: 'Deepest nesting of objects and arrays a message may have; deeper is `bad_request`.' },
  { key: 'IDLE_TIMEOUT_MS', field: 'idleTimeoutMs', kind: 'int', default: '60000', min: 100, unit: 'ms', doc: 'A connection that sends no frame for this long is closed (reason idle_timeout).' },
  { key: 'HELLO_TIMEOUT_MS', field: 'helloTimeoutMs', kind: 'int', default: '10000', min: 100, unit: 'ms', doc: 'A connection must send hello within this time.' },
  { key: 'INFLATE_BYTES_PER_SEC', field: 'inflateBytesPerSec', kind: 'int', default: '4194304', min: 0, doc: 'Bytes per second one connection\'s compressed frames may decompress to (a few bytes of zstd can stand for a megabyte); past it the connection is read no faster. 0: no budget.' },
  { key: 'INFLATE_TOTAL_BYTES_PER_SEC', field: 'inflateTotalBytesPerSec', kind: 'int', default: '33554432', min: 0, doc: 'Bytes per second the compressed frames of all connections together may decompress to; past it compressed frames wait (their connections are read no faster), so many connections each within INFLATE_BYTES_PER_SEC cannot together stall the process. A frame is charged its output bound before it is decompressed: at most an eighth of a second\'s worth is decompressing at once. 0: no budget.' },
  { key: 'INBOUND_BYTES_PER_SEC', field: 'inboundBytesPerSec', kind: 'int', default: '4194304', min: 0, doc: 'Bytes per second one connection may send (its burst: a second\'s worth, or MAX_FRAME_BYTES if larger), replies of 1 KiB or more to its requests (history, presence) counted too; past it the connection is read no faster, nothing is dropped. 0: no budget.' },
  { key: 'REPLY_TOTAL_BYTES_PER_SEC', field: 'replyTotalBytesPerSec', kind: 'int', default: '67108864', min: 0, doc: 'Bytes per second of bulk replies (`history` pages, `presence` lists) all connections together may be sent. Each such request holds half of MAX_OUTBOUND_BYTES (the most its reply may be) until its reply is built; past the budget the next ones wait, taking turns by user, their connections not read; one that waits 5 s is `overloaded`. 0: no budget.' },
  { key: 'RATE_LIMIT_PER_SEC', field: 'rateLimitPerSec', kind: 'int', default: '2000', min: 1, doc: 'Sustained messages per second one connection may send (token bucket).' },
  { key: 'RATE_LIMIT_BURST', field: 'rateLimitBurst', kind: 'int', default: '4000', min: 1, doc: 'Bucket size: messages a connection may send in a burst.' },
  { key: 'OUTBOUND_BUDGET_BYTES', field: 'outboundBudgetBytes', kind: 'int', default: '268435456', min: 0, doc: 'Output pending for all connections together (each one\'s as MAX_OUTBOUND_BYTES counts it); past it, the connections with the most pending are disconnected as slow consumers until the total is back under three quarters of it. 0: no budget.' },
  { key: 'MAX_OUTBOUND_BYTES', field: 'maxOutboundBytes', kind: 'int', default: '4194304', min: 1024, doc: 'Bytes queued for one connection (ours plus the socket buffer) before it is a slow consumer.' },
  { key: 'SLOW_CONSUMER_POLICY', field: 'slowConsumerPolicy', kind: 'enum', default: 'disconnect', values: ['disconnect', 'drop'], doc: 'disconnect: send slow_consumer and close; drop: drop messages for that client and count them.' },
  { key: 'HISTORY_SIZE', field: 'historySize', kind: 'int', default: '100', min: 0, doc: 'Messages kept per room for `history` and recovery after reconnect.' },
  { key: 'HISTORY_TTL_SEC', field: 'historyTtlSec', kind: 'int', default: '86400', min: 0, unit: 's', max: MAX_REDIS_TTL_SEC, doc: 'Cluster: a room\'s position and history expire this long after its last message (or after the join that created its position; a room nothing was said in goes when its last member leaves): room names nobody uses again do not stay in Redis for ever. While members are in a room its position is renewed (its history is not). A room that comes back after that starts a new epoch. 0: never expire.' },
  { key: 'HISTORY_ROOM_BYTES', field: 'historyRoomBytes', kind: 'int', default: '4194304', min: 0, doc: 'Standalone: estimated bytes of history kept per room (oldest messages go first).' },
  { key: 'HISTORY_TOTAL_BYTES', field: 'historyTotalBytes', kind: 'int', default: '67108864', min: 0, doc: 'Standalone: estimated bytes of history kept over all rooms (each message as its JSON text, two bytes a character plus 64); over it the longest idle rooms lose their history first.' },
  { key: 'HTTP_HEADERS_TIMEOUT_MS', field: 'httpHeadersTimeoutMs', kind: 'int', default: '5000', min: 100, unit: 'ms', doc: 'HTTP (client and admin port): time from connecting to the end of the request headers; then 408 and close.' },
  { key: 'HTTP_REQUEST_TIMEOUT_MS', field: 'httpRequestTimeoutMs', kind: 'int', default: '10000', min: 100, unit: 'ms', doc: 'HTTP: time to receive a whole request; then 408 and close.' },
  { key: 'HTTP_KEEPALIVE_TIMEOUT_MS', field: 'httpKeepAliveTimeoutMs', kind: 'int', default: '5000', min: 100, unit: 'ms', doc: 'HTTP: an idle keep-alive connection is closed after this long.' },
  { key: 'METRICS_ON_CLIENT_PORT', field: 'metricsOnClientPort', kind: 'bool', default: 'false', doc: 'Also serve /metrics on the client port (it is always on the admin port); /stats, /healthz and /readyz are served on both.' },
  { key: 'SHUTDOWN_DRAIN_MS', field: 'shutdownDrainMs', kind: 'int', default: '10000', min: 0, unit: 'ms', doc: 'On SIGTERM, how long to wait for clients to drain and leave before exiting.' },
  { key: 'COMPRESSION_THRESHOLD', field: 'compressionThreshold', kind: 'int', default: '512', min: 0, doc: 'Binary-mode frames with a body above this many bytes are compressed (negotiated codec) when that makes them smaller.' },
  { key: 'COMPRESSION_CODECS', field: 'compressionCodecs', kind: 'list', default: 'lz4,zstd', values: ['lz4', 'zstd'], doc: 'Codecs the server offers in hello, most preferred first (lz4, zstd); empty disables compression.' },
  { key: 'FLAGS_FILE', field: 'flagsFile', kind: 'string', default: '', doc: 'Feature flags file (JSON or YAML), hot-reloaded; empty: no file. See docs/flags.md.' },
  { key: 'API_HOST', field: 'apiHost', kind: 'string', default: '', doc: 'Address of the gRPC server API; empty means TCP_HOST.' },
  { key: 'API_PORT', field: 'apiPort', kind: 'port', default: '4002', doc: 'gRPC server API port (switchboard.v1). 0 picks a free port; -1 disables it.' },
  { key: 'API_KEY', field: 'apiKey', kind: 'string', default: '', doc: 'Key gRPC callers send as `x-api-key` (or `authorization: Bearer`). Empty: every API call is refused (UNAUTHENTICATED).' },
  { key: 'REDIS_URL', field: 'redisUrl', kind: 'url', default: '', doc: 'Redis for cluster roles (redis:// or rediss://). Overrides REDIS_HOST/REDIS_PORT.' },
  { key: 'REDIS_HOST', field: 'redisHost', kind: 'string', default: '127.0.0.1', doc: 'Redis host for cluster roles when REDIS_URL is unset (origin key `redis_host`).' },
  { key: 'REDIS_PORT', field: 'redisPort', kind: 'port', default: '6379', doc: 'Redis port for cluster roles when REDIS_URL is unset (origin key `redis_port`).' },
  { key: 'REDIS_CLUSTER', field: 'redisCluster', kind: 'bool', default: 'false', doc: 'Treat REDIS_URL as a seed node of a Redis Cluster (keys are hash-tagged for it).' },
  { key: 'STREAM_SHARDS', field: 'streamShards', kind: 'int', default: '8', min: 1, doc: 'Ingress stream shards (sb:in:{N}); the same on every gateway. The unit of broadcast ownership and per-room order.' },
  { key: 'BROADCAST_BATCH', field: 'broadcastBatch', kind: 'int', default: '512', min: 1, max: 10000, doc: 'Ingress entries a broadcast worker reads and routes per batch (at most 10000: a batch\'s ids and arguments go to Redis as one command).' },
  { key: 'REDIS_TIMEOUT_MS', field: 'redisTimeoutMs', kind: 'int', default: '2000', min: 100, unit: 'ms', doc: 'A Redis command that has no reply within this time fails: the client gets `unavailable`, and /readyz turns 503 while Redis stays stalled.' },
  { key: 'LEASE_MS', field: 'leaseMs', kind: 'int', default: '5000', min: 100, unit: 'ms', doc: 'Shard lease of a broadcast worker; a dead worker\'s shards move after this long.' },
  { key: 'HEARTBEAT_MS', field: 'heartbeatMs', kind: 'int', default: '2000', min: 100, unit: 'ms', doc: 'Gateway heartbeat period; a gateway silent for 3 periods is removed from routing.' },
  { key: 'INGRESS_MAXLEN', field: 'ingressMaxLen', kind: 'int', default: '1000000', min: 1000, doc: 'Safety cap per ingress stream; the broadcast tier trims what it processed.' },
  { key: 'EGRESS_MAXLEN', field: 'egressMaxLen', kind: 'int', default: '100000', min: 100, doc: 'Messages of unread backlog kept in each gateway egress stream (approximate; a gateway trims what it has read itself): a gateway lagging further behind loses the oldest and tells its members where their rooms are.' },
  { key: 'LOG_LEVEL', field: 'logLevel', kind: 'enum', default: 'info', values: ['debug', 'info', 'warn', 'error', 'silent'], doc: 'Log verbosity; logs are JSON lines on stderr.' },
  { key: 'OVERLOAD_P99_LATENCY_MS', field: 'overloadP99LatencyMs', kind: 'int', default: '50', min: 0, unit: 'ms', doc: 'Overload when p99 delivery latency over one monitor interval exceeds this (ms); 0 disables. The origin used 1 ms.' },
  { key: 'OVERLOAD_EVENT_LOOP_LAG_MS', field: 'overloadEventLoopLagMs', kind: 'int', default: '100', min: 0, unit: 'ms', doc: 'Overload when p99 event-loop delay over one interval exceeds this (ms); 0 disables.' },
  { key: 'OVERLOAD_MEMORY_PERCENT', field: 'overloadMemoryPercent', kind: 'int', default: '85', min: 0, doc: 'Overload when RSS exceeds this percentage of the container memory limit (of RAM without one); 0 disables.' },
  { key: 'OVERLOAD_MEMORY_MB', field: 'overloadMemoryMb', kind: 'int', default: '0', min: 0, doc: 'Absolute RSS threshold in MiB; when set it replaces OVERLOAD_MEMORY_PERCENT. The origin used 15 MB.' },
  { key: 'OVERLOAD_HEAP_PERCENT', field: 'overloadHeapPercent', kind: 'int', default: '85', min: 0, doc: 'Overload when the V8 heap in use exceeds this percentage of its limit (heap_size_limit, --max-old-space-size); 0 disables.' },
  { key: 'OVERLOAD_MAX_MSG_PER_SEC', field: 'overloadMaxMsgPerSec', kind: 'int', default: '0', min: 0, doc: 'Overload when this process receives more messages per second than this (its capacity); 0 disables.' },
  { key: 'OVERLOAD_ERROR_RATE_PERCENT', field: 'overloadErrorRatePercent', kind: 'int', default: '1', min: 0, doc: 'Overload when server-side errors (internal, unavailable; each connection counted once per interval) exceed this percentage of messages; 0 disables.' },
  { key: 'OVERLOAD_INTERVAL_MS', field: 'overloadIntervalMs', kind: 'int', default: '1000', min: 50, unit: 'ms', doc: 'Performance monitor sampling interval.' },
  { key: 'OVERLOAD_ENTER_SAMPLES', field: 'overloadEnterSamples', kind: 'int', default: '3', min: 1, doc: 'Consecutive intervals with a breach before the process is overloaded.' },
  { key: 'OVERLOAD_EXIT_SAMPLES', field: 'overloadExitSamples', kind: 'int', default: '5', min: 1, doc: 'Consecutive clear intervals before it recovers.' },
  { key: 'OVERLOAD_RECOVERY_PERCENT', field: 'overloadRecoveryPercent', kind: 'int', default: '80', min: 1, doc: 'Hysteresis: an interval is clear when every value is below this percentage of its threshold.' },
  { key: 'OVERLOAD_CONNECTION_MARGIN', field: 'overloadConnectionMargin', kind: 'int', default: '100', min: 0, doc: 'While overloaded, sessions beyond the count at the onset plus this margin get `overloaded` in reply to hello and are closed.' },
] as const satisfies readonly Setting[];

export const SETTINGS: readonly Setting[] = SETTINGS_TABLE;

/** The value type of a setting row, from its kind. */
type ValueOf<S> = S extends { kind: 'port' | 'int' }
  ? number
  : S extends { kind: 'bool' }
    ? boolean
    : S extends { kind: 'enum'; values: readonly (infer V)[] }
      ? V
      : S extends { kind: 'list'; values: readonly (infer V)[] }
        ? V[]
        : string;

/**
 * Parsed configuration: one field per SETTINGS row (its `field`), typed by its kind. Defaults and
 * documentation are the rows'. Three fields are completed from others when empty: ADMIN_HOST and
 * API_HOST default to TCP_HOST, REDIS_URL is built from REDIS_HOST and REDIS_PORT.
 */
export type Config = { -readonly [S in (typeof SETTINGS_TABLE)[number] as S['field']]: ValueOf<S> };

/**
 * Parse a `.env` file with `dotenv`'s parser (KEY=value lines, # comments, quotes, `export`,
 * multi-line quoted values; it does not touch process.env). Keys are upper-cased, so the origin's
 * lower-case keys work.
 */
export function parseDotEnv(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const [k, v] of Object.entries(parseEnv(text))) out.set(k.toUpperCase(), v);
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

function parseValue(s: Setting, value: string): string | number | boolean | string[] {
  switch (s.kind) {
    case 'port': {
      if (!/^-?\d+$/.test(value)) throw new ConfigError(s.key, 'a port number 0-65535', value);
      const n = Number(value);
      const allowDisable = s.key === 'ADMIN_PORT' || s.key === 'API_PORT';
      if (n > 65535 || n < (allowDisable ? -1 : 0)) throw new ConfigError(s.key, 'a port number 0-65535', value);
      return n;
    }
    case 'int': {
      const max = settingMax(s);
      const unit = s.unit === 'ms' ? ' (milliseconds)' : s.unit === 's' ? ' (seconds)' : '';
      const want = (max === undefined ? `an integer >= ${s.min ?? 0}` : `an integer from ${s.min ?? 0} to ${max}`) + unit;
      if (!/^-?\d+$/.test(value)) throw new ConfigError(s.key, want, value);
      const n = Number(value);
      if (!Number.isSafeInteger(n) || n < (s.min ?? 0) || (max !== undefined && n > max)) throw new ConfigError(s.key, want, value);
      return n;
    }
    case 'enum':
      if (!s.values!.includes(value)) throw new ConfigError(s.key, `one of ${s.values!.join(', ')}`, value);
      return value;
    case 'bool':
      if (!/^(true|false|1|0)$/i.test(value)) throw new ConfigError(s.key, 'true or false', value);
      return /^(true|1)$/i.test(value);
    case 'url': {
      // Surrounding whitespace is not part of a URL: a Secret made with `echo` or --from-file
      // ends in a newline (the operator trims it too). The value may hold a password: an error
      // shows it masked.
      const url = value.trim();
      if (url !== '' && !/^rediss?:\/\/[^\s]+$/.test(url)) throw new ConfigError(s.key, 'a redis:// or rediss:// URL', value, redactUrl(value));
      return url;
    }
    case 'list':
      return parseList(s, value);
    default:
      return value;
  }
}

/** A comma-separated list of the row's values, without repeats (COMPRESSION_CODECS). */
function parseList(s: Setting, value: string): string[] {
  const out: string[] = [];
  for (const part of value.split(',')) {
    const item = part.trim();
    if (item === '') continue;
    if (!s.values!.includes(item) || out.includes(item)) throw new ConfigError(s.key, `a comma-separated list of ${s.values!.join(', ')} (or empty)`, value);
    out.push(item);
  }
  return out;
}

/** Load and validate the configuration. Throws ConfigError on the first invalid value. */
export function loadConfig(opts: LoadOptions = {}): Config {
  const raw = rawSettings(opts);
  const out: Record<string, unknown> = {};
  for (const s of SETTINGS) out[s.field!] = parseValue(s, raw.get(s.key) ?? s.default);
  const c = out as Config;
  if (c.adminHost === '') c.adminHost = c.tcpHost;
  if (c.apiHost === '') c.apiHost = c.tcpHost;
  if (c.redisUrl === '') c.redisUrl = `redis://${c.redisHost}:${c.redisPort}`;
  if (c.rateLimitBurst < c.rateLimitPerSec / 1000) {
    throw new ConfigError('RATE_LIMIT_BURST', 'at least RATE_LIMIT_PER_SEC/1000', String(c.rateLimitBurst));
  }
  return c;
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
    redisUrl: redactUrl(cfg.redisUrl),
  };
}

/** One row of a settings table like SETTINGS (the operator declares its own table of these). */
export type SettingDefinition = Setting;

/**
 * Load another process's settings table (the operator's) by the same rules as SETTINGS: `.env`
 * and the environment merged the same way, the same kinds (so booleans parse alike), the same
 * ConfigError on the first invalid value. Values by key.
 */
export function loadSettingsTable(table: readonly SettingDefinition[], opts: LoadOptions = {}): Map<string, string | number | boolean | string[]> {
  const raw = rawSettings(opts);
  return new Map(table.map((s) => [s.key, parseValue(s, raw.get(s.key) ?? s.default)]));
}

/**
 * The most one bulk reply (a `history` page, a `presence` list) may be: half of
 * MAX_OUTBOUND_BYTES, so that one reply never makes a reader that keeps up a slow consumer. It is
 * also what each bulk request reserves of REPLY_TOTAL_BYTES_PER_SEC until its reply is built.
 */
export function bulkReplyBytes(config: Pick<Config, 'maxOutboundBytes'>): number {
  return Math.max(1, Math.floor(config.maxOutboundBytes / 2));
}
