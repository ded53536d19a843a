// Bad input, one test each. After every abuse a healthy bystander pair still chats, and the
// process is still here (an uncaught exception would end this test file).
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import { startServer, type TestServer } from '../helpers/server';
import { binaryFrame, bystanders, helloClient, PREAMBLE, WireClient } from '../helpers/wire';
import { waitFor } from '../helpers/wait';

const MAX = 64 * 1024;
let srv: TestServer;
let by: Awaited<ReturnType<typeof bystanders>>;
const open: WireClient[] = [];
before(async () => {
  srv = await startServer({ maxFrameBytes: MAX, rateLimitPerSec: 50, rateLimitBurst: 20, maxRoomsPerConnection: 5 });
  by = await bystanders(srv.port);
});
after(async () => {
  for (const c of open) c.destroy();
  await by.close();
  await srv.close();
});
afterEach(async () => {
  await by.check();
});
async function abuser(mode: 'text' | 'binary' = 'text', hello = true): Promise<WireClient> {
  const c = hello ? await helloClient(srv.port, 'abuser', mode) : await WireClient.connect(srv.port, mode);
  open.push(c);
  return c;
}

describe('bad input', () => {
  test('malformed JSON: bad_json, the frame is dropped, the connection stays usable', async () => {
    const c = await abuser();
    c.writeRaw('{"type": "ping",,}\n');
    const e = await c.nextOfType('error');
    assert.equal(e.code, 'bad_json');
    assert.equal((await c.request({ type: 'ping' })).type, 'pong');
  });

  test('malformed JSON in binary mode, and invalid UTF-8', async () => {
    const c = await abuser('binary');
    c.writeRaw(binaryFrame(Buffer.from([0x7b, 0xff, 0xfe, 0x7d])));
    assert.equal((await c.nextOfType('error')).code, 'bad_json');
    c.writeRaw(binaryFrame(''));
    assert.equal((await c.nextOfType('error')).code, 'bad_json', 'an empty body');
    assert.equal((await c.request({ type: 'ping' })).type, 'pong');
  });

  test('invalid UTF-8 inside valid JSON (a room name of bytes FF FE): bad_json, nothing joined', async () => {
    for (const mode of ['text', 'binary'] as const) {
      const c = await abuser(mode);
      const frame = Buffer.concat([Buffer.from('{"type":"join_room","room":"'), Buffer.from([0xff, 0xfe]), Buffer.from('","id":7}')]);
      c.writeRaw(mode === 'text' ? Buffer.concat([frame, Buffer.from('\n')]) : binaryFrame(frame));
      const e = await c.nextOfType('error');
      assert.equal(e.code, 'bad_json', mode);
      assert.match(String(e.message), /UTF-8/);
      // Had it been decoded, the room would be U+FFFD U+FFFD, and this would be allowed.
      assert.equal((await c.request({ type: 'presence', room: '\ufffd\ufffd' })).code, 'not_in_room', mode);
    }
  });

  for (const [name, value] of [
    ['an array', '[1,2,3]'],
    ['a string', '"hello"'],
    ['a number', '42'],
    ['null', 'null'],
  ] as const) {
    test(`a JSON value that is not an object (${name}): bad_request`, async () => {
      const c = await abuser();
      c.writeRaw(value + '\n');
      const e = await c.nextOfType('error');
      assert.equal(e.code, 'bad_request');
      assert.match(String(e.message), /object/);
      assert.equal(c.closed, false);
    });
  }

  test('missing or wrong-typed envelope fields: bad_request, with the id echoed when valid', async () => {
    const c = await abuser();
    c.send({ id: 1 });
    let e = await c.nextOfType('error');
    assert.equal(e.code, 'bad_request');
    assert.equal(e.id, 1);
    assert.match(String(e.message), /"type"/);
    c.send({ type: 7, id: 2 });
    e = await c.nextOfType('error');
    assert.equal(e.code, 'bad_request');
    assert.equal(e.id, 2);
    c.send({ type: 'ping', id: { nested: true } });
    e = await c.nextOfType('error');
    assert.equal(e.code, 'bad_request');
    assert.match(String(e.message), /"id"/);
  });

  test('missing or wrong-typed plugin fields: bad_request naming the field', async () => {
    const c = await abuser();
    await c.join('f');
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ type: 'join_room' }, /"room"/],
      [{ type: 'join_room', room: 12 }, /"room"/],
      [{ type: 'join_room', room: '' }, /"room"/],
      [{ type: 'send_chat', room: 'f' }, /"data"/],
      [{ type: 'send_chat', data: 'x' }, /"room"/],
      [{ type: 'history', room: 'f', since: 1.5 }, /"since"/],
      [{ type: 'history', room: 'f', limit: 'all' }, /"limit"/],
    ];
    for (const [msg, field] of cases) {
      const e = await c.request(msg);
      assert.equal(e.code, 'bad_request', JSON.stringify(msg));
      assert.match(String(e.message), field);
    }
  });

  // In cluster mode names go through Redis as UTF-8, where a lone surrogate becomes U+FFFD: a
  // message to "r\ud800" reached nobody, and a member of "club\ud800" could post into
  // "club\ufffd". Refused in every mode.
  test('names with a lone UTF-16 surrogate: bad_request naming the field; surrogate pairs are fine', async () => {
    const c = await WireClient.connect(srv.port);
    open.push(c);
    for (const user of ['eve\ud800', '\udc00eve', 'eve\udc00\ud83d']) {
      const e = await c.request({ type: 'hello', user });
      assert.equal(e.code, 'bad_request', JSON.stringify(user));
      assert.match(String(e.message), /"user".*lone UTF-16 surrogate/);
    }
    const eve = 'eve\u{1F600}';
    assert.equal((await c.request({ type: 'hello', user: eve })).user, eve);
    for (const [msg, field] of [
      [{ type: 'join_room', room: 'club\ud800' }, 'room'],
      [{ type: 'send_chat', room: 'club\ud800', data: 'x' }, 'room'],
      [{ type: 'presence', room: 'club\udfff' }, 'room'],
      [{ type: 'history', room: '\ud800' }, 'room'],
      [{ type: 'direct', to: 'bystander\ud800', data: 'x' }, 'to'],
    ] as const) {
      const e = await c.request(msg);
      assert.equal(e.code, 'bad_request', JSON.stringify(msg));
      assert.match(String(e.message), new RegExp(`"${field}"`));
    }
    // An astral character (a surrogate pair) in a room name: joined, sent to, received.
    const room = 'club\u{1F3B5}';
    assert.equal((await c.request({ type: 'join_room', room })).type, 'ok');
    assert.equal(typeof (await c.request({ type: 'send_chat', room, data: 'la' })).seq, 'number');
    const m = await c.next((x) => x.type === 'message' && x.room === room);
    assert.equal(m.from, eve);
    // And a direct message to a user named with one.
    assert.equal((await by.a.request({ type: 'direct', to: eve, data: 'hi' })).type, 'ok');
    assert.equal((await c.next((x) => x.type === 'direct')).data, 'hi');
  });

  test('unknown types: unknown_type, the connection stays', async () => {
    const c = await abuser();
    const e = await c.request({ type: 'launch_rockets' });
    assert.equal(e.code, 'unknown_type');
    const long = await c.request({ type: 'x'.repeat(5000) });
    assert.equal(long.code, 'unknown_type');
    assert.ok(String(long.message).length < 200, 'the message does not echo a huge type');
    assert.equal((await c.request({ type: 'ping' })).type, 'pong');
  });

  test('a text line over MAX_FRAME_BYTES: too_large, then the connection is closed', async () => {
    const c = await abuser();
    c.writeRaw('{"type":"send_chat","room":"f","data":"' + 'x'.repeat(MAX + 10) + '"}\n');
    const e = await c.nextOfType('error');
    assert.equal(e.code, 'too_large');
    await c.waitClosed();
  });

  test('an endless text line without newline is cut off at MAX_FRAME_BYTES', async () => {
    const c = await abuser();
    const chunk = Buffer.alloc(16 * 1024, 0x61);
    for (let i = 0; i < 6 && !c.closed; i++) c.writeRaw(chunk);
    assert.equal((await c.nextOfType('error')).code, 'too_large');
    await c.waitClosed();
  });

  test('a binary frame over the maximum: too_large, then close', async () => {
    const c = await abuser('binary');
    c.writeRaw(binaryFrame(Buffer.alloc(MAX + 1, 0x20)));
    assert.equal((await c.nextOfType('error')).code, 'too_large');
    await c.waitClosed();
  });

  test('a huge declared binary length with a few bytes sent: too_large at once, nothing buffered', async () => {
    const c = await abuser('binary', false);
    const header = Buffer.alloc(5);
    header.writeUInt32BE(0xfffffff0, 0);
    c.writeRaw(Buffer.concat([header, Buffer.from('tiny')]));
    const e = await c.nextOfType('error');
    assert.equal(e.code, 'too_large');
    assert.match(String(e.message), /4294967280/);
    await c.waitClosed();
  });

  test('a frame split across many TCP chunks, and several frames in one chunk', async () => {
    const c = await abuser();
    await c.join('split');
    const line = Buffer.from(JSON.stringify({ type: 'send_chat', room: 'split', data: 'in pieces', id: 's1' }) + '\n');
    for (let i = 0; i < line.length; i += 3) {
      c.writeRaw(line.subarray(i, i + 3));
      await new Promise((r) => setImmediate(r));
    }
    assert.equal((await c.next((m) => m.id === 's1')).type, 'ok');
    c.writeRaw(['p1', 'p2', 'p3'].map((id) => JSON.stringify({ type: 'ping', id }) + '\n').join(''));
    for (const id of ['p1', 'p2', 'p3']) assert.equal((await c.next((m) => m.id === id)).type, 'pong');

    const b = await abuser('binary');
    const frames = Buffer.concat(['b1', 'b2', 'b3'].map((id) => binaryFrame(JSON.stringify({ type: 'ping', id }))));
    for (let i = 0; i < frames.length; i += 2) {
      b.writeRaw(frames.subarray(i, i + 2));
      await new Promise((r) => setImmediate(r));
    }
    for (const id of ['b1', 'b2', 'b3']) assert.equal((await b.next((m) => m.id === id)).type, 'pong');
    b.writeRaw(frames);
    await waitFor(() => b.all.filter((m) => m.type === 'pong').length === 6, 3000, 'three more pongs');
  });

  test('a flood past the rate limit: rate_limited for the excess, counted, connection stays', async () => {
    const c = await abuser();
    const before = srv.server.counters.dropped.rate_limited;
    const N = 200;
    c.writeRaw(Array.from({ length: N }, (_, i) => JSON.stringify({ type: 'ping', id: i }) + '\n').join(''));
    await waitFor(() => c.all.filter((m) => m.id !== undefined && typeof m.id === 'number').length === N, 5000, 'a reply to each');
    const replies = c.all.filter((m) => typeof m.id === 'number');
    const pongs = replies.filter((m) => m.type === 'pong').length;
    const limited = replies.filter((m) => m.type === 'error' && m.code === 'rate_limited').length;
    assert.equal(pongs + limited, N);
    assert.ok(pongs >= 15 && pongs < 40, `about the burst of 20 (less the hello) passed, got ${pongs}`);
    assert.equal(srv.server.counters.dropped.rate_limited - before, limited);
    assert.equal(c.closed, false);
    // The bucket refills: after a short wait, requests pass again.
    await waitFor(async () => (await c.request({ type: 'ping' })).type === 'pong', 3000, 'the bucket to refill');
  });

  test('joining more rooms than allowed: too_many_rooms', async () => {
    const c = await abuser();
    for (let i = 0; i < 5; i++) await c.join(`many-${i}`);
    const e = await c.request({ type: 'join_room', room: 'many-5' });
    assert.equal(e.code, 'too_many_rooms');
    assert.match(String(e.message), /5/);
  });

  test('sending to a room not joined: not_in_room', async () => {
    const c = await abuser();
    const room = `bystanders-private`;
    const e = await c.request({ type: 'send_chat', room, data: 'intrude' });
    assert.equal(e.code, 'not_in_room');
  });

  test('a client that vanishes mid-frame (text and binary) is cleaned up', async () => {
    const base = srv.server.connectionCount;
    const t = await abuser();
    await t.join('vanish');
    t.writeRaw('{"type":"send_chat","room":"vanish","da');
    const b = await abuser('binary');
    const f = binaryFrame(JSON.stringify({ type: 'ping' }));
    b.writeRaw(f.subarray(0, 7));
    await waitFor(() => srv.server.connectionCount === base + 2, 2000, 'both connected');
    t.destroy();
    b.destroy();
    await waitFor(() => srv.server.connectionCount === base, 3000, 'both connections to be released');
    assert.equal(srv.server.services.hub.localMembers('vanish'), 0);
  });

  test('garbage before any hello in every mode never takes the server down', async () => {
    const payloads = [Buffer.from([0, 1, 2, 3]), Buffer.from('\xff\xfe'), Buffer.concat([PREAMBLE, Buffer.from([0, 0])]), Buffer.from('GET')];
    for (const p of payloads) {
      const c = await abuser('text', false);
      c.writeRaw(p);
      c.destroy();
    }
    const probe = await abuser('text', false);
    assert.equal((await probe.request({ type: 'ping' })).type, 'pong');
  });
});
