// Attack class: the gRPC API's payloads. A request larger than MAX_FRAME_BYTES is refused by
// grpc-js before any handler runs (RESOURCE_EXHAUSTED); `data` nested deeper than MAX_JSON_DEPTH
// is INVALID_ARGUMENT, never INTERNAL; TCP clients keep being served meanwhile.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { startApiServer, switchboardService, type ApiServer } from '../../services/api';
import { silentLogger } from '../../services/telemetry';
import { startServer } from '../helpers/server';
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
