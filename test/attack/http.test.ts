// Attack class: HTTP on the client port (sniffed) and on the admin port. Half-open requests are
// timed out (408, close) on both ports, HTTP connections count against MAX_CONNECTIONS, CONNECT
// is answered 405 like other methods not served, and /metrics is served on the admin port only
// unless METRICS_ON_CLIENT_PORT says otherwise. No endpoint takes a body: a request with one is
// answered 413 and its connection closed.
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { test, type TestContext } from 'node:test';
import { waitFor } from '../helpers/wait';
import { spawnRole } from '../cluster/harness';
import { RedisProcess } from '../helpers/redis';
import { assertRssWithin, assertWitnessServed, peakRss, RawClient, settledRss, startTarget, Witness } from './harness';

async function get(port: number, path: string): Promise<number> {
  return (await fetch(`http://127.0.0.1:${port}${path}`)).status;
}

/** `n` HTTP requests on `port` that send a request line and a header, and never finish. */
async function halfOpenRequests(port: number, n: number, t: TestContext): Promise<RawClient[]> {
  const out: RawClient[] = [];
  for (let i = 0; i < n; i++) {
    const a = await RawClient.open(port);
    t.after(() => a.destroy());
    a.write('GET /stats HTTP/1.1\r\nHost: x\r\n');
    out.push(a);
  }
  return out;
}

/** A header byte every 200 ms to each attacker still open: never idle, never complete. Returns the stop. */
function dribble(attackers: readonly RawClient[], t: TestContext): () => void {
  const timer = setInterval(() => {
    for (const a of attackers) if (!a.closed) a.write('X');
  }, 200);
  const stop = () => clearInterval(timer);
  t.after(stop);
  return stop;
}

test('half-open HTTP requests on both ports are answered 408 and closed within the header timeout', async (t) => {
  const target = await startTarget({ HTTP_HEADERS_TIMEOUT_MS: '1000', HTTP_REQUEST_TIMEOUT_MS: '2000' });
  t.after(() => target.stop());
  const witness = await Witness.start(target.port, t);
  await witness.served(5);
  const before = await settledRss(target);
  const attackers = [...(await halfOpenRequests(target.port, 10, t)), ...(await halfOpenRequests(target.adminPort, 10, t))];
  // And on the admin port, connections that send nothing at all.
  for (let i = 0; i < 5; i++) {
    const a = await RawClient.open(target.adminPort);
    t.after(() => a.destroy());
    attackers.push(a);
  }
  const started = Date.now();
  // Dribbled headers once kept a request open for 80 s.
  const stop = dribble(attackers, t);
  const { peak } = await peakRss(target, () => waitFor(() => attackers.every((a) => a.closed), 5000, 'every half-open request to be closed'));
  stop();
  const took = Date.now() - started;
  assert.ok(took < 3000, `closed after ${took} ms (HTTP_HEADERS_TIMEOUT_MS 1000)`);
  for (const a of attackers.slice(0, 20)) assert.match(a.raw, /^HTTP\/1\.1 408 /, 'the attacker got 408');
  assert.ok(((await target.metric('switchboard_limit_exceeded_total{limit="HTTP_REQUEST_TIMEOUT_MS"}')) ?? 0) >= 20);
  assert.ok(((await target.metric('switchboard_http_connections')) ?? 99) <= 2, 'only the scrapes themselves');
  // Both ports still answer.
  assert.equal(await get(target.port, '/stats'), 200);
  assert.equal(await get(target.adminPort, '/healthz'), 200);
  await assertWitnessServed(witness);
  assertRssWithin(before, peak, undefined, 'peak RSS');
  assertRssWithin(before, await settledRss(target));
});

test('HTTP connections of both ports count against MAX_CONNECTIONS; at the limit the oldest half-open one makes room; the admin port keeps a reserve', async (t) => {
  const target = await startTarget({ MAX_CONNECTIONS: '20', HTTP_HEADERS_TIMEOUT_MS: '20000', HTTP_REQUEST_TIMEOUT_MS: '20000' });
  t.after(() => target.stop());
  const witness = await Witness.start(target.port, t);
  const half: RawClient[] = [];
  const halfOpen = async (port: number, n: number): Promise<void> => {
    for (let i = 0; i < n; i++) {
      const a = await RawClient.open(port);
      t.after(() => a.destroy());
      a.write('GET /stats HTTP/1.1\r\n');
      half.push(a);
    }
  };
  // The client port's first: a scrape accepted before them would take the place of the last one
  // (the admin port's have a reserve beyond the limit). The scrape itself is one of the counted.
  await halfOpen(target.port, 10);
  await waitFor(async () => (await target.stats()).http_connections === 11, 3000, '10 half-open requests on the client port and the scrape');
  await halfOpen(target.adminPort, 9);
  let seen: unknown;
  await waitFor(async () => (seen = (await target.stats()).http_connections) === 20, 3000, '19 half-open requests and the scrape').catch((err: Error) => {
    throw new Error(`${err.message} (last seen ${String(seen)})`);
  });
  // The limit is reached: a new client still gets in, and the oldest half-open request is closed
  // to make room for it (services/gateway/eviction.ts), never a session past hello.
  const newcomer = await RawClient.open(target.port);
  t.after(() => newcomer.destroy());
  await newcomer.hello('newcomer');
  assert.equal(await half[0].waitClosed(3000), true, 'the oldest half-open request was closed');
  assert.equal(half.filter((a) => a.closed).length, 1, 'one half-open request made room');
  assert.equal(await target.metric('switchboard_connections_rejected_total{reason="evicted"}'), 1);
  // Probes on the admin port still answer (ADMIN_RESERVE), the witness is still served.
  assert.equal(await get(target.adminPort, '/readyz'), 200);
  await witness.served(20);
  // When the half-open requests go, clients get in again.
  for (const a of half) a.destroy();
  // The scrapes' own keep-alive connections are counted too: a loaded machine can leave fetch's pool
  // with a second one open.
  await waitFor(async () => Number((await target.stats()).http_connections) <= 2, 5000, 'the half-open requests to be gone');
  const late = await RawClient.open(target.port);
  t.after(() => late.destroy());
  await late.hello('late');
  await assertWitnessServed(witness);
});

// Node hands a CONNECT request to 'connect' listeners and, with none, closed the socket with no
// answer at all.
test('CONNECT on the client and admin ports is answered 405 and closed, like other methods not served', async (t) => {
  const target = await startTarget();
  t.after(() => target.stop());
  const witness = await Witness.start(target.port, t);
  for (const port of [target.port, target.adminPort]) {
    for (const request of ['CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n', 'CONNECT 127.0.0.1:22 HTTP/1.0\r\n\r\nSSH-2.0-x\r\n']) {
      const a = await RawClient.open(port);
      t.after(() => a.destroy());
      a.write(request);
      await a.waitClosed(3000);
      assert.match(a.raw, /^HTTP\/1\.1 405 Method Not Allowed\r\n/, `port ${port === target.port ? 'client' : 'admin'}: ${JSON.stringify(a.raw)}`);
      assert.match(a.raw, /\r\nAllow: GET, HEAD\r\n/);
    }
  }
  // Other methods get the same status from the handler; the sockets are gone from the count.
  const post = await RawClient.open(target.adminPort);
  t.after(() => post.destroy());
  post.write('DELETE /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  await post.waitClosed(3000);
  assert.match(post.raw, /^HTTP\/1\.1 405 /);
  await waitFor(async () => (await target.stats()).http_connections === 1, 3000, 'only the scrape to be left');
  await assertWitnessServed(witness, 50);
});

test('requests with a body on both ports are answered 413 and closed at once, whatever the method', async (t) => {
  // No endpoint takes a body. Node read and discarded one for the whole request timeout,
  // uncharged by any budget: four connections streaming a body (or dribbling chunks) raised the
  // client port's p99 to 341 ms, and reconnecting kept it there.
  const target = await startTarget();
  t.after(() => target.stop());
  const witness = await Witness.start(target.port, t);
  const requests = [
    'POST /stats HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n',
    'GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n',
    'GET /stats HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000000\r\n\r\n' + 'x'.repeat(60_000),
  ];
  const body = Buffer.alloc(16_384, 0x78);
  for (const port of [target.port, target.adminPort]) {
    for (const request of requests) {
      const a = await RawClient.open(port);
      t.after(() => a.destroy());
      a.write(request);
      // The body keeps coming, as fast as the socket takes it, until the server closes.
      const timer = setInterval(() => a.write(body), 5);
      t.after(() => clearInterval(timer));
      await a.waitClosed(2000);
      clearInterval(timer);
      assert.match(a.raw, /^HTTP\/1\.1 413 /, `port ${port === target.port ? 'client' : 'admin'}: ${JSON.stringify(a.raw.slice(0, 80))}`);
    }
  }
  // A request after an answered one on the same connection: closed, never answered out of order.
  const kept = await RawClient.open(target.adminPort);
  t.after(() => kept.destroy());
  kept.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nPOST /stats HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello');
  await kept.waitClosed(2000);
  assert.match(kept.raw, /^HTTP\/1\.1 200 /);
  assert.doesNotMatch(kept.raw.slice(12), /HTTP\/1\.1 (405|200)/, 'the second request is not answered as if it had no body');
  assert.equal(await get(target.adminPort, '/healthz'), 200);
  await assertWitnessServed(witness, 50);
});

test('/metrics is on the admin port only, unless METRICS_ON_CLIENT_PORT; /stats is on both', async (t) => {
  const plain = await startTarget();
  t.after(() => plain.stop());
  assert.equal(await get(plain.port, '/metrics'), 404);
  assert.equal(await get(plain.port, '/stats'), 200);
  assert.equal(await get(plain.port, '/healthz'), 200);
  assert.equal(await get(plain.adminPort, '/metrics'), 200);
  const open = await startTarget({ METRICS_ON_CLIENT_PORT: 'true' });
  t.after(() => open.stop());
  assert.equal(await get(open.port, '/metrics'), 200);
});

// Every role's admin port is served by one module (services/admin/): the broadcast worker's
// answers half-open requests like the gateway's, and caps its connections.
test('the broadcast role\'s admin port: half-open requests get 408 within the header timeout, connections are capped, probes still answer', async (t) => {
  const redis = await RedisProcess.start();
  t.after(() => redis.stop());
  const worker = await spawnRole('broadcast', { REDIS_URL: redis.url, HTTP_HEADERS_TIMEOUT_MS: '1000', HTTP_REQUEST_TIMEOUT_MS: '2000' });
  t.after(() => worker.kill());
  const attackers = await halfOpenRequests(worker.adminPort, 10, t);
  const started = Date.now();
  const stop = dribble(attackers, t);
  await waitFor(() => attackers.every((a) => a.closed), 5000, 'every half-open request to be closed');
  stop();
  assert.ok(Date.now() - started < 3000, `closed after ${Date.now() - started} ms (HTTP_HEADERS_TIMEOUT_MS 1000)`);
  for (const a of attackers) assert.match(a.raw, /^HTTP\/1\.1 408 /, 'the attacker got 408');
  // 300 idle sockets: past the cap of 256 the port refuses at accept, and recovers once they go.
  const idle: RawClient[] = [];
  for (let i = 0; i < 300; i++) {
    const a = await RawClient.open(worker.adminPort);
    t.after(() => a.destroy());
    idle.push(a);
  }
  await waitFor(() => idle.filter((a) => a.closed).length >= 300 - 256, 5000, 'connections past the cap to be refused');
  for (const a of idle) a.destroy();
  await waitFor(async () => (await get(worker.adminPort, '/healthz')) === 200, 5000, 'the admin port to answer again', { intervalMs: 50, retryErrors: true });
  assert.equal(await get(worker.adminPort, '/readyz'), 200);
});

test('the broadcast role\'s admin port under a low descriptor limit: a flood of idle sockets leaves its Redis connections room to reconnect', async (t) => {
  // The admin port held up to 256 sockets whatever the descriptor limit: under a limit of 256 a
  // flood took every descriptor, and after a Redis blip the worker's connections failed with
  // EMFILE and routing stopped for the whole cluster until the flood ended.
  const NOFILE = 128;
  const redis = await RedisProcess.start();
  t.after(() => redis.stop());
  const env = { REDIS_URL: redis.url, HEARTBEAT_MS: '300', LEASE_MS: '1000', REDIS_TIMEOUT_MS: '1000' };
  const gw = await spawnRole('gateway', env);
  t.after(() => gw.kill());
  const worker = await spawnRole('broadcast', env, { nofile: NOFILE });
  t.after(() => worker.kill());
  await waitFor(async () => (await get(worker.adminPort, '/readyz')) === 200, 10_000, 'the worker to be ready', { intervalMs: 50, retryErrors: true });
  const member = await RawClient.open(gw.port);
  t.after(() => member.destroy());
  await member.hello('member');
  member.line({ type: 'join_room', room: 'r', id: 'j' });
  await member.waitFor((m) => m.id === 'j');
  let n = 0;
  const delivered = async (what: string): Promise<void> => {
    await waitFor(
      async () => {
        const data = `${what}-${n++}`;
        member.line({ type: 'send_chat', room: 'r', data });
        return member.waitFor((m) => m.type === 'message' && m.data === data, 1000).then(
          () => true,
          () => false,
        );
      },
      15_000,
      `a message routed (${what})`,
    );
  };
  await delivered('before');
  // Twice the descriptor limit in idle sockets, each one refused opened again at once: the cap
  // keeps what its Redis connections need free.
  const idle = new Set<RawClient>();
  let flooding = true;
  let refused = 0;
  const open = (): void => {
    const a = RawClient.openNoWait(worker.adminPort);
    idle.add(a);
    a.socket.once('close', () => {
      idle.delete(a);
      refused++;
      if (flooding) setImmediate(open);
    });
  };
  t.after(() => {
    flooding = false;
    for (const a of idle) a.destroy();
  });
  for (let i = 0; i < 2 * NOFILE; i++) open();
  await waitFor(() => refused >= NOFILE, 5000, 'sockets past the cap to be refused');
  // A Redis blip: every connection of the worker (and the gateway) must connect again.
  redis.cli('CLIENT', 'KILL', 'TYPE', 'normal');
  await delivered('after a redis blip, during the flood');
  assert.ok(!worker.logs.some((l) => l.includes('EMFILE')), `the worker ran out of descriptors:\n${worker.logs.filter((l) => l.includes('EMFILE')).slice(0, 3).join('\n')}`);
  flooding = false;
  for (const a of idle) a.destroy();
});

// Node parses every request of a chunk it reads and calls the handler for each before it looks at
// the socket's write buffer, and each /stats or /metrics request built its own answer: one
// connection pipelining `GET /stats` on the client port took the witness's p99 to 969 ms, and
// connections pipelining `GET /metrics` without reading the answers took RSS to 637 MB.
test('a connection pipelining /stats (reading) or /metrics (not reading) is closed past MAX_HTTP_UNANSWERED; RSS stays within budget, the witness is served', async (t) => {
  const target = await startTarget();
  t.after(() => target.stop());
  const witness = await Witness.start(target.port, t);
  await witness.served(5);
  const before = await settledRss(target);
  let stopped = false;
  t.after(() => (stopped = true));
  const closedAttackers: string[] = [];
  /**
   * One connection pipelining requests until the server closes it (the attacks as found; one
   * that reconnects at once, hundreds of times a second, is not covered). Answers are read and
   * dropped unparsed: the test process must not take the CPU the server and
   * the witness need.
   */
  const flood = async (port: number, path: string, read: boolean): Promise<void> => {
    const burst = Buffer.from(`GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`.repeat(1000));
    {
      const a = connect({ host: '127.0.0.1', port });
      a.on('error', () => {});
      t.after(() => a.destroy());
      if (read) a.on('data', () => {});
      else a.pause();
      await new Promise((r) => a.once('connect', r).once('close', r));
      while (!stopped && !a.destroyed && !a.closed) {
        if (!a.write(burst)) await new Promise((r) => a.once('drain', r).once('close', r));
        await new Promise((r) => setImmediate(r));
      }
      const byServer = !a.destroyed || a.closed;
      a.destroy();
      if (!stopped && byServer) closedAttackers.push(path);
    }
  };
  const floods = [flood(target.port, '/stats', true), flood(target.adminPort, '/metrics', false)];
  const { peak } = await peakRss(target, () => witness.served(300, 30_000));
  stopped = true;
  await Promise.all(floods);
  t.diagnostic(`attackers closed by the server: ${closedAttackers.length}; RSS ${(before / 1048576).toFixed(0)} -> peak ${(peak / 1048576).toFixed(0)} MiB`);
  assert.ok(closedAttackers.includes('/metrics') && closedAttackers.includes('/stats'), 'the server closes pipelining attackers');
  await assertWitnessServed(witness);
  assertRssWithin(before, peak, undefined, 'peak RSS');
  // A scrape now and then is answered, fresh.
  assert.equal(await get(target.adminPort, '/metrics'), 200);
  assert.equal(await get(target.port, '/stats'), 200);
});

// Every /stats and /metrics request on the broadcast worker's admin port ran XPENDING for each of
// its shards on the Redis connection its leases and routing use: a /metrics flood on 2
// connections routed no room message for 10 s. The count is refreshed once a second at most.
test('the broadcast role\'s admin port: a /stats and /metrics flood costs Redis one pending refresh a second', async (t) => {
  const redis = await RedisProcess.start();
  t.after(() => redis.stop());
  const worker = await spawnRole('broadcast', { REDIS_URL: redis.url });
  t.after(() => worker.kill());
  const owned = async () => ((JSON.parse(await (await fetch(`http://127.0.0.1:${worker.adminPort}/stats`)).text()) as { shards?: unknown[] }).shards ?? []).length;
  await waitFor(async () => (await owned()) === 8, 10_000, 'the worker to own every shard', { intervalMs: 50, retryErrors: true });
  const xpending = () => Number(/cmdstat_xpending:calls=(\d+)/.exec(redis.cli('INFO', 'commandstats'))?.[1] ?? 0);
  const shards = 8;
  const before = xpending();
  const started = Date.now();
  // 400 requests, 8 at a time (within MAX_HTTP_UNANSWERED), alternating paths.
  for (let i = 0; i < 50; i++) {
    const statuses = await Promise.all(Array.from({ length: 8 }, (_, j) => get(worker.adminPort, j % 2 === 0 ? '/metrics' : '/stats')));
    assert.ok(statuses.every((s) => s === 200));
  }
  const seconds = (Date.now() - started) / 1000;
  const calls = xpending() - before;
  t.diagnostic(`${calls} XPENDING for 400 requests in ${seconds.toFixed(1)} s`);
  assert.ok(calls <= shards * (Math.ceil(seconds) + 1), `${calls} XPENDING calls in ${seconds.toFixed(1)} s (at most ${shards} a second)`);
});
