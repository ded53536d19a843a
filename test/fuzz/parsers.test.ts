// Property-based fuzzing of the text and binary parsers: for arbitrary bytes (valid frames,
// garbage, overlong lines, bad headers) split into arbitrary chunks, a parser never throws and
// reports exactly what a plain reference parser finds in the whole input at once; and its cost
// is linear in the bytes received however they are split.
//
// FUZZ_RUNS sets the number of generated inputs per property (default: a bounded run of a few
// seconds in `npm test`; FUZZ_RUNS=100000 for the long run recorded in docs/operations.md).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { BinaryParser, encodeBinaryFrame, encodeTextFrame, ErrorCode, TextParser, type FrameSink } from '../../services/protocol';
import { FUZZ_RUNS, fuzzParams } from './params';
import { splitAt } from '../helpers/chunks';

interface Event {
  frame?: string;
  flags?: number;
  error?: ErrorCode;
}

class Record implements FrameSink {
  events: Event[] = [];
  onFrame(body: Buffer, flags: number): void {
    this.events.push({ frame: body.toString('latin1'), flags });
  }
  onFrameError(code: ErrorCode): void {
    this.events.push({ error: code });
  }
}

/** The text protocol, read naively from the whole input. */
function referenceText(input: Buffer, max: number): Event[] {
  const out: Event[] = [];
  let start = 0;
  for (;;) {
    const nl = input.indexOf(0x0a, start);
    if (nl === -1) {
      if (input.length - start > max + 1) out.push({ error: ErrorCode.TooLarge });
      return out;
    }
    let end = nl;
    if (end > start && input[end - 1] === 0x0d) end--;
    if (end - start > max) {
      out.push({ error: ErrorCode.TooLarge });
      return out;
    }
    if (end > start) out.push({ frame: input.toString('latin1', start, end), flags: 0 });
    start = nl + 1;
  }
}

/** The binary protocol, read naively from the whole input. */
function referenceBinary(input: Buffer, max: number): Event[] {
  const out: Event[] = [];
  let off = 0;
  while (input.length - off >= 5) {
    const size = input.readUInt32BE(off);
    const flags = input[off + 4];
    if (size > max) return [...out, { error: ErrorCode.TooLarge }];
    if ((flags & 0xfc) !== 0 || (flags & 3) === 3) return [...out, { error: ErrorCode.BadFrame }];
    if (input.length - off - 5 < size) return out;
    out.push({ frame: input.toString('latin1', off + 5, off + 5 + size), flags });
    off += 5 + size;
  }
  return out;
}

const json = fc.jsonValue({ maxDepth: 4 }).map((v) => JSON.stringify(v) ?? 'null');
/** Pieces of text-mode input: frames, blank lines, CRLF, garbage, and lines around the limit. */
const textPiece = (max: number) =>
  fc.oneof(
    { weight: 5, arbitrary: json.map((s) => Buffer.from(s + '\n')) },
    { weight: 1, arbitrary: json.map((s) => Buffer.from(s + '\r\n')) },
    { weight: 1, arbitrary: fc.constantFrom(Buffer.from('\n'), Buffer.from('\r\n'), Buffer.from('\r')) },
    { weight: 2, arbitrary: fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a)) },
    { weight: 1, arbitrary: fc.integer({ min: max - 2, max: max + 3 }).map((n) => Buffer.from('x'.repeat(Math.max(0, n)) + '\n')) },
  );
/** Pieces of binary-mode input: frames with any flags, headers around the limit, garbage. */
const binaryPiece = (max: number) =>
  fc.oneof(
    { weight: 5, arbitrary: json.map((s) => encodeBinaryFrame(s)) },
    { weight: 2, arbitrary: fc.tuple(fc.uint8Array({ maxLength: 64 }), fc.integer({ min: 0, max: 255 })).map(([b, f]) => frame(Buffer.from(b), f)) },
    { weight: 1, arbitrary: fc.integer({ min: max - 2, max: max + 2 }).map((n) => header(n, 0)) },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffffffff }).map((n) => header(n, 0)) },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 16 }).map((a) => Buffer.from(a)) },
  );

function header(size: number, flags: number): Buffer {
  const h = Buffer.alloc(5);
  h.writeUInt32BE(size, 0);
  h[4] = flags;
  return h;
}
function frame(body: Buffer, flags: number): Buffer {
  return Buffer.concat([header(body.length, flags), body]);
}

describe(`parser fuzzing (${FUZZ_RUNS} runs per property)`, () => {
  for (const mode of ['text', 'binary'] as const) {
    test(`${mode}: arbitrary input in arbitrary chunks never throws and matches the reference`, () => {
      const MAX = 256;
      fc.assert(
        fc.property(
          fc.array(mode === 'text' ? textPiece(MAX) : binaryPiece(MAX), { maxLength: 20 }),
          fc.array(fc.nat(), { maxLength: 30 }),
          (pieces, cuts) => {
            const input = Buffer.concat(pieces);
            const sink = new Record();
            const parser = mode === 'text' ? new TextParser(sink, MAX) : new BinaryParser(sink, MAX);
            for (const chunk of splitAt(input, cuts)) parser.push(chunk);
            const expected = mode === 'text' ? referenceText(input, MAX) : referenceBinary(input, MAX);
            assert.deepEqual(sink.events, expected);
            assert.ok(parser.bufferedBytes <= MAX + 5, `holds ${parser.bufferedBytes} bytes`);
            if (expected.some((e) => e.error !== undefined)) assert.equal(parser.bufferedBytes, 0, 'nothing held after an error');
          },
        ),
        fuzzParams(),
      );
    });
  }

  test('text: a frame body (given to the sink) is exact under every split, CRLF included', () => {
    fc.assert(
      fc.property(fc.array(json, { minLength: 1, maxLength: 10 }), fc.array(fc.nat(), { maxLength: 20 }), (frames, cuts) => {
        const input = Buffer.concat(frames.map((f) => encodeTextFrame(f)));
        const sink = new Record();
        const p = new TextParser(sink, 4096);
        for (const c of splitAt(input, cuts)) p.push(c);
        assert.deepEqual(
          sink.events.map((e) => e.frame),
          frames.map((f) => Buffer.from(f).toString('latin1')),
        );
      }),
      fuzzParams(),
    );
  });
});

describe('parsing is linear in the bytes received, however they are split', () => {
  // A megabyte held, then byte after byte: concatenating per chunk (the old parser) copied the
  // whole megabyte for every byte, ~20 GB here; linear work is a few milliseconds.
  const MB = 1 << 20;
  test('text: 1 MB of a line, then 20,000 single bytes', () => {
    const sink = new Record();
    const p = new TextParser(sink, 2 * MB);
    const started = performance.now();
    p.push(Buffer.alloc(MB, 0x61));
    const one = Buffer.from('b');
    for (let i = 0; i < 20_000; i++) p.push(one);
    p.push(Buffer.from('\n'));
    const ms = performance.now() - started;
    assert.equal(sink.events.length, 1);
    assert.equal(sink.events[0].frame!.length, MB + 20_000);
    assert.ok(ms < 1000, `took ${ms.toFixed(0)} ms`);
  });
  test('binary: a 1 MB body sent a byte at a time after its header', () => {
    const sink = new Record();
    const p = new BinaryParser(sink, 2 * MB);
    const body = Buffer.alloc(MB, 0x62);
    const started = performance.now();
    p.push(header(body.length, 0));
    for (let i = 0; i < body.length; i++) p.push(body.subarray(i, i + 1));
    const ms = performance.now() - started;
    assert.equal(sink.events.length, 1);
    assert.equal(sink.events[0].frame!.length, MB);
    assert.ok(ms < 3000, `took ${ms.toFixed(0)} ms`);
  });
});
