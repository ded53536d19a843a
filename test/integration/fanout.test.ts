// The hot path and backpressure: a broadcast is encoded once and shared, each socket is written
// once per turn, and a client that does not read is a slow consumer (disconnected or dropped by
// policy), counted, and never slows the other members.
import assert from 'node:assert/strict';
import type { Server, Socket } from 'node:net';
import { describe, test, type TestContext } from 'node:test';
import type { Config } from '../../services/control';
import { Outbound } from '../../services/protocol';
import { startServer, type TestServer } from '../helpers/server';
import { helloClient, type WireClient } from '../helpers/wire';
import { waitFor } from '../helpers/wait';

function serverSockets(srv: TestServer): Socket[] {
  const list: Socket[] = [];
  (srv.server as unknown as { tcp: Server }).tcp.on('connection', (s: Socket) => list.push(s));
  return list;
}

describe('fan-out', () => {
  test('one room message is encoded once: every member gets the same bytes', async (t) => {
    const srv = await startServer();
    t.after(() => srv.close());
    const members = await Promise.all([0, 1, 2, 3, 4].map((i) => helloClient(srv.port, `m${i}`)));
    t.after(() => members.forEach((m) => m.destroy()));
    for (const m of members) await m.join('once');
    const seen: [Outbound, Buffer][] = [];
    const orig = Outbound.prototype.text;
    Outbound.prototype.text = function (this: Outbound) {
      const b = orig.call(this);
      if (this.json.includes('encode-once-marker')) seen.push([this, b]);
      return b;
    };
    try {
      await members[0].request({ type: 'send_chat', room: 'once', data: 'encode-once-marker' });
      await Promise.all(members.map((m) => m.nextOfType('message')));
    } finally {
      Outbound.prototype.text = orig;
    }
    assert.equal(seen.length, 5, 'queued on five connections');
    assert.equal(new Set(seen.map((s) => s[0])).size, 1, 'one Outbound');
    assert.equal(new Set(seen.map((s) => s[1])).size, 1, 'one Buffer shared by all');
  });

  test('a burst of messages reaches each member in a few socket writes, not one write per message', async (t) => {
    const srv = await startServer();
    t.after(() => srv.close());
    const sockets = serverSockets(srv);
    const rx = await helloClient(srv.port, 'rx');
    const tx = await helloClient(srv.port, 'tx');
    t.after(() => (rx.destroy(), tx.destroy()));
    await rx.join('burst');
    await tx.join('burst');
    const rxSocket = (await waitFor(() => sockets.find((s) => s.remotePort === rx.socket.localPort), 2000, 'server socket'))!;
    // Count what the socket hands to the kernel: one _write (write(2)) or _writev (writev(2))
    // call each, whatever number of frames a corked writev carries.
    let writes = 0;
    const raw = rxSocket as unknown as Record<'_write' | '_writev', (...a: unknown[]) => unknown>;
    for (const m of ['_write', '_writev'] as const) {
      const orig = raw[m].bind(rxSocket);
      raw[m] = (...a: unknown[]) => (writes++, orig(...a));
    }
    const N = 100;
    tx.writeRaw(Array.from({ length: N }, (_, i) => JSON.stringify({ type: 'send_chat', room: 'burst', data: i }) + '\n').join(''));
    await waitFor(() => rx.all.filter((m) => m.type === 'message').length === N, 3000, 'all messages');
    assert.ok(writes <= 5, `${N} messages in ${writes} writes`);
  });
});

/**
 * A sender floods a room with 8 KiB messages in acknowledged batches; `fast` reads, `slow` does
 * not. Returns how many messages were sent.
 */
async function flood(srv: TestServer, sender: WireClient, fast: WireClient, until: () => boolean, maxBatches = 80): Promise<number> {
  const payload = 'x'.repeat(8 * 1024);
  let sent = 0;
  for (let b = 0; b < maxBatches && !until(); b++) {
    for (let i = 0; i < 20; i++) sender.send({ type: 'send_chat', room: 'fire', data: `${sent++}:${payload}` });
    await sender.request({ type: 'ping' });
    // The reading member keeps up with every batch, whatever the slow one does.
    await waitFor(() => fast.all.filter((m) => m.type === 'message').length === sent, 2000, 'the fast member to keep up');
  }
  return sent;
}

/**
 * A gateway with a 64 KiB outbound bound (plus `overrides`) and three members of room "fire":
 * `slow` has stopped reading, `fast` reads, `sender` floods. All closed when the test ends.
 */
async function slowConsumerRoom(t: TestContext, overrides: Partial<Config>) {
  const srv = await startServer({ maxOutboundBytes: 64 * 1024, ...overrides });
  t.after(() => srv.close());
  const slow = await helloClient(srv.port, 'slow');
  const fast = await helloClient(srv.port, 'fast');
  const sender = await helloClient(srv.port, 'sender');
  t.after(() => [slow, fast, sender].forEach((c) => c.destroy()));
  for (const c of [slow, fast, sender]) await c.join('fire');
  slow.socket.pause();
  return { srv, slow, fast, sender, counters: srv.server.counters };
}

describe('slow consumers', () => {
  test('policy disconnect: slow_consumer, counted, disconnected; other members unaffected', async (t) => {
    const { srv, slow, fast, sender, counters } = await slowConsumerRoom(t, {});
    const sent = await flood(srv, sender, fast, () => counters.dropped.slow_consumer > 0);
    assert.ok(counters.dropped.slow_consumer >= 1, `detected after ${sent} messages`);
    assert.ok(counters.errors.slow_consumer >= 1);
    slow.socket.resume();
    await slow.waitClosed(5000);
    const last = slow.all[slow.all.length - 1];
    assert.equal(last?.code, 'slow_consumer', 'the last thing the slow client reads says why');
    assert.ok(slow.all.filter((m) => m.type === 'message').length < sent);
    // Order for the fast member is intact.
    const seqs = fast.all.filter((m) => m.type === 'message').map((m) => m.seq as number);
    assert.deepEqual(seqs, Array.from({ length: sent }, (_, i) => i + 1));
    // The client saw its socket close; the server's side of it closes on its own turn.
    await waitFor(() => srv.server.connectionCount === 2, 3000, 'the server to count the slow client gone');
    await sender.request({ type: 'send_chat', room: 'fire', data: 'after' });
    await fast.next((m) => m.data === 'after');
  });

  test('regression: members that read are not slow consumers when one turn queues more than the bound', async (t) => {
    // Everything queued in a turn used to count against MAX_OUTBOUND_BYTES before any write, so
    // a burst bigger than the bound disconnected every member, readers included.
    const srv = await startServer({ maxOutboundBytes: 64 * 1024 });
    t.after(() => srv.close());
    const reader = await helloClient(srv.port, 'reader');
    const sender = await helloClient(srv.port, 'sender');
    t.after(() => (reader.destroy(), sender.destroy()));
    await reader.join('burst');
    await sender.join('burst');
    const payload = 'y'.repeat(8 * 1024);
    sender.writeRaw(Array.from({ length: 20 }, (_, i) => JSON.stringify({ type: 'send_chat', room: 'burst', data: `${i}:${payload}` }) + '\n').join(''));
    await waitFor(() => reader.all.filter((m) => m.type === 'message').length === 20, 3000, 'the whole burst');
    assert.equal(srv.server.counters.dropped.slow_consumer, 0);
    assert.equal(reader.closed || sender.closed, false);
  });

  test('policy drop: messages for the slow client are dropped and counted; it stays connected', async (t) => {
    const { srv, slow, fast, sender, counters } = await slowConsumerRoom(t, { slowConsumerPolicy: 'drop' });
    const sent = await flood(srv, sender, fast, () => counters.dropped.slow_consumer > 5);
    assert.ok(counters.dropped.slow_consumer > 5);
    assert.equal(counters.errors.slow_consumer, 0, 'no error is sent under the drop policy');
    slow.socket.resume();
    // Once it reads again it is served again, and it missed messages (recoverable via history).
    await waitFor(async () => {
      await sender.request({ type: 'send_chat', room: 'fire', data: 'probe' });
      return slow.all.some((m) => m.data === 'probe');
    }, 5000, 'the slow client to be served again');
    assert.equal(slow.closed, false);
    const got = slow.all.filter((m) => m.type === 'message' && m.data !== 'probe').length;
    assert.ok(got < sent, `slow got ${got} of ${sent}`);
    assert.equal(fast.all.filter((m) => m.type === 'message' && m.data !== 'probe').length, sent);
  });

  test('policy drop, then the room goes quiet: once the client has caught up it gets a position push with the last seq', async (t) => {
    const { srv, slow, fast, sender, counters } = await slowConsumerRoom(t, { slowConsumerPolicy: 'drop' });
    const sent = await flood(srv, sender, fast, () => counters.dropped.slow_consumer > 5);
    // Nothing more is sent to the room: no later message would show the slow client its gap.
    slow.socket.resume();
    const position = await slow.next((m) => m.type === 'position', 5000, 'the position push');
    assert.deepEqual({ room: position.room, seq: position.seq }, { room: 'fire', seq: sent });
    const last = fast.all.filter((m) => m.type === 'message').at(-1)!;
    assert.equal(position.epoch, last.epoch);
    const got = slow.all.filter((m) => m.type === 'message');
    assert.ok(got.length < sent, `slow got ${got.length} of ${sent}`);
    assert.equal(slow.closed, false);
  });
});
