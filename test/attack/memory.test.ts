// Attack class: memory. Rooms are bounded per connection and in total (MAX_ROOMS_TOTAL: the
// attacker gets too_many_rooms), frames over MAX_FRAME_BYTES are refused before they are held
// (too_large, close), and near-limit frames within the rate limit leave RSS within its budget;
// standalone history holds what its budget counts, not the pool slabs of encoded frames.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { waitFor } from '../helpers/wait';
import { assertRssWithin, assertWitnessServed, peakRss, RawClient, settledRss, startTarget, Witness } from './harness';

test('many rooms: joins past MAX_ROOMS_TOTAL get too_many_rooms, memory stays within budget', async (t) => {
  const TOTAL = 3000;
  const target = await startTarget({ MAX_ROOMS_TOTAL: String(TOTAL) });
  t.after(() => target.stop());
  const witness = await Witness.start(target.port, t);
  await witness.served(5);
  const before = await settledRss(target);
  const attackers: RawClient[] = [];
  const { peak } = await peakRss(target, async () => {
    // 40 connections x 100 rooms (the per-connection limit) = 4000 distinct rooms asked for.
    for (let c = 0; c < 40; c++) {
      const a = await RawClient.open(target.port);
      t.after(() => a.destroy());
      await a.hello(`roomer-${c}`);
      let lines = '';
      for (let r = 0; r < 101; r++) lines += JSON.stringify({ type: 'join_room', room: `r-${c}-${r}-${'p'.repeat(100)}`, id: r }) + '\n';
      a.write(lines);
      attackers.push(a);
    }
    await waitFor(() => attackers.every((a) => a.lines.filter((m) => typeof m.id === 'number').length === 101), 10_000, 'a reply to every join');
  });
  const replies = attackers.flatMap((a) => a.lines.filter((m) => typeof m.id === 'number'));
  const joined = replies.filter((m) => m.type === 'ok').length;
  const refused = replies.filter((m) => m.code === 'too_many_rooms');
  assert.equal(joined, TOTAL);
  assert.equal(refused.length, 40 * 101 - TOTAL);
  assert.ok(refused.some((m) => /maximum of 3000 rooms/.test(String(m.message))));
  assert.ok(refused.some((m) => /100 rooms per connection/.test(String(m.message))));
  assert.equal(await target.metric('switchboard_rooms'), TOTAL);
  await assertWitnessServed(witness);
  assertRssWithin(before, peak, undefined, 'peak RSS');
  // The rooms go with their members.
  for (const a of attackers) a.destroy();
  await waitFor(async () => (await target.metric('switchboard_rooms')) === 0, 5000, 'the rooms to be forgotten');
  assertRssWithin(before, await settledRss(target));
});

test('large frames: over MAX_FRAME_BYTES refused before they are held; near the limit within the rate limit, RSS within budget', async (t) => {
  const target = await startTarget();
  t.after(() => target.stop());
  const witness = await Witness.start(target.port, t);
  await witness.served(5);
  const before = await settledRss(target);
  const over = Buffer.alloc(1024 * 1024 + 100, 0x61);
  over.write('{"type":"send_chat","room":"m","data":"');
  const near = '{"type":"send_chat","room":"m","data":"' + 'b'.repeat(1000 * 1024) + '"}\n';
  const { peak } = await peakRss(target, async () => {
    const big: RawClient[] = [];
    for (let i = 0; i < 8; i++) {
      const a = await RawClient.open(target.port);
      t.after(() => a.destroy());
      await a.hello(`big-${i}`);
      a.write(over);
      big.push(a);
    }
    for (const a of big) {
      assert.equal(await a.errorCode(), 'too_large');
      await a.waitClosed();
    }
    // Two members of one room, one sending 40 messages of ~1 MB.
    const sender = await RawClient.open(target.port);
    const receiver = await RawClient.open(target.port);
    t.after(() => {
      sender.destroy();
      receiver.destroy();
    });
    for (const [c, u] of [[sender, 'sender'], [receiver, 'receiver']] as const) {
      await c.hello(u);
      c.line({ type: 'join_room', room: 'm', id: 'j' });
      await c.waitFor((m) => m.id === 'j');
    }
    // 40 MB in two seconds, far beyond what history keeps (HISTORY_ROOM_BYTES).
    for (let i = 0; i < 40; i++) {
      sender.write(near);
      await new Promise((r) => setTimeout(r, 50));
    }
    // Members read them all, unless one falls MAX_OUTBOUND_BYTES behind (then it is cut off as
    // a slow consumer, by design: the test process shares two cores with the server).
    for (const c of [sender, receiver]) {
      await waitFor(() => c.lines.filter((m) => m.type === 'message').length === 40 || c.closed, 15_000, 'every large message delivered');
      if (c.closed) assert.equal(c.lines[c.lines.length - 1]?.code, 'slow_consumer');
    }
  });
  assert.equal(await target.metric('switchboard_limit_exceeded_total{limit="MAX_FRAME_BYTES"}'), 8);
  await assertWitnessServed(witness);
  assertRssWithin(before, peak, undefined, 'peak RSS');
  assertRssWithin(before, await settledRss(target));
});

test('history of small messages between other output: RSS within budget, the history budget counts what is held', async (t) => {
  // Standalone keeps history up to HISTORY_TOTAL_BYTES. It kept each message's encoded frames:
  // small slices of Node's shared 8 KiB buffer pool, and with a presence reply of about 4 KB
  // written between two kept messages each kept message held a slab of its own: 20 connections
  // under their rate limits grew a process by 956 MB for a 64 MiB budget, and it stayed.
  const target = await startTarget({ HISTORY_TOTAL_BYTES: String(16 * 1048576), RATE_LIMIT_PER_SEC: '20000', RATE_LIMIT_BURST: '20000' });
  t.after(() => target.stop());
  const witness = await Witness.start(target.port, t);
  await witness.served(5);
  // Members with long names: a presence reply of "big" is about 4 KB.
  for (let i = 0; i < 28; i++) {
    const m = await RawClient.open(target.port);
    t.after(() => m.destroy());
    await m.hello(`member-${i}-`.padEnd(128, 'x'));
    m.line({ type: 'join_room', room: 'big', id: 'j' });
    await m.waitFor((r) => r.id === 'j');
  }
  const before = await settledRss(target);
  const room = (c: number, r: number) => `room-${c}-${r}-`.padEnd(100, 'r');
  const { peak } = await peakRss(target, async () => {
    const writers: Promise<void>[] = [];
    for (let c = 0; c < 4; c++) {
      const a = await RawClient.open(target.port);
      t.after(() => a.destroy());
      await a.hello(`writer-${c}`);
      let joins = JSON.stringify({ type: 'join_room', room: 'big' }) + '\n';
      for (let r = 0; r < 99; r++) joins += JSON.stringify({ type: 'join_room', room: room(c, r) }) + '\n';
      a.write(joins);
      // What comes back (about 200 MB of presence replies in all) is counted, not parsed, and
      // each round waits for the previous one's answers: a writer reads what it asked for.
      a.socket.removeAllListeners('data');
      let tail = '';
      let waiting: { id: string; resolve: () => void } | null = null;
      a.socket.on('data', (chunk: Buffer) => {
        tail = (tail + chunk.toString('latin1', Math.max(0, chunk.length - 64))).slice(-128);
        if (waiting !== null && tail.includes(`"id":"${waiting.id}"`)) waiting.resolve();
      });
      writers.push(
        (async () => {
          for (let round = 0; round < 70; round++) {
            let frames = '';
            for (let r = 0; r < 99; r++) {
              frames += JSON.stringify({ type: 'send_chat', room: room(c, r), data: round }) + '\n';
              frames += '{"type":"presence","room":"big"}\n{"type":"presence","room":"big"}\n';
            }
            const answered = new Promise<void>((resolve) => (waiting = { id: `round-${round}`, resolve }));
            a.write(`${frames}{"type":"ping","id":"round-${round}"}\n`);
            await answered;
          }
        })(),
      );
    }
    await Promise.all(writers);
  });
  const held = await target.metric('switchboard_history_bytes');
  assert.ok(held !== undefined && held > 8 * 1048576, `history holds ${held} bytes: the budget was reached`);
  await assertWitnessServed(witness);
  assertRssWithin(before, peak, undefined, 'peak RSS');
  assertRssWithin(before, await settledRss(target), undefined, 'RSS with the history kept');
});

test('data that grows when serialised again: bad_request, nothing over MAX_FRAME_BYTES reaches anyone', async (t) => {
  // `1e20` is written `100000000000000000000` when the payload is serialised for its recipients:
  // a legal 1 MiB frame of such numbers became a 4.6 MB message, over every recipient's outbound
  // bound, and each member (a direct message's addressee too) was cut as a slow consumer.
  const MAX = 65_536;
  const target = await startTarget({ MAX_FRAME_BYTES: String(MAX) });
  t.after(() => target.stop());
  const members: RawClient[] = [];
  for (const name of ['sender', 'member', 'victim']) {
    const c = await RawClient.open(target.port);
    t.after(() => c.destroy());
    await c.hello(name);
    c.line({ type: 'join_room', room: 'r', id: 'j' });
    await c.waitFor((m) => m.id === 'j');
    members.push(c);
  }
  const [sender, member, victim] = members;
  const grows = `[${'1e20,'.repeat(Math.floor((MAX - 100) / 5))}1]`;
  const fits = `[${'1e20,'.repeat(Math.floor(MAX / 22) - 10)}1]`;
  sender.write(`{"type":"send_chat","room":"r","id":"grows","data":${grows}}\n`);
  sender.write(`{"type":"direct","to":"victim","id":"dm","data":${grows}}\n`);
  sender.write(`{"type":"send_chat","room":"r","id":"fits","data":${fits}}\n`);
  sender.line({ type: 'send_chat', room: 'r', id: 'after', data: 'still here' });
  for (const id of ['grows', 'dm']) {
    const reply = await sender.waitFor((m) => m.id === id);
    assert.equal(reply.code, 'bad_request', `${id}: ${JSON.stringify(reply).slice(0, 200)}`);
    assert.match(String(reply.message), /over the maximum frame size of 65536 bytes/);
  }
  assert.equal((await sender.waitFor((m) => m.id === 'fits')).type, 'ok', 'a payload that stays within the limit is accepted');
  for (const c of members) {
    await c.waitFor((m) => m.type === 'message' && m.data === 'still here');
    const delivered = c.lines.filter((m) => m.type === 'message' || m.type === 'direct');
    assert.deepEqual(delivered.map((m) => (m.data === 'still here' ? 'after' : 'fits')), ['fits', 'after'], 'the one that fits, then the next');
    assert.equal(c.closed, false);
  }
  // Nothing written to any member exceeds the limit by more than a message's envelope.
  for (const c of [member, victim]) assert.ok(c.bytesIn < 2 * (MAX + 1024), `${c.bytesIn} bytes received`);
});
