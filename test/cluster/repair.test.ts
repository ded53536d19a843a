/**
 * The gateway's membership repair (services/bus/redis.ts, resync) against joins and janitors that
 * run while it waits for Redis, with a real redis-server. The bus is the real one; the hub is a
 * plain sink the test changes at chosen moments (the moment a repair's reply is on its way),
 * which is what makes the interleavings reproducible.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { BusSink } from '../../services/bus';
import { Keys } from '../../services/bus/keys';
import { RedisBus, removeGateway } from '../../services/bus/redis';
import { silentLogger } from '../../services/telemetry/log';
import { redisCli, RedisProcess, stopAllRedis } from '../helpers/redis';
import { waitFor } from '../helpers/wait';

let redis: RedisProcess;

before(async () => {
  redis = await RedisProcess.start();
});

after(async () => {
  await stopAllRedis();
});

/** The hub, as the bus sees it: rooms with their users, and users. */
function hubSink(rooms: Map<string, Set<string>>, users: Set<string>): BusSink {
  return {
    registrations: () => ({ rooms: [...rooms].map(([r, m]) => [r, [...m]] as const), users: [...users] }),
    usersIn: (room: string) => [...(rooms.get(room) ?? [])],
    deliverRoom: () => 1,
    deliverUser: () => 0,
    pushRoom: () => 1,
  } as unknown as BusSink;
}

/** The bus's private parts this test drives: one heartbeat, and the repair's state. */
interface BusInternals {
  beat(): Promise<void>;
  stale: boolean;
  staleRooms: Set<string>;
  resyncing: Promise<void> | null;
}

async function startBus(gw: string, sink: BusSink): Promise<{ bus: RedisBus; internals: BusInternals }> {
  // A heartbeat far away: the test runs each beat itself.
  const bus = new RedisBus({ url: redis.url, cluster: false, gatewayId: gw, shards: 4, ingressMaxLen: 10_000, heartbeatMs: 600_000, timeoutMs: 2000, log: silentLogger });
  await bus.start(sink);
  await waitFor(() => bus.ready, 5000, 'bus ready');
  return { bus, internals: bus as unknown as BusInternals };
}

/** Run `during` once, when the first SMEMBERS reply of the bus has come and before the bus sees it. */
function onFirstSmembers(bus: RedisBus, during: () => Promise<void>): () => void {
  const client = bus.client as unknown as { smembers(...a: unknown[]): Promise<string[]> };
  const orig = client.smembers.bind(client);
  let done = false;
  client.smembers = async (...a: unknown[]) => {
    const v = await orig(...a);
    if (!done) {
      done = true;
      await during();
    }
    return v;
  };
  return () => (client.smembers = orig);
}

const port = () => redis.port;

describe('membership repair', () => {
  test('a member who joins while the repair waits for Redis stays registered (its room, presence and user)', async () => {
    const rooms = new Map<string, Set<string>>([['R', new Set(['u1'])]]);
    const users = new Set(['u1']);
    const { bus, internals } = await startBus('gw-rep-1', hubSink(rooms, users));
    try {
      await bus.join('R', 'u1');
      await bus.userOnline('u1');
      // u1 left R while the write failed (as after a Redis blip): the repair is due.
      rooms.delete('R');
      users.delete('u1');
      internals.stale = true;
      internals.staleRooms.add('R');
      // While the repair's SMEMBERS reply is on its way, u2 joins R and comes online.
      const restore = onFirstSmembers(bus, async () => {
        rooms.set('R', new Set(['u2']));
        users.add('u2');
        await Promise.all([bus.join('R', 'u2'), bus.userOnline('u2')]);
      });
      await internals.beat();
      restore();
      assert.equal(redisCli(port(), 'SISMEMBER', Keys.room('R'), 'gw-rep-1'), '1', 'the room still routes to this gateway');
      assert.equal(redisCli(port(), 'HEXISTS', Keys.presence('R'), 'gw-rep-1|u2'), '1', 'u2 is in presence');
      assert.equal(redisCli(port(), 'HEXISTS', Keys.presence('R'), 'gw-rep-1|u1'), '0', 'u1, who left, is not');
      assert.equal(redisCli(port(), 'SISMEMBER', Keys.user('u2'), 'gw-rep-1'), '1', 'u2 is reachable by direct');
      assert.equal(redisCli(port(), 'SISMEMBER', Keys.user('u1'), 'gw-rep-1'), '0');
    } finally {
      await bus.stop();
    }
  });

  test('a registration found gone while a repair runs gets a whole pass of its own', async () => {
    const rooms = new Map<string, Set<string>>([['R2', new Set(['u1'])]]);
    const users = new Set(['u1']);
    const { bus, internals } = await startBus('gw-rep-2', hubSink(rooms, users));
    try {
      await bus.join('R2', 'u1');
      await bus.userOnline('u1');
      internals.stale = true;
      internals.staleRooms.add('OTHER');
      // The repair's re-adds are done; the janitor now removes the gateway as dead, and a
      // heartbeat finds its registration gone while the repair still runs.
      let nested: Promise<void> | null = null;
      const restore = onFirstSmembers(bus, async () => {
        await removeGateway(bus.client, 'gw-rep-2');
        nested = internals.beat();
        await waitFor(() => internals.resyncing !== null, 1000, 'repair running');
      });
      await internals.beat();
      await nested;
      restore();
      await waitFor(() => internals.resyncing === null && redisCli(port(), 'SISMEMBER', Keys.room('R2'), 'gw-rep-2') === '1', 5000, 'registered again');
      assert.equal(redisCli(port(), 'SISMEMBER', Keys.user('u1'), 'gw-rep-2'), '1');
      assert.equal(redisCli(port(), 'HEXISTS', Keys.presence('R2'), 'gw-rep-2|u1'), '1');
    } finally {
      await bus.stop();
    }
  });

  test('rooms the repair finds registered but not held: out of routing, and their positions go only where nothing was said and no gateway is left', async () => {
    const { bus, internals } = await startBus('gw-rep-3', hubSink(new Map(), new Set()));
    try {
      // Registrations Redis holds for rooms the hub does not (a leave whose writes failed).
      for (const room of ['joined-only', 'said', 'shared']) {
        redisCli(port(), 'SADD', Keys.room(room), 'gw-rep-3');
        redisCli(port(), 'SADD', Keys.gatewayRooms('gw-rep-3'), room);
        redisCli(port(), 'HSET', Keys.seq(room), 'epoch', `e-${room}`);
      }
      redisCli(port(), 'HSET', Keys.seq('said'), 'seq', '5');
      redisCli(port(), 'SADD', Keys.room('shared'), 'gw-other');
      internals.stale = true;
      await internals.beat();
      await waitFor(() => internals.resyncing === null, 5000, 'repair done');
      for (const room of ['joined-only', 'said', 'shared']) {
        assert.equal(redisCli(port(), 'SISMEMBER', Keys.room(room), 'gw-rep-3'), '0', `${room}: out of routing`);
        assert.equal(redisCli(port(), 'SISMEMBER', Keys.gatewayRooms('gw-rep-3'), room), '0', `${room}: out of the gateway's rooms`);
      }
      assert.equal(redisCli(port(), 'EXISTS', Keys.seq('joined-only')), '0', 'a position only a join made goes with the last gateway');
      assert.equal(redisCli(port(), 'HGET', Keys.seq('said'), 'seq'), '5', 'a room where something was said keeps its position');
      assert.equal(redisCli(port(), 'HGET', Keys.seq('shared'), 'epoch'), 'e-shared', 'a room another gateway routes keeps its position');
    } finally {
      await bus.stop();
    }
  });
});
