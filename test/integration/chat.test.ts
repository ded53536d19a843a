// The chat and direct plugins over real sockets: membership, delivery to every member in accept
// order, presence, history recovery, direct messages to every connection of a user.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startServer, type TestServer } from '../helpers/server';
import { helloClient, type WireClient } from '../helpers/wire';
import { waitFor } from '../helpers/wait';

let srv: TestServer;
const open: WireClient[] = [];
before(async () => (srv = await startServer({ maxRoomsPerConnection: 3, historySize: 10 })));
after(async () => {
  for (const c of open) c.destroy();
  await srv.close();
});
async function client(user: string): Promise<WireClient> {
  const c = await helloClient(srv.port, user);
  open.push(c);
  return c;
}

describe('chat', () => {
  test('a message reaches every member, sender included, with room, from, data, seq, ts', async () => {
    const [a, b, c, outsider] = await Promise.all(['ann', 'ben', 'cat', 'out'].map(client));
    for (const x of [a, b, c]) await x.join('general');
    const before = Date.now();
    const ok = await a.request({ type: 'send_chat', room: 'general', data: { text: 'hi', n: 1 } });
    assert.deepEqual(ok, { type: 'ok', id: ok.id, seq: 1 });
    for (const x of [a, b, c]) {
      const m = await x.nextOfType('message');
      assert.deepEqual(Object.keys(m), ['type', 'room', 'from', 'data', 'seq', 'epoch', 'ts']);
      assert.equal(m.room, 'general');
      assert.equal(m.from, 'ann');
      assert.deepEqual(m.data, { text: 'hi', n: 1 });
      assert.equal(m.seq, 1);
      assert.ok(Math.abs((m.ts as number) - before) < 5000);
    }
    await outsider.request({ type: 'ping' });
    assert.equal(outsider.all.filter((m) => m.type === 'message').length, 0, 'non-members get nothing');
  });

  test('every member sees all messages in accept order (seq strictly increasing, same order everywhere)', async () => {
    const senders = await Promise.all(['s1', 's2', 's3'].map(client));
    const watcher = await client('watch');
    for (const x of [...senders, watcher]) await x.join('order');
    const N = 60;
    for (let i = 0; i < N; i++) senders[i % 3].send({ type: 'send_chat', room: 'order', data: `${i % 3}:${i}` });
    const seen = async (x: WireClient) => {
      await waitFor(() => x.all.filter((m) => m.type === 'message' && m.room === 'order').length === N, 5000, 'all messages');
      return x.all.filter((m) => m.type === 'message' && m.room === 'order');
    };
    const lists = await Promise.all([...senders, watcher].map(seen));
    const seqs = lists[0].map((m) => m.seq);
    assert.deepEqual(seqs, Array.from({ length: N }, (_, i) => i + 1));
    for (const l of lists) assert.deepEqual(l, lists[0]);
    // Per sender, its own messages keep the order it sent them in.
    for (let s = 0; s < 3; s++) {
      const mine = lists[0].filter((m) => m.from === `s${s + 1}`).map((m) => Number(String(m.data).split(':')[1]));
      assert.deepEqual(mine, [...mine].sort((x, y) => x - y));
    }
  });

  test('send_chat, presence, history and leave_room require membership (not_in_room)', async () => {
    const a = await client('nomember');
    for (const msg of [
      { type: 'send_chat', room: 'secret', data: 1 },
      { type: 'presence', room: 'secret' },
      { type: 'history', room: 'secret' },
      { type: 'leave_room', room: 'secret' },
    ]) {
      const e = await a.request(msg);
      assert.equal(e.code, 'not_in_room', msg.type);
    }
    assert.equal(a.closed, false, 'not_in_room does not close');
  });

  test('too_many_rooms past the limit; joining a room twice does not count twice; leaving frees a slot', async () => {
    const a = await client('roomy');
    for (const r of ['r1', 'r2', 'r3']) await a.join(r);
    await a.join('r1');
    const e = await a.request({ type: 'join_room', room: 'r4' });
    assert.equal(e.code, 'too_many_rooms');
    assert.equal((await a.request({ type: 'leave_room', room: 'r2' })).type, 'ok');
    await a.join('r4');
    assert.equal(a.closed, false);
  });

  test('leave_room stops delivery', async () => {
    const a = await client('leaver');
    const b = await client('stayer');
    await a.join('lv');
    await b.join('lv');
    await a.request({ type: 'leave_room', room: 'lv' });
    await b.request({ type: 'send_chat', room: 'lv', data: 'after' });
    await b.nextOfType('message');
    await a.request({ type: 'ping' });
    assert.equal(a.all.filter((m) => m.type === 'message').length, 0);
  });

  test('presence lists the users in the room, and follows joins and disconnects', async () => {
    const a = await client('p-ann');
    const b = await client('p-bob');
    await a.join('pres');
    await b.join('pres');
    const p = await a.request({ type: 'presence', room: 'pres' });
    assert.equal(p.type, 'presence');
    assert.equal(p.room, 'pres');
    assert.deepEqual([...(p.users as string[])].sort(), ['p-ann', 'p-bob']);
    b.destroy();
    await waitFor(async () => {
      const q = await a.request({ type: 'presence', room: 'pres' });
      return (q.users as string[]).length === 1;
    }, 3000, 'p-bob to leave presence');
  });

  test('history returns the bounded ring; since = seq returns exactly what was missed', async () => {
    const a = await client('h-ann');
    await a.join('hist');
    for (let i = 1; i <= 15; i++) await a.request({ type: 'send_chat', room: 'hist', data: i });
    const all = await a.request({ type: 'history', room: 'hist' });
    assert.equal(all.type, 'history');
    assert.equal(all.room, 'hist');
    const msgs = all.messages as { seq: number; data: number; type: string }[];
    assert.deepEqual(msgs.map((m) => m.seq), [6, 7, 8, 9, 10, 11, 12, 13, 14, 15], 'HISTORY_SIZE=10 newest');
    assert.equal(msgs[0].type, 'message');
    const missed = await a.request({ type: 'history', room: 'hist', since: 12 });
    assert.deepEqual((missed.messages as { data: number }[]).map((m) => m.data), [13, 14, 15]);
    const limited = await a.request({ type: 'history', room: 'hist', limit: 2 });
    assert.deepEqual((limited.messages as { seq: number }[]).map((m) => m.seq), [14, 15]);
    assert.equal((await a.request({ type: 'history', room: 'hist', since: -1 })).code, 'bad_request');
    assert.equal((await a.request({ type: 'history', room: 'hist', since: 'x' })).code, 'bad_request');
    // A page of none would say `more` for ever: a client paging on it would never progress.
    assert.equal((await a.request({ type: 'history', room: 'hist', since: 3, limit: 0 })).code, 'bad_request');
  });

  test('a reader who joins late catches up through history', async () => {
    const a = await client('early');
    await a.join('late');
    await a.request({ type: 'send_chat', room: 'late', data: 'before you came' });
    const b = await client('latecomer');
    await b.join('late');
    const h = await b.request({ type: 'history', room: 'late', since: 0 });
    assert.deepEqual((h.messages as { data: string }[]).map((m) => m.data), ['before you came']);
  });
});

describe('direct', () => {
  test('reaches every connection of the user; the sender gets ok', async () => {
    const from = await client('d-from');
    const to1 = await client('d-to');
    const to2 = await client('d-to');
    const ok = await from.request({ type: 'direct', to: 'd-to', data: { hey: true } });
    assert.equal(ok.type, 'ok');
    for (const c of [to1, to2]) {
      const d = await c.nextOfType('direct');
      assert.equal(d.from, 'd-from');
      assert.deepEqual(d.data, { hey: true });
      assert.equal(typeof d.ts, 'number');
    }
    assert.equal(from.all.filter((m) => m.type === 'direct').length, 0);
  });

  test('user_offline when the user has no connection, also after the last one closed', async () => {
    const from = await client('d-from2');
    assert.equal((await from.request({ type: 'direct', to: 'nobody', data: 1 })).code, 'user_offline');
    const gone = await client('d-gone');
    gone.destroy();
    await waitFor(async () => (await from.request({ type: 'direct', to: 'd-gone', data: 1 })).code === 'user_offline', 3000, 'offline');
  });

  test('missing or wrong-typed fields are bad_request naming the field', async () => {
    const c = await client('d-bad');
    const e1 = await c.request({ type: 'direct', data: 1 });
    assert.equal(e1.code, 'bad_request');
    assert.match(String(e1.message), /"to"/);
    const e2 = await c.request({ type: 'direct', to: 'x' });
    assert.equal(e2.code, 'bad_request');
    assert.match(String(e2.message), /"data"/);
    const e3 = await c.request({ type: 'direct', to: 5, data: 1 });
    assert.equal(e3.code, 'bad_request');
  });
});

describe('edges', () => {
  test('history without since, cut by the byte budget, keeps the newest messages (as the cluster does)', async (t) => {
    // Standalone kept the oldest of the newest `limit` and said `more`; the cluster gave the
    // newest. docs/protocol.md: "Without since, it returns the newest limit messages."
    const s = await startServer({ maxOutboundBytes: 8192, historySize: 10 });
    t.after(() => s.close());
    const a = await helloClient(s.port, 'a');
    t.after(() => a.destroy());
    await a.join('r');
    const big = 'x'.repeat(1500);
    for (let i = 1; i <= 10; i++) assert.equal((await a.request({ type: 'send_chat', room: 'r', data: { i, big } })).type, 'ok');
    const h = await a.request({ type: 'history', room: 'r' });
    const seqs = (h.messages as { seq: number }[]).map((m) => m.seq);
    assert.ok(seqs.length >= 1 && seqs.length < 10, `a page cut by the budget: ${JSON.stringify(seqs)}`);
    assert.deepEqual(seqs, Array.from({ length: seqs.length }, (_, k) => 11 - seqs.length + k), 'the newest, oldest first');
    assert.equal(h.more, false);
    // Paging forward from the oldest still works as before.
    const forward = await a.request({ type: 'history', room: 'r', since: 0 });
    assert.equal((forward.messages as { seq: number }[])[0].seq, 1);
    assert.equal(forward.more, true);
  });

  test('SLOW_CONSUMER_POLICY=drop: a direct message to a connected user whose pushes are being dropped is accepted, not user_offline', async (t) => {
    const s = await startServer({ slowConsumerPolicy: 'drop', maxOutboundBytes: 64 * 1024 });
    t.after(() => s.close());
    const slow = await helloClient(s.port, 'slow');
    const talker = await helloClient(s.port, 'talker');
    t.after(() => {
      slow.destroy();
      talker.destroy();
    });
    await slow.join('r');
    await talker.join('r');
    slow.socket.pause();
    const data = 'd'.repeat(16 * 1024);
    for (let i = 0; i < 2000 && s.server.services.counters.dropped.slow_consumer === 0; i++) await talker.request({ type: 'send_chat', room: 'r', data });
    assert.ok(s.server.services.counters.dropped.slow_consumer > 0, 'pushes to the slow user are being dropped');
    const r = await talker.request({ type: 'direct', to: 'slow', data });
    assert.equal(r.type, 'ok', JSON.stringify(r));
    assert.equal(slow.closed, false);
  });
});
