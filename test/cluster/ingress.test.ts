/**
 * The gateway's ingress writer (services/bus/ingress.ts) against a real redis-server: publishes
 * that queue up behind a write in flight go out as one call, every message becomes its own entry
 * with the same fields a plain XADD makes, in publish order per stream, and each promise resolves
 * only once its entry exists.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { IngressWriter } from '../../services/bus/ingress';
import { Keys } from '../../services/bus/keys';
import { createRedis, isReady, type RedisClient } from '../../services/bus/redis-conn';
import { silentLogger } from '../../services/telemetry/log';
import { RedisProcess, stopAllRedis } from '../helpers/redis';
import { waitFor } from '../helpers/wait';

let redis: RedisProcess;
let client: RedisClient;

before(async () => {
  redis = await RedisProcess.start();
  client = createRedis({ url: redis.url, cluster: false, name: 'test-ingress', log: silentLogger, commandTimeoutMs: 2000 });
  await waitFor(() => isReady(client), 5000, 'redis connected');
});

after(async () => {
  client.disconnect();
  await stopAllRedis();
});

describe('ingress writer', () => {
  test('a burst of publishes: fewer writes than messages, one entry each, in order per stream', async () => {
    const w = new IngressWriter(client, 100_000, false);
    const n = 300;
    const acks = Array.from({ length: n }, (_, i) => w.append(Keys.ingress(i % 3), ['r', `room${i % 3}`, 'f', 'u', 'd', JSON.stringify({ i }), 't', String(i)]));
    await Promise.all(acks);
    assert.equal(w.messages, n);
    assert.ok(w.writes < n / 10, `${w.writes} writes for ${n} messages`);
    for (let s = 0; s < 3; s++) {
      const entries = await client.xrange(Keys.ingress(s), '-', '+');
      assert.deepEqual(
        entries.map(([, f]) => f),
        Array.from({ length: n / 3 }, (_, j) => ['r', `room${s}`, 'f', 'u', 'd', JSON.stringify({ i: 3 * j + s }), 't', String(3 * j + s)]),
      );
    }
  });

  test('a burst of 20,000 publishes behind one write: bounded calls, every entry written in order', async () => {
    // Five connections spending a 4,000-message burst at once. As one call this was 200,000
    // arguments: ioredis' auto-pipeline lost the command to a RangeError and then killed the
    // process with a TypeError nothing could catch.
    const w = new IngressWriter(client, 1_000_000, false);
    const key = Keys.ingress(20);
    await w.append(key, ['r', 'b', 'f', 'u', 'd', '-1', 't', '0']);
    const n = 20_000;
    const first = w.append(key, ['r', 'b', 'f', 'u', 'd', '0', 't', '0']); // in flight alone
    const rest = Array.from({ length: n - 1 }, (_, i) => w.append(key, ['r', 'b', 'f', 'u', 'd', String(i + 1), 't', '0']));
    await Promise.all([first, ...rest]);
    assert.ok(w.writes >= n / 256, `${w.writes} calls for ${n} messages: at most 256 messages each`);
    const entries = await client.xrange(key, '-', '+');
    assert.deepEqual(
      entries.map(([, f]) => Number(f[5])),
      Array.from({ length: n + 1 }, (_, i) => i - 1),
    );
  });

  test('after SCRIPT FLUSH, a flush of several calls (scripts and a lone XADD) keeps its order', async () => {
    const w = new IngressWriter(client, 100_000, false);
    const key = Keys.ingress(21);
    await w.append(key, ['r', 'b', 'f', 'u', 'd', '-1', 't', '0']);
    // Redis forgot the scripts (a SCRIPT FLUSH, a failover) while the client still takes them for
    // loaded: the script calls must not fall behind the plain XADD written after them.
    await client.call('SCRIPT', 'FLUSH');
    const first = w.append(key, ['r', 'b', 'f', 'u', 'd', '0', 't', '0']); // in flight alone
    // 257 queued: one call of 256 and one of a single message.
    const rest = Array.from({ length: 257 }, (_, i) => w.append(key, ['r', 'b', 'f', 'u', 'd', String(i + 1), 't', '0']));
    await Promise.all([first, ...rest]);
    const entries = await client.xrange(key, '-', '+');
    assert.deepEqual(
      entries.map(([, f]) => Number(f[5])),
      Array.from({ length: 259 }, (_, i) => i - 1),
    );
  });

  test('one write per stream when the streams may live in different slots (Redis Cluster)', async () => {
    const w = new IngressWriter(client, 100_000, true);
    await Promise.all(Array.from({ length: 50 }, (_, i) => w.append(Keys.ingress(10 + (i % 2)), ['r', 'x', 'f', 'u', 'd', String(i), 't', '0'])));
    assert.deepEqual((await client.xrange(Keys.ingress(10), '-', '+')).map(([, f]) => f[5]), Array.from({ length: 25 }, (_, j) => String(2 * j)));
    assert.deepEqual((await client.xrange(Keys.ingress(11), '-', '+')).map(([, f]) => f[5]), Array.from({ length: 25 }, (_, j) => String(2 * j + 1)));
  });
});
