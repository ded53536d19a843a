// Attack class: the gRPC API's payloads and sockets. A request larger than MAX_FRAME_BYTES is
// refused by grpc-js before any handler runs (RESOURCE_EXHAUSTED); `data` nested deeper than
// MAX_JSON_DEPTH is INVALID_ARGUMENT, never INTERNAL; half-open sockets on the API port are
// closed at HTTP_HEADERS_TIMEOUT_MS, count against MAX_CONNECTIONS, and idle API connections
// go at IDLE_TIMEOUT_MS; TCP clients keep being served meanwhile.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { connect, type Socket } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { startApiServer, switchboardService, type ApiServer } from '../../services/api';
import { silentLogger } from '../../services/telemetry';
import { startServer } from '../helpers/server';
import { waitFor } from '../helpers/wait';
import { helloClient } from '../helpers/wire';

const KEY = 'attack-api-key';
type Client = grpc.Client & Record<string, (...args: unknown[]) => unknown>;

function call(c: Client, method: string, req: Record<string, unknown>): Promise<{ reply?: Record<string, unknown>; err?: grpc.ServiceError }> {
  const md = new grpc.Metadata();
  md.set('x-api-key', KEY);
  return new Promise((resolve) => {
    c[method](req, md, { deadline: Date.now() + 10_000 }, (err: grpc.ServiceError | null, reply: Record<string, unknown>) => resolve(err ? { err } : { reply }));
  });
}

test('gRPC: payloads over MAX_FRAME_BYTES are RESOURCE_EXHAUSTED, nested data INVALID_ARGUMENT, never INTERNAL', async (t) => {
  const MAX = 64 * 1024;
  const srv = await startServer({ apiPort: 0, apiHost: '127.0.0.1', apiKey: KEY, maxFrameBytes: MAX });
  const api = (await startApiServer(srv.server, srv.config, silentLogger)) as ApiServer;
  const Ctor = switchboardService();
  const c = new Ctor(`127.0.0.1:${api.port}`, grpc.credentials.createInsecure(), { 'grpc.max_send_message_length': 8 << 20 }) as unknown as Client;
  t.after(async () => {
    c.close();
    await api.stop();
    await srv.close();
  });
  const member = await helloClient(srv.port, 'member');
  t.after(() => member.destroy());
  await member.join('lobby');

  const big = await call(c, 'Publish', { room: 'lobby', data: JSON.stringify('x'.repeat(MAX + 1)) });
  assert.equal(big.err?.code, grpc.status.RESOURCE_EXHAUSTED, String(big.err?.details));
  const huge = await call(c, 'SendDirect', { user: 'member', data: JSON.stringify('y'.repeat(4 << 20)) });
  assert.equal(huge.err?.code, grpc.status.RESOURCE_EXHAUSTED);

  const deep = '['.repeat(10_000) + ']'.repeat(10_000);
  for (const [method, req] of [
    ['Publish', { room: 'lobby', data: deep }],
    ['SendDirect', { user: 'member', data: `{"a":${deep}}` }],
  ] as const) {
    const r = await call(c, method, req);
    assert.equal(r.err?.code, grpc.status.INVALID_ARGUMENT, `${method}: ${String(r.err?.details)}`);
    assert.match(String(r.err?.details), /deeper than 64/);
    assert.equal(r.err?.metadata.get('switchboard-error-code')[0], 'bad_request');
  }
  // Within the bounds everything still works, for the API and the TCP member alike.
  const ok = await call(c, 'Publish', { room: 'lobby', data: JSON.stringify({ n: [[1], [2]] }) });
  assert.equal(ok.err, undefined);
  await member.next((m) => m.type === 'message' && JSON.stringify(m.data) === '{"n":[[1],[2]]}', 3000, 'the published message');
  assert.equal((await member.request({ type: 'ping' })).type, 'pong');
});

test('gRPC port: half-open sockets are closed at the header timeout and count against MAX_CONNECTIONS; idle connections close at IDLE_TIMEOUT_MS', async (t) => {
  const MAX = 40;
  const srv = await startServer({ apiPort: 0, apiHost: '127.0.0.1', apiKey: KEY, maxConnections: MAX, httpHeadersTimeoutMs: 400, idleTimeoutMs: 1500 });
  const api = (await startApiServer(srv.server, srv.config, silentLogger)) as ApiServer;
  const member = await helloClient(srv.port, 'member');
  const socks: Socket[] = [];
  t.after(async () => {
    for (const s of socks) s.destroy();
    member.destroy();
    await api.stop();
    await srv.close();
  });
  // 60 sockets that never speak (half of them stop inside the HTTP/2 preface): MAX - 1 are held
  // (the member has one), the rest are refused at once.
  let closed = 0;
  for (let i = 0; i < 60; i++) {
    const s = connect({ host: '127.0.0.1', port: api.port });
    s.on('error', () => {});
    s.on('close', () => closed++);
    s.on('connect', () => {
      if (i % 2 === 0) s.write('PRI * HTTP/2.0\r\n');
    });
    socks.push(s);
  }
  await waitFor(() => closed >= 60 - (MAX - 1), 5000, 'the sockets past MAX_CONNECTIONS to be refused');
  assert.equal(srv.server.counters.rejected.limit, 60 - (MAX - 1));
  assert.equal((await member.request({ type: 'ping' })).type, 'pong', 'the TCP member is served');
  // At the header timeout (400 ms) every half-open socket is closed.
  await waitFor(() => closed === 60, 5000, 'every half-open socket to be closed');
  assert.equal(srv.server.counters.httpConnections, 0);
  // A real client is served, and its connection is closed once idle for IDLE_TIMEOUT_MS; the next
  // call reconnects.
  const Ctor = switchboardService();
  const c = new Ctor(`127.0.0.1:${api.port}`, grpc.credentials.createInsecure()) as unknown as Client;
  t.after(() => c.close());
  assert.equal((await call(c, 'Presence', { room: 'lobby' })).err, undefined);
  assert.equal(srv.server.counters.httpConnections, 1);
  await waitFor(() => srv.server.counters.httpConnections === 0, 5000, 'the idle API connection to be closed');
  assert.equal((await call(c, 'Presence', { room: 'lobby' })).err, undefined, 'the client reconnects on its next call');
});

test('gRPC stop: a connected client and a socket still before the preface do not hold it up', async (t) => {
  const srv = await startServer({ apiPort: 0, apiHost: '127.0.0.1', apiKey: KEY });
  t.after(() => srv.close());
  const api = (await startApiServer(srv.server, srv.config, silentLogger)) as ApiServer;
  const Ctor = switchboardService();
  const c = new Ctor(`127.0.0.1:${api.port}`, grpc.credentials.createInsecure()) as unknown as Client;
  t.after(() => c.close());
  assert.equal((await call(c, 'Presence', { room: 'lobby' })).err, undefined);
  const silent = connect({ host: '127.0.0.1', port: api.port });
  silent.on('error', () => {});
  const silentClosed = new Promise((r) => silent.once('close', r));
  await new Promise((r) => silent.once('connect', r));
  await waitFor(() => srv.server.counters.httpConnections === 2, 2000, 'both connections to be counted');
  const t0 = Date.now();
  await api.stop(1000);
  assert.ok(Date.now() - t0 < 3000, `stop took ${Date.now() - t0} ms`);
  await silentClosed;
  await waitFor(() => srv.server.counters.httpConnections === 0, 3000, 'every API connection to be closed');
});
