// Attack class: memory. Rooms are bounded per connection and in total (MAX_ROOMS_TOTAL: the
// attacker gets too_many_rooms), frames over MAX_FRAME_BYTES are refused before they are held
// (too_large, close), and near-limit frames within the rate limit leave RSS within its budget.
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
