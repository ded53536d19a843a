/**
 * Cluster history under hostile use, against a real redis-server: a page is bounded in bytes in
 * Redis itself (history.lua), not built whole and cut afterwards, and one connection has at most
 * MAX_BULK_IN_FLIGHT history requests running, the rest waiting in order with the connection
 * not read meanwhile. Without either, a few clients asking for pages of large messages at once
 * took gigabytes in Redis and the gateway (a gateway died of its heap limit).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { HistoryPage, HistoryQuery } from '../../services/bus';
import { Keys } from '../../services/bus/keys';
import { RedisBus } from '../../services/bus/redis';
import { MAX_BULK_IN_FLIGHT } from '../../services/gateway/session';
import { silentLogger } from '../../services/telemetry/log';
import { RedisProcess, stopAllRedis } from '../helpers/redis';
import { startServer } from '../helpers/server';
import { waitFor } from '../helpers/wait';
import { helloClient } from '../helpers/wire';

let redis: RedisProcess;

before(async () => {
  redis = await RedisProcess.start();
});

after(async () => {
  await stopAllRedis();
});

function newBus(gw: string): RedisBus {
  return new RedisBus({ url: redis.url, cluster: false, gatewayId: gw, shards: 4, ingressMaxLen: 10_000, heartbeatMs: 1000, log: silentLogger });
}

/** A room history of `n` messages of about `bytes` each, written as the broadcast tier writes it. */
async function fillHistory(bus: RedisBus, room: string, n: number, bytes: number): Promise<void> {
  const client = bus.client;
  for (let seq = 1; seq <= n; seq++) {
    const json = JSON.stringify({ type: 'message', room, from: 'u', data: 'x'.repeat(bytes), seq, epoch: 'e1', ts: seq });
    await client.call('XADD', Keys.history(room), `${seq}-1`, 'm', json);
  }
  await client.call('HSET', Keys.seq(room), 'seq', String(n), 'epoch', 'e1');
}

const seqs = (page: HistoryPage) => page.messages.map((m) => (JSON.parse(m) as { seq: number }).seq);

describe('cluster history', () => {
  test('a page stops at its byte budget in Redis: forwards with more, the newest that fit, and never empty', async () => {
    const bus = newBus('gw-hist-1');
    await waitFor(() => bus.client.status === 'ready', 5000, 'redis connected');
    try {
      await fillHistory(bus, 'big', 30, 200_000);
      const forward = await bus.history('big', { since: 0, limit: 100, maxBytes: 1_000_000 });
      assert.deepEqual(seqs(forward), [1, 2, 3, 4]);
      assert.equal(forward.more, true);
      const next = await bus.history('big', { since: 4, limit: 100, maxBytes: 1_000_000 });
      assert.deepEqual(seqs(next), [5, 6, 7, 8]);
      const newest = await bus.history('big', { limit: 100, maxBytes: 1_000_000 });
      assert.deepEqual(seqs(newest), [27, 28, 29, 30]);
      // One message over the whole budget still comes: paging always progresses.
      const one = await bus.history('big', { since: 10, limit: 100, maxBytes: 1000 });
      assert.deepEqual(seqs(one), [11]);
      assert.equal(one.more, true);
      // A count limit below the budget: the count decides, more says what is left.
      const counted = await bus.history('big', { since: 28, limit: 1, maxBytes: 10_000_000 });
      assert.deepEqual(seqs(counted), [29]);
      assert.equal(counted.more, true);
      const last = await bus.history('big', { since: 28, limit: 5, maxBytes: 10_000_000 });
      assert.deepEqual(seqs(last), [29, 30]);
      assert.equal(last.more, false);
    } finally {
      // Both of its connections (the command one and the egress reader), or the process stays.
      await bus.stop();
    }
  });

  test(`one connection has at most ${MAX_BULK_IN_FLIGHT} history requests running; the rest wait, and every reply comes in order`, async (t) => {
    const bus = newBus('gw-hist-2');
    let running = 0;
    let most = 0;
    const history = bus.history.bind(bus);
    // The real bus, observed: how many of its history reads run at once.
    bus.history = async (room: string, q: HistoryQuery) => {
      running++;
      most = Math.max(most, running);
      try {
        return await history(room, q);
      } finally {
        running--;
      }
    };
    await waitFor(() => bus.client.status === 'ready', 5000, 'redis connected');
    const srv = await startServer({ historySize: 100 }, { bus });
    t.after(() => srv.close());
    await fillHistory(bus, 'lobby', 20, 20_000);
    const c = await helloClient(srv.port, 'ada');
    t.after(() => c.destroy());
    await c.join('lobby');
    const n = 40;
    // One write: every request is in the server's hands at once.
    c.writeRaw(Array.from({ length: n }, (_, i) => JSON.stringify({ type: 'history', room: 'lobby', since: 0, id: i + 1 }) + '\n').join(''));
    for (let i = 1; i <= n; i++) {
      const reply = await c.next((m) => m.type === 'history' || m.type === 'error', 10_000, `reply ${i}`);
      assert.equal(reply.type, 'history', JSON.stringify(reply).slice(0, 200));
      assert.equal(reply.id, i);
      assert.equal((reply.messages as unknown[]).length, 20);
    }
    assert.ok(most <= MAX_BULK_IN_FLIGHT, `${most} history reads ran at once`);
    assert.ok(most > 1, 'history reads still run concurrently up to the bound');
    // The connection is read again afterwards.
    assert.equal((await c.request({ type: 'ping' }, 3000)).type, 'pong');
  });
});
