/**
 * The cluster as it is operated, one regression per failure found from outside (issue: "the
 * cluster as it is operated"): several broadcast workers, many rooms over every shard, a Redis
 * that restarts empty, goes away during a join, or stalls. Every role runs as a real child
 * process with --unhandled-rejections=strict, so a crash of any kind fails the test.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { Keys, shardOf } from '../../services/bus/keys';
import { createRedis, isReady } from '../../services/bus/redis-conn';
import { silentLogger } from '../../services/telemetry/log';
import { hasExited } from '../helpers/process';
import { RedisProcess } from '../helpers/redis';
import { waitFor } from '../helpers/wait';
import { helloClient, type Json, type WireClient } from '../helpers/wire';
import { SwitchboardClient, type RoomMessage } from '../../services/client';
import { httpGet, PROBE, spawnRole, stopAll, type RoleProcess } from './harness';

const SHARDS = 8;
const LEASE_MS = 1000;
const FAST = { HEARTBEAT_MS: '300', LEASE_MS: String(LEASE_MS), STREAM_SHARDS: String(SHARDS), REDIS_TIMEOUT_MS: '1000', LOG_LEVEL: 'info' };

after(stopAll);

/** At least `n` room names that together cover every shard. */
function roomsOverAllShards(n: number, prefix: string): string[] {
  const rooms: string[] = [];
  const covered = new Set<number>();
  for (let i = 0; rooms.length < n || covered.size < SHARDS; i++) {
    const room = `${prefix}-${i}`;
    rooms.push(room);
    covered.add(shardOf(room, SHARDS));
  }
  return rooms;
}

async function stats(p: RoleProcess): Promise<Json> {
  return JSON.parse((await httpGet(p.adminPort, '/stats')).body) as Json;
}

async function ready(p: RoleProcess): Promise<boolean> {
  return (await httpGet(p.adminPort, '/readyz')).status === 200;
}

/** Every shard has exactly one owner: the workers' own view and the leases agree. */
async function ownership(redis: RedisProcess, workers: RoleProcess[]): Promise<string | null> {
  const owned = new Map<number, number>();
  for (const w of workers) for (const s of (await stats(w)).shards as number[]) owned.set(s, (owned.get(s) ?? 0) + 1);
  for (let s = 0; s < SHARDS; s++) {
    if (owned.get(s) !== 1) return `shard ${s} has ${owned.get(s) ?? 0} owners`;
    if (redis.cli('get', Keys.lease(s)) === '') return `shard ${s} has no lease`;
  }
  return null;
}

/** A cluster on `redis`, every role ready; `extra` overrides FAST, `firstGateway` goes to gateway 0 only. */
async function cluster(redis: RedisProcess, gateways: number, workers: number, extra: Record<string, string> = {}, firstGateway: Record<string, string> = {}) {
  const env = { REDIS_URL: redis.url, ...FAST, ...extra };
  const gws: RoleProcess[] = [];
  const bcs: RoleProcess[] = [];
  for (let i = 0; i < gateways; i++) gws.push(await spawnRole('gateway', i === 0 ? { ...env, ...firstGateway } : env));
  for (let i = 0; i < workers; i++) bcs.push(await spawnRole('broadcast', env));
  for (const p of [...gws, ...bcs]) await waitFor(() => ready(p), 15_000, 'ready', PROBE);
  return { gws, bcs, env };
}

/** The id of the live gateway whose SERVER_ID was `serverId` (ids add a random suffix). */
function gatewayId(redis: RedisProcess, serverId: string): string {
  const key = redis.cli('keys', `sb:gw:*${serverId}-*`);
  return key.slice(key.indexOf('}') + 1);
}

/** One member on each gateway in every room; returns them. */
async function members(gws: RoleProcess[], rooms: string[], tag: string): Promise<WireClient[]> {
  const out: WireClient[] = [];
  for (let i = 0; i < gws.length; i++) {
    const c = await helloClient(gws[i].port, `${tag}-${i}`);
    for (const room of rooms) await c.join(room);
    out.push(c);
  }
  return out;
}

/** Publish one message per room from `from`, and check every member got each one. */
async function roundTrip(from: WireClient, all: WireClient[], rooms: string[], label: string): Promise<Json[]> {
  for (const room of rooms) {
    const r = await from.request({ type: 'send_chat', room, data: { label, room } }, 5000);
    assert.equal(r.type, 'ok', `${label}: ${room}: ${JSON.stringify(r)}`);
  }
  const got: Json[] = [];
  for (const c of all) {
    for (const room of rooms) {
      got.push(await c.next((m) => m.type === 'message' && m.room === room && (m.data as Json).label === label, 10_000, `${label} in ${room}`));
    }
  }
  return got;
}

/** Check no role crashed, close the clients, stop the roles (workers first), then Redis. */
async function shutdown(redis: RedisProcess, gws: RoleProcess[], bcs: RoleProcess[], clients: { destroy(): void }[] = []): Promise<void> {
  alive(...gws, ...bcs);
  for (const c of clients) c.destroy();
  for (const p of [...bcs, ...gws]) await p.kill('SIGTERM');
  await redis.stop();
}

function alive(...ps: RoleProcess[]): void {
  for (const p of ps) assert.ok(!hasExited(p.proc), `a process exited (${p.proc.exitCode ?? p.proc.signalCode}):\n${p.logs.slice(-15).join('\n')}`);
}

describe('cluster under faults', () => {
  // Regression: each worker ordered the live set by heartbeat time, found itself last and
  // claimed the same residue class: with two workers, shards 0, 2, 4 and 6 had no owner and
  // their rooms' messages were acknowledged and delivered to nobody.
  for (const n of [1, 2, 3, 4]) {
    test(`${n} broadcast worker(s): every shard has exactly one owner and all 64 rooms deliver`, async () => {
      const redis = await RedisProcess.start();
      const { gws, bcs } = await cluster(redis, 2, n);
      // Converges within a few lease periods of the last worker starting.
      await waitFor(async () => (await ownership(redis, bcs)) === null, 4 * LEASE_MS + 2000, 'one owner per shard', PROBE).catch(async (err: Error) => {
        throw new Error(`${err.message}: ${await ownership(redis, bcs)}`);
      });
      const rooms = roomsOverAllShards(64, `own${n}`);
      const cs = await members(gws, rooms, `own${n}`);
      const got = await roundTrip(cs[0], cs, rooms, 'all-rooms');
      assert.equal(got.length, 2 * rooms.length);
      assert.equal(await ownership(redis, bcs), null, 'still one owner per shard');
      alive(...gws, ...bcs);
      for (const c of cs) c.destroy();
      for (const p of [...bcs, ...gws]) await p.kill('SIGTERM');
      await redis.stop();
    });
  }

  test('scaling the broadcast tier 1 -> 3 -> 1 and kill -9 of a worker under load lose nothing acknowledged', async () => {
    const redis = await RedisProcess.start();
    const { gws, bcs, env } = await cluster(redis, 2, 1);
    const rooms = roomsOverAllShards(16, 'scale');
    const cs = await members(gws, rooms, 'scale');
    const acked: { room: string; n: number }[] = [];
    let running = true;
    let n = 0;
    const load = (async () => {
      while (running) {
        const room = rooms[n % rooms.length];
        const r = await cs[n % 2].request({ type: 'send_chat', room, data: { n } }, 5000);
        if (r.type === 'ok') acked.push({ room, n });
        n++;
      }
    })();
    const waitOwned = (ws: RoleProcess[]) => waitFor(async () => (await ownership(redis, ws)) === null, 4 * LEASE_MS + 2000, 'one owner per shard', PROBE);
    bcs.push(await spawnRole('broadcast', env), await spawnRole('broadcast', env));
    await waitOwned(bcs);
    await bcs[0].kill('SIGKILL');
    await waitOwned(bcs.slice(1));
    await bcs[1].kill('SIGTERM');
    await waitOwned(bcs.slice(2));
    running = false;
    await load;
    assert.ok(acked.length > 50, `load ran (${acked.length} acked)`);
    for (const c of cs) {
      for (const { room, n: k } of acked) {
        await c.next((m) => m.type === 'message' && m.room === room && (m.data as Json).n === k, 10_000, `message ${k} in ${room}`);
      }
    }
    alive(...gws, bcs[2]);
    for (const c of cs) c.destroy();
    for (const p of [bcs[2], ...gws]) await p.kill('SIGTERM');
    await redis.stop();
  });

  // Regression: after Redis lost its keys (what a restart without persistence, or a failover to a
  // replica that was behind, leaves), the first worker to heartbeat saw itself alone and took
  // every lease while the old owners, whose last renewal still looked fresh, went on reading.
  // Two consumers split a shard's entries; the newer one applied first made the older one look
  // like a redelivery, and messages acknowledged with ok reached nobody, with no gap to notice.
  test('leases and the worker set lost again and again under load: a shard is never split, nothing acknowledged is lost or reordered', async () => {
    const redis = await RedisProcess.start();
    const { gws, bcs } = await cluster(redis, 2, 2);
    await waitFor(async () => (await ownership(redis, bcs)) === null, 4 * LEASE_MS + 2000, 'one owner per shard', PROBE);
    const rooms = roomsOverAllShards(16, 'wipe');
    const cs = await members(gws, [...rooms], 'wipe');
    cs.push(...(await members(gws, [...rooms], 'wipe2')));
    // Open loop: every publisher sends every 8 ms without waiting, so entries of one shard keep
    // arriving while its ownership is in question; acknowledgements are read from the replies.
    let n = 0;
    const timer = setInterval(() => {
      for (const c of cs) {
        const room = rooms[n % rooms.length];
        c.send({ type: 'send_chat', room, data: { n }, id: `w${n}` });
        n++;
      }
    }, 8);
    const lost = ['sb:workers', ...Array.from({ length: SHARDS }, (_, s) => Keys.lease(s))];
    try {
      for (let i = 0; i < 16; i++) {
        await new Promise((r) => setTimeout(r, 500));
        redis.cli('del', ...lost);
      }
    } finally {
      clearInterval(timer);
    }
    const acked = new Map<number, string>();
    await waitFor(() => cs.every((c) => c.all.filter((m) => typeof m.id === 'string' && (m.id as string).startsWith('w')).length >= n / cs.length), 10_000, 'every publish answered', PROBE);
    for (const c of cs) for (const m of c.all) if (m.type === 'ok' && typeof m.id === 'string' && m.id.startsWith('w')) acked.set(Number(m.id.slice(1)), rooms[Number(m.id.slice(1)) % rooms.length]);
    assert.ok(acked.size > 1000, `load ran (${acked.size} acknowledged of ${n})`);
    const missing = () => {
      const out: string[] = [];
      for (const [i, c] of cs.entries()) {
        const got = new Set(c.all.filter((m) => m.type === 'message').map((m) => (m.data as Json).n as number));
        for (const k of acked.keys()) if (!got.has(k)) out.push(`member ${i} lacks ${k} (${acked.get(k)})`);
      }
      return out;
    };
    await waitFor(() => missing().length === 0, 15_000, 'every acknowledged message at every member', PROBE).catch((err: Error) => {
      throw new Error(`${err.message}: ${missing().length} missing, e.g. ${missing().slice(0, 5).join('; ')}`);
    });
    // Per room, each member sees seq rise (a duplicate repeats one; it never goes back).
    for (const [i, c] of cs.entries()) {
      const last = new Map<string, number>();
      for (const m of c.all) {
        if (m.type !== 'message') continue;
        const room = m.room as string;
        assert.ok((m.seq as number) >= (last.get(room) ?? 0), `member ${i}, ${room}: seq ${String(m.seq)} after ${last.get(room)}`);
        last.set(room, m.seq as number);
      }
    }
    await waitFor(async () => (await ownership(redis, bcs)) === null, 4 * LEASE_MS + 2000, 'one owner per shard again', PROBE);
    await shutdown(redis, gws, bcs, cs);
  });

  // Regression: a user who disconnected while the gateway's Redis connection was being cut had
  // the cleanup of its presence and user entry fail; it was only logged, so the user stayed in
  // presence for good and `direct` to it was answered ok and reached nobody.
  test('membership writes that fail while the connection is cut are repaired: presence and direct follow the users who left', async () => {
    const redis = await RedisProcess.start();
    // A long heartbeat TTL: the cut must not expire the registration (that repairs it another way).
    const { gws, bcs } = await cluster(redis, 2, 1, { HEARTBEAT_MS: '3000' });
    const watcher = await helloClient(gws[1].port, 'watcher');
    await watcher.join('stale');
    const leavers: WireClient[] = [];
    for (let i = 0; i < 30; i++) {
      const c = await helloClient(gws[0].port, `leaver-${i}`);
      await c.join('stale');
      leavers.push(c);
    }
    const presence = async () => ((await watcher.request({ type: 'presence', room: 'stale' }, 5000)).users as string[]).length;
    await waitFor(async () => (await presence()) === 31, 5000, 'everyone in presence', PROBE);
    // Cut every client connection of Redis again and again while the users disconnect: the
    // gateway's cleanup commands fail (they are not resent).
    const until = Date.now() + 1200;
    let i = 0;
    while (Date.now() < until) {
      redis.cli('client', 'kill', 'type', 'normal');
      if (i < leavers.length) leavers[i++].destroy();
    }
    for (; i < leavers.length; i++) leavers[i].destroy();
    await waitFor(async () => (await presence().catch(() => -1)) === 1, 10_000, 'presence without the users who left', PROBE);
    const r = await watcher.request({ type: 'direct', to: 'leaver-0', data: 'hello?' }, 5000);
    assert.equal(r.code, 'user_offline', JSON.stringify(r));
    await shutdown(redis, gws, bcs, [watcher]);
  });

  // Regression: a gateway the cluster took for dead (stopped past three heartbeats) registered
  // again when it came back, but the messages routed meanwhile never reached it; a gateway whose
  // egress stream was trimmed past what it had read lost them the same way. A member of a room
  // that then went quiet stayed connected, saw no gap and never got them. Now the gateway pushes
  // `position` for each of its rooms, and the client recovers through history.
  for (const fault of ['taken for dead', 'egress trimmed'] as const) {
    test(`gateway ${fault}: its members are told the room's position and the client recovers what it missed`, async () => {
      const redis = await RedisProcess.start();
      const trimmed = fault === 'egress trimmed';
      // Trimmed: a long heartbeat TTL, so only the trim can lose messages; EGRESS_MAXLEN at its floor.
      const { gws, bcs } = await cluster(redis, 2, 1, trimmed ? { HEARTBEAT_MS: '5000', EGRESS_MAXLEN: '100' } : {}, { SERVER_ID: 'gw-stopped' });
      const raw = await helloClient(gws[0].port, 'raw');
      await raw.join('quiet');
      await raw.join('busy');
      const member = new SwitchboardClient({ servers: [{ host: '127.0.0.1', port: gws[0].port }], user: 'member', initialBackoffMs: 20, maxBackoffMs: 200, requestTimeoutMs: 5000 });
      const got: RoomMessage[] = [];
      member.on('message', (m: RoomMessage) => got.push(m));
      try {
        await member.connect();
        await member.join('quiet');
        const sender = await helloClient(gws[1].port, 'sender');
        await sender.join('quiet');
        await sender.join('busy');
        assert.equal((await sender.request({ type: 'send_chat', room: 'quiet', data: 'before' })).type, 'ok');
        await waitFor(() => got.length === 1, 5000, 'the first message', PROBE);
        const pid = gws[0].proc.pid!;
        process.kill(pid, 'SIGSTOP');
        try {
          if (trimmed) {
            // The XREAD gateway 0 was blocked in when it stopped is answered with the first entry
            // that comes: let that be a busy one. Then the quiet room's messages, then enough
            // entries to push them out of its stream (EGRESS_MAXLEN) before it reads them.
            assert.equal((await sender.request({ type: 'send_chat', room: 'busy', data: 'lead' })).type, 'ok');
            for (const data of ['missed-1', 'missed-2', 'missed-3']) assert.equal((await sender.request({ type: 'send_chat', room: 'quiet', data })).type, 'ok');
            for (let i = 0; i < 400; i++) assert.equal((await sender.request({ type: 'send_chat', room: 'busy', data: i })).type, 'ok');
            // They are gone from its stream: only a recovery can bring them.
            const left = redis.cli('xrange', Keys.egress(gatewayId(redis, 'gw-stopped')), '-', '+');
            assert.ok(left.includes('busy'), 'the stream is there');
            assert.ok(!left.includes('missed-1'), 'the quiet messages were trimmed');
          } else {
            // Its heartbeat key (the id is SERVER_ID plus a random suffix) expires, and the
            // janitor removes its routing: it is taken for dead.
            await waitFor(() => redis.cli('keys', 'sb:gw:*gw-stopped-*') === '', 10_000, 'gateway 0 taken for dead', PROBE);
            await waitFor(() => !redis.cli('smembers', Keys.room('quiet')).includes('gw-stopped'), 10_000, 'its routing removed', PROBE);
            for (const data of ['missed-1', 'missed-2', 'missed-3']) assert.equal((await sender.request({ type: 'send_chat', room: 'quiet', data })).type, 'ok');
          }
        } finally {
          process.kill(pid, 'SIGCONT');
        }
        // Nothing more is sent to the quiet room: only the notice can show the member its gap.
        const notice = await raw.next((m) => m.type === 'position' && m.room === 'quiet', 10_000, 'a position notice for the quiet room');
        assert.equal(notice.seq, 4);
        await waitFor(() => got.length === 4, 10_000, 'the client to recover the missed messages', PROBE);
        assert.deepEqual(
          got.map((m) => [m.seq, m.data]),
          [[1, 'before'], [2, 'missed-1'], [3, 'missed-2'], [4, 'missed-3']],
        );
        alive(...gws, ...bcs);
        raw.destroy();
        sender.destroy();
      } finally {
        // Its reconnect loop would keep the test process alive.
        await member.close();
      }
      await shutdown(redis, gws, bcs);
    });
  }

  // Regression: the gateway looked for a trim only when a read had been slow (over its block) or
  // full, and then only if the oldest entry left was after what it had read. A stall shorter than
  // that let it read past the gap first, and the loss went unnoticed. It now counts entries
  // (added, left, read), which finds a loss wherever the reader stands, and counts after any read
  // that brings as many entries as a trim leaves.
  test('egress trimmed during a stall shorter than a read block: the gateway still finds the loss and tells its members', async () => {
    const redis = await RedisProcess.start();
    const { gws, bcs } = await cluster(redis, 1, 1, { HEARTBEAT_MS: '5000' }, { SERVER_ID: 'gw-short' });
    const raw = await helloClient(gws[0].port, 'raw');
    await raw.join('quiet');
    const key = Keys.egress(gatewayId(redis, 'gw-short'));
    const writer = createRedis({ url: redis.url, cluster: false, name: 'test-egress-writer', log: silentLogger });
    await waitFor(() => isReady(writer), 5000, 'writer connected');
    // Egress entries as an older broadcast worker writes them (kind b), trimmed to about 100.
    const entry = (room: string, i: number) => {
      const json = JSON.stringify({ type: 'message', room, from: 't', data: i, seq: i, epoch: 'e', ts: Date.now() });
      return [key, 'MAXLEN', '~', 100, '*', 'k', 'b', room, `test/${room}-${i}`, String(Date.now()), json, '', ''];
    };
    const pid = gws[0].proc.pid!;
    process.kill(pid, 'SIGSTOP');
    try {
      const p = writer.pipeline();
      p.call('XADD', ...entry('busy', 0));
      for (let i = 1; i <= 3; i++) p.call('XADD', ...entry('quiet', i));
      for (let i = 1; i <= 400; i++) p.call('XADD', ...entry('busy', i));
      await p.exec();
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    const left = redis.cli('xrange', key, '-', '+');
    assert.ok(left.includes('busy-400') && !left.includes('quiet-1'), 'the quiet messages were trimmed before it read them');
    const notice = await raw.next((m) => m.type === 'position' && m.room === 'quiet', 4000, 'a position notice for the quiet room');
    assert.equal(notice.room, 'quiet');
    writer.disconnect();
    raw.destroy();
    alive(...gws, ...bcs);
    await shutdown(redis, gws, bcs);
  });

  // Regression: a batch sequenced and put in history whose egress write then failed was taken
  // again, and apply.lua found its entries' seqs in history only: HISTORY_SIZE of them. A backlog
  // of 300 messages of one room lost all but the newest HISTORY_SIZE (all 300 with HISTORY_SIZE
  // 0), acknowledged to the sender and routed to no one.
  for (const historySize of ['10', '0']) {
    test(`egress writes refused while a backlog is sequenced (HISTORY_SIZE ${historySize}): every acknowledged message is routed once they work again`, async () => {
      const redis = await RedisProcess.start();
      redis.cli('ACL', 'SETUSER', 'worker', 'on', '>pw', '~*', '&*', '+@all');
      const env = { ...FAST, HISTORY_SIZE: historySize };
      const { gws } = await cluster(redis, 2, 0, env);
      const bc = await spawnRole('broadcast', { ...env, REDIS_URL: `redis://worker:pw@127.0.0.1:${redis.port}` });
      await waitFor(() => ready(bc), 15_000, 'worker ready', PROBE);
      const [a, b] = await members(gws, ['backlog'], 'backlog');
      await roundTrip(a, [a, b], ['backlog'], 'warm');
      // The worker may read and sequence, not write any gateway's egress stream.
      const keys = ['~sb:in:*', '~sb:seq:*', '~sb:hist:*', '~sb:room:*', '~sb:lease:*', '~sb:workers*', '~sb:gw*', '~sb:pres:*', '~sb:user:*', '~sb:gateways', '~sb:flags*', '%R~sb:out:*'];
      redis.cli('ACL', 'SETUSER', 'worker', 'resetkeys', ...keys);
      // The backlog is published while the worker is stopped, after its blocked read returned
      // empty: its next read takes all of it in one batch.
      const N = 300;
      const pid = bc.proc.pid!;
      process.kill(pid, 'SIGSTOP');
      try {
        await waitFor(() => !/name=sb-bc-[^ ]* .*flags=[^ ]*b/.test(redis.cli('CLIENT', 'LIST')), 5000, 'the worker\'s blocked reads to return', PROBE);
        const acks = await Promise.all(Array.from({ length: N }, (_, i) => a.request({ type: 'send_chat', room: 'backlog', data: { n: i } }, 5000)));
        assert.ok(acks.every((r) => r.type === 'ok'), 'every message acknowledged');
      } finally {
        process.kill(pid, 'SIGCONT');
      }
      await waitFor(() => Number(redis.cli('hget', Keys.seq('backlog'), 'seq')) >= N + 1, 10_000, 'the backlog sequenced while egress fails', PROBE).catch((err: Error) => {
        throw new Error(`${err.message}: seq ${redis.cli('hget', Keys.seq('backlog'), 'seq')}\n${bc.logs.slice(-8).join('\n')}`);
      });
      redis.cli('ACL', 'SETUSER', 'worker', 'resetkeys', '~*');
      for (const c of [a, b]) {
        for (let i = 0; i < N; i++) await c.next((m) => m.type === 'message' && m.room === 'backlog' && (m.data as Json).n === i, 15_000, `message ${i}`);
      }
      alive(bc);
      await shutdown(redis, gws, [bc], [a, b]);
    });
  }

  // Regression: after Redis came back empty, gateways never registered their rooms and users
  // again: messages acknowledged with ok reached no one while every /readyz said 200, and the
  // room sequence restarted from 0 with nothing telling clients.
  test('redis restarted empty: gateways re-register on their own, delivery resumes, the epoch changes', async () => {
    const redis = await RedisProcess.start();
    const { gws, bcs } = await cluster(redis, 2, 2);
    const rooms = roomsOverAllShards(16, 'empty');
    const cs = await members(gws, rooms, 'empty');
    const before = await roundTrip(cs[0], cs, rooms, 'before');
    const oldEpoch = new Map(before.map((m) => [m.room as string, m.epoch as string]));
    assert.ok([...oldEpoch.values()].every((e) => /^[0-9a-f]{12}$/.test(e)), 'messages carry the epoch');
    await redis.stop();
    const empty = await new RedisProcess(redis.port, ['--appendonly', 'no']).start();
    assert.equal(empty.cli('dbsize'), '0');
    for (const p of [...gws, ...bcs]) await waitFor(() => ready(p), 15_000, 'ready again', PROBE);
    // Nobody joins again: the gateways must restore routing themselves.
    await waitFor(() => rooms.every((room) => empty.cli('scard', Keys.room(room)) === '2'), 10_000, 'both gateways routed again in every room', PROBE);
    const afterMsgs = await roundTrip(cs[1], cs, rooms, 'after');
    for (const m of afterMsgs) assert.notEqual(m.epoch, oldEpoch.get(m.room as string), `a new epoch in ${String(m.room)}`);
    const room = rooms[0];
    const h = await cs[0].request({ type: 'history', room, since: before[0].seq, epoch: oldEpoch.get(room) });
    assert.equal(h.recovered, false, 'history in the old epoch is not recovered');
    assert.equal(h.epoch, afterMsgs.find((m) => m.room === room)!.epoch);
    alive(...gws, ...bcs);
    for (const c of cs) c.destroy();
    for (const p of [...bcs, ...gws]) await p.kill('SIGTERM');
    await empty.stop();
  });

  // Regression: the rollback of a join that failed because Redis was down rejected with no
  // handler, and the gateway died with every client on it.
  test('join_room while redis is down: unavailable, and the gateway keeps serving', async () => {
    const redis = await RedisProcess.start();
    const { gws } = await cluster(redis, 1, 1);
    const witness = await helloClient(gws[0].port, 'witness');
    const c = await helloClient(gws[0].port, 'joiner');
    await redis.stop();
    for (let i = 0; i < 5; i++) {
      const r = await c.request({ type: 'join_room', room: `down-${i}` }, 5000);
      assert.equal(r.code, 'unavailable', JSON.stringify(r));
    }
    assert.equal((await witness.request({ type: 'ping' })).type, 'pong', 'the gateway still serves');
    await redis.start();
    await waitFor(() => ready(gws[0]), 15_000, 'ready again', PROBE);
    const ok = await waitFor(async () => {
      const r = await c.request({ type: 'join_room', room: 'down-0' }, 5000);
      return r.type === 'ok' ? r : null;
    }, 10_000, 'join to work again', { intervalMs: 100 });
    assert.equal(ok.type, 'ok');
    alive(...gws);
    witness.destroy();
    c.destroy();
    await gws[0].kill('SIGTERM');
    await redis.stop();
  });

  // Regression: with Redis SIGSTOPped, acks hung for the whole stall and /readyz stayed 200.
  test('redis stalled: requests get unavailable within the bound, readiness turns false, then true after', async () => {
    const redis = await RedisProcess.start();
    const { gws, bcs } = await cluster(redis, 1, 1);
    const c = await helloClient(gws[0].port, 'stall');
    await c.join('stall-room');
    const pid = redis.proc!.pid!;
    process.kill(pid, 'SIGSTOP');
    try {
      const t0 = Date.now();
      const r = await c.request({ type: 'send_chat', room: 'stall-room', data: 1 }, 10_000);
      const took = Date.now() - t0;
      assert.equal(r.code, 'unavailable', JSON.stringify(r));
      assert.ok(took < 1000 + 1500, `answered in ${took} ms (bound 1000 ms)`);
      for (const p of [...gws, ...bcs]) await waitFor(async () => !(await ready(p)), 5000, 'not ready while stalled', PROBE);
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    for (const p of [...gws, ...bcs]) await waitFor(() => ready(p), 10_000, 'ready after the stall', PROBE);
    const ok = await waitFor(async () => {
      const r = await c.request({ type: 'send_chat', room: 'stall-room', data: 2 }, 5000);
      return r.type === 'ok' ? r : null;
    }, 10_000, 'sending to work again', { intervalMs: 100 });
    assert.equal(ok.type, 'ok');
    await c.next((m) => m.type === 'message' && m.data === 2, 10_000, 'delivery after the stall');
    alive(...gws, ...bcs);
    c.destroy();
    for (const p of [...bcs, ...gws]) await p.kill('SIGTERM');
    await redis.stop();
  });
});
