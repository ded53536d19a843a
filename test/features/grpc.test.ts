/**
 * The gRPC server API through a real @grpc/grpc-js client: publish reaching TCP clients in
 * standalone and in cluster mode, the other methods, argument and authentication failures.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { startApiServer, switchboardService, type ApiServer } from '../../services/api';
import { ALL_ERROR_CODES, ErrorInfo, GrpcStatus } from '../../services/protocol';
import { spawnCli, type CliProcess } from '../helpers/cli';
import { freePort } from '../helpers/net';
import { RedisProcess } from '../helpers/redis';
import { startServer } from '../helpers/server';
import { waitFor } from '../helpers/wait';
import { WireClient } from '../helpers/wire';
import { silentLogger } from '../../services/telemetry';

const KEY = 'test-api-key-0123456789';
type Json = Record<string, unknown>;
type Client = grpc.Client & Record<string, (...args: unknown[]) => unknown>;

function client(port: number): Client {
  const Ctor = switchboardService();
  return new Ctor(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as unknown as Client;
}

function meta(key: string | null = KEY): grpc.Metadata {
  const m = new grpc.Metadata();
  if (key !== null) m.set('x-api-key', key);
  return m;
}

/** Call a unary method; resolves with the reply or the ServiceError (never rejects). */
function call(c: Client, method: string, req: Json, md = meta()): Promise<{ reply?: Json; err?: grpc.ServiceError }> {
  return new Promise((resolve) => {
    c[method](req, md, { deadline: Date.now() + 5000 }, (err: grpc.ServiceError | null, reply: Json) => resolve(err ? { err } : { reply }));
  });
}

async function standalone(t: { after(fn: () => unknown): void }, apiKey = KEY) {
  const srv = await startServer({ apiPort: 0, apiHost: '127.0.0.1', apiKey });
  const api = (await startApiServer(srv.server, srv.config, silentLogger)) as ApiServer;
  const c = client(api.port);
  t.after(async () => {
    c.close();
    await api.stop();
    await srv.close();
  });
  return { srv, api, c };
}

test('protocol error codes map to gRPC status codes one to one', () => {
  const valid = new Set<number>(Object.values(GrpcStatus));
  for (const code of ALL_ERROR_CODES) assert.ok(valid.has(ErrorInfo[code].grpc), code);
  assert.equal(ErrorInfo.bad_request.grpc, grpc.status.INVALID_ARGUMENT);
  assert.equal(ErrorInfo.unauthorized.grpc, grpc.status.UNAUTHENTICATED);
  assert.equal(ErrorInfo.user_offline.grpc, grpc.status.NOT_FOUND);
});

test('standalone: Publish reaches text and binary TCP members; the other methods work', async (t) => {
  const { srv, c } = await standalone(t);
  const text = await WireClient.connect(srv.port);
  const bin = await WireClient.connect(srv.port, 'binary');
  t.after(() => {
    text.socket.destroy();
    bin.socket.destroy();
  });
  await text.hello('alice');
  await bin.hello('bob');
  await text.join('lobby');
  await bin.join('lobby');

  const r = await call(c, 'Publish', { room: 'lobby', data: '{"hello":\n"world"}' });
  assert.equal(r.err, undefined);
  assert.equal(r.reply!.seq, 1);
  for (const ws of [text, bin]) {
    const m = await ws.nextOfType('message');
    assert.deepEqual({ room: m.room, from: m.from, data: m.data, seq: m.seq }, { room: 'lobby', from: 'api:api', data: { hello: 'world' }, seq: 1 });
  }
  const named = new grpc.Metadata();
  named.set('authorization', `Bearer ${KEY}`);
  named.set('x-caller', 'billing');
  await call(c, 'Publish', { room: 'lobby', data: '"paid"' }, named);
  assert.equal((await text.nextOfType('message')).from, 'api:billing');
  await call(c, 'Publish', { room: 'lobby', data: '1', from: 'system' });
  assert.equal((await text.nextOfType('message')).from, 'system');

  assert.equal((await call(c, 'SendDirect', { user: 'bob', data: '{"dm":true}' })).err, undefined);
  const d = await bin.nextOfType('direct');
  assert.deepEqual(d.data, { dm: true });
  const offline = await call(c, 'SendDirect', { user: 'nobody', data: '1' });
  assert.equal(offline.err?.code, grpc.status.NOT_FOUND);
  assert.deepEqual(offline.err?.metadata.get('switchboard-error-code'), ['user_offline']);

  assert.deepEqual([...((await call(c, 'Presence', { room: 'lobby' })).reply!.users as string[])].sort(), ['alice', 'bob']);

  const stats = (await call(c, 'GetStats', {})).reply!;
  assert.equal(stats.connections, 2);
  assert.equal(JSON.parse(stats.json as string).role, 'standalone');

  const snapshots: Json[] = [];
  const stream = c.WatchStats({ interval_ms: 100 }, meta()) as grpc.ClientReadableStream<Json>;
  stream.on('data', (s: Json) => snapshots.push(s));
  stream.on('error', () => {});
  await waitFor(() => snapshots.length >= 3, 3000, 'three stats snapshots');
  stream.cancel();

  const kicked = await call(c, 'Disconnect', { user: 'alice', reason: 'abuse' });
  assert.equal(kicked.reply!.connections, 1);
  const push = await text.nextOfType('reconnect');
  assert.deepEqual(push, { type: 'reconnect', reason: 'kicked', reconnect: false, message: 'abuse' });
  await text.waitClosed();
  assert.equal(bin.closed, false);
});

test('bad arguments are INVALID_ARGUMENT', async (t) => {
  const { c } = await standalone(t);
  const cases: [string, Json][] = [
    ['Publish', { room: '', data: '1' }],
    ['Publish', { room: 'r'.repeat(129), data: '1' }],
    // What the protobuf decoder makes of bytes that are not UTF-8.
    ['Publish', { room: 'r\uFFFD(', data: '1' }],
    ['SendDirect', { user: '\uFFFD', data: '1' }],
    ['Publish', { room: 'r', data: 'not json' }],
    ['Publish', { room: 'r', data: '' }],
    // Under MAX_FRAME_BYTES (1 MiB) as sent, 4.2 times that as the JSON recipients would get.
    ['Publish', { room: 'r', data: `[${'1e20,'.repeat(200_000)}1]` }],
    ['SendDirect', { user: 'u', data: `[${'1e20,'.repeat(200_000)}1]` }],
    ['SendDirect', { user: '', data: '1' }],
    ['SendDirect', { user: 'u', data: '{' }],
    ['Presence', { room: '' }],
    ['Disconnect', { user: '' }],
  ];
  for (const [method, req] of cases) {
    const r = await call(c, method, req);
    assert.equal(r.err?.code, grpc.status.INVALID_ARGUMENT, `${method} ${JSON.stringify(req).slice(0, 60)}`);
    assert.deepEqual(r.err?.metadata.get('switchboard-error-code'), ['bad_request']);
  }
});

test('a missing or wrong API key is UNAUTHENTICATED; without API_KEY every call is', async (t) => {
  const { c } = await standalone(t);
  for (const md of [meta(null), meta('wrong'), meta(KEY + 'x')]) {
    const r = await call(c, 'Publish', { room: 'r', data: '1' }, md);
    assert.equal(r.err?.code, grpc.status.UNAUTHENTICATED);
  }
  const bearer = new grpc.Metadata();
  bearer.set('authorization', 'Basic abc');
  assert.equal((await call(c, 'GetStats', {}, bearer)).err?.code, grpc.status.UNAUTHENTICATED);
  const stream = c.WatchStats({ interval_ms: 100 }, meta('wrong')) as grpc.ClientReadableStream<Json>;
  const streamErr = await new Promise<grpc.ServiceError>((res) => stream.on('error', res));
  assert.equal(streamErr.code, grpc.status.UNAUTHENTICATED);

  const { c: keyless } = await standalone(t, '');
  const r = await call(keyless, 'GetStats', {}, meta(''));
  assert.equal(r.err?.code, grpc.status.UNAUTHENTICATED);
  assert.match(r.err!.details, /no API_KEY/);
});

test('cluster: Publish on one gateway reaches TCP clients on another', async (t) => {
  const redis = await RedisProcess.start();
  t.after(() => redis.stop());
  const procs: CliProcess[] = [];
  t.after(async () => {
    for (const p of procs) p.kill();
    await Promise.all(procs.map((p) => p.exited));
  });
  const env = { REDIS_URL: redis.url, ADMIN_PORT: '-1', TCP_PORT: '0', API_KEY: KEY, LOG_LEVEL: 'info', STREAM_SHARDS: '2' };
  const broadcast = spawnCli(['broadcast'], { ...env, API_PORT: '-1' });
  procs.push(broadcast);
  const apiPorts = [await freePort(), await freePort()];
  const gw = apiPorts.map((p, i) => spawnCli(['gateway'], { ...env, API_PORT: String(p), SERVER_ID: `grpc-gw${i}` }));
  procs.push(...gw);
  const tcpPorts = await Promise.all(gw.map((g) => g.listening(10_000)));
  await Promise.all(gw.map((g) => waitFor(() => g.logs().some((l) => l.msg === 'api listening'), 10_000, 'api listening')));

  const member = await WireClient.connect(tcpPorts[1]);
  t.after(() => member.socket.destroy());
  await member.hello('carol');
  await member.join('cluster-room');
  const c = client(apiPorts[0]);
  t.after(() => c.close());
  // The broadcast tier may still be taking its shard leases: retry until the message arrives.
  await waitFor(
    async () => {
      const r = await call(c, 'Publish', { room: 'cluster-room', data: '"across"' });
      assert.equal(r.err, undefined, r.err?.details);
      await new Promise((res) => setTimeout(res, 100));
      return member.inbox.some((m) => m.type === 'message' && m.data === 'across');
    },
    10_000,
    'the published message on the other gateway',
    50,
  );
  const m = await member.next((x) => x.type === 'message' && x.data === 'across');
  assert.equal(m.from, 'api:api');
  assert.equal(m.room, 'cluster-room');
  const presence = await call(c, 'Presence', { room: 'cluster-room' });
  assert.deepEqual(presence.reply!.users, ['carol']);
  const direct = await call(c, 'SendDirect', { user: 'carol', data: '{"x":1}' });
  assert.equal(direct.err, undefined);
  assert.deepEqual((await member.nextOfType('direct')).data, { x: 1 });
});
