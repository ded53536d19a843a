// One user on many connections: every connection of a user gets each direct message to that
// user, so one token opening hundreds of sockets multiplied every direct message sent to it.
// MAX_CONNECTIONS_PER_USER caps the connections one user holds on a process.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startServer } from '../helpers/server';
import { BULK_WAIT_MS } from '../../services/gateway/bulk-gate';
import { MAX_BULK_IN_FLIGHT } from '../../services/gateway/session';
import type { MessageProcessor } from '../../services/gateway';
import { builtinPlugins } from '../../services/plugins';
import { WireClient, helloClient } from '../helpers/wire';
import { waitFor } from '../helpers/wait';

test('past MAX_CONNECTIONS_PER_USER a hello is too_many_connections and closed; other users and the held connections are served', async (t) => {
  const srv = await startServer({ maxConnectionsPerUser: 3 });
  const open: WireClient[] = [];
  t.after(async () => {
    for (const c of open) c.destroy();
    await srv.close();
  });
  const held: WireClient[] = [];
  for (let i = 0; i < 3; i++) held.push(await helloClient(srv.port, 'mallory'));
  open.push(...held);

  // Each further hello of the same user is refused and its connection closed, however many try.
  const refused = await Promise.all(
    Array.from({ length: 5 }, async () => {
      const c = await WireClient.connect(srv.port);
      open.push(c);
      const reply = await c.request({ type: 'hello', user: 'mallory' });
      assert.equal(await c.waitClosed(), true);
      return reply;
    }),
  );
  for (const r of refused) assert.equal(r.code, 'too_many_connections', JSON.stringify(r));
  assert.equal(srv.server.counters.limitHits.MAX_CONNECTIONS_PER_USER, 5);

  // A direct message reaches exactly the connections the user holds.
  const alice = await helloClient(srv.port, 'alice');
  open.push(alice);
  assert.equal((await alice.request({ type: 'direct', to: 'mallory', data: 'hi' })).type, 'ok');
  for (const c of held) assert.equal((await c.nextOfType('direct')).data, 'hi');
  assert.equal(srv.server.services.hub.connectionsOf('mallory')?.size, 3);

  // A connection that goes gives its place back.
  await held[0].end();
  await waitFor(() => srv.server.services.hub.connectionsOf('mallory')?.size === 2, 3000, 'the closed connection to leave the hub');
  const again = await helloClient(srv.port, 'mallory');
  open.push(again);
  assert.equal((await held[1].request({ type: 'ping' })).type, 'pong', 'the held connections stay open');
});

test('presence of a room of many long names is cut at half MAX_OUTBOUND_BYTES, with more and count', async (t) => {
  const srv = await startServer({ maxOutboundBytes: 16384 });
  const open: WireClient[] = [];
  t.after(async () => {
    for (const c of open) c.destroy();
    await srv.close();
  });
  const N = 120;
  for (let i = 0; i < N; i++) {
    const c = await helloClient(srv.port, `${String(i).padStart(3, '0')}-${'n'.repeat(120)}`);
    open.push(c);
    await c.join('crowd');
  }
  const reply = await open[0].request({ type: 'presence', room: 'crowd' });
  const users = reply.users as string[];
  assert.equal(reply.more, true);
  assert.equal(reply.count, N);
  assert.ok(users.length > 0 && users.length < N, `${users.length} names`);
  assert.ok(JSON.stringify(users).length <= 8192, `${JSON.stringify(users).length} characters of names`);
  assert.equal(new Set(users).size, users.length, 'no name twice');
  // A room that fits is answered whole, as before.
  const small = await open[0].request({ type: 'presence', room: 'nowhere' });
  assert.equal(small.code, 'not_in_room');
});

test('at MAX_CONNECTIONS_PER_USER a hello replaces the user\'s connection quiet for half of IDLE_TIMEOUT_MS, never an active one', async (t) => {
  const srv = await startServer({ maxConnectionsPerUser: 2, idleTimeoutMs: 4000 });
  const open: WireClient[] = [];
  t.after(async () => {
    for (const c of open) c.destroy();
    await srv.close();
  });
  const silent = await helloClient(srv.port, 'roamer'); // its network dropped: it sends nothing more
  const silentAt = Date.now();
  const active = await helloClient(srv.port, 'roamer');
  open.push(silent, active);
  const keepAlive = setInterval(() => active.send({ type: 'ping' }), 100);
  t.after(() => clearInterval(keepAlive));
  let codes: unknown[] = [];
  // Refused while both are recent; once the silent one has been quiet for 2 s, it is replaced.
  await waitFor(
    async () => {
      const c = await WireClient.connect(srv.port);
      open.push(c);
      const reply = await c.request({ type: 'hello', user: 'roamer' });
      codes.push(reply.type === 'welcome' ? 'welcome' : reply.code);
      return reply.type === 'welcome';
    },
    5000,
    'a hello to replace the quiet connection',
    { intervalMs: 50 },
  );
  codes = [...new Set(codes)];
  assert.deepEqual(codes[0], 'too_many_connections', 'refused while both connections were recent');
  // Replaced, not timed out: the sweep would close it only after IDLE_TIMEOUT_MS (4 s).
  const replacedAfter = Date.now() - silentAt;
  assert.ok(replacedAfter < 3500, `replaced after ${replacedAfter} ms`);
  const push = await silent.nextOfType('reconnect');
  assert.equal(push.reason, 'idle_timeout');
  assert.equal(await silent.waitClosed(), true);
  assert.equal((await active.request({ type: 'ping' })).type, 'pong', 'the active connection stays');
});

test('a bulk request waiting only for its connection\'s own places (MAX_BULK_IN_FLIGHT) is never answered overloaded', async (t) => {
  // A bulk type whose requests finish when the test says so.
  const pending: (() => void)[] = [];
  const slow: MessageProcessor = {
    name: 'slow-bulk',
    canHandle: (type) => type === 'slow_bulk',
    bulk: () => true,
    process: () => new Promise<void>((resolve) => pending.push(resolve)),
  };
  const srv = await startServer({ replyTotalBytesPerSec: 0 }, { plugins: [...builtinPlugins(), slow] });
  const c = await helloClient(srv.port, 'patient');
  t.after(async () => {
    c.destroy();
    await srv.close();
  });
  const ids = Array.from({ length: MAX_BULK_IN_FLIGHT + 1 }, (_, i) => `b${i}`);
  for (const id of ids) c.send({ type: 'slow_bulk', id });
  await waitFor(() => pending.length === MAX_BULK_IN_FLIGHT, 3000, 'the first requests to run');
  // The last one waits past BULK_WAIT_MS for a place of its own connection's, then runs.
  const since = Date.now();
  await waitFor(() => Date.now() - since > BULK_WAIT_MS + 1500, BULK_WAIT_MS + 3000, 'the wait bound and a sweep to pass', { intervalMs: 100 });
  while (pending.length > 0) pending.shift()!();
  await waitFor(() => pending.length === 1, 3000, 'the last request to run');
  pending.shift()!();
  const replies = await Promise.all(ids.map((id) => c.next((m) => m.id === id)));
  assert.deepEqual(replies.map((m) => m.type), ids.map(() => 'ok'));
});
