/**
 * Frame compression for binary mode: codec negotiation, compressing outbound bodies once per
 * message and codec, and decompressing inbound bodies under a hard output cap.
 *
 * Codecs: lz4 (lz4-napi, block format with a u32 little-endian size prefix; synchronous) and zstd
 * (@mongodb-js/zstd, one standard zstd frame; asynchronous only). A body is sent compressed only
 * when it is above the threshold and compression made it smaller; the frame flags say which.
 *
 * Decompression bombs: a frame whose output would exceed the frame limit is refused before the
 * output is produced. lz4 states its output size up front, and lz4-napi never writes past it; a
 * stated size the block cannot reach (more than 255 bytes per byte of block) is refused too,
 * since lz4-napi allocates it before decoding.
 * zstd output is bounded by walking the frame's block headers without decompressing: raw and RLE
 * blocks state their size, a compressed block yields at most min(window, 128 KiB). A frame whose
 * bound is above the limit plus one block is refused; the decompressed length is checked again
 * after. Only a single zstd frame per body is accepted (what every encoder produces).
 */
import { compress as zstdCompress, decompress as zstdDecompress } from '@mongodb-js/zstd';
import { compressSync as lz4Compress, uncompressSync as lz4Uncompress } from 'lz4-napi';
import { BINARY_HEADER_BYTES, Codec, encodeBinaryBody } from './framing';

/** Codec names as they appear in `hello.codecs` and `welcome.codec`. */
export const CODEC_NAMES = ['lz4', 'zstd'] as const;
export type CodecName = (typeof CODEC_NAMES)[number];

export function codecOf(name: CodecName): Codec {
  return name === 'lz4' ? Codec.Lz4 : Codec.Zstd;
}

export function codecName(codec: Codec): CodecName | 'none' {
  return codec === Codec.Lz4 ? 'lz4' : codec === Codec.Zstd ? 'zstd' : 'none';
}

/** The server's first preferred codec that the client accepts, or None. */
export function negotiateCodec(serverPrefs: readonly CodecName[], clientCodecs: readonly string[] | undefined): Codec {
  if (clientCodecs === undefined) return Codec.None;
  for (const c of serverPrefs) if (clientCodecs.includes(c)) return codecOf(c);
  return Codec.None;
}

/** A compressed body that cannot be decompressed, or would decompress past the limit. */
export class CompressionError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'CompressionError';
  }
}

export function compressLz4(body: Buffer): Buffer {
  return lz4Compress(body);
}

export function compressZstd(body: Buffer, level = 3): Promise<Buffer> {
  return zstdCompress(body, level);
}

/** Compress a body with a codec (lz4 synchronously, zstd asynchronously). */
export function compressBody(codec: Codec, body: Buffer): Buffer | Promise<Buffer> {
  if (codec === Codec.Lz4) return compressLz4(body);
  if (codec === Codec.Zstd) return compressZstd(body);
  return body;
}

/**
 * A binary frame for `body`: compressed with `codec` when above `threshold` and smaller, else
 * plain. Used by clients; the server goes through Outbound.binaryFor to share the result.
 */
export function encodeFrameMaybeCompressed(codec: Codec, body: Buffer, threshold: number): Buffer | Promise<Buffer> {
  if (codec === Codec.None || body.length <= threshold) return encodeBinaryBody(body, Codec.None);
  const packed = compressBody(codec, body);
  const pick = (c: Buffer) => (c.length < body.length ? encodeBinaryBody(c, codec) : encodeBinaryBody(body, Codec.None));
  return packed instanceof Promise ? packed.then(pick, () => encodeBinaryBody(body, Codec.None)) : pick(packed);
}

const ZSTD_MAGIC = 0xfd2fb528;
const ZSTD_BLOCK_MAX = 128 * 1024;
/** Largest window accepted (the zstd CLI's default up to level 19 is 8 MiB). */
const ZSTD_MAX_WINDOW = 8 * 1024 * 1024;

/**
 * Upper bound of a zstd body's decompressed size, and its window size, from its headers alone. Throws
 * CompressionError when the body is not exactly one well-formed zstd frame.
 */
export function zstdOutputBound(buf: Buffer): { bound: number; window: number } {
  const bad = (why: string): never => {
    throw new CompressionError(`corrupt zstd frame: ${why}`);
  };
  if (buf.length < 6 || buf.readUInt32LE(0) !== ZSTD_MAGIC) bad('bad magic number');
  const fhd = buf[4];
  if ((fhd & 0x08) !== 0) bad('reserved header bit set');
  const fcsFlag = fhd >> 6;
  const single = (fhd & 0x20) !== 0;
  const checksum = (fhd & 0x04) !== 0;
  const dictBytes = [0, 1, 2, 4][fhd & 0x03];
  let off = 5;
  let window = 0;
  if (!single) {
    const wd = buf[off++];
    const log = 10 + (wd >> 3);
    if (log > 31) bad('window too large');
    const base = 2 ** log;
    window = base + (base / 8) * (wd & 0x07);
  }
  off += dictBytes;
  const fcsBytes = fcsFlag === 0 ? (single ? 1 : 0) : [0, 2, 4, 8][fcsFlag];
  if (off + fcsBytes > buf.length) bad('truncated header');
  let contentSize = -1;
  if (fcsBytes === 1) contentSize = buf[off];
  else if (fcsBytes === 2) contentSize = buf.readUInt16LE(off) + 256;
  else if (fcsBytes === 4) contentSize = buf.readUInt32LE(off);
  else if (fcsBytes === 8) contentSize = Number(buf.readBigUInt64LE(off));
  off += fcsBytes;
  if (single) window = contentSize;
  const blockMax = Math.min(window, ZSTD_BLOCK_MAX);
  let bound = 0;
  for (;;) {
    if (off + 3 > buf.length) bad('truncated block header');
    const h = buf[off] | (buf[off + 1] << 8) | (buf[off + 2] << 16);
    off += 3;
    const last = (h & 1) === 1;
    const type = (h >> 1) & 3;
    const size = h >>> 3;
    if (type === 3) bad('reserved block type');
    if (type === 0) {
      if (size > blockMax) bad('block larger than the window');
      bound += size;
      off += size;
    } else if (type === 1) {
      if (size > blockMax) bad('block larger than the window');
      bound += size;
      off += 1;
    } else {
      bound += blockMax;
      off += size;
    }
    if (off > buf.length) bad('truncated block');
    if (last) break;
  }
  if (checksum) off += 4;
  if (off !== buf.length) bad(off > buf.length ? 'truncated checksum' : 'trailing bytes after the frame');
  return { bound: Math.max(bound, contentSize), window };
}

/** lz4-napi's body: the decompressed size as u32 little-endian, then one LZ4 block. */
const LZ4_SIZE_PREFIX = 4;
/**
 * How far an LZ4 block can expand, from the block format. A sequence is a token (two 4-bit
 * lengths), its literals (L of them, plus a length byte per 255 past 14), a 2-byte offset, and for
 * a match of 19 bytes or more k match-length bytes (255 each but the last, at most 254): it
 * yields at most L + 4 + 15 + 255(k - 1) + 254 = L + 18 + 255k bytes from 3 + L + k bytes, under
 * 255 per byte; a sequence without length bytes yields at most 18 + L from 3 + L; the last
 * sequence is literals only (one byte out per byte in). So a block of n bytes yields less than
 * 255n. The slack is one sequence's worth from its token alone (minimum match 4 + nibble 14 = 18
 * bytes): not needed by the arithmetic above, it keeps the bound safe against an encoder's edge
 * cases at no cost (a lying frame still cannot claim more than 255 bytes per byte sent).
 */
const LZ4_MAX_RATIO = 255;
const LZ4_BOUND_SLACK = 18;

/** The most bytes an LZ4 block of `blockBytes` bytes can decompress to. */
export function lz4OutputBound(blockBytes: number): number {
  return LZ4_MAX_RATIO * Math.max(0, blockBytes) + LZ4_BOUND_SLACK;
}

/**
 * What an inbound body may decompress to, at most `maxBytes`, from its headers alone and without
 * throwing (a body that is not well-formed is refused by decompressBody; until then it counts as
 * `maxBytes`): a budget can be charged before the work starts rather than after.
 */
export function inflateBound(codec: Codec, body: Buffer, maxBytes: number): number {
  try {
    if (codec === Codec.Lz4) return body.length < 4 ? maxBytes : Math.min(maxBytes, body.readUInt32LE(0));
    if (codec === Codec.Zstd) return Math.min(maxBytes, zstdOutputBound(body).bound);
  } catch {
    // Not well-formed: decompressBody says why.
  }
  return maxBytes;
}

/**
 * Decompress an inbound body, refusing output above `maxBytes`. lz4 completes synchronously,
 * zstd returns a promise. Failures are CompressionErrors (thrown, or as the promise's rejection).
 */
export function decompressBody(codec: Codec, body: Buffer, maxBytes: number): Buffer | Promise<Buffer> {
  if (codec === Codec.Lz4) {
    if (body.length < 4) throw new CompressionError('corrupt lz4 frame: shorter than its size prefix');
    const declared = body.readUInt32LE(0);
    if (declared > maxBytes) throw new CompressionError(`lz4 frame declares ${declared} bytes, above the maximum frame size of ${maxBytes}`);
    // A size the block cannot reach is a lie, and believing it would have us allocate that much
    // for a few bytes of input (lz4-napi allocates the declared size before decoding).
    const reachable = lz4OutputBound(body.length - LZ4_SIZE_PREFIX);
    if (declared > reachable) throw new CompressionError(`corrupt lz4 frame: declares ${declared} bytes, more than ${body.length - LZ4_SIZE_PREFIX} bytes of LZ4 block can hold (${reachable})`);
    try {
      return lz4Uncompress(body);
    } catch (err) {
      throw new CompressionError(`corrupt lz4 frame: ${(err as Error).message}`, { cause: err });
    }
  }
  if (codec === Codec.Zstd) {
    const { bound, window } = zstdOutputBound(body);
    // The decoder allocates a window-sized buffer: refuse windows no encoder needs for our frames.
    if (window > Math.max(ZSTD_MAX_WINDOW, maxBytes)) throw new CompressionError(`zstd frame asks for a ${window}-byte window, above the ${Math.max(ZSTD_MAX_WINDOW, maxBytes)} allowed`);
    // One block of slack: the bound over-estimates the last compressed block.
    if (bound > maxBytes + ZSTD_BLOCK_MAX) throw new CompressionError(`zstd frame may decompress to ${bound} bytes, above the maximum frame size of ${maxBytes}`);
    return zstdDecompress(body).then(
      (out) => {
        if (out.length > maxBytes) throw new CompressionError(`zstd frame decompresses to ${out.length} bytes, above the maximum frame size of ${maxBytes}`);
        return out;
      },
      (err: unknown) => {
        throw new CompressionError(`corrupt zstd frame: ${(err as Error).message}`, { cause: err });
      },
    );
  }
  return body;
}

/** Told when an asynchronously compressed frame is ready (a connection waiting to queue it). */
export interface FrameWaiter {
  frameReady(): void;
}

/**
 * The compressed binary frames of one outbound message, one per codec, computed at most once
 * and shared by every recipient. The frame is the compressed one only when it is smaller.
 */
export class PackedFrames {
  private lz4: Buffer | null = null;
  private zstd: Buffer | null = null;
  /** Non-null while zstd is compressing: the connections to tell when it is done. */
  private waiters: FrameWaiter[] | null = null;

  constructor(private readonly raw: Buffer) {}

  /** The frame for `codec`, or null while it is being compressed (`waiter` is told when ready). */
  get(codec: Codec, waiter?: FrameWaiter): Buffer | null {
    if (codec === Codec.Lz4) return (this.lz4 ??= this.pick(Codec.Lz4, compressLz4(this.body())));
    if (codec !== Codec.Zstd) return this.raw;
    if (this.zstd !== null) return this.zstd;
    if (this.waiters === null) {
      this.waiters = [];
      compressZstd(this.body()).then(
        (c) => this.zstdDone(this.pick(Codec.Zstd, c)),
        () => this.zstdDone(this.raw),
      );
    }
    if (waiter !== undefined) this.waiters.push(waiter);
    return null;
  }

  private body(): Buffer {
    return this.raw.subarray(BINARY_HEADER_BYTES);
  }

  private pick(codec: Codec, packed: Buffer): Buffer {
    const bodyLen = this.raw.length - BINARY_HEADER_BYTES;
    if (packed.length >= bodyLen) return this.raw;
    return encodeBinaryBody(packed, codec);
  }

  private zstdDone(frame: Buffer): void {
    this.zstd = frame;
    const list = this.waiters!;
    this.waiters = null;
    for (let i = 0; i < list.length; i++) list[i].frameReady();
  }
}
