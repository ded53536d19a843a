// Framing of wire protocol v1 at the parser level: mode sniffing, the text and binary parsers,
// their limits, and a time-boxed property test with random chunk splits of random frame sequences.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import {
  BinaryParser,
  BINARY_PREAMBLE,
  encodeBinaryFrame,
  encodeTextFrame,
  ErrorCode,
  Mode,
  sniffMode,
  TextParser,
  type FrameSink,
} from '../../services/protocol';
import { splitAt } from '../helpers/chunks';

class Collect implements FrameSink {
  frames: string[] = [];
  flags: number[] = [];
  errors: { code: string; message: string }[] = [];
  onFrame(body: Buffer, flags: number): void {
    this.frames.push(body.toString('utf8'));
    this.flags.push(flags);
  }
  onFrameError(code: ErrorCode, message: string): void {
    this.errors.push({ code, message });
  }
}

describe('sniffMode', () => {
  test('JSON and leading blank lines choose text mode', () => {
    assert.equal(sniffMode(Buffer.from('{"type":"ping"}')), Mode.Text);
    assert.equal(sniffMode(Buffer.from('\n{"type":"ping"}')), Mode.Text);
    assert.equal(sniffMode(Buffer.from('\r\n')), Mode.Text);
  });
  test('the binary preamble chooses binary mode, also when split', () => {
    assert.equal(sniffMode(BINARY_PREAMBLE), Mode.Binary);
    assert.equal(sniffMode(Buffer.concat([BINARY_PREAMBLE, Buffer.from([0, 0, 0, 1, 0])])), Mode.Binary);
    assert.equal(sniffMode(BINARY_PREAMBLE.subarray(0, 1)), Mode.Unknown);
    assert.equal(sniffMode(BINARY_PREAMBLE.subarray(0, 3)), Mode.Unknown);
    assert.equal(sniffMode(Buffer.from([0xb5, 0x53, 0x42, 0x02])), Mode.Invalid, 'another protocol version');
  });
  test('an HTTP request line chooses HTTP, anything else is invalid', () => {
    assert.equal(sniffMode(Buffer.from('GET /stats HTTP/1.1\r\n')), Mode.Http);
    assert.equal(sniffMode(Buffer.from('HEAD / HTTP/1.1\r\n')), Mode.Http);
    assert.equal(sniffMode(Buffer.from('hello')), Mode.Invalid);
    assert.equal(sniffMode(Buffer.from([0x00, 0x01])), Mode.Invalid);
    assert.equal(sniffMode(Buffer.alloc(0)), Mode.Unknown);
  });
});

describe('TextParser', () => {
  test('several lines in one chunk, CRLF and blank lines', () => {
    const sink = new Collect();
    const p = new TextParser(sink, 1024);
    p.push(Buffer.from('{"a":1}\n\r\n\n{"b":2}\r\n{"c"'));
    assert.deepEqual(sink.frames, ['{"a":1}', '{"b":2}']);
    assert.equal(p.bufferedBytes, 4);
    p.push(Buffer.from(':3}\n'));
    assert.deepEqual(sink.frames, ['{"a":1}', '{"b":2}', '{"c":3}']);
    assert.equal(p.bufferedBytes, 0);
    assert.deepEqual(sink.errors, []);
  });
  test('a line split into single bytes', () => {
    const sink = new Collect();
    const p = new TextParser(sink, 1024);
    for (const b of Buffer.from('{"type":"ping","id":7}\n')) p.push(Buffer.from([b]));
    assert.deepEqual(sink.frames, ['{"type":"ping","id":7}']);
  });
  test('a line of exactly maxFrame bytes passes; one byte more is too_large, and parsing stops', () => {
    const max = 64;
    const ok = new Collect();
    new TextParser(ok, max).push(Buffer.from('x'.repeat(max) + '\n'));
    assert.equal(ok.frames.length, 1);
    assert.deepEqual(ok.errors, []);

    const big = new Collect();
    const p = new TextParser(big, max);
    p.push(Buffer.from('x'.repeat(max + 1) + '\n{"after":1}\n'));
    assert.equal(big.frames.length, 0);
    assert.equal(big.errors.length, 1);
    assert.equal(big.errors[0].code, ErrorCode.TooLarge);
    p.push(Buffer.from('{"more":1}\n'));
    assert.equal(big.frames.length, 0, 'a stopped parser ignores further input');
  });
  test('an overlong line without newline is refused before it is buffered whole', () => {
    const sink = new Collect();
    const p = new TextParser(sink, 100);
    p.push(Buffer.from('y'.repeat(60)));
    assert.equal(sink.errors.length, 0);
    p.push(Buffer.from('y'.repeat(60)));
    assert.equal(sink.errors.length, 1);
    assert.equal(sink.errors[0].code, ErrorCode.TooLarge);
    assert.equal(p.bufferedBytes, 0, 'nothing is held after the error');
  });
});

describe('BinaryParser', () => {
  test('several frames in one chunk and a frame split across chunks', () => {
    const sink = new Collect();
    const p = new BinaryParser(sink, 1024);
    const all = Buffer.concat([encodeBinaryFrame('{"a":1}'), encodeBinaryFrame('{"b":2}'), encodeBinaryFrame('{"c":3}')]);
    p.push(all.subarray(0, 20));
    p.push(all.subarray(20, 21));
    p.push(all.subarray(21));
    assert.deepEqual(sink.frames, ['{"a":1}', '{"b":2}', '{"c":3}']);
    assert.equal(p.bufferedBytes, 0);
  });
  test('regression: a chunk that ends exactly after a header; the body comes in the next chunk', () => {
    // The fast path used to treat the next chunk as a new header and report a bogus too_large.
    const sink = new Collect();
    const p = new BinaryParser(sink, 4096);
    const f = encodeBinaryFrame('[[],{}]');
    p.push(f.subarray(0, 5));
    p.push(f.subarray(5));
    assert.deepEqual(sink.errors, []);
    assert.deepEqual(sink.frames, ['[[],{}]']);
  });
  test('a huge declared length is refused as soon as the header is complete', () => {
    const sink = new Collect();
    const p = new BinaryParser(sink, 1024 * 1024);
    const header = Buffer.from([0xff, 0xff, 0xff, 0xf0, 0x00]);
    p.push(header.subarray(0, 3));
    assert.equal(sink.errors.length, 0);
    p.push(Buffer.concat([header.subarray(3), Buffer.from('only a few bytes')]));
    assert.equal(sink.errors.length, 1);
    assert.equal(sink.errors[0].code, ErrorCode.TooLarge);
    assert.equal(p.bufferedBytes, 0, 'nothing is buffered for the announced body');
  });
  test('a body of exactly maxFrame bytes passes', () => {
    const sink = new Collect();
    new BinaryParser(sink, 64).push(encodeBinaryFrame('z'.repeat(64)));
    assert.equal(sink.frames.length, 1);
    assert.deepEqual(sink.errors, []);
  });
  test('reserved flag bits and codec 3 are bad_frame', () => {
    for (const flags of [0x04, 0x80, 0x03]) {
      const sink = new Collect();
      const f = encodeBinaryFrame('{}');
      f[4] = flags;
      new BinaryParser(sink, 1024).push(f);
      assert.equal(sink.frames.length, 0);
      assert.equal(sink.errors[0]?.code, ErrorCode.BadFrame, `flags 0x${flags.toString(16)}`);
    }
  });
  test('codec flags 1 and 2 are passed to the sink (the connection decides)', () => {
    const sink = new Collect();
    const f = encodeBinaryFrame('{}');
    f[4] = 1;
    new BinaryParser(sink, 1024).push(f);
    assert.deepEqual(sink.flags, [1]);
  });
});

// JSON values without lone surrogates, so that UTF-8 round trips are exact.
const frameValue = fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v));

describe('property: random frame sequences under random chunk splits', () => {
  for (const mode of ['text', 'binary'] as const) {
    test(`${mode} mode parser yields exactly the frames sent, in order`, () => {
      fc.assert(
        fc.property(
          fc.array(frameValue.filter((s) => Buffer.byteLength(s) <= 4096), { minLength: 1, maxLength: 30 }),
          fc.array(fc.nat(), { maxLength: 40 }),
          (frames, cuts) => {
            // Text mode cannot carry an empty line as a frame; JSON never serialises to one.
            const wire = Buffer.concat(frames.map((f) => (mode === 'text' ? encodeTextFrame(f) : encodeBinaryFrame(f))));
            const sink = new Collect();
            const parser = mode === 'text' ? new TextParser(sink, 4096) : new BinaryParser(sink, 4096);
            for (const chunk of splitAt(wire, cuts)) parser.push(chunk);
            assert.deepEqual(sink.errors, []);
            assert.deepEqual(sink.frames, frames);
            assert.equal(parser.bufferedBytes, 0);
          },
        ),
        { numRuns: 200, interruptAfterTimeLimit: 5000 },
      );
    });
  }
});
