// The TypeScript client against interleavings a real server produces only by chance: a scripted
// peer speaks the protocol (docs/protocol.md) and decides exactly which bytes arrive together and
// when a connection drops. Each case was found against real gateways first (a cluster with
// gateways killed, Redis flushed while a gateway was stopped); the peer makes it deterministic.
import assert from 'node:assert/strict';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { test, type TestContext } from 'node:test';
import { SwitchboardClient, type RoomMessage } from '../../services/client';
import { waitFor } from '../helpers/wait';

type Json = Record<string, unknown>;

const msg = (seq: number, epoch = 'E'): Json => ({ type: 'message', room: 'r', seq, epoch, from: 'x', data: { k: seq }, ts: 0 });

/** A scripted peer: `onRequest(conn, request, send, socket)` answers each request of connection `conn` (1, 2, ...). */
async function peer(t: TestContext, onRequest: (conn: number, m: Json, send: (...o: Json[]) => void, s: Socket) => void): Promise<{ port: number; requests: string[] }> {
  const requests: string[] = [];
  let conns = 0;
  const sockets = new Set<Socket>();
  const server: Server = createServer((s) => {
    const conn = ++conns;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    s.setEncoding('utf8');
    // Several objects in one write: one TCP chunk for the client.
    const send = (...o: Json[]) => s.write(o.map((x) => JSON.stringify(x) + '\n').join(''));
    let buf = '';
    s.on('data', (d: string) => {
      buf += d;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const m = JSON.parse(buf.slice(0, nl)) as Json;
        buf = buf.slice(nl + 1);
        requests.push(`${conn}:${String(m.type)}${m.type === 'history' ? `:${String(m.since)}` : ''}`);
        if (m.type === 'hello') send({ type: 'welcome', id: m.id as string, user: m.user as string, server: 'peer', protocol: 1, codec: 'none', limits: { maxFrameBytes: 1 << 20 }, flags: {} });
        else onRequest(conn, m, send, s);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => {
    for (const s of sockets) s.destroy();
    return new Promise<void>((r) => server.close(() => r()));
  });
  return { port: (server.address() as AddressInfo).port, requests };
}

function clientOf(port: number, t: TestContext, reconnect = true): { c: SwitchboardClient; got: string[] } {
  const c = new SwitchboardClient({ servers: [{ host: '127.0.0.1', port }], user: 'u', initialBackoffMs: 20, maxBackoffMs: 50, requestTimeoutMs: 3000, reconnect });
  const got: string[] = [];
  c.on('message', (m: RoomMessage) => got.push(`${m.epoch}:${m.seq}`));
  c.on('epoch_changed', () => got.push('epoch_changed'));
  c.on('error', () => {});
  t.after(() => c.close());
  return { c, got };
}

test('a recovery cut by the connection dropping: the reconnect asks again from where the client was', async (t) => {
  // The held live message (seq 4) was accepted when the history request failed on the closed
  // connection: the position jumped past seq 3, and the reconnect asked from 4.
  const { port, requests } = await peer(t, (conn, m, send, s) => {
    if (m.type === 'join_room') {
      send({ type: 'ok', id: m.id as number, seq: conn === 1 ? 1 : 4, epoch: 'E' });
      if (conn === 1) send(msg(2), msg(4)); // seq 3 missed this connection: a gap
    } else if (m.type === 'history') {
      if (conn === 1) s.destroy(); // the gateway dies before it answers
      else send({ type: 'history', id: m.id as number, room: 'r', epoch: 'E', seq: 4, recovered: true, more: false, messages: [msg(3), msg(4)].filter((x) => (x.seq as number) > (m.since as number)) });
    }
  });
  const { c, got } = clientOf(port, t);
  await c.connect();
  await c.join('r');
  await waitFor(() => got.length === 3, 5000, 'seqs 2, 3 and 4');
  assert.deepEqual(got, ['E:2', 'E:3', 'E:4']);
  assert.deepEqual(requests.filter((r) => r.includes('history')), ['1:history:2', '2:history:2']);
});

test('a position push that arrives with the history reply of a recovery is looked at once the recovery ends', async (t) => {
  // The push was dropped because the room was being recovered; in a quiet room the client then
  // stayed behind for good.
  let pages = 0;
  const { port } = await peer(t, (_conn, m, send) => {
    if (m.type === 'join_room') {
      send({ type: 'ok', id: m.id as number, seq: 1, epoch: 'E' });
      send(msg(2), msg(4));
    } else if (m.type === 'history') {
      pages++;
      if (pages === 1) send({ type: 'history', id: m.id as number, room: 'r', epoch: 'E', seq: 4, recovered: true, more: false, messages: [msg(3), msg(4)] }, { type: 'position', room: 'r', seq: 6, epoch: 'E' });
      else send({ type: 'history', id: m.id as number, room: 'r', epoch: 'E', seq: 6, recovered: true, more: false, messages: [msg(5), msg(6)].filter((x) => (x.seq as number) > (m.since as number)) });
    }
  });
  const { c, got } = clientOf(port, t, false);
  await c.connect();
  await c.join('r');
  await waitFor(() => got.length === 5, 5000, 'seqs 2 to 6');
  assert.deepEqual(got, ['E:2', 'E:3', 'E:4', 'E:5', 'E:6']);
});

test('a live message of a new epoch past its first seq: the new epoch is recovered from its beginning', async (t) => {
  // The client took B:5 as the first message of epoch B and never asked for B:1-4, which were in
  // history: only the old epoch's messages are gone.
  const { port, requests } = await peer(t, (_conn, m, send) => {
    if (m.type === 'join_room') {
      send({ type: 'ok', id: m.id as number, seq: 0, epoch: 'A' });
      send(msg(1, 'A'), msg(5, 'B'), msg(6, 'B'));
    } else if (m.type === 'history') {
      const b = [1, 2, 3, 4, 5, 6].map((n) => msg(n, 'B'));
      send({ type: 'history', id: m.id as number, room: 'r', epoch: 'B', seq: 6, recovered: false, more: false, messages: m.epoch === 'B' ? b.filter((x) => (x.seq as number) > (m.since as number)) : b });
    }
  });
  const { c, got } = clientOf(port, t, false);
  const recoveries: Json[] = [];
  c.on('recovered', (r: Json) => recoveries.push(r));
  await c.connect();
  await c.join('r');
  await waitFor(() => got.length === 8, 5000, 'A:1, the epoch change and B:1-6');
  assert.deepEqual(got, ['A:1', 'epoch_changed', 'B:1', 'B:2', 'B:3', 'B:4', 'B:5', 'B:6']);
  assert.deepEqual(requests.filter((r) => r.includes('history')), ['1:history:1']);
  assert.equal(recoveries[0]?.recovered, false, 'what came after A:1 in epoch A is gone, and the client says so');
});
