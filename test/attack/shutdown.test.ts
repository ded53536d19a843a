// Attack class: shutdown with hostile sockets. Half-open HTTP requests on both ports, partial
// frames, sockets that ignore the server's FIN, clients that never read, and connections that
// sent half a preamble must not keep a SIGTERMed process alive past SHUTDOWN_DRAIN_MS; the
// well-behaved witness gets its `reconnect` push (reason shutdown) and the process exits 0.
import assert from 'node:assert/strict';
import { test } from 'node:test';
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
