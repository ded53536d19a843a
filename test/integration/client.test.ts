// The TypeScript client against a real server: the request API, events, and reconnect with
// backoff, rejoin and history recovery against a server restarted on the same port.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { MemoryBus } from '../../services/bus';
import { ClientError, SwitchboardClient, type RoomMessage } from '../../services/client';
import { startServer, type TestServer } from '../helpers/server';
import { waitFor } from '../helpers/wait';

function client(port: number, user: string, extra: Partial<ConstructorParameters<typeof SwitchboardClient>[0]> = {}): SwitchboardClient {
  return new SwitchboardClient({ servers: [{ host: '127.0.0.1', port }], user, initialBackoffMs: 20, maxBackoffMs: 200, requestTimeoutMs: 3000, ...extra });
}

function collect(c: SwitchboardClient): RoomMessage[] {
  const got: RoomMessage[] = [];
  c.on('message', (m: RoomMessage) => got.push(m));
  return got;
}

describe('SwitchboardClient', () => {
  for (const mode of ['text', 'binary'] as const) {
    test(`${mode}: connect, hello, join, send, onMessage, direct, presence, history, errors`, async (t) => {
      const srv = await startServer();
      t.after(() => srv.close());
      const a = client(srv.port, 'ann', { mode });
      const b = client(srv.port, 'bob', { mode });
      t.after(() => Promise.all([a.close(), b.close()]));
      const w = await a.connect();
      assert.equal(w.user, 'ann');
      await b.connect();
      const got = collect(b);
      await a.join('room');
      await b.join('room');
      const seq = await a.send('room', { hi: 1 });
      assert.equal(seq, 1);
      await waitFor(() => got.length === 1, 2000, 'bob to get the message');
      assert.equal(got[0].from, 'ann');
      assert.deepEqual(got[0].data, { hi: 1 });
      const directs: unknown[] = [];
      b.on('direct', (d) => directs.push(d));
      await a.direct('bob', 'psst');
      await waitFor(() => directs.length === 1, 2000, 'the direct message');
      assert.deepEqual((await a.presence('room')).sort(), ['ann', 'bob']);
      assert.deepEqual((await b.history('room')).map((m) => m.data), [{ hi: 1 }]);
      await assert.rejects(a.send('elsewhere', 1), (e: unknown) => e instanceof ClientError && e.code === 'not_in_room');
      await assert.rejects(a.direct('nobody', 1), (e: unknown) => e instanceof ClientError && e.code === 'user_offline');
    });
  }

  test('reconnect with backoff after a restart on the same port: rejoin and recover what was missed', async (t) => {
    // The bus outlives the gateway, as Redis does in cluster mode.
    const bus = new MemoryBus({ historySize: 100 });
    let srv: TestServer = await startServer({}, { bus });
    const port = srv.port;
    t.after(() => srv.close());
    const c = client(port, 'roamer');
    t.after(() => c.close());
    const got = collect(c);
    const reconnects: unknown[] = [];
    c.on('reconnect', (r) => reconnects.push(r));
    await c.connect();
    await c.join('r');
    for (let i = 1; i <= 3; i++) await c.send('r', i);
    await waitFor(() => got.length === 3, 2000, 'three messages');

    await srv.close();
    assert.deepEqual(reconnects, [{ type: 'reconnect', reason: 'shutdown', reconnect: true }]);
    // While the client is away, three more messages are accepted in the room.
    for (let i = 4; i <= 6; i++) bus.publish({ room: 'r', from: 'other', dataJson: String(i), ts: Date.now() });
    await new Promise((r) => setTimeout(r, 100)); // let a few reconnect attempts fail against the closed port
    const recovered: { room: string; count: number }[] = [];
    c.on('recovered', (r: { room: string; count: number }) => recovered.push(r));
    srv = await startServer({ tcpPort: port }, { bus });
    await waitFor(() => recovered.length === 1, 5000, 'the client to reconnect and recover');
    assert.deepEqual(recovered, [{ room: 'r', count: 3, recovered: true }]);
    assert.deepEqual(got.map((m) => m.data), [1, 2, 3, 4, 5, 6]);
    assert.equal(c.connects, 2);
    // The rejoin is real: live messages arrive again.
    await c.send('r', 7);
    await waitFor(() => got.length === 7, 2000, 'a live message after the rejoin');
    assert.deepEqual(got.map((m) => m.seq), [1, 2, 3, 4, 5, 6, 7]);
  });

  test('regression: a live message arriving during recovery does not hide the missed ones', async (t) => {
    const bus = new MemoryBus({ historySize: 100 });
    let srv: TestServer = await startServer({}, { bus });
    const port = srv.port;
    t.after(() => srv.close());
    const c = client(port, 'racer');
    t.after(() => c.close());
    const got = collect(c);
    await c.connect();
    await c.join('r');
    await c.send('r', 1);
    await waitFor(() => got.length === 1, 2000, 'first message');
    await srv.close();
    for (let i = 2; i <= 4; i++) bus.publish({ room: 'r', from: 'other', dataJson: String(i), ts: Date.now() });
    // The first history request sees another message accepted just before it: it reaches the
    // client live, ahead of the history reply.
    const history = bus.history.bind(bus);
    let raced = false;
    bus.history = (room, q) => {
      if (!raced) {
        raced = true;
        bus.publish({ room, from: 'other', dataJson: '5', ts: Date.now() });
      }
      return history(room, q);
    };
    srv = await startServer({ tcpPort: port }, { bus });
    await waitFor(() => got.length >= 5, 5000, 'five messages');
    assert.ok(raced);
    assert.deepEqual(got.map((m) => m.data), [1, 2, 3, 4, 5], 'nothing lost, in order');
  });

  test('regression: after a restart that lost all state (fresh embedded bus), new messages are not dropped', async (t) => {
    let srv: TestServer = await startServer();
    const port = srv.port;
    t.after(() => srv.close());
    const c = client(port, 'amnesia');
    const w = client(port, 'writer');
    t.after(() => Promise.all([c.close(), w.close()]));
    const got = collect(c);
    await c.connect();
    await w.connect();
    await c.join('r');
    await w.join('r');
    for (let i = 1; i <= 3; i++) await w.send('r', `old-${i}`);
    await waitFor(() => got.length === 3, 2000, 'three messages');
    await srv.close();
    srv = await startServer({ tcpPort: port });
    await waitFor(() => c.connected && w.connected && c.rooms.size === 1, 5000, 'both clients back');
    await waitFor(async () => (await w.presence('r')).length === 2, 3000, 'both in the room again');
    // Sequence numbers start again at 1 on the new server.
    await w.send('r', 'new-1');
    await waitFor(() => got.some((m) => m.data === 'new-1'), 2000, 'the first message after the restart');
  });

  test('reconnect: false is honoured: no reconnect after the server goes away', async (t) => {
    const srv = await startServer();
    t.after(() => srv.close());
    const c = client(srv.port, 'quitter', { reconnect: false });
    await c.connect();
    let disconnected = 0;
    c.on('disconnected', () => disconnected++);
    await srv.close();
    await waitFor(() => disconnected === 1, 2000, 'disconnected');
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(c.connects, 1);
    assert.equal(c.connected, false);
  });
});
