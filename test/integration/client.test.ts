// The TypeScript client against a real server: the request API, events, and reconnect with
// backoff, rejoin and history recovery against a server restarted on the same port.
import assert from 'node:assert/strict';
import { createServer, connect as connectTcp, type AddressInfo, type Server, type Socket } from 'node:net';
import { describe, test, type TestContext } from 'node:test';
import { MemoryBus } from '../../services/bus';
import { signHs256 } from '../../services/gateway';
import { ClientError, SwitchboardClient, type ClientOptions, type RoomMessage } from '../../services/client';
import { DropReason } from '../../services/telemetry/counters';
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

/**
 * A TCP proxy in front of a server: `cut()` closes every connection through it (the server and
 * the client each see theirs close) while it keeps accepting; `mute` makes the next connection
 * pass the server's bytes only up to its welcome (a server that stops answering).
 */
class CutProxy {
  readonly server: Server;
  connections = 0;
  muteNext = false;
  /** Text mode: the next connection's first `history` request is answered `unavailable` here. */
  failHistoryNext = false;
  private readonly open = new Set<Socket>();
  constructor(target: number) {
    this.server = createServer((client) => {
      this.connections++;
      const upstream = connectTcp({ host: '127.0.0.1', port: target });
      const mute = this.muteNext;
      this.muteNext = false;
      let welcomed = false;
      for (const s of [client, upstream]) {
        this.open.add(s);
        s.on('error', () => {});
        s.on('close', () => {
          this.open.delete(s);
          client.destroy();
          upstream.destroy();
        });
      }
      let failHistory = this.failHistoryNext;
      this.failHistoryNext = false;
      client.on('data', (d: Buffer) => {
        if (!failHistory || !d.includes('"history"')) return void upstream.write(d);
        const lines = d.toString('utf8').split('\n');
        const kept = lines.filter((line) => {
          if (!failHistory || !line.includes('"type":"history"')) return true;
          failHistory = false;
          const id = (JSON.parse(line) as { id: unknown }).id;
          client.write(JSON.stringify({ type: 'error', id, code: 'unavailable', message: 'injected by the test proxy' }) + '\n');
          return false;
        });
        upstream.write(kept.join('\n'));
      });
      upstream.on('data', (d: Buffer) => {
        if (mute && welcomed) return;
        client.write(d);
        if (d.includes('"welcome"')) welcomed = true;
      });
    });
  }
  async listen(): Promise<number> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    return (this.server.address() as AddressInfo).port;
  }
  cut(): void {
    for (const s of this.open) s.destroy();
  }
  close(): Promise<void> {
    this.cut();
    return new Promise((r) => this.server.close(() => r()));
  }
}

/**
 * A server whose bus outlives it, as Redis does in cluster mode: stop() and start() again on the
 * same port. Closed when the test ends.
 */
async function restartableServer(t: TestContext) {
  const bus = new MemoryBus({ historySize: 100 });
  let srv: TestServer = await startServer({}, { bus });
  t.after(() => srv.close());
  return {
    bus,
    port: srv.port,
    server: () => srv.server,
    stop: () => srv.close(),
    start: async () => {
      srv = await startServer({ tcpPort: srv.port }, { bus });
    },
  };
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

  test('join and leave made together: the last one counts, and a reconnect does not rejoin a room left', async (t) => {
    const srv = await startServer();
    t.after(() => srv.close());
    const a = client(srv.port, 'ann');
    t.after(() => a.close());
    await a.connect();
    // The join's reply comes after the leave was made; it used to put the room back.
    await Promise.all([a.join('gone'), a.leave('gone')]);
    assert.equal(a.rooms.has('gone'), false);
    await a.join('back');
    await Promise.all([a.leave('back'), a.join('back')]);
    assert.equal(a.rooms.has('back'), true);
    assert.deepEqual(await a.presence('back'), ['ann']);
    await assert.rejects(a.presence('gone'), (e: unknown) => e instanceof ClientError && e.code === 'not_in_room');
  });

  test('reconnect with backoff after a restart on the same port: rejoin and recover what was missed', async (t) => {
    const restartable = await restartableServer(t);
    const { bus, port } = restartable;
    const c = client(port, 'roamer');
    t.after(() => c.close());
    const got = collect(c);
    const reconnects: unknown[] = [];
    c.on('reconnect', (r) => reconnects.push(r));
    await c.connect();
    await c.join('r');
    for (let i = 1; i <= 3; i++) await c.send('r', i);
    await waitFor(() => got.length === 3, 2000, 'three messages');

    await restartable.stop();
    assert.deepEqual(reconnects, [{ type: 'reconnect', reason: 'shutdown', reconnect: true }]);
    // While the client is away, three more messages are accepted in the room.
    for (let i = 4; i <= 6; i++) bus.publish({ room: 'r', from: 'other', dataJson: String(i), ts: Date.now() });
    await new Promise((r) => setTimeout(r, 100)); // let a few reconnect attempts fail against the closed port
    const recovered: { room: string; count: number }[] = [];
    c.on('recovered', (r: { room: string; count: number }) => recovered.push(r));
    await restartable.start();
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
    const restartable = await restartableServer(t);
    const { bus, port } = restartable;
    const c = client(port, 'racer');
    t.after(() => c.close());
    const got = collect(c);
    await c.connect();
    await c.join('r');
    await c.send('r', 1);
    await waitFor(() => got.length === 1, 2000, 'first message');
    await restartable.stop();
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
    await restartable.start();
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

  for (const quiet of [false, true]) {
    test(quiet ? 'messages dropped for a slow reader in a room that then goes quiet: the position push after it caught up recovers them' : 'a live seq gap (pushes dropped for a slow reader) is recovered through history: every message once, in order', async (t) => {
      // SLOW_CONSUMER_POLICY=drop: a member too far behind loses pushes but stays connected, so
      // nothing but the gap in seq tells it what it missed.
      const srv = await startServer({ slowConsumerPolicy: 'drop', maxOutboundBytes: 64 * 1024, historySize: 20_000, historyRoomBytes: 1 << 30, historyTotalBytes: 1 << 30 });
      t.after(() => srv.close());
      const reader = client(srv.port, 'reader');
      const talker = client(srv.port, 'talker');
      t.after(() => Promise.all([reader.close(), talker.close()]));
      const got = collect(reader);
      const recoveries: { count: number; recovered: boolean }[] = [];
      reader.on('recovered', (r: { count: number; recovered: boolean }) => recoveries.push(r));
      await reader.connect();
      await talker.connect();
      await reader.join('r');
      await talker.join('r');
      const socket = (reader as unknown as { socket: import('node:net').Socket }).socket;
      socket.pause();
      const data = 'g'.repeat(8192);
      // Send in batches until pushes are dropped (the kernel's socket buffers take a few MB first),
      // then one batch more.
      const counters = srv.server.services.counters;
      let n = 0;
      let extra = -1;
      while (extra !== 0 && n < 20_000) {
        const sent: Promise<number | undefined>[] = [];
        for (let k = 0; k < 50; k++) sent.push(talker.send('r', { i: ++n, data }));
        assert.equal((await Promise.all(sent))[49], n, 'every message accepted');
        if (counters.dropped[DropReason.SlowConsumer] > 0) extra = extra < 0 ? 1 : extra - 1;
      }
      assert.ok(counters.dropped[DropReason.SlowConsumer] > 0, 'pushes to the reader were dropped');
      socket.resume();
      if (!quiet) {
        const dropped = counters.dropped[DropReason.SlowConsumer];
        await waitFor(() => got.length === n - dropped, 10_000, 'the messages that were not dropped');
        // The reader has read its backlog: the next message reaches it and shows the gap.
        await talker.send('r', { i: ++n, data });
      }
      // Quiet: nothing more is sent, and only the server's position push shows the gap.
      await waitFor(() => got.length === n, 10_000, 'every message').catch((e: Error) => {
        throw new Error(`${e.message}: got ${got.length} of ${n}, recoveries ${JSON.stringify(recoveries)}, dropped ${counters.dropped[DropReason.SlowConsumer]}`);
      });
      assert.deepEqual(got.map((m) => (m.data as { i: number }).i), Array.from({ length: n }, (_, k) => k + 1));
      assert.ok(recoveries.length >= 1 && recoveries.every((r) => r.recovered), JSON.stringify(recoveries));
    });
  }

  test('a recovery of more than 1,000 history pages: every message once, in order, and recovered', async (t) => {
    // The client stopped after 1,000 pages while the server still said `more`, emitted
    // `recovered: true`, and the held live messages moved its position past the rest.
    const srv = await startServer({ maxOutboundBytes: 1024, historySize: 10_000, historyRoomBytes: 1 << 30, historyTotalBytes: 1 << 30 });
    t.after(() => srv.close());
    const reader = client(srv.port, 'reader');
    t.after(() => reader.close());
    const got = collect(reader);
    const recoveries: { count: number; recovered: boolean }[] = [];
    reader.on('recovered', (r: { count: number; recovered: boolean }) => recoveries.push(r));
    await reader.connect();
    await reader.join('r');
    // The connection drops, and 6,000 messages are published before the reconnect can happen
    // (on the bus, synchronously, as the gRPC API does): with a 512-byte history page, about
    // 1,500 pages to recover.
    (reader as unknown as { socket: import('node:net').Socket }).socket.destroy();
    const N = 6000;
    const bus = srv.server.services.bus as MemoryBus;
    for (let i = 1; i <= N; i++) bus.publish({ room: 'r', from: 'talker', dataJson: JSON.stringify({ i }), ts: Date.now() });
    await waitFor(() => recoveries.length > 0, 20_000, 'the recovery');
    assert.deepEqual(recoveries, [{ room: 'r', count: N, recovered: true }]);
    assert.deepEqual(got.map((m) => (m.data as { i: number }).i), Array.from({ length: N }, (_, k) => k + 1));
  });

  test('connect() while a reconnect is pending shares it: one socket, large messages intact and in order', async (t) => {
    const restartable = await restartableServer(t);
    const { port } = restartable;
    const c = client(port, 'bot');
    const w = client(port, 'writer');
    t.after(() => Promise.all([c.close(), w.close()]));
    const got = collect(c);
    // The usual bot: connect again whenever disconnected, on top of the client's own reconnect.
    c.on('disconnected', () => void c.connect().catch(() => {}));
    await c.connect();
    await c.join('r');
    await restartable.stop();
    await restartable.start();
    await Promise.all([c.connect(), c.connect(), w.connect()]);
    await w.join('r');
    await waitFor(() => c.connected, 5000, 'the bot back in its room');
    assert.equal(restartable.server().connectionCount, 2, 'one connection per client');
    const big = 'b'.repeat(200 * 1024);
    for (let i = 1; i <= 20; i++) await w.send('r', { i, big });
    await waitFor(() => got.length === 20, 5000, 'twenty messages');
    assert.deepEqual(got.map((m) => (m.data as { i: number }).i), Array.from({ length: 20 }, (_, k) => k + 1));
    assert.ok(got.every((m) => (m.data as { big: string }).big === big));
  });

  test('requests made while connecting wait for the welcome (and the rejoin) instead of going out before hello', async (t) => {
    const srv = await startServer();
    t.after(() => srv.close());
    const c = client(srv.port, 'eager');
    t.after(() => c.close());
    const connected = c.connect();
    // A join before hello would be refused as unauthorized, and the connection closed.
    const joined = c.join('lobby');
    await joined;
    assert.equal((await connected).user, 'eager');
    assert.deepEqual(await c.presence('lobby'), ['eager']);
    assert.equal(c.connects, 1);
    // With no connection and none coming, a request fails at once.
    const idle = client(srv.port, 'idle');
    await assert.rejects(idle.request({ type: 'ping' }), (e: unknown) => e instanceof ClientError && e.code === 'unavailable');
  });

  test('a hello refused as unauthorized is not retried; a first connect that fails is not retried either', async (t) => {
    const srv = await startServer({ authSecret: 'a-secret-of-at-least-32-bytes-long!!' });
    t.after(() => srv.close());
    const c = client(srv.port, 'mallory', { token: 'not-a-token' });
    t.after(() => c.close());
    const errors: unknown[] = [];
    c.on('error', (e) => errors.push(e));
    await assert.rejects(c.connect(), (e: unknown) => e instanceof ClientError && e.code === 'unauthorized');
    // No reconnect is coming: a request fails at once instead of waiting for one.
    await assert.rejects(c.request({ type: 'ping' }), (e: unknown) => e instanceof ClientError && e.code === 'unavailable');
    assert.ok(errors.some((e) => e instanceof ClientError && e.code === 'unauthorized'), 'the refusal is emitted');

    const closedPort = srv.port;
    await srv.close();
    const nobody = client(closedPort, 'early');
    t.after(() => nobody.close());
    await assert.rejects(nobody.connect());
    await assert.rejects(nobody.request({ type: 'ping' }), (e: unknown) => e instanceof ClientError && e.code === 'unavailable');
  });

  test('a request larger than the server\'s maxFrameBytes fails with too_large and is not sent; the connection stays', async (t) => {
    const srv = await startServer({ maxFrameBytes: 64 * 1024 });
    t.after(() => srv.close());
    const c = client(srv.port, 'big');
    t.after(() => c.close());
    await c.connect();
    await c.join('r');
    await assert.rejects(c.send('r', 'x'.repeat(64 * 1024)), (e: unknown) => e instanceof ClientError && e.code === 'too_large');
    assert.equal(c.connected, true);
    assert.equal(await c.send('r', 'x'.repeat(32 * 1024)), 1, 'the next message is the room\'s first');
    assert.equal(c.connects, 1, 'never disconnected');
  });

  test('close() while the hello is pending resolves at once; the connect rejects with unavailable', async (t) => {
    const srv = await startServer();
    t.after(() => srv.close());
    const c = client(srv.port, 'quick');
    const connecting = c.connect();
    const closed = c.close();
    await assert.rejects(connecting, (e: unknown) => e instanceof ClientError && e.code === 'unavailable');
    await closed;
    assert.equal(c.connected, false);
  });

  test('connect() and requests from the disconnected handler: one new connection, the request waits for it, no flapping', async (t) => {
    const srv = await startServer();
    t.after(() => srv.close());
    const proxy = new CutProxy(srv.port);
    t.after(() => proxy.close());
    // A backoff long enough that a reconnect timer left armed would fire after connect() succeeded.
    const c = client(await proxy.listen(), 'bot', { initialBackoffMs: 300, maxBackoffMs: 300 });
    t.after(() => c.close());
    const events: string[] = [];
    let pong: Promise<unknown> | null = null;
    c.on('connected', () => events.push('connected'));
    c.on('disconnected', () => {
      events.push('disconnected');
      void c.connect().catch(() => {});
      pong ??= c.request({ type: 'ping' });
    });
    await c.connect();
    await c.join('r');
    proxy.cut();
    await waitFor(() => events.length === 3, 3000, 'disconnected, then connected');
    assert.equal(((await pong!) as { type: string }).type, 'pong', 'the request made while disconnected waited for the reconnect');
    // A timer left armed would replace the new connection within 300 ms: give it twice that.
    await assert.rejects(waitFor(() => proxy.connections > 2 || events.length > 3, 600, 'a second reconnect'));
    assert.deepEqual(events, ['connected', 'disconnected', 'connected']);
    assert.equal(proxy.connections, 2);
    assert.deepEqual(await c.presence('r'), ['bot'], 'rejoined');
  });

  test('the first connect tries each server of the list in turn', async (t) => {
    const srv = await startServer();
    t.after(() => srv.close());
    const down = await startServer();
    const downPort = down.port;
    await down.close();
    const c = new SwitchboardClient({ servers: [{ host: '127.0.0.1', port: downPort }, { host: '127.0.0.1', port: srv.port }], user: 'ha' });
    t.after(() => c.close());
    assert.equal((await c.connect()).user, 'ha');
    assert.equal(c.connected, true);
  });

  /**
   * A member through a CutProxy whose connection is cut while the room is quiet; `fault` sets what
   * the proxy does to the next connection's recovery. Only that recovery failing, and the
   * connection being given up for a new one, can bring the messages sent meanwhile.
   */
  async function quietRoomRecovery(t: TestContext, user: string, opts: Partial<ClientOptions>, fault: (proxy: CutProxy) => void): Promise<void> {
    const bus = new MemoryBus({ historySize: 100 });
    const srv = await startServer({}, { bus });
    t.after(() => srv.close());
    const proxy = new CutProxy(srv.port);
    t.after(() => proxy.close());
    const c = client(await proxy.listen(), user, opts);
    const w = client(srv.port, 'writer');
    t.after(() => Promise.all([c.close(), w.close()]));
    const got = collect(c);
    await c.connect();
    await w.connect();
    await c.join('r');
    await w.join('r');
    await w.send('r', 1);
    await waitFor(() => got.length === 1, 2000, 'the first message');
    fault(proxy);
    proxy.cut();
    for (let i = 2; i <= 5; i++) await w.send('r', i);
    // The room stays quiet: only a recovery can bring messages 2-5.
    await waitFor(() => got.length === 5, 10_000, 'the messages sent while away');
    assert.deepEqual(got.map((m) => m.data), [1, 2, 3, 4, 5]);
    assert.ok(proxy.connections >= 3, `the failed recovery's connection was given up (${proxy.connections} connections)`);
  }

  test('a recovery that gets no answer closes the connection; the reconnect recovers every message', async (t) => {
    // The next connection is welcomed, then hears nothing: its rejoin's history times out.
    await quietRoomRecovery(t, 'patient', { requestTimeoutMs: 500 }, (proxy) => (proxy.muteNext = true));
  });

  test('a recovery refused as unavailable closes the connection; the reconnect recovers every message', async (t) => {
    // The next connection's rejoin asks for history and is told `unavailable` (Redis was down).
    await quietRoomRecovery(t, 'unlucky', { mode: 'text' }, (proxy) => (proxy.failHistoryNext = true));
  });

  test('a session ended by token_expired is not reconnected with the same token; setToken() and connect() start again', async (t) => {
    const secret = 'a-secret-of-at-least-32-bytes-long!!';
    const srv = await startServer({ authSecret: secret });
    t.after(() => srv.close());
    const sec = () => Math.floor(Date.now() / 1000);
    const c = client(srv.port, 'ada', { token: signHs256({ sub: 'ada', exp: sec() + 1 }, secret) });
    t.after(() => c.close());
    const errors: string[] = [];
    c.on('error', (e: unknown) => errors.push(e instanceof ClientError ? e.code : String(e)));
    await c.connect();
    await waitFor(() => !c.connected, 5000, 'the session to end at exp');
    assert.ok(errors.includes('token_expired'), errors.join());
    // No reconnect is coming with that token: a request fails at once.
    await assert.rejects(c.request({ type: 'ping' }), (e: unknown) => e instanceof ClientError && e.code === 'unavailable');
    assert.equal(c.connects, 1);
    c.setToken(signHs256({ sub: 'ada', exp: sec() + 3600 }, secret));
    assert.equal((await c.connect()).user, 'ada');
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
