/**
 * Compression: codec round trips of random payloads, bomb and corruption handling, negotiation in
 * hello, compressed frames in both directions over real connections, compress-once fan-out, order.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { test } from 'node:test';
import { compress as zstdCompress } from '@mongodb-js/zstd';
import { compressSync as lz4Compress } from 'lz4-napi';
import fc from 'fast-check';
import { SwitchboardClient, type RoomMessage } from '../../services/client';
import { FlagStore } from '../../services/control';
import {
  Codec,
  compressBody,
  CompressionError,
  decompressBody,
  lz4OutputBound,
  negotiateCodec,
  Outbound,
  zstdOutputBound,
} from '../../services/protocol';
import { startServer } from '../helpers/server';
import { waitFor } from '../helpers/wait';
import { binaryFrame, PREAMBLE, WireClient } from '../helpers/wire';

const MIB = 1024 * 1024;

async function roundTrip(codec: Codec, data: Buffer, max = 4 * MIB): Promise<Buffer> {
  return await decompressBody(codec, await compressBody(codec, data), max);
}

function compressible(n: number): Buffer {
  const words = ['room', 'chat', 'message', 'switchboard', 'hello', '{"a":1}', 'lorem', 'ipsum'];
  let s = '';
  while (s.length < n) s += words[(s.length * 7) % words.length] + ' ';
  return Buffer.from(s.slice(0, n));
}

test('codecs round-trip random and compressible payloads', async () => {
  await fc.assert(
    fc.asyncProperty(fc.uint8Array({ minLength: 0, maxLength: 70_000 }), fc.constantFrom(Codec.Lz4, Codec.Zstd), async (bytes, codec) => {
      const data = Buffer.from(bytes);
      assert.deepEqual(await roundTrip(codec, data), data);
    }),
    { numRuns: 60, interruptAfterTimeLimit: 10_000 },
  );
  for (const codec of [Codec.Lz4, Codec.Zstd]) {
    for (const n of [1, 511, 512, 513, 4096, 300_000, MIB]) {
      const data = compressible(n);
      assert.deepEqual(await roundTrip(codec, data), data, `codec ${codec}, ${n} bytes`);
    }
  }
});

test('negotiation: the server picks its first preferred codec the client accepts', () => {
  assert.equal(negotiateCodec(['lz4', 'zstd'], ['zstd', 'lz4']), Codec.Lz4);
  assert.equal(negotiateCodec(['zstd', 'lz4'], ['lz4', 'zstd']), Codec.Zstd);
  assert.equal(negotiateCodec(['lz4', 'zstd'], ['zstd']), Codec.Zstd);
  assert.equal(negotiateCodec(['lz4'], ['zstd', 'brotli']), Codec.None);
  assert.equal(negotiateCodec(['lz4', 'zstd'], undefined), Codec.None);
  assert.equal(negotiateCodec([], ['lz4']), Codec.None);
});

test('bombs: output over the frame limit is refused before it is produced', async () => {
  const zeros = Buffer.alloc(64 * MIB);
  // lz4 states its size up front.
  const lz4Bomb = lz4Compress(zeros);
  assert.ok(lz4Bomb.length < 300_000);
  assert.throws(() => decompressBody(Codec.Lz4, lz4Bomb, MIB), (e: unknown) => e instanceof CompressionError && /declares 67108864 bytes/.test(e.message));
  // A size prefix that lies low cannot make lz4 write past it.
  const liar = Buffer.from(lz4Compress(Buffer.alloc(100_000)));
  liar.writeUInt32LE(1000, 0);
  assert.throws(() => decompressBody(Codec.Lz4, liar, MIB), CompressionError);
  // zstd: the block walk bounds the output without decompressing.
  const zstdBomb = await zstdCompress(zeros, 19);
  assert.ok(zstdBomb.length < 10_000, `zstd bomb is ${zstdBomb.length} bytes`);
  assert.ok(zstdOutputBound(zstdBomb).bound >= 64 * MIB);
  assert.throws(() => decompressBody(Codec.Zstd, zstdBomb, MIB), (e: unknown) => e instanceof CompressionError && /may decompress to/.test(e.message));
  // Just under the limit is fine; just over is refused after decompression at the latest.
  const under = await zstdCompress(Buffer.alloc(MIB - 100), 3);
  assert.equal(((await decompressBody(Codec.Zstd, under, MIB)) as Buffer).length, MIB - 100);
  const over = await zstdCompress(Buffer.alloc(MIB + 100), 3);
  await assert.rejects(async () => decompressBody(Codec.Zstd, over, MIB), CompressionError);
});

// A 26-byte lz4 body whose size prefix said 1 MiB had the server allocate 1 MiB for it, frame
// after frame: CPU and memory amplification at no cost to the sender.
test('lz4: a declared size the block cannot reach is refused before decompressing; highly repetitive data still passes', () => {
  const ping = lz4Compress(Buffer.from('{"type":"ping"}'));
  const lie = Buffer.from(ping);
  lie.writeUInt32LE(MIB, 0);
  assert.throws(() => decompressBody(Codec.Lz4, lie, MIB), (e: unknown) => e instanceof CompressionError && /more than \d+ bytes of LZ4 block can hold/.test(e.message));
  // At the bound (255 bytes per byte of block, plus 18) it goes to the decoder, which finds the
  // stated size wrong or not.
  const block = ping.length - 4;
  assert.equal(lz4OutputBound(block), 255 * block + 18);
  lie.writeUInt32LE(lz4OutputBound(block) + 1, 0);
  assert.throws(() => decompressBody(Codec.Lz4, lie, MIB), /can hold/);
  // The best ratio an encoder reaches: 1 MiB of one byte, and a 60 KiB run, decompress.
  for (const n of [MIB, 60 * 1024]) {
    const packed = lz4Compress(Buffer.alloc(n, 0x61));
    assert.ok(n / (packed.length - 4) > 240, `ratio ${n / (packed.length - 4)}`);
    assert.ok(lz4OutputBound(packed.length - 4) >= n);
    const out = decompressBody(Codec.Lz4, packed, MIB) as Buffer;
    assert.equal(out.length, n);
    assert.ok(out.every((b) => b === 0x61));
  }
});

test('corrupt bodies are CompressionErrors, never crashes', async () => {
  const good = await zstdCompress(compressible(10_000), 3);
  const cases: Buffer[] = [
    Buffer.alloc(0),
    randomBytes(3),
    randomBytes(200),
    good.subarray(0, good.length - 5),
    Buffer.concat([good, Buffer.from([1, 2, 3])]),
    Buffer.concat([good.subarray(0, 20), randomBytes(good.length - 20)]),
  ];
  for (const body of cases) {
    for (const codec of [Codec.Lz4, Codec.Zstd]) {
      await assert.rejects(async () => decompressBody(codec, body, MIB), CompressionError, `codec ${codec}, ${body.length} bytes`);
    }
  }
  await fc.assert(
    fc.asyncProperty(fc.uint8Array({ maxLength: 2000 }), fc.constantFrom(Codec.Lz4, Codec.Zstd), async (bytes, codec) => {
      try {
        const out = await decompressBody(codec, Buffer.from(bytes), 64 * 1024);
        assert.ok(out.length <= 64 * 1024);
      } catch (err) {
        assert.ok(err instanceof CompressionError, String(err));
      }
    }),
    { numRuns: 300 },
  );
});

test('Outbound compresses once per codec and only when smaller', async () => {
  const big = Outbound.of({ type: 'message', data: compressible(4000).toString() });
  const lz4a = big.binaryFor(Codec.Lz4, 512);
  assert.ok(lz4a !== null && lz4a[4] === Codec.Lz4 && lz4a.length < big.binary().length);
  assert.equal(big.binaryFor(Codec.Lz4, 512), lz4a, 'cached');
  let ready = 0;
  assert.equal(big.binaryFor(Codec.Zstd, 512, { frameReady: () => ready++ }), null);
  assert.equal(big.binaryFor(Codec.Zstd, 512, { frameReady: () => ready++ }), null);
  await waitFor(() => ready === 2, 2000, 'both waiters');
  const z = big.binaryFor(Codec.Zstd, 512)!;
  assert.equal(z[4], Codec.Zstd);
  const rnd = Outbound.of({ type: 'message', data: randomBytes(3000).toString('base64') });
  assert.equal(rnd.binaryFor(Codec.Lz4, 512), rnd.binary(), 'incompressible: sent plain');
  const small = Outbound.of({ type: 'message', data: compressible(100).toString() });
  assert.equal(small.binaryFor(Codec.Lz4, 512), small.binary(), 'below the threshold: sent plain');
});

/** lz4 of `text` with its size prefix replaced by `declared`. */
function lz4SizeLie(text: string, declared: number): Buffer {
  const body = Buffer.from(lz4Compress(Buffer.from(text)));
  body.writeUInt32LE(declared, 0);
  return body;
}

/** A raw binary-mode socket that records each frame's flags and body (decompressing nothing). */
class RawBinary {
  frames: { flags: number; body: Buffer }[] = [];
  closed = false;
  private buf = Buffer.alloc(0);
  private constructor(readonly socket: Socket) {
    socket.on('data', (c: Buffer) => {
      this.buf = Buffer.concat([this.buf, c]);
      while (this.buf.length >= 5 && this.buf.length >= 5 + this.buf.readUInt32BE(0)) {
        const n = this.buf.readUInt32BE(0);
        this.frames.push({ flags: this.buf[4], body: this.buf.subarray(5, 5 + n) });
        this.buf = this.buf.subarray(5 + n);
      }
    });
    socket.on('error', () => {});
    socket.on('close', () => (this.closed = true));
  }
  static open(port: number): Promise<RawBinary> {
    return new Promise((resolve) => {
      const s = connect({ port, host: '127.0.0.1' }, () => {
        s.write(PREAMBLE);
        resolve(new RawBinary(s));
      });
    });
  }
  send(msg: object, flags = 0, body?: Buffer): void {
    this.socket.write(binaryFrame(body ?? Buffer.from(JSON.stringify(msg)), flags));
  }
  async json(i: number): Promise<Record<string, unknown>> {
    await waitFor(() => this.frames.length > i, 3000, `frame ${i}`);
    const f = this.frames[i];
    const body = f.flags === 0 ? f.body : await decompressBody(f.flags as Codec, f.body, 16 * MIB);
    return JSON.parse(body.toString()) as Record<string, unknown>;
  }
}

test('over the wire: negotiated in hello, large pushes compressed, fan-out compresses once per codec', async (t) => {
  const srv = await startServer();
  t.after(() => srv.close());
  const raws: RawBinary[] = [];
  const codecsOf = [['zstd'], ['lz4', 'zstd'], ['zstd', 'lz4'], ['brotli'], undefined];
  for (const [i, codecs] of codecsOf.entries()) {
    const r = await RawBinary.open(srv.port);
    t.after(() => r.socket.destroy());
    r.send({ type: 'hello', user: `u${i}`, id: 1, ...(codecs === undefined ? {} : { codecs }) });
    raws.push(r);
  }
  const welcomes = await Promise.all(raws.map((r) => r.json(0)));
  assert.deepEqual(welcomes.map((w) => w.codec), ['zstd', 'lz4', 'lz4', 'none', 'none']);
  // 20 more members per codec, to see that fan-out does not compress per recipient.
  const extra: SwitchboardClient[] = [];
  for (let i = 0; i < 40; i++) {
    const c = new SwitchboardClient({ servers: [{ host: '127.0.0.1', port: srv.port }], user: `x${i}`, mode: 'binary', codecs: [i % 2 ? 'lz4' : 'zstd'], reconnect: false });
    t.after(() => c.close());
    await c.connect();
    await c.join('big');
    extra.push(c);
  }
  for (const r of raws) r.send({ type: 'join_room', room: 'big', id: 2 });
  await Promise.all(raws.map((r) => r.json(1)));
  const payload = compressible(20_000).toString();
  const got = Promise.all(extra.map((c) => new Promise<RoomMessage>((res) => c.once('message', res))));
  raws[4].send({ type: 'send_chat', room: 'big', data: payload });
  for (const c of await got) assert.equal(c.data, payload);
  const pushes = await Promise.all(raws.map((r) => r.json(2)));
  for (const p of pushes) assert.equal(p.data, payload);
  assert.deepEqual(raws.map((r) => r.frames[2].flags), [Codec.Zstd, Codec.Lz4, Codec.Lz4, 0, 0]);
  // Every recipient of a codec got the very same compressed bytes (compressed once: see
  // test/unit/in-order.test.ts for the sharing itself).
  assert.deepEqual(raws[1].frames[2].body, raws[2].frames[2].body);
  assert.ok(raws[0].frames[2].body.length < payload.length / 3);
});

test('client and server round-trip random payloads in both directions with both codecs, in order', async (t) => {
  const srv = await startServer();
  t.after(() => srv.close());
  for (const codec of ['lz4', 'zstd'] as const) {
    const a = new SwitchboardClient({ servers: [{ host: '127.0.0.1', port: srv.port }], user: `a-${codec}`, mode: 'binary', codecs: [codec], reconnect: false });
    const b = new SwitchboardClient({ servers: [{ host: '127.0.0.1', port: srv.port }], user: `b-${codec}`, mode: 'binary', codecs: [codec], reconnect: false });
    t.after(() => a.close());
    t.after(() => b.close());
    assert.equal((await a.connect()).codec, codec);
    await b.connect();
    await a.join(codec);
    await b.join(codec);
    const sent: unknown[] = [];
    const received: unknown[] = [];
    b.on('message', (m: RoomMessage) => received.push(m.data));
    for (let i = 0; i < 60; i++) {
      // Mixed sizes and kinds: small (plain), large compressible, large random (sent plain).
      const kind = i % 3;
      const data = kind === 0 ? `small ${i}` : kind === 1 ? compressible(1000 + i * 500).toString() : randomBytes(600 + i * 300).toString('base64');
      sent.push(data);
      a.post({ type: 'send_chat', room: codec, data });
    }
    await waitFor(() => received.length === sent.length, 5000, `${codec}: every message`);
    assert.deepEqual(received, sent, `${codec}: same payloads in the same order`);
    const h = await b.history(codec, 0, 100);
    assert.equal(h.length, 60);
  }
});

test('a corrupt compressed frame or a bomb gets bad_frame and closes that connection only', async (t) => {
  const srv = await startServer({ maxFrameBytes: 64 * 1024 });
  t.after(() => srv.close());
  const bystander = await WireClient.connect(srv.port, 'binary');
  const peer = await WireClient.connect(srv.port);
  t.after(() => bystander.socket.destroy());
  t.after(() => peer.socket.destroy());
  await bystander.hello('bystander');
  await peer.hello('peer');
  await bystander.join('r');
  await peer.join('r');
  const zeros = Buffer.from(JSON.stringify({ type: 'send_chat', room: 'r', data: '0'.repeat(10 * MIB) }));
  const attacks: [string, Buffer, Codec, string][] = [
    ['corrupt lz4', Buffer.concat([Buffer.from([100, 0, 0, 0]), Buffer.alloc(40, 0xff)]), Codec.Lz4, 'corrupt lz4'],
    ['corrupt zstd', Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), randomBytes(300)]), Codec.Zstd, 'zstd'],
    ['lz4 bomb', lz4Compress(zeros), Codec.Lz4, 'above the maximum frame size'],
    ['lz4 declaring more than its block can hold', lz4SizeLie('{"type":"ping"}', 60 * 1024), Codec.Lz4, 'can hold'],
    ['zstd bomb', await zstdCompress(zeros, 19), Codec.Zstd, 'above the maximum frame size'],
  ];
  for (const [name, body, codec, why] of attacks) {
    const r = await RawBinary.open(srv.port);
    t.after(() => r.socket.destroy());
    r.send({ type: 'hello', user: 'mallory', codecs: ['lz4', 'zstd'], id: 1 });
    assert.equal((await r.json(0)).type, 'welcome');
    r.send({}, codec, body);
    const err = await r.json(1);
    assert.equal(err.code, 'bad_frame', name);
    assert.match(String(err.message), new RegExp(why), name);
    await waitFor(() => r.closed, 3000, `${name}: the connection to close`);
    // The bystander is untouched and keeps chatting.
    const seq = (await bystander.request({ type: 'send_chat', room: 'r', data: name })).seq;
    assert.equal(typeof seq, 'number');
    const m = await peer.next((x) => x.type === 'message' && x.data === name);
    assert.equal(m.from, 'bystander');
  }
  assert.equal(bystander.closed, false);
  // Compressed frames without negotiation are refused the same way.
  const plain = await RawBinary.open(srv.port);
  t.after(() => plain.socket.destroy());
  plain.send({ type: 'hello', user: 'plain', id: 1 });
  await plain.json(0);
  plain.send({}, Codec.Lz4, lz4Compress(Buffer.from('{"type":"ping"}')));
  assert.equal((await plain.json(1)).code, 'bad_frame');
  await waitFor(() => plain.closed, 3000, 'the close');
});

test('the compression flag turns negotiation off for the users it excludes', async (t) => {
  const store = new FlagStore();
  store.setSource('test', [{ name: 'compression', enabled: true, rolloutPercent: 0, betaUsers: ['beta'], nonCritical: true, description: '' }]);
  const srv = await startServer({}, { flags: store });
  t.after(() => srv.close());
  const on = new SwitchboardClient({ servers: [{ host: '127.0.0.1', port: srv.port }], user: 'beta', mode: 'binary', codecs: ['lz4'], reconnect: false });
  const off = new SwitchboardClient({ servers: [{ host: '127.0.0.1', port: srv.port }], user: 'other', mode: 'binary', codecs: ['lz4'], reconnect: false });
  t.after(() => on.close());
  t.after(() => off.close());
  assert.equal((await on.connect()).codec, 'lz4');
  const w = await off.connect();
  assert.equal(w.codec, 'none');
  assert.equal(w.flags.compression, false);
});
