/**
 * Redis that comes back behind: restarted from an RDB snapshot (or an AOF fsynced every second)
 * after a crash, or a replica promoted before it had everything. The room's `seq` goes back in the
 * same epoch. Regression: the broadcast worker went on from the old `seq`, so the next
 * acknowledged messages got the seqs of the lost ones, which members already had; clients dropped
 * them as seen, and they reached nobody with no gap, no position push and no epoch change. Now the
 * worker passes the room's last (epoch, seq) it saw to apply.lua, which starts a new epoch.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { GROUP, Keys } from '../../services/bus/keys';
import { SwitchboardClient, type RoomMessage } from '../../services/client';
import { hasExited } from '../helpers/process';
import { RedisProcess } from '../helpers/redis';
import { waitFor } from '../helpers/wait';
import { helloClient, type Json, type WireClient } from '../helpers/wire';
import { httpGet, PROBE, spawnRole, stopAll, type RoleProcess } from './harness';

const SHARDS = 4;
const ENV = { HEARTBEAT_MS: '300', LEASE_MS: '1000', STREAM_SHARDS: String(SHARDS), REDIS_TIMEOUT_MS: '1000' };
const ROOMS = ['rb-a', 'rb-b', 'rb-c', 'rb-d'];

after(stopAll);

const ready = async (p: RoleProcess) => (await httpGet(p.adminPort, '/readyz')).status === 200;

/** Publish `label` once per room and wait until every member has it. */
async function publish(from: WireClient, all: WireClient[], label: string): Promise<void> {
  for (const room of ROOMS) assert.equal((await from.request({ type: 'send_chat', room, data: { label } }, 5000)).type, 'ok', `${label} in ${room}`);
  for (const c of all) for (const room of ROOMS) await c.next((m) => m.type === 'message' && m.room === room && (m.data as Json).label === label, 10_000, `${label} in ${room}`);
}

test('redis restarted from a snapshot behind what was delivered: the rooms start a new epoch, no seq is given twice, and the client gets the new messages', async () => {
  // RDB only, no automatic saves: what survives the crash is exactly what SAVE wrote.
  const redis = await RedisProcess.start(['--appendonly', 'no', '--save', '']);
  const env = { REDIS_URL: redis.url, ...ENV };
  const gws = [await spawnRole('gateway', env), await spawnRole('gateway', env)];
  const bc = await spawnRole('broadcast', env);
  for (const p of [...gws, bc]) await waitFor(() => ready(p), 15_000, 'ready', PROBE);
  const raw: WireClient[] = [];
  for (const [i, gw] of gws.entries()) {
    const c = await helloClient(gw.port, `raw-${i}`);
    for (const room of ROOMS) await c.join(room);
    raw.push(c);
  }
  const client = new SwitchboardClient({ servers: [{ host: '127.0.0.1', port: gws[1].port }], user: 'client', initialBackoffMs: 20, maxBackoffMs: 200, requestTimeoutMs: 5000 });
  const got: RoomMessage[] = [];
  const changed: string[] = [];
  client.on('message', (m: RoomMessage) => got.push(m));
  client.on('epoch_changed', (e: { room: string }) => changed.push(e.room));
  try {
    await client.connect();
    for (const room of ROOMS) await client.join(room);
    const label = (m: RoomMessage) => (m.data as Json).label;
    const has = (l: string) => ROOMS.every((room) => got.some((m) => m.room === room && label(m) === l));

    for (const l of ['saved-1', 'saved-2']) await publish(raw[0], raw, l);
    // Every batch acknowledged (the XACK travels with the worker's next read), then the snapshot.
    await waitFor(() => Array.from({ length: SHARDS }, (_, s) => redis.cli('xpending', Keys.ingress(s), GROUP).split('\n')[0]).every((n) => n === '0'), 5000, 'nothing pending', PROBE);
    assert.equal(redis.cli('save'), 'OK');
    // Acknowledged and delivered after the snapshot: Redis loses these writes.
    for (const l of ['lost-1', 'lost-2', 'lost-3']) await publish(raw[1], raw, l);
    await waitFor(() => has('lost-3'), 10_000, 'the client has the messages after the snapshot', PROBE);
    const before = new Map(ROOMS.map((room) => [room, got.filter((m) => m.room === room).at(-1)!]));
    assert.ok([...before.values()].every((m) => m.seq === 5), 'seq 5 everywhere before the crash');

    await redis.kill();
    await redis.start();
    assert.equal(redis.cli('hget', Keys.seq(ROOMS[0]), 'seq'), '2', 'Redis came back from the snapshot, behind');
    for (const p of [...gws, bc]) await waitFor(() => ready(p), 15_000, 'ready again', PROBE);
    // The first publish after the restart may find the gateway's connection not back yet.
    for (const room of ROOMS) {
      await waitFor(async () => (await raw[0].request({ type: 'send_chat', room, data: { label: 'after' } }, 5000)).type === 'ok', 10_000, `after in ${room} acknowledged`, { intervalMs: 100 });
    }
    for (const c of raw) for (const room of ROOMS) await c.next((m) => m.type === 'message' && m.room === room && (m.data as Json).label === 'after', 10_000, `after in ${room}`);

    // No member ever got a seq it already had in the same epoch: what came after is in a new one.
    for (const [i, c] of raw.entries()) {
      for (const room of ROOMS) {
        let last: { epoch: string; seq: number; label: unknown } | null = null;
        for (const m of c.all) {
          if (m.type !== 'message' || m.room !== room) continue;
          const cur = { epoch: m.epoch as string, seq: m.seq as number, label: (m.data as Json).label };
          if (last !== null && cur.epoch === last.epoch) assert.ok(cur.seq > last.seq, `member ${i}, ${room}: seq ${cur.seq} (${String(cur.label)}) after ${last.seq} (${String(last.label)}) in epoch ${cur.epoch}`);
          last = cur;
        }
        assert.notEqual(last!.epoch, before.get(room)!.epoch, `member ${i}, ${room}: a new epoch`);
      }
    }
    // The real client follows the epoch change and delivers the new messages (it drops a seq it
    // has seen in the same epoch: before the fix, these never reached the application).
    await waitFor(() => has('after'), 10_000, 'the client to get the messages after the restart', PROBE).catch((err: Error) => {
      throw new Error(`${err.message}: got ${JSON.stringify(got.map((m) => [m.room, m.seq, label(m)]))}`);
    });
    assert.deepEqual([...new Set(changed)].sort(), [...ROOMS].sort(), 'the client was told every room changed epoch');
    // The new epoch's history is consistent: its seqs run from 1, the last is the new message.
    for (const room of ROOMS) {
      const epoch = got.filter((m) => m.room === room).at(-1)!.epoch;
      const h = await raw[0].request({ type: 'history', room, since: 0, epoch }, 5000);
      assert.equal(h.recovered, true, JSON.stringify(h));
      const ms = h.messages as Json[];
      assert.deepEqual(ms.map((m) => m.seq), ms.map((_, k) => k + 1), `${room}: history seqs`);
      assert.equal((ms.at(-1)!.data as Json).label, 'after');
    }
    const stats = JSON.parse((await httpGet(bc.adminPort, '/stats')).body) as Json;
    assert.equal(stats.epoch_restarts_total, ROOMS.length, 'the worker counted the rooms Redis rolled back');
    for (const p of [...gws, bc]) assert.ok(!hasExited(p.proc), `a process exited:\n${p.logs.slice(-15).join('\n')}`);
  } finally {
    await client.close();
    for (const c of raw) c.destroy();
  }
  await bc.kill('SIGTERM');
  for (const g of gws) await g.kill('SIGTERM');
  await redis.stop();
});
