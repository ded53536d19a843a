// Attack class: compression amplification. A 78-byte zstd frame can stand for a megabyte (RLE
// blocks), well within MAX_FRAME_BYTES and every format bound: the sender pays 78 bytes, the
// server decompresses, scans and parses a megabyte. INFLATE_BYTES_PER_SEC bounds what one
// connection's frames may decompress to per second: past it the frames wait, in order, and the
// socket is not read. Nothing is dropped, the sender is slowed, everyone else is served.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { compress as zstdCompress } from '@mongodb-js/zstd';
import { compressSync as lz4Compress } from 'lz4-napi';
import { Codec } from '../../services/protocol';
import { waitFor } from '../helpers/wait';
import { binaryFrame, WireClient } from '../helpers/wire';
import { assertRssWithin, assertWitnessServed, peakRss, settledRss, startTarget, Witness } from './harness';

const MIB = 1024 * 1024;

test('zstd frames that decompress 10,000-fold are slowed to INFLATE_BYTES_PER_SEC, in order, none lost; others are served', async (t) => {
  const RATE = 2 * MIB;
  const target = await startTarget({ INFLATE_BYTES_PER_SEC: String(RATE) });
  t.after(() => target.stop());
  const witness = await Witness.start(target.port, t);
  await witness.served(5);

  const bomber = await WireClient.connect(target.port, 'binary');
  t.after(() => bomber.destroy());
  const welcome = await bomber.request({ type: 'hello', user: 'bomber', codecs: ['zstd'] });
  assert.equal(welcome.codec, 'zstd');
  const FRAMES = 12;
  const frames: Buffer[] = [];
  for (let i = 0; i < FRAMES; i++) {
    const body = await zstdCompress(Buffer.from(JSON.stringify({ type: 'ping', id: i, pad: ' '.repeat(MIB - 64) })), 3);
    assert.ok(body.length < 200, `frame ${i} is ${body.length} bytes compressed`);
    frames.push(binaryFrame(body, Codec.Zstd));
  }
  const pongs = () => bomber.all.filter((m) => m.type === 'pong' && typeof m.id === 'number');
  // Each frame's JSON is a little under a MiB; the pad makes it MIB - 64 + ~30 bytes.
  const SIZE = MIB - 64;
  const sentAt = Date.now();
  bomber.writeRaw(Buffer.concat(frames));
  // When each pong arrived (polled): every frame is handled in the end, in the order sent.
  const arrived: number[] = [];
  await waitFor(
    () => {
      const n = pongs().length;
      while (arrived.length < n) arrived.push(Date.now() - sentAt);
      return n === FRAMES;
    },
    20_000,
    `all ${FRAMES} pongs`,
    { intervalMs: 5 },
  );
  assert.deepEqual(
    pongs().map((m) => m.id),
    Array.from({ length: FRAMES }, (_, i) => i),
  );
  // The bucket holds a second's worth and is full when they are sent; frame k may start only
  // once k frames' bytes fit in it: (k x SIZE - RATE) / RATE seconds after they were sent at the
  // earliest (a slower machine only makes it later). Without the budget all 12 were answered
  // within a second.
  for (let k = 0; k < FRAMES; k++) {
    const earliest = ((k * SIZE - RATE) / RATE) * 1000 - 20;
    assert.ok(arrived[k] >= earliest, `frame ${k} answered ${arrived[k]} ms after sending; the budget allows ${earliest.toFixed(0)} ms at the earliest`);
  }
  assert.equal(bomber.closed, false);
  assert.ok(((await target.metric('switchboard_limit_exceeded_total{limit="INFLATE_BYTES_PER_SEC"}')) ?? 0) > 0);
  await assertWitnessServed(witness);
});

// Regression (found in review): a frame that waited for the budget and was then decompressed
// synchronously (lz4) left the socket paused for good when a zstd frame had paused it before.
test('mixed codecs past the budget: zstd, lz4 and plain frames are all answered, in order', async (t) => {
  const target = await startTarget({ INFLATE_BYTES_PER_SEC: String(MIB) });
  t.after(() => target.stop());
  const c = await WireClient.connect(target.port, 'binary');
  t.after(() => c.destroy());
  const welcome = await c.request({ type: 'hello', user: 'mixed', codecs: ['zstd', 'lz4'] });
  assert.ok(welcome.type === 'welcome', JSON.stringify(welcome));
  const ping = (id: number) => Buffer.from(JSON.stringify({ type: 'ping', id, pad: ' '.repeat((3 * MIB) / 4) }));
  // Three quarters of a MiB each against 1 MiB/s: the second zstd frame puts the connection in
  // debt, and the lz4 frame behind it waits.
  const kinds = ['zstd', 'zstd', 'lz4', 'plain'] as const;
  const frames: Buffer[] = [];
  for (const [id, kind] of kinds.entries()) {
    if (kind === 'zstd') frames.push(binaryFrame(await zstdCompress(ping(id), 3), Codec.Zstd));
    else if (kind === 'lz4') frames.push(binaryFrame(lz4Compress(ping(id)), Codec.Lz4));
    else frames.push(binaryFrame(JSON.stringify({ type: 'ping', id })));
  }
  c.writeRaw(Buffer.concat(frames));
  const pongs = () => c.all.filter((m) => m.type === 'pong' && typeof m.id === 'number');
  await waitFor(() => pongs().length === kinds.length, 20_000, `all ${kinds.length} pongs`);
  assert.deepEqual(
    pongs().map((m) => m.id),
    kinds.map((_, i) => i),
  );
  // And the connection is read again afterwards.
  assert.equal((await c.request({ type: 'ping' }, 5000)).type, 'pong');
});

// Found from outside: INFLATE_BYTES_PER_SEC is per connection, and 150 connections each sending
// 78-byte zstd bombs within their own budget had 150 MiB decompressing at once and parsed it in
// one turn: the witness waited 1.3 s and RSS grew 366 MiB. INFLATE_TOTAL_BYTES_PER_SEC bounds them
// together, charged before each decompression starts.
test('100 connections sending zstd bombs at once are held to INFLATE_TOTAL_BYTES_PER_SEC together; every frame answered, others served', async (t) => {
  const TOTAL = 32 * MIB;
  const target = await startTarget({ INFLATE_TOTAL_BYTES_PER_SEC: String(TOTAL) });
  t.after(() => target.stop());
  const witness = await Witness.start(target.port, t);
  await witness.served(5);
  const before = await settledRss(target);
  const N = 100;
  const FRAMES = 2;
  const bomb = binaryFrame(await zstdCompress(Buffer.from(JSON.stringify({ type: 'ping', id: 0, pad: ' '.repeat(MIB - 64) })), 3), Codec.Zstd);
  const bombers: WireClient[] = [];
  for (let i = 0; i < N; i++) {
    const c = await WireClient.connect(target.port, 'binary');
    t.after(() => c.destroy());
    assert.equal((await c.request({ type: 'hello', user: `bomber-${i}`, codecs: ['zstd'] })).codec, 'zstd');
    bombers.push(c);
  }
  const pongs = () => bombers.reduce((n, c) => n + c.all.filter((m) => m.type === 'pong' && m.id === 0).length, 0);
  const { peak } = await peakRss(target, async () => {
    const sentAt = Date.now();
    for (const c of bombers) c.writeRaw(Buffer.concat(Array.from({ length: FRAMES }, () => bomb)));
    await waitFor(() => pongs() === N * FRAMES, 60_000, `all ${N * FRAMES} pongs`, { intervalMs: 20 });
    // 200 MiB at 32 MiB/s, a bucket of 4 MiB to start with: 6 s at the least (the per-connection
    // budgets alone, 4 MiB/s each, would let them all through in well under one).
    const took = Date.now() - sentAt;
    assert.ok(took >= ((N * FRAMES * MIB - TOTAL / 8) / TOTAL) * 1000 - 500, `all answered in ${took} ms`);
  });
  assert.ok(bombers.every((c) => !c.closed), 'no bomber was disconnected: they are slowed, not refused');
  assert.ok(((await target.metric('switchboard_limit_exceeded_total{limit="INFLATE_TOTAL_BYTES_PER_SEC"}')) ?? 0) > 0);
  assertRssWithin(before, peak, undefined, 'peak RSS');
  await assertWitnessServed(witness);
});
