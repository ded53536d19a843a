/**
 * The send side: publish frames built from a template and patched in place, so a batch of k
 * messages for one socket is one allocation, k copies and k timestamp patches.
 *
 * The payload carries the send time as a fixed-width string (`"sbt":"<15 digits>"`; JSON numbers
 * may not have leading zeros, strings may), which the FrameCounter finds in the delivered frame.
 */
import { encodeBinaryFrame, encodeTextFrame } from '../../services/protocol';
import { TS_DIGITS, TS_MARKER } from './counter';

/**
 * The application payload every wire protocol carries, Switchboard's `data` and the peers'
 * message bodies alike: the send time and `padBytes` of chat-like text, as JSON.
 */
export function publishData(padBytes: number): string {
  return `{"sbt":"${'0'.repeat(TS_DIGITS)}","p":"${chatText(Math.max(0, padBytes))}"}`;
}

/** One publish frame of any wire protocol whose payload holds the timestamp marker. */
export class FrameTemplate {
  /** Offset of the first timestamp digit inside one frame. */
  readonly tsAt: number;

  constructor(readonly frame: Buffer) {
    const m = frame.indexOf(TS_MARKER);
    if (m === -1) throw new Error('publish frame without a timestamp marker');
    this.tsAt = m + TS_MARKER.length;
  }

  /** k frames stamped with `ts` (microseconds), in one buffer. */
  batch(k: number, ts: number): Buffer {
    const f = this.frame;
    const n = f.length;
    const out = Buffer.allocUnsafe(n * k);
    for (let i = 0; i < k; i++) {
      f.copy(out, i * n);
      writeDigits(out, i * n + this.tsAt, ts);
    }
    return out;
  }
}

/** Switchboard's `send_chat` frame, text or binary. */
export class PublishTemplate extends FrameTemplate {
  constructor(room: string, padBytes: number, binary: boolean) {
    const json = `{"type":"send_chat","room":${JSON.stringify(room)},"data":${publishData(padBytes)}}`;
    super(binary ? encodeBinaryFrame(json) : encodeTextFrame(json));
  }
}

/** Write v as exactly TS_DIGITS decimal digits (zero-padded) at off. */
export function writeDigits(buf: Buffer, off: number, v: number): void {
  let x = Math.floor(v);
  for (let i = TS_DIGITS - 1; i >= 0; i--) {
    buf[off + i] = 0x30 + (x % 10);
    x = Math.floor(x / 10);
  }
}

const WORDS = 'the a we it is ok so then lobby game match ready team push left right wait go now later nice gg map round start join voice mute'.split(' ');

/**
 * `n` characters of chat-like text (words from a small vocabulary, picked by a fixed LCG), so
 * that compression figures are about text that compresses like chat does, not like 'xxxx...'.
 */
export function chatText(n: number): string {
  let out = '';
  let x = 12345;
  while (out.length < n) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    out += WORDS[(x >>> 16) % WORDS.length] + ' ';
  }
  return out.slice(0, n);
}
