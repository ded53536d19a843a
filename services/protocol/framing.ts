/**
 * Framing for wire protocol v1: mode sniffing, the newline-delimited JSON text parser and the
 * length-prefixed binary parser, plus the encoders for both.
 *
 * Parsers are small integer state machines over the chunks a socket delivers. They never throw on
 * client bytes: they report frames and errors to a sink object (no per-frame closures), enforce
 * the maximum frame size before buffering (a huge declared length is refused at once), and hand
 * out zero-copy views of the input where a frame lies inside one chunk.
 */
import { ErrorCode } from './errors';

/** Binary mode preamble: 0xB5 'S' 'B' 0x01 (protocol version 1). Not valid UTF-8 as a first byte. */
export const BINARY_PREAMBLE = Buffer.from([0xb5, 0x53, 0x42, 0x01]);
/** u32 big-endian body length, then one flags byte. */
export const BINARY_HEADER_BYTES = 5;

/** The low two bits of the flags byte name the body's compression codec. */
export const Codec = { None: 0, Lz4: 1, Zstd: 2 } as const;
export type Codec = (typeof Codec)[keyof typeof Codec];
export const CODEC_MASK = 0x03;
/** Bits that must be zero in protocol v1. */
export const RESERVED_FLAG_MASK = 0xfc;

export const Mode = { Unknown: 0, Text: 1, Binary: 2, Http: 3, Invalid: 4 } as const;
export type Mode = (typeof Mode)[keyof typeof Mode];

const LF = 0x0a;
const CR = 0x0d;
const OPEN_BRACE = 0x7b;

/**
 * Decide the connection mode from its first bytes. Returns Unknown while more bytes are needed
 * (a binary preamble split across chunks).
 */
export function sniffMode(first: Buffer): Mode {
  if (first.length === 0) return Mode.Unknown;
  const b = first[0];
  if (b === OPEN_BRACE) return Mode.Text;
  // Leading blank lines are tolerated in text mode (some tools send a newline first).
  if (b === LF || b === CR || b === 0x20) return Mode.Text;
  if (b === BINARY_PREAMBLE[0]) {
    const n = Math.min(first.length, BINARY_PREAMBLE.length);
    for (let i = 1; i < n; i++) if (first[i] !== BINARY_PREAMBLE[i]) return Mode.Invalid;
    return n === BINARY_PREAMBLE.length ? Mode.Binary : Mode.Unknown;
  }
  // An HTTP request line starts with an upper-case method token (GET, HEAD, POST, ...).
  if (b >= 0x41 && b <= 0x5a) return Mode.Http;
  return Mode.Invalid;
}

/** Receives what a parser finds. Implemented once by the connection class. */
export interface FrameSink {
  /** A complete frame body; `body` is valid only during the call. */
  onFrame(body: Buffer, flags: number): void;
  /** A fatal framing error: the stream cannot be resynchronised. */
  onFrameError(code: ErrorCode, message: string): void;
}

export interface FrameParser {
  push(chunk: Buffer): void;
  /** Bytes held while waiting for the rest of a frame. */
  readonly bufferedBytes: number;
  /** Frames completed so far (a frame completed during a push means the pending one is new). */
  readonly framesCompleted: number;
}

/**
 * The bytes of one incomplete frame, in one growing buffer. Appending is amortised linear (the
 * capacity doubles, up to `limit`), so a frame that arrives a byte at a time costs O(n) copies in
 * total, not O(n^2) as concatenating on every chunk would; and a frame is held as one buffer
 * (at most twice its size), not as one small Buffer object per TCP segment.
 */
class Accumulator {
  private buf: Buffer;
  length = 0;
  constructor(
    first: Buffer,
    private readonly limit: number,
    sizeHint = 0,
  ) {
    const want = Math.max(first.length, sizeHint > 0 ? Math.min(sizeHint, 4096) : 0, 256);
    this.buf = Buffer.allocUnsafe(Math.min(Math.max(want, first.length), Math.max(limit, first.length)));
    first.copy(this.buf, 0);
    this.length = first.length;
  }

  append(chunk: Buffer, start = 0, end = chunk.length): void {
    const n = end - start;
    if (n <= 0) return;
    const need = this.length + n;
    if (need > this.buf.length) {
      const grown = Buffer.allocUnsafe(Math.max(need, Math.min(this.buf.length * 2, Math.max(this.limit, need))));
      this.buf.copy(grown, 0, 0, this.length);
      this.buf = grown;
    }
    chunk.copy(this.buf, this.length, start, end);
    this.length = need;
  }

  /** A view of the bytes held (valid until the next append). */
  view(): Buffer {
    return this.buf.subarray(0, this.length);
  }
}

/**
 * Newline-delimited JSON. A line longer than maxFrame is fatal (too_large): without its end we
 * cannot find the next message boundary cheaply and a well-behaved client never sends one.
 *
 * Linear in the bytes received however they are split: each byte is searched for a newline once
 * (only the new chunk is searched) and copied at most once into the pending line (amortised).
 */
export class TextParser implements FrameParser {
  private pending: Accumulator | null = null;
  private stopped = false;
  private completed = 0;
  constructor(
    private readonly sink: FrameSink,
    private readonly maxFrame: number,
  ) {}

  get bufferedBytes(): number {
    return this.pending === null ? 0 : this.pending.length;
  }

  get framesCompleted(): number {
    return this.completed;
  }

  push(chunk: Buffer): void {
    if (this.stopped) return;
    let start = 0;
    const pending = this.pending;
    if (pending !== null) {
      const nl = chunk.indexOf(LF);
      if (nl === -1) {
        // The line may end with the CR of a CRLF: count it, it is stripped when the LF arrives.
        if (pending.length + chunk.length > this.maxFrame + 1) return this.fail();
        pending.append(chunk);
        return;
      }
      if (pending.length + nl > this.maxFrame + 1) return this.fail();
      pending.append(chunk, 0, nl);
      this.pending = null;
      const line = pending.view();
      if (lineLength(line, 0, line.length) > this.maxFrame) return this.fail();
      this.emitLine(line, 0, line.length);
      if (this.stopped) return;
      start = nl + 1;
    }
    const data = chunk;
    const len = data.length;
    while (start < len) {
      const nl = data.indexOf(LF, start);
      if (nl === -1) {
        if (len - start > this.maxFrame + 1) return this.fail();
        // Copy: keeping a view would pin the whole chunk while a slow client dribbles bytes.
        this.pending = new Accumulator(data.subarray(start), this.maxFrame + 1);
        return;
      }
      if (lineLength(data, start, nl) > this.maxFrame) return this.fail();
      this.emitLine(data, start, nl);
      if (this.stopped) return;
      start = nl + 1;
    }
  }

  /** Stop parsing (connection closing); further input is ignored. */
  stop(): void {
    this.stopped = true;
    this.pending = null;
  }

  private emitLine(buf: Buffer, start: number, end: number): void {
    this.completed++;
    if (end > start && buf[end - 1] === CR) end--;
    if (end === start) return; // blank line: keep-alive from nc users, ignored
    this.sink.onFrame(buf.subarray(start, end), 0);
  }

  private fail(): void {
    this.stop();
    this.sink.onFrameError(ErrorCode.TooLarge, `line exceeds the maximum frame size of ${this.maxFrame} bytes`);
  }
}

/** Length of a line without its trailing CR. */
function lineLength(buf: Buffer, start: number, end: number): number {
  return end > start && buf[end - 1] === CR ? end - start - 1 : end - start;
}

/**
 * `u32 length | u8 flags | body`. The declared length is checked against maxFrame as soon as the
 * header is complete, so a client announcing 4 GiB and sending 10 bytes costs nothing.
 *
 * Frames inside one chunk are handed out as views without copying; a frame split across chunks
 * is gathered into one growing buffer (amortised linear, see Accumulator), never as a list of
 * the chunks (a body dribbled a byte at a time would be a million Buffer objects).
 */
export class BinaryParser implements FrameParser {
  /** The incomplete header or body; null when nothing is held. */
  private pending: Accumulator | null = null;
  private need = -1; // body length of the frame in progress, -1 while reading a header
  private flags = 0;
  private stopped = false;
  private completed = 0;
  constructor(
    private readonly sink: FrameSink,
    private readonly maxFrame: number,
  ) {}

  get bufferedBytes(): number {
    return this.pending === null ? 0 : this.pending.length;
  }

  get framesCompleted(): number {
    return this.completed;
  }

  stop(): void {
    this.stopped = true;
    this.pending = null;
  }

  push(chunk: Buffer): void {
    if (this.stopped) return;
    let off = 0;
    const len = chunk.length;
    const pending = this.pending;
    if (pending !== null) {
      if (this.need === -1) {
        // Complete the header first (at most 4 more bytes).
        const take = Math.min(BINARY_HEADER_BYTES - pending.length, len);
        pending.append(chunk, 0, take);
        off = take;
        if (pending.length < BINARY_HEADER_BYTES) return;
        const header = pending.view();
        const size = header.readUInt32BE(0);
        const flags = header[4];
        if (!this.checkHeader(size, flags)) return;
        this.pending = null;
        if (len - off >= size) {
          this.emit(chunk.subarray(off, off + size), flags);
          if (this.stopped) return;
          off += size;
        } else {
          this.need = size;
          this.flags = flags;
          this.pending = new Accumulator(chunk.subarray(off), size, size);
          return;
        }
      } else {
        const want = this.need - pending.length;
        if (len < want) {
          pending.append(chunk);
          return;
        }
        pending.append(chunk, 0, want);
        off = want;
        this.pending = null;
        this.need = -1;
        this.emit(pending.view(), this.flags);
        if (this.stopped) return;
      }
    }
    // Nothing held: walk the rest of the chunk in place.
    while (len - off >= BINARY_HEADER_BYTES) {
      const size = chunk.readUInt32BE(off);
      const flags = chunk[off + 4];
      if (!this.checkHeader(size, flags)) return;
      const bodyStart = off + BINARY_HEADER_BYTES;
      if (len - bodyStart < size) {
        this.need = size;
        this.flags = flags;
        this.pending = new Accumulator(chunk.subarray(bodyStart), size, size);
        return;
      }
      this.emit(chunk.subarray(bodyStart, bodyStart + size), flags);
      if (this.stopped) return;
      off = bodyStart + size;
    }
    if (off < len) this.pending = new Accumulator(chunk.subarray(off), BINARY_HEADER_BYTES);
  }

  private emit(body: Buffer, flags: number): void {
    this.completed++;
    this.sink.onFrame(body, flags);
  }

  private checkHeader(size: number, flags: number): boolean {
    if (size > this.maxFrame) {
      this.stop();
      this.sink.onFrameError(ErrorCode.TooLarge, `declared frame length ${size} exceeds the maximum of ${this.maxFrame} bytes`);
      return false;
    }
    if ((flags & RESERVED_FLAG_MASK) !== 0 || (flags & CODEC_MASK) === 3) {
      this.stop();
      this.sink.onFrameError(ErrorCode.BadFrame, `invalid frame flags 0x${flags.toString(16)}`);
      return false;
    }
    return true;
  }
}

/** Text-mode bytes of one JSON document: the JSON and a newline. */
export function encodeTextFrame(json: string): Buffer {
  const len = Buffer.byteLength(json);
  const buf = Buffer.allocUnsafe(len + 1);
  buf.write(json, 0, len, "utf8");
  buf[len] = LF;
  return buf;
}

/** Binary-mode bytes of one JSON document (uncompressed). */
export function encodeBinaryFrame(json: string): Buffer {
  const len = Buffer.byteLength(json);
  const buf = Buffer.allocUnsafe(len + BINARY_HEADER_BYTES);
  writeBinaryFrame(buf, 0, json, len);
  return buf;
}

/**
 * Write the uncompressed binary frame of `json` (`len` = its UTF-8 byte length) into `buf` at
 * `offset`; returns the offset after it. For frames built inside a larger buffer (the cluster's
 * egress records).
 */
export function writeBinaryFrame(buf: Buffer, offset: number, json: string, len: number): number {
  buf.writeUInt32BE(len, offset);
  buf[offset + 4] = Codec.None;
  return offset + BINARY_HEADER_BYTES + buf.write(json, offset + BINARY_HEADER_BYTES, len, "utf8");
}

/** Binary-mode frame around an already encoded (possibly compressed) body. */
export function encodeBinaryBody(body: Buffer, flags: number): Buffer {
  const buf = Buffer.allocUnsafe(body.length + BINARY_HEADER_BYTES);
  buf.writeUInt32BE(body.length, 0);
  buf[4] = flags;
  body.copy(buf, BINARY_HEADER_BYTES);
  return buf;
}
