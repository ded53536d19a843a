// The load generator's frame counter: counts every delivered frame and samples timestamps without
// parsing, however the byte stream is split into chunks (text and binary framing).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { COMPRESSED_SAMPLE_FACTOR, FrameCounter } from '../../load-tests/lib/counter';
import { chatText, PublishTemplate, writeDigits } from '../../load-tests/lib/payload';
import { Codec, encodeBinaryFrame, encodeFrameMaybeCompressed, encodeTextFrame, roomMessageJson } from '../../services/protocol';
import { waitFor } from '../helpers/wait';
import { splitAt } from '../helpers/chunks';

function message(ts: number, seq: number): string {
  const data = Buffer.alloc(15);
  writeDigits(data, 0, ts);
  return roomMessageJson('room-1', 'ada', `{"sbt":"${data.toString('latin1')}","p":"xxxx"}`, seq, '0a1b2c3d4e5f', 1);
}

function stream(binary: boolean, n: number, extra: string[] = []): Buffer {
  const enc = binary ? encodeBinaryFrame : encodeTextFrame;
  const parts: Buffer[] = [];
  for (let i = 0; i < n; i++) {
    parts.push(enc(message(1_000_000 + i, i + 1)));
    if (i === 2) for (const e of extra) parts.push(enc(e));
  }
  return Buffer.concat(parts);
}

for (const binary of [false, true]) {
  describe(`FrameCounter (${binary ? 'binary' : 'text'})`, () => {
    test('counts messages and samples latency against the embedded timestamp', () => {
      const samples: number[] = [];
      const c = new FrameCounter(binary, { recordValue: (v) => samples.push(v) }, 1);
      c.clock = () => 2_000_000;
      c.push(stream(binary, 10));
      assert.equal(c.messages, 10);
      assert.deepEqual(samples, Array.from({ length: 10 }, (_, i) => 1_000_000 - i));
    });

    test('counts errors by code and other pushes by type, apart from messages', () => {
      const c = new FrameCounter(binary, null);
      c.push(stream(binary, 5, ['{"type":"error","code":"slow_consumer","message":"x"}', '{"type":"reconnect","reason":"shutdown"}']));
      assert.equal(c.messages, 5);
      assert.equal(c.others.get('slow_consumer'), 1);
      assert.equal(c.others.get('reconnect'), 1);
    });

    test('any chunk split gives the same counts (property)', () => {
      const whole = stream(binary, 40, ['{"type":"error","code":"rate_limited","message":"x"}']);
      fc.assert(
        fc.property(fc.array(fc.nat(), { maxLength: 60 }), (cuts) => {
          let sampled = 0;
          const c = new FrameCounter(binary, { recordValue: () => sampled++ }, 4);
          for (const chunk of splitAt(whole, cuts)) c.push(chunk);
          assert.equal(c.messages, 40);
          assert.equal([...c.others.values()].reduce((a, b) => a + b, 0), 1);
          assert.ok(sampled > 0 && sampled <= 40);
        }),
        { numRuns: 200 },
      );
    });

    test('the publish template is a valid send_chat carrying the timestamp', () => {
      const t = new PublishTemplate('r', 8, binary);
      const b = t.batch(3, 123456789);
      const one = b.subarray(0, t.frame.length);
      const json = binary ? one.subarray(5).toString() : one.toString().trimEnd();
      const msg = JSON.parse(json) as { type: string; room: string; data: { sbt: string } };
      assert.equal(msg.type, 'send_chat');
      assert.equal(msg.room, 'r');
      assert.equal(Number(msg.data.sbt), 123456789);
      assert.equal(b.length, 3 * t.frame.length);
    });
  });
}

describe('FrameCounter (compressed binary frames)', () => {
  // A message above the 512-byte threshold, padded with chat-like text so that it compresses.
  function bigMessage(ts: number, seq: number): Buffer {
    const data = Buffer.alloc(15);
    writeDigits(data, 0, ts);
    return Buffer.from(roomMessageJson('room-1', 'ada', `{"sbt":"${data.toString('latin1')}","p":${JSON.stringify(chatText(2000))}}`, seq, '0a1b2c3d4e5f', 1));
  }

  async function compressedStream(codec: Codec, n: number): Promise<Buffer> {
    const frames: Buffer[] = [];
    for (let i = 0; i < n; i++) frames.push(await encodeFrameMaybeCompressed(codec, bigMessage(1_000_000 + i, i + 1), 512));
    for (const f of frames) assert.equal(f[4] & 0x03, codec, 'the test frames really are compressed');
    return Buffer.concat(frames);
  }

  for (const [name, codec] of [['lz4', Codec.Lz4], ['zstd', Codec.Zstd]] as const) {
    test(`${name}: counts every frame and samples latency from the decompressed body`, async () => {
      const samples: number[] = [];
      // One sample in 2 x COMPRESSED_SAMPLE_FACTOR compressed frames, the first one included.
      const every = 2 * COMPRESSED_SAMPLE_FACTOR;
      const c = new FrameCounter(true, { recordValue: (v) => samples.push(v) }, 2);
      c.clock = () => 2_000_000;
      const whole = await compressedStream(codec, 2 * every + 1);
      c.push(whole);
      assert.equal(c.messages, 2 * every + 1);
      assert.equal(c.bytes, whole.length);
      // zstd decompresses on the thread pool: its samples arrive after push returns.
      await waitFor(() => samples.length === 3, 2000, 'samples of compressed frames');
      assert.deepEqual(
        samples.sort((a, b) => b - a),
        [0, every, 2 * every].map((i) => 1_000_000 - i),
      );
    });
  }

  test('a compressed frame split over chunks is counted, and the next whole one is sampled instead', async () => {
    const whole = await compressedStream(Codec.Lz4, 3);
    const samples: number[] = [];
    const c = new FrameCounter(true, { recordValue: (v) => samples.push(v) }, 1);
    c.clock = () => 2_000_000;
    c.push(whole.subarray(0, 20));
    c.push(whole.subarray(20));
    assert.equal(c.messages, 3);
    // Frame 0's body was split (skipped), so frame 1 was sampled, and frame 2 not (sample factor).
    assert.deepEqual(samples, [1_000_000 - 1]);
  });
});

test('chatText: deterministic chat-like padding of the asked length', () => {
  const a = chatText(1024);
  assert.equal(a.length, 1024);
  assert.equal(a, chatText(1024));
  assert.match(a, /^([a-z]+ )+[a-z]* ?$/);
  assert.ok(new Set(a.split(' ')).size > 10, 'more than a repeated character');
});
