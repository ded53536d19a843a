/**
 * An outbound message encoded once and shared by every recipient (centrifuge hub.go's habit).
 *
 * The JSON text is built once; the text-mode and binary-mode byte forms are materialised lazily,
 * at most once each, and the same Buffer is queued on every member's connection. Compressed
 * binary forms (one per codec, see compression.ts) are computed at most once too.
 */
import { PackedFrames, type FrameWaiter } from './compression';
import { BINARY_HEADER_BYTES, Codec, encodeBinaryFrame, encodeTextFrame } from './framing';

export class Outbound {
  private textBytes: Buffer | null = null;
  private binaryBytes: Buffer | null = null;
  private packed: PackedFrames | null = null;
  constructor(readonly json: string) {}

  static of(value: object): Outbound {
    return new Outbound(JSON.stringify(value));
  }

  text(): Buffer {
    return this.textBytes ?? (this.textBytes = encodeTextFrame(this.json));
  }

  binary(): Buffer {
    return this.binaryBytes ?? (this.binaryBytes = encodeBinaryFrame(this.json));
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
