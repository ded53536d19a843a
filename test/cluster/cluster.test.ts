/**
 * Cluster mode end to end: real redis-server, real gateway and broadcast processes, real TCP
 * clients. Each fault test asserts that every message accepted with `ok` reached every member,
 * in order.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { SwitchboardClient, ClientError } from '../../services/client';
import { spawnCli } from '../helpers/cli';
import { freePort } from '../helpers/net';
import { RedisProcess, redisCli } from '../helpers/redis';
import { waitFor } from '../helpers/wait';
import { httpGet, PROBE, spawnRole, stopAll, type RoleProcess } from './harness';
import { Keys, shardOf } from '../../services/bus/keys';
import { ChatScenario } from './scenario';
import { helloClient } from '../helpers/wire';
import { RawClient, rssOf, RSS_BUDGET_MIB, Witness, WITNESS_P99_MS } from '../attack/harness';

const FAST = { HEARTBEAT_MS: '300', LEASE_MS: '1000', STREAM_SHARDS: '4', LOG_LEVEL: 'info' };

after(stopAll);

async function cluster(redisUrl: string, gateways = 2, broadcasts = 1, extra: Record<string, string> = {}) {
  const env = { REDIS_URL: redisUrl, ...FAST, ...extra };
  const gws: RoleProcess[] = [];
  for (let i = 0; i < gateways; i++) gws.push(await spawnRole('gateway', env));
  const bcs: RoleProcess[] = [];
  for (let i = 0; i < broadcasts; i++) bcs.push(await spawnRole('broadcast', env));
  for (const p of [...gws, ...bcs]) {
    await waitFor(async () => (await httpGet(p.adminPort, '/readyz')).status === 200, 15_000, 'ready', PROBE).catch((err: Error) => {
      throw new Error(`${err.message}\n${p.logs.slice(-20).join('\n')}`);
    });
  }
  return { gws, bcs, env };
}

const addr = (g: RoleProcess) => ({ host: '127.0.0.1', port: g.port });

describe('cluster mode', () => {
  // Found from outside: in cluster mode every join and leave is a Redis round trip, and nothing
  // bounded the requests a connection had running: eight clients pipelining join/leave pairs at
  // their rate limit made the gateway queue them faster than Redis answered, grow 350 MiB, and
  // keep every other client waiting more than a second. MAX_REQUESTS_IN_FLIGHT holds their input.
  test('join/leave pairs pipelined at the rate limit: the requests running are bounded, others served, memory within budget', async (t) => {
    const redis = await RedisProcess.start();
    const { gws } = await cluster(redis.url, 2, 1);
    const witness = await Witness.start(gws[0].port, t);
    await witness.served(5);
    const before = rssOf(gws[0].proc.pid!);
    const N = 6;
    const attackers = await Promise.all(Array.from({ length: N }, (_, i) => RawClient.open(gws[i % 2].port)));
    for (const [i, a] of attackers.entries()) await a.hello(`churn-${i}`);
    let peak = before;
    const sampler = setInterval(() => (peak = Math.max(peak, rssOf(gws[0].proc.pid!))), 100);
    const until = Date.now() + 4000;
    let room = 0;
    let sent = 0;
    await Promise.all(
      attackers.map(async (a, i) => {
        let id = 0;
        while (Date.now() < until && !a.closed) {
          let chunk = '';
          for (let k = 0; k < 50; k++, room++) chunk += `{"type":"join_room","room":"r${i}-${room}","id":${id++}}\n{"type":"leave_room","room":"r${i}-${room}","id":${id++}}\n`;
          sent += 100;
          if (!a.socket.write(chunk)) await new Promise((r) => a.socket.once('drain', r));
          await new Promise((r) => setTimeout(r, 40));
        }
      }),
    );
    clearInterval(sampler);
    assert.ok(sent > 20_000, `${sent} requests sent`);
    assert.ok(attackers.every((a) => !a.closed), 'the clients are slowed, not disconnected');
    const w = await witness.stop();
    assert.equal(w.closed, false);
    assert.ok(w.p99 < WITNESS_P99_MS, `witness ping p99 ${w.p99.toFixed(1)} ms (p50 ${w.p50.toFixed(1)}, max ${w.max.toFixed(1)}, ${w.count} pings)`);
    assert.ok(peak - before < RSS_BUDGET_MIB * 1048576, `gateway RSS grew ${((peak - before) / 1048576).toFixed(0)} MiB`);
    for (const a of attackers) a.destroy();
    for (const g of gws) await g.kill('SIGTERM');
    await redis.stop();
  });

  // Found from outside: egress streams were trimmed only by count (EGRESS_MAXLEN, 100,000
  // entries) when written, so delivered messages stayed: 512 direct messages of 512 KiB kept Redis
  // at 320 MiB after every client had gone. A gateway now trims what it has read.
  test('a gateway trims what it has read from its egress stream: large direct messages do not stay in Redis', async () => {
    const redis = await RedisProcess.start();
    const { gws } = await cluster(redis.url, 2, 1);
    const sender = await helloClient(gws[0].port, 'sender');
    const reader = await helloClient(gws[1].port, 'reader');
    const big = 'x'.repeat(256 * 1024);
    const N = 40;
    for (let i = 0; i < N; i++) assert.equal((await sender.request({ type: 'direct', to: 'reader', data: { i, big } }, 10_000)).type, 'ok');
    await waitFor(() => reader.all.filter((m) => m.type === 'direct').length === N, 15_000, 'every direct message delivered');
    // Everything it was sent has been read: the stream keeps at most the node of the last entry.
    const egress = redis.cli('keys', 'sb:out:*').split('\n').filter((k) => k !== '');
    assert.ok(egress.length >= 1, 'the reader\'s gateway has an egress stream');
    await waitFor(() => egress.every((k) => Number(redis.cli('xlen', k)) <= 1), 5000, 'the read entries to be trimmed', { intervalMs: 100 });
    const used = Number(/used_memory:(\d+)/.exec(redis.cli('info', 'memory'))?.[1]);
    assert.ok(used < 8 * 1048576, `Redis holds ${(used / 1048576).toFixed(1)} MiB after ${N} x 256 KiB were delivered`);
    sender.destroy();
    reader.destroy();
    for (const g of gws) await g.kill('SIGTERM');
    await redis.stop();
  });

  test('chat, presence, direct and history across two gateways', async () => {
    const redis = await RedisProcess.start();
    const { gws } = await cluster(redis.url);
    const s = new ChatScenario('lobby');
    const a = await s.addMember('alice', [addr(gws[0])]);
    const b = await s.addMember('bob', [addr(gws[1])]);
    await Promise.all([s.publish(a, 30), s.publish(b, 30)]);
    assert.equal(s.accepted.size, 60);
    await s.verify();
    assert.deepEqual((await a.presence('lobby')).sort(), ['alice', 'bob']);
    const gotDirect = new Promise((r) => b.once('direct', r));
    await a.direct('bob', { hi: 1 });
    assert.deepEqual(((await gotDirect) as { data: unknown }).data, { hi: 1 });
    await assert.rejects(a.direct('nobody', 1), (e: ClientError) => e.code === 'user_offline');
    const hist = await b.history('lobby', 50);
    assert.deepEqual(hist.map((m) => m.seq), Array.from({ length: 10 }, (_, i) => 51 + i));
    await s.close();
    for (const g of gws) await g.kill('SIGTERM');
    assert.equal(redis.cli('scard', 'sb:room:{lobby}'), '0', 'gateways leave routing on shutdown');
    await redis.stop();
  });

  // Regression: gateways deduplicated on the bare ingress entry id, which is only unique within
  // one shard's stream, so messages of different shards accepted in the same millisecond were
  // dropped as duplicates.
  test('messages of different shards accepted in the same millisecond are all delivered', async () => {
    const redis = await RedisProcess.start();
    const { gws } = await cluster(redis.url, 1, 1);
    // One room per shard (FAST has 4 shards).
    const rooms = new Map<number, string>();
    for (let i = 0; rooms.size < 4; i++) {
      const room = `same-ms-${i}`;
      const shard = shardOf(room, 4);
      if (!rooms.has(shard)) rooms.set(shard, room);
    }
    const scenarios = [...rooms.values()].map((room) => new ChatScenario(room));
    const members: SwitchboardClient[][] = [];
    for (const [i, s] of scenarios.entries()) {
      const m: SwitchboardClient[] = [];
      for (let j = 0; j < 4; j++) m.push(await s.addMember(`p${i}-${j}`, [addr(gws[0])]));
      members.push(m);
    }
    // Sixteen publishers in four shards at once: same-millisecond ids in different streams.
    await Promise.all(scenarios.map((s, i) => Promise.all(members[i].map((c) => s.publish(c, 50)))));
    for (const s of scenarios) {
      await s.verify();
      assert.equal(s.errors.length, 0, `errors: ${s.errors.join(',')}`);
    }
    await Promise.all(scenarios.map((s) => s.close()));
    await redis.stop();
  });

  test('kill -9 of a broadcast worker under load: another takes its shards, nothing accepted is lost', async () => {
    const redis = await RedisProcess.start();
    const { gws, bcs } = await cluster(redis.url, 2, 2);
    const s = new ChatScenario('fault-bc');
    const members = [];
    for (let i = 0; i < 6; i++) members.push(await s.addMember(`u${i}`, [addr(gws[i % 2])]));
    const load = Promise.all(members.map((c) => s.publish(c, 60, 5)));
    await waitFor(() => s.accepted.size > 60, 10_000, 'some traffic', PROBE);
    await bcs[0].kill('SIGKILL');
    await load;
    await s.verify(20_000);
    assert.equal(s.errors.length, 0, `errors: ${s.errors.join(',')}`);
    await s.close();
    await redis.stop();
  });

  test('kill -9 of a gateway: clients move to the other one and recover what they missed', async () => {
    const redis = await RedisProcess.start();
    const { gws } = await cluster(redis.url, 2, 1);
    const s = new ChatScenario('fault-gw');
    const movers = [];
    for (let i = 0; i < 3; i++) movers.push(await s.addMember(`m${i}`, [addr(gws[0]), addr(gws[1])]));
    const stayer = await s.addMember('stay', [addr(gws[1])]);
    await s.publish(stayer, 10);
    const reconnected = Promise.all(movers.map((c) => new Promise((r) => c.once('connected', r))));
    await gws[0].kill('SIGKILL');
    await s.publish(stayer, 20, 2); // published while the movers are away or reconnecting
    await reconnected;
    await Promise.all(movers.map((c) => s.publish(c, 10)));
    await s.verify(20_000);
    const dead = gws[0].logs.map((l) => /"server":"([^"]+)"/.exec(l)?.[1]).find(Boolean)!;
    await waitFor(() => !redis.cli('smembers', 'sb:room:{fault-gw}').includes(dead), 10_000, 'the dead gateway to leave routing', PROBE);
    await s.close();
    await redis.stop();
  });

  test('scale-down drain: SIGTERM of a gateway under load tells clients to reconnect elsewhere, nothing accepted is lost', async () => {
    // What happens when the operator lowers the gateway replicas: the pod gets SIGTERM (after its
    // preStop sleep) and drains through the shutdown path.
    const redis = await RedisProcess.start();
    const { gws } = await cluster(redis.url, 2, 1, { SHUTDOWN_DRAIN_MS: '3000' });
    const s = new ChatScenario('drain-gw');
    const movers = [];
    for (let i = 0; i < 3; i++) movers.push(await s.addMember(`d${i}`, [addr(gws[0]), addr(gws[1])]));
    const stayer = await s.addMember('stay', [addr(gws[1])]);
    const told = Promise.all(movers.map((c) => new Promise((r) => c.once('reconnect', r))));
    const load = Promise.all([...movers, stayer].map((c) => s.publish(c, 40, 5)));
    await waitFor(() => s.accepted.size > 30, 10_000, 'some traffic', PROBE);
    const exited = new Promise<number | null>((r) => gws[0].proc.once('exit', (code) => r(code)));
    gws[0].proc.kill('SIGTERM');
    const reasons = (await told) as Array<{ reason: string }>;
    assert.ok(reasons.every((m) => m.reason === 'shutdown'), JSON.stringify(reasons));
    assert.equal(await exited, 0, 'the draining gateway exits cleanly');
    await load;
    await s.verify(20_000);
    // A send in flight when the socket closed is refused (the client knows it was not accepted);
    // none is an internal error.
    assert.ok(!s.errors.includes('internal'), `errors: ${s.errors.join(',')}`);
    await s.close();
    await redis.stop();
  });

  test('redis restart mid-run: unavailable during the outage, not ready, then everything resumes', async () => {
    const redis = await RedisProcess.start();
    const { gws, bcs } = await cluster(redis.url, 2, 1);
    const s = new ChatScenario('fault-redis');
    const a = await s.addMember('a', [addr(gws[0])]);
    const b = await s.addMember('b', [addr(gws[1])]);
    const leaver = new SwitchboardClient({ servers: [addr(gws[0])], user: 'leaver' });
    await leaver.connect();
    await leaver.join('fault-redis');
    const leaverGot: unknown[] = [];
    leaver.on('message', (m: unknown) => leaverGot.push(m));
    await s.publish(a, 10);
    await redis.stop();
    await waitFor(async () => (await httpGet(gws[0].adminPort, '/readyz')).status === 503, 10_000, 'gateway not ready', PROBE);
    await waitFor(async () => (await httpGet(bcs[0].adminPort, '/readyz')).status === 503, 10_000, 'broadcast not ready', PROBE);
    await assert.rejects(a.send('fault-redis', 'during-outage'), (e: ClientError) => e.code === 'unavailable');
    // Leaving needs no Redis: the member is out at once (the repair records it later).
    await leaver.leave('fault-redis');
    const heard = leaverGot.length;
    await redis.start();
    await waitFor(async () => (await httpGet(gws[0].adminPort, '/readyz')).status === 200, 15_000, 'gateway ready again', PROBE);
    await waitFor(async () => (await httpGet(bcs[0].adminPort, '/readyz')).status === 200, 15_000, 'broadcast ready again', PROBE);
    await Promise.all([s.publish(a, 10), s.publish(b, 10)]);
    await s.verify(20_000);
    assert.equal(leaverGot.length, heard, 'nothing reaches a member that left');
    await waitFor(async () => (await b.presence('fault-redis')).sort().join() === 'a,b', 10_000, 'presence without the leaver', 100);
    await leaver.close();
    await s.close();
    await redis.stop();
  });

  test('redis unreachable at start: a clear log line, not ready, then ready once redis appears', async () => {
    const port = await freePort();
    const gw = await spawnRole('gateway', { REDIS_URL: `redis://127.0.0.1:${port}`, ...FAST });
    await waitFor(() => gw.logs.some((l) => l.includes('redis unreachable, retrying')), 10_000, 'a log line about redis', PROBE);
    assert.equal((await httpGet(gw.adminPort, '/readyz')).status, 503);
    const c = new SwitchboardClient({ servers: [addr(gw)], user: 'early', reconnect: false });
    await assert.rejects(c.connect(), (e: ClientError) => e.code === 'unavailable');
    const redis = await new RedisProcess(port).start();
    await waitFor(async () => (await httpGet(gw.adminPort, '/readyz')).status === 200, 15_000, 'gateway ready', PROBE);
    const d = new SwitchboardClient({ servers: [addr(gw)], user: 'late' });
    await d.connect();
    await d.close();
    await c.close();
    await gw.kill('SIGTERM');
    await redis.stop();
  });

  test('HISTORY_TTL_SEC: history expires after the last message; a room with members keeps its epoch; a room left expires', async () => {
    const redis = await RedisProcess.start();
    const { gws, bcs } = await cluster(redis.url, 1, 1, { HISTORY_TTL_SEC: '2' });
    const c = new SwitchboardClient({ servers: [addr(gws[0])], user: 'ttl' });
    const changed: unknown[] = [];
    c.on('epoch_changed', (e) => changed.push(e));
    await c.connect();
    try {
      const ttlOf = (key: string) => Number(redis.cli('ttl', key));
      const exists = (key: string) => redis.cli('exists', key) === '1';
      // A join creates the room's position (its epoch) and, with it, its expiry.
      await c.join('quiet');
      const quietTtl = ttlOf(Keys.seq('quiet'));
      assert.ok(quietTtl > 0 && quietTtl <= 2, `a joined room's position expires (ttl ${quietTtl})`);
      // Messages renew both keys' expiry.
      await c.join('busy');
      for (let i = 0; i < 3; i++) await c.send('busy', i);
      await waitFor(async () => (await c.history('busy')).length === 3, 10_000, 'three messages in history', 50);
      const before = await c.historyPage('busy');
      for (const key of [Keys.seq('busy'), Keys.history('busy')]) {
        const ttl = ttlOf(key);
        assert.ok(ttl > 0 && ttl <= 2, `${key} expires (ttl ${ttl})`);
      }
      // The history goes 2 s after the last message, members or not. The positions were given the
      // same expiry (the same script call for 'busy', the earlier join for 'quiet'), but the gateway
      // renews the positions of the rooms it holds: the member's rooms keep their epoch.
      await waitFor(() => !exists(Keys.history('busy')), 10_000, "busy's history expired", 100);
      assert.ok(exists(Keys.seq('busy')) && exists(Keys.seq('quiet')), 'the positions of rooms with a member are kept');
      await c.send('busy', 'again');
      await waitFor(async () => (await c.history('busy')).length === 1, 10_000, 'the new message in history', 50);
      const kept = await c.historyPage('busy');
      assert.deepEqual(kept.messages.map((m) => m.seq), [4], 'the sequence goes on');
      assert.equal(kept.epoch, before.epoch, 'in the same epoch');
      assert.deepEqual(changed, [], 'no epoch_changed for a room that only was quiet');
      // Once the member left, nothing of either room is left in Redis: 'quiet' (nothing said) at
      // once, 'busy' when its expiry comes...
      await c.leave('quiet');
      await c.leave('busy');
      const gone = (key: string) => !exists(key);
      await waitFor(() => [Keys.seq('quiet'), Keys.seq('busy'), Keys.history('busy')].every(gone), 10_000, 'the rooms expired', 100);
      // ...and the room starts again at 1 in a new epoch, which the history reply says.
      await c.join('busy');
      await c.send('busy', 'anew');
      await waitFor(async () => (await c.history('busy')).length === 1, 10_000, 'the new message in history', 50);
      const afterwards = await c.historyPage('busy');
      assert.deepEqual(afterwards.messages.map((m) => m.seq), [1]);
      assert.notEqual(afterwards.epoch, before.epoch);
    } finally {
      await c.close();
      for (const p of [...gws, ...bcs]) await p.kill('SIGTERM');
      await redis.stop();
    }
  });

  test('joining and leaving fresh room names leaves nothing in Redis; a room with messages or members keeps its position', async () => {
    const redis = await RedisProcess.start();
    const { gws, bcs } = await cluster(redis.url, 2, 1);
    const a = new SwitchboardClient({ servers: [addr(gws[0])], user: 'ada' });
    const b = new SwitchboardClient({ servers: [addr(gws[1])], user: 'bo' });
    await Promise.all([a.connect(), b.connect()]);
    const keysOf = (pattern: string) => redis.cli('--scan', '--pattern', pattern).split('\n').filter(Boolean);
    const exists = (key: string) => redis.cli('exists', key) === '1';
    // Churn: join then leave, and joins left by a closing connection.
    for (let i = 0; i < 40; i++) {
      await a.join(`churn-${i}`);
      await a.leave(`churn-${i}`);
    }
    const c = new SwitchboardClient({ servers: [addr(gws[1])], user: 'cy' });
    await c.connect();
    for (let i = 40; i < 60; i++) await c.join(`churn-${i}`);
    assert.ok(exists(Keys.seq('churn-59')), 'a joined room has its position while a member is in it');
    await c.close();
    await waitFor(() => keysOf('*churn-*').length === 0, 10_000, 'no key of a churned room left', 50);
    // A leave sent right behind its join: requests run concurrently, so the leave can remove the
    // routing entry before the join reads its position, which then must not create one.
    await Promise.all(Array.from({ length: 40 }, (_, i) => [a.request({ type: 'join_room', room: `race-${i}`, id: `j${i}` }), a.request({ type: 'leave_room', room: `race-${i}`, id: `l${i}` })]).flat());
    await waitFor(() => keysOf('*race-*').length === 0, 10_000, 'no key of a room left right behind its join', 50);
    // A room is kept while another gateway still has a member in it...
    await a.join('shared');
    const joinAt = async (cl: SwitchboardClient, room: string) => (await cl.request({ type: 'join_room', room })).epoch as string;
    const epoch = await joinAt(b, 'shared');
    await a.leave('shared');
    assert.ok(exists(Keys.seq('shared')), "the position stays while the other gateway's member is in the room");
    assert.equal(await joinAt(a, 'shared'), epoch, 'the same epoch for a member who comes back');
    await a.leave('shared');
    await b.leave('shared');
    await waitFor(() => !exists(Keys.seq('shared')), 10_000, 'the position gone once nobody is in the room', 50);
    // ...and a room where something was said keeps its position and history for those who come back.
    await a.join('said');
    await a.send('said', 'hello');
    await waitFor(async () => (await a.history('said')).length === 1, 10_000, 'the message in history', 50);
    await a.leave('said');
    await waitFor(() => redis.cli('scard', Keys.room('said')) === '0', 10_000, 'the gateway out of the routing set', 50);
    assert.ok(exists(Keys.seq('said')) && exists(Keys.history('said')), 'position and history kept');
    // A churned name is a fresh room again: a new epoch, from seq 1.
    await a.join('churn-0');
    await a.send('churn-0', 'back');
    await waitFor(async () => (await a.history('churn-0')).length === 1, 10_000, 'the message in history', 50);
    assert.deepEqual((await a.history('churn-0')).map((m) => m.seq), [1]);
    await Promise.all([a.close(), b.close()]);
    for (const p of [...gws, ...bcs]) await p.kill('SIGTERM');
    await redis.stop();
  });

  test('Redis Cluster with 3 masters: chat and flags across two gateways', async () => {
    const nodes = await Promise.all([0, 1, 2].map(() => RedisProcess.startClusterNode()));
    const ports = nodes.map((n) => n.port);
    redisCli(ports[0], '--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '0', '--cluster-yes');
    await waitFor(() => ports.every((p) => redisCli(p, 'cluster', 'info').includes('cluster_state:ok')), 15_000, 'cluster state ok', PROBE);
    const { gws, bcs } = await cluster(`redis://127.0.0.1:${ports[0]}`, 2, 1, { REDIS_CLUSTER: 'true' });
    const s = new ChatScenario('cluster-room');
    const a = await s.addMember('alice', [addr(gws[0])]);
    const b = await s.addMember('bob', [addr(gws[1])]);
    await Promise.all([s.publish(a, 20), s.publish(b, 20)]);
    await s.verify().catch((err: Error) => {
      throw new Error(`${err.message}\nbroadcast: ${bcs[0].logs.slice(-15).join('\n')}\ngateway: ${gws[0].logs.slice(-8).join('\n')}`);
    });
    assert.equal((await a.history('cluster-room')).length, 40);
    // Regression: the room name was the hash tag, so a name with braces split the room's keys
    // over slots and every script failed with CROSSSLOT. Such names now work like any other.
    for (const room of ['}x', '{a}b', '{}', 'a{b}c{d}']) {
      const braces = new ChatScenario(room);
      const x = await braces.addMember('xena', [addr(gws[0])]);
      const y = await braces.addMember('yuri', [addr(gws[1])]);
      await braces.publish(x, 3);
      await braces.verify();
      assert.deepEqual((await y.history(room, 0)).map((m) => m.seq), [1, 2, 3], `history of "${room}"`);
      await braces.close();
    }
    // Flags live in Redis Cluster too: `switchboard flags set` reaches both gateways.
    const set = spawnCli(['flags', 'set', 'history', '--enabled', 'false'], { REDIS_URL: `redis://127.0.0.1:${ports[0]}`, REDIS_CLUSTER: 'true' });
    assert.equal((await set.exited).code, 0, set.stderr.join('\n'));
    for (const c of [a, b]) {
      await waitFor(async () => (await c.history('cluster-room').then(() => 'ok', (e: ClientError) => e.code)) === 'feature_disabled', 10_000, 'history disabled', 50);
    }
    await s.close();
    for (const n of nodes) await n.stop();
  });
});
