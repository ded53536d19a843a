// Wire protocol v1 over real sockets: text and binary mode, HTTP on the same port, hello and
// tokens, ping, request ids, idle and hello timeouts.
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { signHs256 } from '../../services/gateway';
import { startServer, type TestServer } from '../helpers/server';
import { binaryFrame, helloClient, WireClient, type Json } from '../helpers/wire';

function httpGet(port: number, path: string): Promise<{ status: number; body: string; type: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, type: String(res.headers['content-type']) }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('text mode', () => {
  let srv: TestServer;
  before(async () => (srv = await startServer()));
  after(() => srv.close());

  test('hello gets welcome with session, user, protocol and limits', async (t) => {
    const c = await WireClient.connect(srv.port);
    t.after(() => c.destroy());
    const w = await c.request({ type: 'hello', user: 'ada', id: 1 });
    assert.equal(w.type, 'welcome');
    assert.equal(w.id, 1);
    assert.equal(w.user, 'ada');
    assert.equal(w.protocol, 1);
    assert.equal(typeof w.session, 'string');
    assert.deepEqual(w.limits, { maxFrameBytes: 1048576, maxRooms: 100, rateLimitPerSec: 2000, idleTimeoutMs: 60000 });
  });

  test('ping gets pong, with and without id', async (t) => {
    const c = await WireClient.connect(srv.port);
    t.after(() => c.destroy());
    c.send({ type: 'ping' });
    const p = await c.nextOfType('pong');
    assert.equal(p.id, undefined);
    assert.equal(typeof p.ts, 'number');
    const q = await c.request({ type: 'ping', id: 'abc' });
    assert.deepEqual(Object.keys(q).sort(), ['id', 'ts', 'type']);
    assert.equal(q.type, 'pong');
  });

  test('requests with an id get ok or error with that id; without id, ok is not sent', async (t) => {
    const c = await helloClient(srv.port, 'grace');
    t.after(() => c.destroy());
    const ok = await c.request({ type: 'join_room', room: 'r', id: 42 });
    assert.match(String(ok.epoch), /^[0-9a-f]{12}$/, 'join_room answers with the room\'s epoch');
    assert.deepEqual(ok, { type: 'ok', id: 42, seq: 0, epoch: ok.epoch }, 'join_room answers with the last seq of the room');
    const err = await c.request({ type: 'leave_room', room: 'nope', id: 'x-1' });
    assert.equal(err.type, 'error');
    assert.equal(err.id, 'x-1');
    assert.equal(err.code, 'not_in_room');
    assert.equal(typeof err.message, 'string');
    c.send({ type: 'join_room', room: 's' });
    const pong = await c.request({ type: 'ping' });
    assert.equal(pong.type, 'pong');
    assert.deepEqual(c.inbox, [], 'no ok for the request without id');
  });

  test('hello twice is bad_request; hello without user is bad_request', async (t) => {
    const c = await helloClient(srv.port, 'twice');
    t.after(() => c.destroy());
    assert.equal((await c.request({ type: 'hello', user: 'twice' })).code, 'bad_request');
    const d = await WireClient.connect(srv.port);
    t.after(() => d.destroy());
    const e = await d.request({ type: 'hello' });
    assert.equal(e.code, 'bad_request');
    assert.match(String(e.message), /user/);
    assert.equal((await d.request({ type: 'hello', user: 'x'.repeat(129) })).code, 'bad_request');
    assert.equal((await d.request({ type: 'hello', user: 'late' })).type, 'welcome', 'a failed hello can be retried');
  });

  test('a request before hello is unauthorized and closes the connection', async (t) => {
    const c = await WireClient.connect(srv.port);
    t.after(() => c.destroy());
    const e = await c.request({ type: 'join_room', room: 'r' });
    assert.equal(e.code, 'unauthorized');
    await c.waitClosed();
  });
});

describe('binary mode', () => {
  let srv: TestServer;
  before(async () => (srv = await startServer({ maxFrameBytes: 4096 })));
  after(() => srv.close());

  test('hello, join and chat over length-prefixed frames; the preamble may be split', async (t) => {
    const c = await WireClient.connect(srv.port, 'binary', false);
    t.after(() => c.destroy());
    c.writeRaw(Buffer.from([0xb5, 0x53]));
    await new Promise((r) => setTimeout(r, 20));
    c.writeRaw(Buffer.from([0x42, 0x01]));
    const w = await c.hello('bin');
    assert.equal(w.user, 'bin');
    await c.join('b');
    const ok = await c.request({ type: 'send_chat', room: 'b', data: { x: [1, 2] } });
    assert.equal(ok.seq, 1);
    const m = await c.nextOfType('message');
    assert.deepEqual(m.data, { x: [1, 2] });
  });

  test('binary and text members of one room get the same messages', async (t) => {
    const b = await helloClient(srv.port, 'b1', 'binary');
    const x = await helloClient(srv.port, 't1', 'text');
    t.after(() => (b.destroy(), x.destroy()));
    await b.join('mixed');
    await x.join('mixed');
    await x.request({ type: 'send_chat', room: 'mixed', data: 'from text' });
    const mb = await b.nextOfType('message');
    const mt = await x.nextOfType('message');
    assert.deepEqual(mb, mt);
  });

  test('a compressed frame without negotiation is bad_frame and closes', async (t) => {
    const c = await helloClient(srv.port, 'z', 'binary');
    t.after(() => c.destroy());
    c.writeRaw(binaryFrame('{"type":"ping"}', 1));
    const e = await c.nextOfType('error');
    assert.equal(e.code, 'bad_frame');
    await c.waitClosed();
  });

  test('reserved flag bits are bad_frame and close', async (t) => {
    const c = await helloClient(srv.port, 'r', 'binary');
    t.after(() => c.destroy());
    c.writeRaw(binaryFrame('{"type":"ping"}', 0x40));
    assert.equal((await c.nextOfType('error')).code, 'bad_frame');
    await c.waitClosed();
  });

  test('unknown first bytes get bad_frame as a text line, then close', async (t) => {
    const c = await WireClient.connect(srv.port);
    t.after(() => c.destroy());
    c.writeRaw('hello there\n');
    const e = await c.nextOfType('error');
    assert.equal(e.code, 'bad_frame');
    await c.waitClosed();
  });
});

describe('HTTP on the client port', () => {
  let srv: TestServer;
  before(async () => (srv = await startServer()));
  after(() => srv.close());

  test('GET /healthz and GET /stats answer on the same port as the protocol', async (t) => {
    const c = await helloClient(srv.port, 'counted');
    t.after(() => c.destroy());
    const h = await httpGet(srv.port, '/healthz');
    assert.equal(h.status, 200);
    assert.deepEqual(JSON.parse(h.body), { status: 'ok' });
    const s = await httpGet(srv.port, '/stats');
    assert.equal(s.status, 200);
    assert.match(s.type, /application\/json/);
    const stats = JSON.parse(s.body) as Json;
    for (const k of ['msg_per_sec', 'latency_p99', 'memory_mb', 'connections', 'error_rate']) assert.equal(typeof stats[k], 'number', k);
    assert.equal(stats.connections, 1, 'the HTTP request itself is not counted as a client connection');
    assert.equal(stats.role, 'standalone');
    const nf = await httpGet(srv.port, '/nope');
    assert.equal(nf.status, 404);
  });

  test('HTTP does not disturb protocol clients', async (t) => {
    const c = await helloClient(srv.port, 'still');
    t.after(() => c.destroy());
    await Promise.all([httpGet(srv.port, '/stats'), httpGet(srv.port, '/healthz')]);
    assert.equal((await c.request({ type: 'ping' })).type, 'pong');
  });
});

describe('authentication with AUTH_SECRET', () => {
  const secret = 'integration-secret';
  let srv: TestServer;
  before(async () => (srv = await startServer({ authSecret: secret })));
  after(() => srv.close());
  const now = () => Math.floor(Date.now() / 1000);

  test('a valid HS256 token: the user is its sub', async (t) => {
    const c = await WireClient.connect(srv.port);
    t.after(() => c.destroy());
    const w = await c.request({ type: 'hello', token: signHs256({ sub: 'alice', exp: now() + 60 }, secret) });
    assert.equal(w.type, 'welcome');
    assert.equal(w.user, 'alice');
  });

  const bad: [string, () => Json][] = [
    ['no token', () => ({ user: 'alice' })],
    ['expired', () => ({ token: signHs256({ sub: 'alice', exp: now() - 600 }, secret) })],
    ['malformed', () => ({ token: 'abc.def' })],
    ['wrongly signed', () => ({ token: signHs256({ sub: 'alice' }, 'not-the-secret') })],
    ['user different from sub', () => ({ user: 'mallory', token: signHs256({ sub: 'alice' }, secret) })],
  ];
  for (const [name, fields] of bad) {
    test(`${name}: unauthorized, then the connection is closed`, async (t) => {
      const c = await WireClient.connect(srv.port);
      t.after(() => c.destroy());
      const e = await c.request({ type: 'hello', ...fields() });
      assert.equal(e.type, 'error');
      assert.equal(e.code, 'unauthorized');
      await c.waitClosed();
    });
  }
});

describe('timeouts', () => {
  let srv: TestServer;
  before(async () => (srv = await startServer({ idleTimeoutMs: 300, helloTimeoutMs: 300 })));
  after(() => srv.close());

  test('a silent connection gets reconnect idle_timeout and is closed; an active one stays', async (t) => {
    const idle = await helloClient(srv.port, 'sleepy');
    const busy = await helloClient(srv.port, 'busy');
    t.after(() => (idle.destroy(), busy.destroy()));
    const started = Date.now();
    const timer = setInterval(() => busy.send({ type: 'ping' }), 60);
    t.after(() => clearInterval(timer));
    const r = await idle.nextOfType('reconnect', 3000);
    assert.equal(r.reason, 'idle_timeout');
    assert.equal(r.reconnect, true);
    await idle.waitClosed();
    assert.ok(Date.now() - started >= 250, 'not before the idle timeout');
    assert.equal(busy.closed, false);
    assert.equal((await busy.request({ type: 'ping' })).type, 'pong');
  });

  test('no hello in time: a connection that spoke gets unauthorized, a mute one is dropped', async (t) => {
    const spoke = await WireClient.connect(srv.port);
    const mute = await WireClient.connect(srv.port);
    t.after(() => (spoke.destroy(), mute.destroy()));
    spoke.send({ type: 'ping' });
    const e = await spoke.nextOfType('error', 3000);
    assert.equal(e.code, 'unauthorized');
    await spoke.waitClosed();
    await mute.waitClosed();
    assert.deepEqual(mute.all, []);
  });

  test('regression: a client whose first frame arrives in the millisecond of the accept still gets unauthorized', async (t) => {
    // The sweep took "last seen == opened at" for "said nothing" and dropped such clients silently.
    const clients = await Promise.all(
      Array.from({ length: 40 }, async () => {
        const c = await WireClient.connect(srv.port);
        c.send({ type: 'ping' });
        return c;
      }),
    );
    t.after(() => clients.forEach((c) => c.destroy()));
    await Promise.all(clients.map((c) => c.waitClosed()));
    for (const c of clients) assert.equal(c.all.find((m) => m.type === 'error')?.code, 'unauthorized');
  });
});
