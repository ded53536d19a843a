/**
 * An outbound message encoded once and shared by every recipient (centrifuge hub.go's habit).
 *
 * The JSON text is built once; the text-mode and binary-mode byte forms are materialised lazily,
 * at most once each, and the same Buffer is queued on every member's connection. Compressed
 * binary forms (one per codec, see compression.ts) are computed at most once too.
 *
 * A message that arrives already encoded (a cluster gateway reads the broadcast tier's binary
 * frames from Redis, docs/cluster.md) is made with `fromBinaryFrame`: its binary form is those
 * bytes, its text form a copy of the body plus a newline, and its JSON is decoded only if asked.
 */
import { PackedFrames, type FrameWaiter } from './compression';
import { BINARY_HEADER_BYTES, Codec, encodeBinaryFrame, encodeTextFrame } from './framing';

export class Outbound {
  private text_: Buffer | null = null;
  private binary_: Buffer | null = null;
  private packed: PackedFrames | null = null;
  private json_: string | null;

  constructor(json: string) {
    this.json_ = json;
  }

  static of(value: object): Outbound {
    return new Outbound(JSON.stringify(value));
  }

  /** A message whose uncompressed binary frame (header and UTF-8 JSON body) is `frame`. */
  static fromBinaryFrame(frame: Buffer): Outbound {
    const o = new Outbound('');
    o.json_ = null;
    o.binary_ = frame;
    return o;
  }

  get json(): string {
    return this.json_ ?? (this.json_ = this.binary_!.toString('utf8', BINARY_HEADER_BYTES));
  }

  text(): Buffer {
    return this.text_ ?? (this.text_ = this.json_ !== null ? encodeTextFrame(this.json_) : textFromBinary(this.binary_!));
  }

  binary(): Buffer {
    return this.binary_ ?? (this.binary_ = encodeBinaryFrame(this.json_!));
  }

  /**
   * The binary form for a connection that negotiated `codec`: compressed when the body is above
   * `threshold` and compression makes it smaller, else binary(). Null while an asynchronous codec
   * (zstd) is still compressing; `waiter.frameReady()` is called once the frame is ready.
   */
  binaryFor(codec: Codec, threshold: number, waiter?: FrameWaiter): Buffer | null {
    const raw = this.binary();
    if (codec === Codec.None || raw.length - BINARY_HEADER_BYTES <= threshold) return raw;
    return (this.packed ??= new PackedFrames(raw)).get(codec, waiter);
  }
}

/** The text frame of a binary frame's body: the same bytes, no transcoding. */
function textFromBinary(frame: Buffer): Buffer {
  const len = frame.length - BINARY_HEADER_BYTES;
  const buf = Buffer.allocUnsafe(len + 1);
  frame.copy(buf, 0, BINARY_HEADER_BYTES);
  buf[len] = 0x0a;
  return buf;
}

/**
 * JSON of a room message push, built by concatenation so the payload (already JSON) is not
 * re-serialised and no intermediate object is allocated.
 */
export function roomMessageJson(room: string, from: string, dataJson: string, seq: number, epoch: string, ts: number): string {
  return `${roomMessageHead(room, from, dataJson)}${seq}${ROOM_MESSAGE_EPOCH}${epoch}${roomMessageEnd(ts)}`;
}

/**
 * The room message template in pieces, for the broadcast tier, which learns the seq and the epoch
 * only inside Redis: the message is head + seq + ROOM_MESSAGE_EPOCH + epoch + end. Epochs are hex,
 * so nothing there needs escaping, and the template stays defined here only.
 */
export function roomMessageHead(room: string, from: string, dataJson: string): string {
  return `{"type":"message","room":${JSON.stringify(room)},"from":${JSON.stringify(from)},"data":${dataJson},"seq":`;
}

export const ROOM_MESSAGE_EPOCH = ',"epoch":"';

export function roomMessageEnd(ts: number): string {
  return `","ts":${Math.floor(ts)}}`;
}

export function directMessageJson(from: string, dataJson: string, ts: number): string {
  return `{"type":"direct","from":${JSON.stringify(from)},"data":${dataJson},"ts":${Math.floor(ts)}}`;
}
