// Configuration: environment and .env, origin keys, precedence, validation with one clear message.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { loadOperatorConfig, OPERATOR_SETTINGS } from '../../operator/config';
import { ConfigError, defaultConfig, loadConfig, MAX_REDIS_TTL_SEC, MAX_TIMER_MS, parseDotEnv, redactedConfig, settingMax, SETTINGS } from '../../services/control';
import { tempDir } from '../helpers/cli';

function dotEnv(text: string): string {
  const dir = tempDir();
  const path = join(dir, '.env');
  writeFileSync(path, text);
  return path;
}

describe('config', () => {
  test('defaults: standalone on 127.0.0.1:4000, limits from the issue', () => {
    const c = loadConfig({ env: {}, dotEnvPath: null });
    assert.equal(c.tcpHost, '127.0.0.1');
    assert.equal(c.tcpPort, 4000);
    assert.equal(c.maxFrameBytes, 1024 * 1024);
    assert.equal(c.maxRoomsPerConnection, 100);
    assert.equal(c.idleTimeoutMs, 60_000);
    assert.equal(c.slowConsumerPolicy, 'disconnect');
    assert.equal(c.authSecret, '');
    assert.equal(c.redisUrl, 'redis://127.0.0.1:6379');
    assert.deepEqual(defaultConfig({ tcpPort: 0 }).tcpPort, 0);
  });

  test('Config is the SETTINGS table: one field per row, each set, typed by its kind', () => {
    const c = loadConfig({ env: {}, dotEnvPath: null }) as unknown as Record<string, unknown>;
    const fields = SETTINGS.map((s) => s.field);
    assert.equal(new Set(fields).size, SETTINGS.length, 'fields are unique');
    assert.deepEqual(Object.keys(c).sort(), [...fields].sort());
    for (const s of SETTINGS) {
      const v = c[s.field!];
      const expected = s.kind === 'port' || s.kind === 'int' ? 'number' : s.kind === 'bool' ? 'boolean' : s.kind === 'list' ? 'object' : 'string';
      assert.equal(typeof v, expected, `${s.key} -> ${s.field}`);
    }
    assert.deepEqual(c.compressionCodecs, ['lz4', 'zstd']);
    assert.equal(c.adminHost, c.tcpHost, 'an empty ADMIN_HOST means TCP_HOST');
    assert.throws(() => loadConfig({ env: { COMPRESSION_CODECS: 'lz4,lz4' }, dotEnvPath: null }), /COMPRESSION_CODECS.*comma-separated list of lz4, zstd/);
  });

  test('parseDotEnv: comments, quotes, export, keys upper-cased', () => {
    const m = parseDotEnv('# comment\n\ntcp_host=0.0.0.0\nexport TCP_PORT="4100"\nAUTH_SECRET=\'s3cr=t\'\nnot a line\nLOG_LEVEL=warn # inline comment\n');
    assert.equal(m.get('TCP_HOST'), '0.0.0.0');
    assert.equal(m.get('TCP_PORT'), '4100');
    assert.equal(m.get('AUTH_SECRET'), 's3cr=t');
    assert.equal(m.get('LOG_LEVEL'), 'warn');
    assert.equal(m.size, 4);
  });

  test("the origin's lower-case .env keys work", () => {
    const path = dotEnv('tcp_host=0.0.0.0\ntcp_port=4555\nredis_host=10.0.0.7\nredis_port=6390\n');
    const c = loadConfig({ env: {}, dotEnvPath: path });
    assert.equal(c.tcpHost, '0.0.0.0');
    assert.equal(c.tcpPort, 4555);
    assert.equal(c.redisUrl, 'redis://10.0.0.7:6390');
  });

  test('the environment wins over .env, also in lower case', () => {
    const path = dotEnv('tcp_port=4555\nMAX_ROOMS_PER_CONNECTION=5\n');
    const c = loadConfig({ env: { TCP_PORT: '4666', max_rooms_per_connection: '7' }, dotEnvPath: path });
    assert.equal(c.tcpPort, 4666);
    assert.equal(c.maxRoomsPerConnection, 7);
  });

  test('a missing .env file is fine', () => {
    const c = loadConfig({ env: {}, dotEnvPath: join(tempDir(), 'nope.env') });
    assert.equal(c.tcpPort, 4000);
  });

  test('REDIS_URL overrides host and port; secrets are redacted', () => {
    const c = loadConfig({ env: { REDIS_URL: 'redis://user:pw@r:1/0', AUTH_SECRET: 'top' }, dotEnvPath: null });
    assert.equal(c.redisUrl, 'redis://user:pw@r:1/0');
    const r = redactedConfig(c);
    assert.equal(r.authSecret, '<set>');
    assert.doesNotMatch(JSON.stringify(r), /pw|top/);
  });

  // Regression: an invalid REDIS_URL was echoed whole, password included, into the pod's log;
  // a Secret made with `echo` (a trailing newline) was enough to make it invalid.
  test('REDIS_URL: surrounding whitespace is trimmed; an invalid one is reported with its credentials masked', () => {
    assert.equal(loadConfig({ env: { REDIS_URL: 'redis://:hunter2@r:1\n' }, dotEnvPath: null }).redisUrl, 'redis://:hunter2@r:1');
    for (const bad of ['redis://:hunter2@r 1', ':hunter2@r:1', 'http://u:hunter2@r', 'redis://:pa@hunter2@r x']) {
      assert.throws(
        () => loadConfig({ env: { REDIS_URL: bad }, dotEnvPath: null }),
        (err: unknown) => err instanceof ConfigError && /^invalid REDIS_URL=/.test(err.message) && !err.message.includes('hunter2'),
        bad,
      );
    }
  });

  test('redactedConfig masks a password holding an @ (URL parsing splits at the last one)', () => {
    const c = loadConfig({ env: { REDIS_URL: 'redis://:pa55@hunter2@127.0.0.1:1' }, dotEnvPath: null });
    assert.equal(redactedConfig(c).redisUrl, 'redis://<redacted>@127.0.0.1:1');
  });

  const invalid: [Record<string, string>, string, RegExp][] = [
    [{ TCP_PORT: 'abc' }, 'TCP_PORT', /port number 0-65535/],
    [{ TCP_PORT: '70000' }, 'TCP_PORT', /port number/],
    [{ TCP_PORT: '-1' }, 'TCP_PORT', /port number/],
    [{ MAX_ROOMS_PER_CONNECTION: '-5' }, 'MAX_ROOMS_PER_CONNECTION', /integer >= 1/],
    [{ MAX_FRAME_BYTES: '1.5' }, 'MAX_FRAME_BYTES', /integer >= 64/],
    [{ RATE_LIMIT_PER_SEC: '0' }, 'RATE_LIMIT_PER_SEC', /integer >= 1/],
    [{ BROADCAST_BATCH: '10001' }, 'BROADCAST_BATCH', /integer from 1 to 10000/],
    [{ BROADCAST_BATCH: '0' }, 'BROADCAST_BATCH', /integer from 1 to 10000/],
    [{ SLOW_CONSUMER_POLICY: 'ignore' }, 'SLOW_CONSUMER_POLICY', /one of disconnect, drop/],
    [{ LOG_LEVEL: 'loud' }, 'LOG_LEVEL', /one of/],
    [{ REDIS_URL: 'http://x' }, 'REDIS_URL', /redis:\/\//],
    // Past the longest timer Node takes: the overload monitor ran every 1 ms.
    [{ OVERLOAD_INTERVAL_MS: '3000000000' }, 'OVERLOAD_INTERVAL_MS', /integer from 50 to 2147483647 \(milliseconds\)/],
    [{ IDLE_TIMEOUT_MS: '2147483648' }, 'IDLE_TIMEOUT_MS', /integer from 100 to 2147483647/],
    [{ HISTORY_TTL_SEC: '2147483648' }, 'HISTORY_TTL_SEC', /integer from 0 to 2147483647 \(seconds\)/],
  ];
  for (const [env, key, expected] of invalid) {
    test(`invalid ${key}=${Object.values(env)[0]} is a ConfigError naming the key and the expected form`, () => {
      assert.throws(
        () => loadConfig({ env, dotEnvPath: null }),
        (err: unknown) => {
          assert.ok(err instanceof ConfigError);
          assert.equal(err.key, key);
          assert.match(err.message, new RegExp(`^invalid ${key}=`));
          assert.match(err.message, expected);
          assert.doesNotMatch(err.message, /\n/);
          return true;
        },
      );
    });
  }

  test('ADMIN_PORT=-1 disables the admin port (the only port that accepts -1)', () => {
    assert.equal(loadConfig({ env: { ADMIN_PORT: '-1' }, dotEnvPath: null }).adminPort, -1);
  });

  // Every duration of every role: the server's roles (one table) and the operator's. A *_MS or
  // *_SEC key that is not a rate must say its unit, so that it has a maximum a timer (or Redis)
  // takes; above it start-up stops like below the minimum, instead of a timer firing every 1 ms.
  const tables = [
    { name: 'server', table: SETTINGS, load: (env: Record<string, string>) => loadConfig({ env, dotEnvPath: null }) },
    { name: 'operator', table: OPERATOR_SETTINGS, load: (env: Record<string, string>) => loadOperatorConfig(env, { dotEnvPath: null }) },
  ];
  for (const { name, table, load } of tables) {
    test(`${name}: every duration setting has a maximum a timer takes; past it is a ConfigError naming the key`, () => {
      const durations = table.filter((s) => /_(MS|SEC)$/.test(s.key) && !/_PER_SEC$/.test(s.key));
      assert.ok(durations.length > 0);
      for (const s of durations) {
        assert.ok(s.unit === (s.key.endsWith('_MS') ? 'ms' : 's'), `${s.key} declares its unit`);
        const max = settingMax(s)!;
        const limit = s.key === 'HISTORY_TTL_SEC' ? MAX_REDIS_TTL_SEC : s.unit === 'ms' ? MAX_TIMER_MS : Math.floor(MAX_TIMER_MS / 1000);
        assert.ok(max !== undefined && max <= limit, `${s.key}: maximum ${max}, at most ${limit}`);
        assert.doesNotThrow(() => load({ [s.key]: String(max) }), `${s.key}=${max} is accepted`);
        for (const value of [String(max + 1), '3000000000', '9007199254740991']) {
          assert.throws(
            () => load({ [s.key]: value }),
            (err: unknown) => err instanceof ConfigError && err.key === s.key && err.message.includes(`to ${max}`) && !err.message.includes('\n'),
            `${s.key}=${value}`,
          );
        }
      }
    });
  }

  test('every setting has a default that itself validates', () => {
    const keys = SETTINGS.map((s) => s.key);
    assert.equal(new Set(keys).size, keys.length, 'no duplicate keys');
    assert.doesNotThrow(() => loadConfig({ env: {}, dotEnvPath: null }));
  });
});
