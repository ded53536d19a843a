// Attack class: shutdown with hostile sockets. Half-open HTTP requests on both ports, partial
// frames, sockets that ignore the server's FIN, clients that never read, and connections that
// sent half a preamble must not keep a SIGTERMed process alive past SHUTDOWN_DRAIN_MS; the
// well-behaved witness gets its `reconnect` push (reason shutdown) and the process exits 0.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { switchboardService } from '../../services/api';
import { waitFor } from '../helpers/wait';
import { RawClient, startTarget, Witness, WITNESS_P99_MS } from './harness';

const DRAIN_MS = 1500;

test('SIGTERM with hostile sockets on both ports: exit 0 within SHUTDOWN_DRAIN_MS, the witness told to reconnect', async (t) => {
  // HTTP and frame timeouts far beyond the drain: only the shutdown may end these sockets.
  const target = await startTarget({
    SHUTDOWN_DRAIN_MS: String(DRAIN_MS),
    HTTP_HEADERS_TIMEOUT_MS: '60000',
    HTTP_REQUEST_TIMEOUT_MS: '60000',
    HTTP_KEEPALIVE_TIMEOUT_MS: '60000',
    FRAME_TIMEOUT_MS: '60000',
  });
  t.after(() => target.stop());
  const witness = await Witness.start(target.port, t);
  const hostile: RawClient[] = [];
  const open = async (port: number, first: string | Buffer | null, allowHalfOpen = false) => {
    const c = await RawClient.open(port, { allowHalfOpen });
    t.after(() => c.destroy());
    if (first !== null) c.write(first);
    hostile.push(c);
    return c;
  };
  for (let i = 0; i < 3; i++) {
    await open(target.port, 'GET /stats HTTP/1.1\r\nHost: x\r\n', true); // half-open HTTP, client port
    await open(target.adminPort, 'GET /metrics HTTP/1.1\r\nHost: x\r\n', true); // half-open HTTP, admin port
    await open(target.adminPort, 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n', true); // idle keep-alive
    await open(target.port, Buffer.from([0xb5, 0x53]), true); // half a binary preamble
    const partial = await open(target.port, null, true); // a partial frame after hello
    await partial.hello(`partial-${i}`);
    partial.write('{"type":"send_chat","room":"r","data":"never finished');
    const deaf = await open(target.port, null, true); // ignores the FIN, never reads
    await deaf.hello(`deaf-${i}`);
    deaf.line({ type: 'join_room', room: 'noise', id: 'j' });
    await deaf.waitFor((m) => m.id === 'j');
    deaf.socket.pause();
  }
  // Fill the deaf clients' buffers with room traffic.
  const talker = await RawClient.open(target.port);
  t.after(() => talker.destroy());
  await talker.hello('talker');
  talker.line({ type: 'join_room', room: 'noise', id: 'j' });
  await talker.waitFor((m) => m.id === 'j');
  const big = 'y'.repeat(16 * 1024);
  for (let i = 0; i < 64; i++) talker.line({ type: 'send_chat', room: 'noise', data: big });
  await witness.served(20);
  await waitFor(async () => ((await target.stats()).http_connections as number) >= 9, 3000, 'the HTTP sockets to be open');

  const started = Date.now();
  target.child.kill('SIGTERM');
  const exit = await Promise.race([target.exited, new Promise<null>((r) => setTimeout(() => r(null), DRAIN_MS + 5000))]);
  const took = Date.now() - started;
  assert.ok(exit !== null, `the process was still running ${took} ms after SIGTERM`);
  assert.deepEqual(exit, { code: 0, signal: null });
  assert.ok(took < DRAIN_MS + 1500, `exit took ${took} ms (SHUTDOWN_DRAIN_MS ${DRAIN_MS})`);
  const r = await witness.stop();
  assert.ok(r.messages.some((m) => m.type === 'reconnect' && m.reason === 'shutdown'), `witness got ${JSON.stringify(r.messages)}`);
  assert.ok(r.count >= 20 && r.p99 < WITNESS_P99_MS, `witness p99 ${r.p99.toFixed(1)} ms over ${r.count} pings`);
  const log = target.logs();
  assert.ok(log.some((l) => l.msg === 'stopped'), 'the server stopped in order');
});

test('SIGTERM stops the gRPC API with the client port: no call accepted while draining, watch streams end', async (t) => {
  // The API was never stopped: a draining gateway kept accepting Publish calls for the members it
  // was sending away (16 accepted in a 4 s drain), and cut its watch streams without a status.
  const KEY = 'drain-key';
  const target = await startTarget({ SHUTDOWN_DRAIN_MS: '3000', API_PORT: '0', API_KEY: KEY });
  t.after(() => target.stop());
  const listening = await waitFor(() => target.logs().find((r) => r.msg === 'api listening'), 5000, 'the API to listen');
  const Ctor = switchboardService();
  const api = new Ctor(`127.0.0.1:${listening.port as number}`, grpc.credentials.createInsecure()) as unknown as Record<string, (...a: unknown[]) => grpc.ClientWritableStream<unknown>> & grpc.Client;
  t.after(() => api.close());
  const md = new grpc.Metadata();
  md.set('x-api-key', KEY);
  const publish = () =>
    new Promise<grpc.ServiceError | null>((resolve) => {
      api.Publish({ room: 'r', data: '"x"' }, md, { deadline: Date.now() + 2000 }, (err: grpc.ServiceError | null) => resolve(err));
    });
  // A member that ignores the server's FIN keeps the drain going for SHUTDOWN_DRAIN_MS.
  const member = await RawClient.open(target.port, { allowHalfOpen: true });
  t.after(() => member.destroy());
  await member.hello('stays');
  member.line({ type: 'join_room', room: 'r', id: 'j' });
  await member.waitFor((m) => m.id === 'j');
  assert.equal(await publish(), null, 'a call before the drain is accepted');
  const watch = api.WatchStats({ interval_ms: 100 }, md) as unknown as NodeJS.EventEmitter;
  let ended: string | null = null;
  let snapshots = 0;
  watch.on('data', () => snapshots++);
  watch.on('end', () => (ended ??= 'end'));
  watch.on('error', (e: grpc.ServiceError) => (ended ??= `error ${e.code} ${e.details}`));
  await waitFor(() => snapshots >= 2, 3000, 'the watch stream to stream');
  target.child.kill('SIGTERM');
  await member.waitFor((m) => m.type === 'reconnect', 3000, 'the drain to start');
  const during: (grpc.ServiceError | null)[] = [];
  for (let i = 0; i < 5; i++) during.push(await publish());
  assert.ok(during.every((e) => e !== null && e.code === grpc.status.UNAVAILABLE), `calls while draining: ${during.map((e) => (e === null ? 'OK' : e.code)).join(', ')}`);
  await waitFor(() => ended, 2500, 'the watch stream to end');
  assert.equal(ended, 'end', 'the watch stream ends with a status, before the process exits');
  const exit = await target.exited;
  assert.deepEqual(exit, { code: 0, signal: null });
  assert.equal(member.lines.filter((m) => m.type === 'message').length, 1, 'the member got the one message accepted before the drain');
});
