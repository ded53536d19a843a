/**
 * The receive side of the generator: counts delivered frames without parsing them.
 *
 * At a million deliveries a second JSON.parse of every frame would make the generator, not the
 * server, the limit. FrameCounter walks the bytes instead: newlines in text mode, length headers
 * in binary mode (state kept across chunk boundaries), classifies each frame by one byte (the
 * first letter of its "type" value: every push starts `{"type":"`), and for one frame in
 * `sampleEvery` finds the send timestamp by searching for a marker in the payload and parsing its
 * digits in place. The receive time is read once per chunk, so a batch of frames costs one clock
 * read. Frames that are not room messages (errors, reconnect pushes) are rare and are decoded to
 * find their error code.
 *
 * Compressed binary frames (codec bits in the flags byte) are counted as messages without being
 * looked at, except the sampled ones, which are decompressed with the project's codec code and
 * searched like plain ones: one decompression in `sampleEvery x COMPRESSED_SAMPLE_FACTOR` frames
 * (decompressing one zstd frame in eight made the generator, not the server, the limit at 300k
 * deliveries/s: 109% CPU). zstd decompresses on libuv's thread pool, so its sample is recorded
 * when that finishes, against the receive time of its chunk (the generator's own decompression
 * time is not the server's latency).
 */
import { decompressBody, type Codec } from '../../services/protocol';
import { nowUs } from './clock';

/** Marker in front of the send timestamp inside the payload: `"sbt":"<15 digits>"`. */
export const TS_MARKER = Buffer.from('"sbt":"');
/** Fixed width of the timestamp digits, so a publish template can be patched in place. */
export const TS_DIGITS = 15;

/** Compressed frames are sampled this many times less often than plain ones (decompression cost). */
export const COMPRESSED_SAMPLE_FACTOR = 32;

const LF = 0x0a;
/** Offset of the first letter of the type in `{"type":"message"...`. */
const TYPE_LETTER_AT = 9;
const LETTER_M = 0x6d;
const CODE_MARKER = Buffer.from('"code":"');
const TYPE_MARKER = Buffer.from('"type":"');

export interface LatencySink {
  /** One latency sample in microseconds. */
  recordValue(us: number): void;
}

export class FrameCounter {
  /** Room message frames counted. */
  messages = 0;
  /** Bytes pushed (wire bytes, compressed or not). */
  bytes = 0;
  /** Other frames (errors, pushes, replies) counted by code or type. */
  readonly others = new Map<string, number>();
  /** Time of the last push, for the samples of the chunk; overridable for tests. */
  clock: () => number = nowUs;
  private untilSample: number;
  // frame in progress
  private posInFrame = 0;
  private classified = false;
  private isMessage = false;
  // binary state
  private headerHave = 0;
  private readonly header = Buffer.alloc(5);
  private bodyLeft = 0;
  /** Codec of the frame in progress (0: not compressed). */
  private codec = 0 as Codec;

  constructor(
    private readonly binary: boolean,
    private readonly latency: LatencySink | null,
    private readonly sampleEvery = 8,
  ) {
    this.untilSample = 1;
  }

  push(buf: Buffer): void {
    this.bytes += buf.length;
    if (this.binary) this.pushBinary(buf);
    else this.pushText(buf);
  }

  private pushText(buf: Buffer): void {
    const len = buf.length;
    let pos = 0;
    let now = -1;
    while (pos < len) {
      const nl = buf.indexOf(LF, pos);
      const end = nl === -1 ? len : nl;
      if (!this.classified) {
        const at = pos + TYPE_LETTER_AT - this.posInFrame;
        if (at < end) {
          this.classified = true;
          this.isMessage = buf[at] === LETTER_M;
        }
      }
      if (nl === -1) {
        this.posInFrame += len - pos;
        return;
      }
      if (this.posInFrame === 0 && nl === pos) {
        pos = nl + 1; // blank line
        continue;
      }
      if (this.classified && this.isMessage) {
        this.messages++;
        if (--this.untilSample <= 0 && this.latency !== null) {
          if (now === -1) now = this.clock();
          if (this.sample(buf, pos, nl, now)) this.untilSample = this.sampleEvery;
        }
      } else {
        this.other(this.posInFrame === 0 ? buf : null, pos, nl);
      }
      pos = nl + 1;
      this.posInFrame = 0;
      this.classified = false;
    }
  }

  private pushBinary(buf: Buffer): void {
    const len = buf.length;
    let pos = 0;
    let now = -1;
    // Where the body of the current frame starts in buf; -1 when it started in an earlier chunk.
    let bodyStart = -1;
    while (pos < len) {
      if (this.bodyLeft === 0) {
        let size: number;
        let flags: number;
        if (this.headerHave === 0 && len - pos >= 5) {
          size = buf.readUInt32BE(pos);
          flags = buf[pos + 4];
          pos += 5;
        } else {
          while (this.headerHave < 5 && pos < len) this.header[this.headerHave++] = buf[pos++];
          if (this.headerHave < 5) return;
          this.headerHave = 0;
          size = this.header.readUInt32BE(0);
          flags = this.header[4];
        }
        if (size === 0) {
          this.count('empty_frame');
          continue;
        }
        this.bodyLeft = size;
        bodyStart = pos;
        this.posInFrame = 0;
        this.classified = false;
        this.codec = (flags & 0x03) as Codec;
        if (this.codec !== 0) {
          // A compressed body cannot be classified without decompressing it; count it as a message.
          this.classified = true;
          this.isMessage = true;
        }
      }
      const take = Math.min(this.bodyLeft, len - pos);
      const end = pos + take;
      if (!this.classified) {
        const at = pos + TYPE_LETTER_AT - this.posInFrame;
        if (at < end) {
          this.classified = true;
          this.isMessage = buf[at] === LETTER_M;
        }
      }
      if (take < this.bodyLeft) {
        this.bodyLeft -= take;
        this.posInFrame += take;
        return;
      }
      this.bodyLeft = 0;
      if (this.classified && this.isMessage) {
        this.messages++;
        if (--this.untilSample <= 0 && this.latency !== null) {
          if (now === -1) now = this.clock();
          // A compressed body split over chunks is skipped; the next frame is sampled instead.
          if (this.codec !== 0) {
            if (bodyStart !== -1 && this.sampleCompressed(buf, bodyStart, end, now)) this.untilSample = this.sampleEvery * COMPRESSED_SAMPLE_FACTOR;
          } else if (this.sample(buf, pos, end, now)) this.untilSample = this.sampleEvery;
        }
      } else {
        this.other(this.posInFrame === 0 ? buf : null, pos, end);
      }
      pos = end;
    }
  }

  /** Sample the timestamp of a frame whose bytes [start, end) are in buf; false when not found. */
  private sample(buf: Buffer, start: number, end: number, now: number): boolean {
    const v = readTimestamp(buf, start, end);
    if (v === -1) return false;
    this.latency!.recordValue(now > v ? now - v : 0);
    return true;
  }

  /** Decompress the body [start, end) and sample its timestamp; false when it cannot be read. */
  private sampleCompressed(buf: Buffer, start: number, end: number, now: number): boolean {
    let out: Buffer | Promise<Buffer>;
    try {
      out = decompressBody(this.codec, buf.subarray(start, end), 1 << 24);
    } catch {
      this.count('undecodable_compressed_frame');
      return true;
    }
    if (out instanceof Promise) {
      out.then(
        (b) => this.sample(b, 0, b.length, now),
        () => this.count('undecodable_compressed_frame'),
      );
      return true;
    }
    return this.sample(out, 0, out.length, now);
  }

  /** A frame that is not a room message; buf is null when its start was in an earlier chunk. */
  private other(buf: Buffer | null, start: number, end: number): void {
    if (buf === null) return this.count('unknown');
    const key = extractString(buf, start, end, CODE_MARKER) ?? extractString(buf, start, end, TYPE_MARKER) ?? 'unknown';
    this.count(key);
  }

  private count(key: string): void {
    this.others.set(key, (this.others.get(key) ?? 0) + 1);
  }
}

/**
 * The send timestamp (µs) in the bytes [start, end) of buf, or -1 when its marker and digits are
 * not all there. Shared by every wire protocol's counter (load-tests/peers/ too): only the framing
 * around the payload differs between them.
 */
export function readTimestamp(buf: Buffer, start: number, end: number): number {
  const at = buf.indexOf(TS_MARKER, start);
  if (at === -1 || at + TS_MARKER.length + TS_DIGITS > end) return -1;
  let v = 0;
  let i = at + TS_MARKER.length;
  const stop = i + TS_DIGITS;
  for (; i < stop; i++) {
    const d = buf[i] - 0x30;
    if (d < 0 || d > 9) return -1;
    v = v * 10 + d;
  }
  return v;
}

function extractString(buf: Buffer, start: number, end: number, marker: Buffer): string | undefined {
  const at = buf.indexOf(marker, start);
  if (at === -1 || at >= end) return undefined;
  const from = at + marker.length;
  const q = buf.indexOf(0x22, from);
  if (q === -1 || q > end) return undefined;
  return buf.toString('latin1', from, Math.min(q, from + 40));
}
