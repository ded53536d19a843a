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
}

/**
 * Newline-delimited JSON. A line longer than maxFrame is fatal (too_large): without its end we
 * cannot find the next message boundary cheaply and a well-behaved client never sends one.
 */
export class TextParser implements FrameParser {
  private pending: Buffer | null = null;
  private stopped = false;
  constructor(
    private readonly sink: FrameSink,
    private readonly maxFrame: number,
  ) {}

  get bufferedBytes(): number {
    return this.pending === null ? 0 : this.pending.length;
  }

  push(chunk: Buffer): void {
    if (this.stopped) return;
    let data = chunk;
    let start = 0;
    if (this.pending !== null) {
      const nl = chunk.indexOf(LF);
      if (nl === -1) {
        if (this.pending.length + chunk.length > this.maxFrame) return this.fail();
        this.pending = Buffer.concat([this.pending, chunk]);
        return;
      }
      const line = Buffer.concat([this.pending, chunk.subarray(0, nl)]);
      this.pending = null;
      if (line.length > this.maxFrame) return this.fail();
      this.emitLine(line, 0, line.length);
      if (this.stopped) return;
      start = nl + 1;
      data = chunk;
    }
    const len = data.length;
    while (start < len) {
      const nl = data.indexOf(LF, start);
      if (nl === -1) {
        if (len - start > this.maxFrame) return this.fail();
        // Copy: keeping a view would pin the whole chunk while a slow client dribbles bytes.
        this.pending = Buffer.from(data.subarray(start));
        return;
      }
      if (nl - start > this.maxFrame) return this.fail();
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
    if (end > start && buf[end - 1] === CR) end--;
    if (end === start) return; // blank line: keep-alive from nc users, ignored
    this.sink.onFrame(buf.subarray(start, end), 0);
  }

  private fail(): void {
    this.stop();
    this.sink.onFrameError(ErrorCode.TooLarge, `line exceeds the maximum frame size of ${this.maxFrame} bytes`);
  }
}

/**
 * `u32 length | u8 flags | body`. The declared length is checked against maxFrame as soon as the
 * header is complete, so a client announcing 4 GiB and sending 10 bytes costs nothing.
 */
export class BinaryParser implements FrameParser {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private need = -1; // body length of the frame in progress, -1 while reading a header
  private flags = 0;
  private stopped = false;
  constructor(
    private readonly sink: FrameSink,
    private readonly maxFrame: number,
  ) {}

  get bufferedBytes(): number {
    return this.buffered;
  }

  stop(): void {
    this.stopped = true;
    this.chunks = [];
    this.buffered = 0;
  }

  push(chunk: Buffer): void {
    if (this.stopped) return;
    // Fast path: nothing buffered and no body pending (a chunk may end right after a header),
    // walk the chunk in place.
    if (this.buffered === 0 && this.need === -1) {
      let off = 0;
      const len = chunk.length;
      while (len - off >= BINARY_HEADER_BYTES) {
        const size = chunk.readUInt32BE(off);
        const flags = chunk[off + 4];
        if (!this.checkHeader(size, flags)) return;
        if (len - off - BINARY_HEADER_BYTES < size) break;
        const bodyStart = off + BINARY_HEADER_BYTES;
        this.sink.onFrame(chunk.subarray(bodyStart, bodyStart + size), flags);
        if (this.stopped) return;
        off = bodyStart + size;
      }
      if (off < len) this.append(off === 0 ? chunk : chunk.subarray(off));
      this.drain();
      return;
    }
    this.append(chunk);
    this.drain();
  }

  private append(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
  }

  private drain(): void {
    while (!this.stopped) {
      if (this.need === -1) {
        if (this.buffered < BINARY_HEADER_BYTES) return;
        const header = this.take(BINARY_HEADER_BYTES);
        const size = header.readUInt32BE(0);
        const flags = header[4];
        if (!this.checkHeader(size, flags)) return;
        this.need = size;
        this.flags = flags;
      }
      if (this.buffered < this.need) return;
      const body = this.take(this.need);
      this.need = -1;
      this.sink.onFrame(body, this.flags);
    }
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

  /** Remove n bytes from the front of the buffered chunks; copies only when a frame spans chunks. */
  private take(n: number): Buffer {
    this.buffered -= n;
    const first = this.chunks[0];
    if (first.length === n) {
      this.chunks.shift();
      return first;
    }
    if (first.length > n) {
      this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let off = 0;
    while (off < n) {
      const c = this.chunks[0];
      const want = n - off;
      if (c.length <= want) {
        c.copy(out, off);
        off += c.length;
        this.chunks.shift();
      } else {
        c.copy(out, off, 0, want);
        this.chunks[0] = c.subarray(want);
        off += want;
      }
    }
    return out;
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
  buf.writeUInt32BE(len, 0);
  buf[4] = Codec.None;
  buf.write(json, BINARY_HEADER_BYTES, len, "utf8");
  return buf;
}

/** Binary-mode frame around an already encoded (possibly compressed) body. */
export function encodeBinaryBody(body: Buffer, flags: number): Buffer {
  const buf = Buffer.allocUnsafe(body.length + BINARY_HEADER_BYTES);
  buf.writeUInt32BE(body.length, 0);
  buf[4] = flags;
  body.copy(buf, BINARY_HEADER_BYTES);
  return buf;
}
