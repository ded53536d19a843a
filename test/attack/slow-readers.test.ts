// Attack class: slow readers. Members of a busy room that never read are cut off as slow
// consumers once MAX_OUTBOUND_BYTES is pending for them, and cost at most that; a member that
// reads is never cut off, not even by one frame larger than the bound; under the drop policy
// pushes are dropped but a request still gets its reply. Many clients that stop reading, each
// below its own bound, are held to OUTBOUND_BUDGET_BYTES together.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { waitFor } from '../helpers/wait';
import { assertRssWithin, assertWitnessServed, peakRss, RawClient, settledRss, startTarget, Witness } from './harness';

const BOUND = 256 * 1024;

async function member(port: number, user: string, room: string, t: { after(fn: () => void): void }): Promise<RawClient> {
  const c = await RawClient.open(port);
  t.after(() => c.destroy());
  await c.hello(user);
  c.line({ type: 'join_room', room, id: 'join' });
  await c.waitFor((m) => m.id === 'join');
  return c;
}

test('members that never read are disconnected as slow consumers; readers and the witness are not', async (t) => {
  const target = await startTarget({ MAX_OUTBOUND_BYTES: String(BOUND) });
  t.after(() => target.stop());
  const witness = await Witness.start(target.port, t);
  await witness.served(5);
  const before = await settledRss(target);
  const reader = await member(target.port, 'reader', 'busy', t);
  const deaf: RawClient[] = [];
  for (let i = 0; i < 10; i++) {
    const d = await member(target.port, `deaf-${i}`, 'busy', t);
    d.socket.pause(); // reads nothing more: the kernel buffers fill, then the server's
    deaf.push(d);
  }
  const talker = await member(target.port, 'talker', 'busy', t);
  const payload = 'z'.repeat(8 * 1024);
  const { peak } = await peakRss(target, async () => {
    // About 8 MB into the room over a second or so (kernel buffers on loopback take megabytes
    // before the server's own bound is reached).
    for (let i = 0; i < 1000; i++) {
      talker.line({ type: 'send_chat', room: 'busy', data: payload });
      if (i % 20 === 19) await new Promise((r) => setTimeout(r, 20));
    }
    await waitFor(async () => (await target.metric('switchboard_errors_total{code="slow_consumer"}')) === deaf.length, 10_000, 'every deaf member to be cut off');
  });
  // The reader got every message and is still connected.
  await waitFor(() => reader.lines.filter((m) => m.type === 'message').length === 1000, 10_000, 'the reader to get all 1000 messages');
  assert.equal(reader.closed, false);
  assert.equal(talker.closed, false);
  assert.ok(((await target.metric('switchboard_limit_exceeded_total{limit="MAX_OUTBOUND_BYTES"}')) ?? 0) >= deaf.length);
  // What a deaf member finds when it finally reads: messages, then slow_consumer, then the close.
  deaf[0].socket.resume();
  await deaf[0].waitClosed(5000);
  const last = deaf[0].lines[deaf[0].lines.length - 1];
  assert.ok(last === undefined || last.code === 'slow_consumer' || last.type === 'message', JSON.stringify(last));
  await assertWitnessServed(witness);
  assertRssWithin(before, peak, undefined, 'peak RSS');
  assertRssWithin(before, await settledRss(target));
});

test('a frame larger than MAX_OUTBOUND_BYTES reaches a member that reads (history included); it is not a slow consumer', async (t) => {
  const target = await startTarget({ MAX_OUTBOUND_BYTES: '65536', MAX_FRAME_BYTES: String(512 * 1024) });
  t.after(() => target.stop());
  const witness = await Witness.start(target.port, t);
  const a = await member(target.port, 'big-a', 'big', t);
  const b = await member(target.port, 'big-b', 'big', t);
  const data = 'q'.repeat(300 * 1024);
  for (let i = 0; i < 3; i++) {
    a.line({ type: 'send_chat', room: 'big', data, id: `s${i}` });
    await a.waitFor((m) => m.id === `s${i}`);
  }
  await waitFor(() => b.lines.filter((m) => m.type === 'message').length === 3, 5000, 'b to get the three large messages');
  // One history reply: a page, however large its one message, goes to a reader that reads.
  b.line({ type: 'history', room: 'big', id: 'h' });
  const h = await b.waitFor((m) => m.id === 'h', 5000, 'the history reply');
  assert.equal(h.type, 'history', JSON.stringify(h).slice(0, 200));
  assert.ok((h.bytes as number) > 300 * 1024, 'a page with one large message');
  assert.equal(a.closed || b.closed, false, 'nobody was cut off');
  assert.equal(await target.metric('switchboard_errors_total{code="slow_consumer"}'), 0);
  await assertWitnessServed(witness);
});

test('drop policy: pushes to a deaf member are dropped, its requests still get their replies', async (t) => {
  const target = await startTarget({ MAX_OUTBOUND_BYTES: '65536', SLOW_CONSUMER_POLICY: 'drop' });
  t.after(() => target.stop());
  const witness = await Witness.start(target.port, t);
  const deaf = await member(target.port, 'deaf', 'room', t);
  const talker = await member(target.port, 'talker', 'room', t);
  deaf.socket.pause();
  const payload = 'd'.repeat(8 * 1024);
  for (let i = 0; i < 600; i++) {
    talker.line({ type: 'send_chat', room: 'room', data: payload });
    if (i % 50 === 49) await new Promise((r) => setTimeout(r, 5));
  }
  await waitFor(async () => ((await target.metric('switchboard_dropped_total{reason="slow_consumer"}')) ?? 0) > 0, 10_000, 'pushes to be dropped');
  deaf.line({ type: 'presence', room: 'room', id: 'p' });
  deaf.line({ type: 'ping', id: 'q' });
  await waitFor(async () => ((await target.metric('switchboard_messages_received_total{type="ping"}')) ?? 0) >= 1, 5000, 'the requests to be handled');
  deaf.socket.resume();
  const p = await deaf.waitFor((m) => m.id === 'p', 10_000, 'the presence reply');
  assert.equal(p.type, 'presence');
  assert.equal((await deaf.waitFor((m) => m.id === 'q')).type, 'pong');
  assert.equal(deaf.closed, false);
  await assertWitnessServed(witness);
});

test('many clients that stop reading, each below its own bound: the process-wide OUTBOUND_BUDGET_BYTES cuts the furthest behind', async (t) => {
  const budget = 4 * 1024 * 1024;
  // Each deaf client's own bound (32 MiB) is never reached here: only the budget can cut them.
  const target = await startTarget({ MAX_OUTBOUND_BYTES: String(32 * 1024 * 1024), OUTBOUND_BUDGET_BYTES: String(budget), RATE_LIMIT_PER_SEC: '100000', RATE_LIMIT_BURST: '100000' });
  t.after(() => target.stop());
  const witness = await Witness.start(target.port, t);
  await witness.served(5);
  const before = await settledRss(target);
  const open = async (user: string): Promise<RawClient> => {
    const c = await RawClient.open(target.port);
    t.after(() => c.destroy());
    await c.hello(user);
    return c;
  };
  const reader = await open('reader');
  const deaf: RawClient[] = [];
  for (let i = 0; i < 8; i++) {
    const d = await open(`deaf-${i}`);
    d.socket.pause();
    deaf.push(d);
  }
  const sender = await open('sender');
  const data = 'd'.repeat(32 * 1024);
  const perDeaf = 12 * 1024 * 1024; // kernel buffers take a few MB each; the rest waits in the server
  const rounds = Math.ceil(perDeaf / data.length);
  const { peak } = await peakRss(target, async () => {
    for (let i = 0; i < rounds; i++) {
      for (let k = 0; k < deaf.length; k++) sender.line({ type: 'direct', to: `deaf-${k}`, data });
      sender.line({ type: 'direct', to: 'reader', data: i });
      if (i % 8 === 7) await new Promise((r) => setTimeout(r, 5));
    }
    await waitFor(async () => (await target.metric('switchboard_errors_total{code="slow_consumer"}')) === deaf.length, 15_000, 'every deaf client to be cut off');
  });
  assert.ok(((await target.metric('switchboard_limit_exceeded_total{limit="OUTBOUND_BUDGET_BYTES"}')) ?? 0) >= deaf.length, 'cut by the budget');
  assert.equal(await target.metric('switchboard_limit_exceeded_total{limit="MAX_OUTBOUND_BYTES"}'), 0, 'no client reached its own bound');
  // The reader got every message (it reads), the sender is still served, and the pending output
  // is back within the budget.
  await waitFor(() => reader.lines.filter((m) => m.type === 'direct').length === rounds, 10_000, 'the reader to get all its messages');
  assert.equal(reader.closed, false);
  assert.equal(sender.closed, false);
  await waitFor(async () => ((await target.stats()).outbound_pending_bytes as number) <= budget, 5000, 'pending output within the budget');
  // A deaf client that reads at last finds its messages, then slow_consumer, then the close.
  deaf[0].socket.resume();
  await deaf[0].waitClosed(5000);
  const last = deaf[0].lines[deaf[0].lines.length - 1];
  assert.ok(last === undefined || last.code === 'slow_consumer' || last.type === 'direct', JSON.stringify(last).slice(0, 200));
  await assertWitnessServed(witness);
  assertRssWithin(before, peak, undefined, 'peak RSS');
});
