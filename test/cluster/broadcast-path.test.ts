/**
 * The broadcast worker's data path against a real redis-server, in process (docs/cluster.md, "What
 * each role does"): what one batch writes to each gateway's egress stream and what it leaves
 * pending. The gateways are stand-ins that register the way a gateway does (routing set and
 * heartbeat) and read their egress streams with the wire module, so each guarantee the cheaper
 * hops must keep is checked at the level of stream entries: one entry per gateway per flush, the
 * kind each gateway reads, per-room order, seqs and bytes kept on a redelivery, acknowledgement
 * only after the egress writes, the acknowledgement riding on the next read, and stale history
 * dropped when a room's sequence starts again.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { GROUP, Keys } from '../../services/bus/keys';
import { gatewayHeartbeat, readEgress, type EgressHandler } from '../../services/bus/wire';
import { BroadcastWorker } from '../../services/broadcast/worker';
import { isReady } from '../../services/bus/redis-conn';
import { silentLogger } from '../../services/telemetry/log';
import { RedisProcess, stopAllRedis } from '../helpers/redis';
import { waitFor } from '../helpers/wait';

let redis: RedisProcess;
let r: Redis;
const workers: BroadcastWorker[] = [];

before(async () => {
  redis = await RedisProcess.start();
  r = new Redis(redis.url, { lazyConnect: false });
});

after(async () => {
  await Promise.all(workers.map((w) => w.stop()));
  r.disconnect();
  await stopAllRedis();
});

async function worker(id: string, shards = 1): Promise<BroadcastWorker> {
  const w = new BroadcastWorker({ url: redis.url, cluster: false, workerId: id, shards, leaseMs: 1000, batch: 512, egressMaxLen: 10_000, historySize: 100, log: silentLogger });
  workers.push(w);
  await waitFor(() => isReady(w.cmd) && isReady(w.egressConn), 5000, 'the worker connected');
  return w;
}

/** A gateway stand-in: in the routing sets of `rooms`, with a heartbeat announcing `wire` (or none). */
async function gateway(gw: string, rooms: string[], wire: 1 | 2): Promise<void> {
  const value = wire === 2 ? gatewayHeartbeat(gw, Date.now()) : JSON.stringify({ id: gw, at: Date.now() });
  await r.set(Keys.gateway(gw), value, 'PX', 60_000);
  for (const room of rooms) await r.sadd(Keys.room(room), gw);
}

interface Got {
  entry: string;
  kind: string;
  room: string;
  mid: string;
  json: string;
}

async function egressOf(gw: string): Promise<Got[]> {
  const entries = (await r.xrangeBuffer(Keys.egress(gw), '-', '+')) as [Buffer, Buffer[]][];
  const out: Got[] = [];
  for (const [id, fields] of entries) {
    const h: EgressHandler = {
      room: (room, msg, _ts, mid) => out.push({ entry: id.toString(), kind: fields[1].toString(), room, mid, json: msg.json }),
      direct: () => {},
    };
    readEgress(fields, h);
  }
  return out;
}

/** `n` messages to `room` on ingress shard `shard`, appended atomically (one batch for a reader). */
async function publish(shard: number, room: string, n: number): Promise<string[]> {
  const m = r.multi();
  for (let i = 0; i < n; i++) m.xadd(Keys.ingress(shard), '*', 'r', room, 'f', 'u', 'd', JSON.stringify({ i }), 't', String(Date.now()));
  return ((await m.exec()) ?? []).map(([err, id]) => {
    if (err) throw err;
    return id as string;
  });
}

const seqOf = (json: string) => (JSON.parse(json) as { seq: number }).seq;
const dataOf = (json: string) => (JSON.parse(json) as { data: { i: number } }).data.i;

describe('broadcast data path', () => {
  test('one batch over two rooms: one entry per gateway, kind f or b as the gateway reads, rooms in order, seqs from 1', async () => {
    await gateway('gw-new', ['a1', 'b1'], 2);
    await gateway('gw-old', ['a1'], 1);
    const w = await worker('w-batch');
    await r.xgroup('CREATE', Keys.ingress(0), GROUP, '0', 'MKSTREAM');
    await publish(0, 'a1', 3);
    await publish(0, 'b1', 2);
    const entries = (await r.xreadgroup('GROUP', GROUP, 'w-batch', 'STREAMS', Keys.ingress(0), '>')) as [string, [string, string[]][]][];
    await w.process(Keys.ingress(0), entries[0][1]);
    const fresh = await egressOf('gw-new');
    assert.equal(new Set(fresh.map((g) => g.entry)).size, 1, 'one egress entry for the whole batch');
    assert.deepEqual(fresh.map((g) => g.kind), ['f', 'f', 'f', 'f', 'f']);
    assert.deepEqual(fresh.filter((g) => g.room === 'a1').map((g) => [seqOf(g.json), dataOf(g.json)]), [[1, 0], [2, 1], [3, 2]]);
    assert.deepEqual(fresh.filter((g) => g.room === 'b1').map((g) => [seqOf(g.json), dataOf(g.json)]), [[1, 0], [2, 1]]);
    const old = await egressOf('gw-old');
    assert.deepEqual(old.map((g) => g.kind), ['b', 'b', 'b'], 'a gateway that does not announce version 2 gets the older kind');
    assert.deepEqual(old.map((g) => g.json), fresh.filter((g) => g.room === 'a1').map((g) => g.json), 'the same bytes in either kind');
    // History holds exactly what was routed.
    const hist = (await r.xrange(Keys.history('a1'), '-', '+')).map(([id, f]) => [id, f[3]]);
    assert.deepEqual(hist, fresh.filter((g) => g.room === 'a1').map((g) => [`${seqOf(g.json)}-1`, g.json]));

    // The same entries again (the worker died before acknowledging): original seqs and bytes,
    // the same message ids, nothing new in history.
    await w.process(Keys.ingress(0), entries[0][1]);
    const again = (await egressOf('gw-new')).slice(fresh.length);
    assert.deepEqual(again.map((g) => [g.mid, g.json]), fresh.map((g) => [g.mid, g.json]));
    assert.equal(await r.xlen(Keys.history('a1')), 3);
    assert.equal(await r.hget(Keys.seq('a1'), 'seq'), '3');
  });

  test('a batch that starts with redelivered entries and goes on with new ones: old seqs for the first, the next seqs for the rest', async () => {
    await gateway('gw-mix', ['m1'], 2);
    const w = await worker('w-mix');
    await r.xgroup('CREATE', Keys.ingress(0), GROUP, '$', 'MKSTREAM').catch(() => undefined);
    const ids = await publish(0, 'm1', 4);
    const entry = (id: string, i: number): [string, string[]] => [id, ['r', 'm1', 'f', 'u', 'd', JSON.stringify({ i }), 't', '1']];
    // A worker applied the first two and died; its successor reclaims them with two it never applied.
    await w.process(Keys.ingress(0), [entry(ids[0], 0), entry(ids[1], 1)]);
    await w.process(Keys.ingress(0), ids.map((id, i) => entry(id, i)));
    const got = await egressOf('gw-mix');
    assert.deepEqual(got.map((g) => [seqOf(g.json), dataOf(g.json)]), [[1, 0], [2, 1], [1, 0], [2, 1], [3, 2], [4, 3]]);
    assert.deepEqual(got.slice(2, 4).map((g) => g.json), got.slice(0, 2).map((g) => g.json), 'redelivered: the same bytes');
    assert.equal(await r.hget(Keys.seq('m1'), 'seq'), '4');
    assert.equal(await r.hget(Keys.seq('m1'), 'last'), ids[3]);
    assert.deepEqual((await r.xrange(Keys.history('m1'), '-', '+')).map(([id]) => id), ['1-1', '2-1', '3-1', '4-1']);
  });

  test('a room whose sequence starts again drops the history left without it', async () => {
    await gateway('gw-h', ['h1'], 2);
    // History of a sequence whose position is gone (e.g. evicted): ids up to 50.
    for (let s = 1; s <= 50; s++) await r.xadd(Keys.history('h1'), `${s}-1`, 'i', `0-${s}`, 'm', '{}');
    const w = await worker('w-hist');
    await r.xgroup('CREATE', Keys.ingress(0), GROUP, '$', 'MKSTREAM').catch(() => undefined);
    const ids = await publish(0, 'h1', 1);
    await w.process(Keys.ingress(0), [[ids[0], ['r', 'h1', 'f', 'u', 'd', '{"i":0}', 't', '1']]]);
    const hist = await r.xrange(Keys.history('h1'), '-', '+');
    assert.deepEqual(hist.map(([id]) => id), ['1-1']);
    assert.equal(seqOf((await egressOf('gw-h'))[0].json), 1);
  });

  test('owning the shard: routed batches are acknowledged with the next read, a failed egress write is not acknowledged and is routed after the fault', async () => {
    const shards = 1;
    const key = Keys.ingress(0);
    await r.del(key);
    await gateway('gw-own', ['o1'], 2);
    const w = await worker('w-own', shards);
    w.start();
    await waitFor(() => w.ownedShards.length === 1, 10_000, 'the worker to own shard 0');
    await publish(0, 'o1', 5);
    await waitFor(async () => (await egressOf('gw-own')).length === 5, 10_000, 'five messages routed');
    // The ack went out with the next XREADGROUP, which is now blocked: nothing is pending.
    await waitFor(async () => Number(((await r.xpending(key, GROUP)) as [number])[0]) === 0, 5000, 'the batch acknowledged');

    // The gateway's egress stream cannot be written (wrong type): the batch must stay pending.
    await r.del(Keys.egress('gw-own'));
    await r.set(Keys.egress('gw-own'), 'not a stream');
    await publish(0, 'o1', 2);
    await waitFor(() => w.counters.failures > 0, 10_000, 'the egress write to fail');
    assert.equal(Number(((await r.xpending(key, GROUP)) as [number])[0]), 2, 'a batch whose egress failed is not acknowledged');
    // Fixed: the pending entries are routed (reclaimed), in order, with the next seqs.
    await r.del(Keys.egress('gw-own'));
    const got = await waitFor(async () => {
      const g = await egressOf('gw-own');
      return g.length >= 2 ? g : null;
    }, 10_000, 'the pending batch routed after the fault');
    assert.deepEqual(got.slice(0, 2).map((g) => [seqOf(g.json), dataOf(g.json)]), [[6, 0], [7, 1]]);
    await waitFor(async () => Number(((await r.xpending(key, GROUP)) as [number])[0]) === 0, 5000, 'then acknowledged');
  });
});
