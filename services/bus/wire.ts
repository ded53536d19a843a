/**
 * The cluster wire format: every entry that crosses Redis between gateways and the broadcast
 * tier is written and read here, and nowhere else.
 *
 * Ingress (`sb:in:{N}`, written by a gateway, read by the broadcast tier), named fields:
 *   r <room>  f <from>  d <data as JSON>  t <accept time, ms>  [p <traceparent>]
 *
 * Egress (`sb:out:{gw}`, written by the broadcast tier or a gateway, read by one gateway), the
 * kind in the first field pair:
 *   k f  b <records>: every message of one broadcast flush for that gateway, already encoded as
 *        the binary frame clients get, so the gateway neither parses nor re-encodes it. Records
 *        follow each other in the one field `b` (integers big-endian):
 *          u32 room length | room (UTF-8) | u32 message id length | message id | f64 accept time |
 *          u32 traceparent length (0: none) | traceparent | binary frame (u32 body length, u8
 *          flags 0, JSON body), as services/protocol/framing.ts encodes it.
 *   k b  then per room message five fields: <room> <message id> <accept time> <JSON> <traceparent
 *        or ''>, and one '' pad when the count of messages is odd (fields come in pairs); at most
 *        V1_ENTRY_MESSAGES messages an entry. The
 *        format before `k f`: written only to gateways that do not announce wire version 2 (a
 *        rolling upgrade), and still read.
 *   k d  u <user>  m <JSON>: a direct message to every local connection of the user.
 *
 * Versions: a gateway announces the newest egress kind it reads in its heartbeat value
 * (`gatewayHeartbeat`); the broadcast tier writes `k f` only to gateways that announce
 * WIRE_VERSION 2, so old and new processes can run side by side during a rolling upgrade.
 *
 * The message JSON itself is built from the template in services/protocol/outbound.ts. Trimming:
 * EGRESS_MAXLEN counts messages, so an entry of n messages trims to about EGRESS_MAXLEN / n
 * entries (never fewer than 100).
 */
import { BINARY_HEADER_BYTES, Outbound, writeBinaryFrame } from '../protocol';
import type { PublishRequest } from './types';

/** Read once: through the folder's index every use would be a getter call. */
const HEADER = BINARY_HEADER_BYTES;

/** The newest wire version this build reads: 2 = egress kind `f` (encoded frames). */
export const WIRE_VERSION = 2;

/** The ingress fields of a published message (XADD arguments after the id). */
export function ingressFields(req: PublishRequest): string[] {
  const f = ['r', req.room, 'f', req.from, 'd', req.dataJson, 't', String(req.ts)];
  if (req.trace !== undefined) f.push('p', req.trace);
  return f;
}

/** A published message as the broadcast tier reads it back. */
export interface IngressMessage {
  room: string;
  from: string;
  dataJson: string;
  ts: number;
  trace: string | undefined;
}

/** Parse ingress fields; null for an entry that is not a room message (never written by us). */
export function parseIngress(flat: readonly string[]): IngressMessage | null {
  let room: string | undefined;
  let from: string | undefined;
  let data: string | undefined;
  let ts = 0;
  let trace: string | undefined;
  for (let i = 0; i + 1 < flat.length; i += 2) {
    const v = flat[i + 1];
    switch (flat[i]) {
      case 'r':
        room = v;
        break;
      case 'f':
        from = v;
        break;
      case 'd':
        data = v;
        break;
      case 't':
        ts = Number(v);
        break;
      case 'p':
        trace = v;
        break;
    }
  }
  if (room === undefined || from === undefined || data === undefined) return null;
  return { room, from, dataJson: data, ts, trace };
}

/**
 * The id gateways deduplicate on: the ingress entry id qualified by its shard's stream. Entry ids
 * are only unique within one stream; a bare id made gateways drop a different shard's message of
 * the same millisecond as a "duplicate".
 */
export function messageId(ingressKey: string, entryId: string): string {
  return `${ingressKey}/${entryId}`;
}

/** Approximate MAXLEN of an egress stream whose entries carry `messages` messages each. */
export function egressTrim(maxMessages: number, messages: number): number {
  return Math.max(100, Math.ceil(maxMessages / Math.max(1, messages)));
}

/** The value of a gateway's heartbeat key `sb:gw:{gw}`: who, when, and the wire version it reads. */
export function gatewayHeartbeat(gw: string, at: number): string {
  return JSON.stringify({ id: gw, at, wire: WIRE_VERSION });
}

/** The wire version a gateway's heartbeat value announces: 1 when none (older builds) or unreadable. */
export function wireVersionOf(heartbeat: string | null): number {
  if (heartbeat === null) return 1;
  try {
    const v = (JSON.parse(heartbeat) as { wire?: unknown }).wire;
    return typeof v === 'number' && Number.isInteger(v) && v > 0 ? v : 1;
  } catch {
    return 1;
  }
}

/**
 * One routed room message on its way to gateways. Its egress record (kind `f`) is encoded at most
 * once, on first use, and the same bytes are copied into every gateway's entry.
 */
export class EgressMessage {
  private record_: Buffer | null = null;

  constructor(
    readonly room: string,
    readonly mid: string,
    readonly ts: number,
    readonly json: string,
    readonly trace: string | undefined,
  ) {}

  /** The kind `f` record of this message (see the module header). */
  record(): Buffer {
    if (this.record_ !== null) return this.record_;
    const roomLen = Buffer.byteLength(this.room);
    const midLen = this.mid.length;
    const traceLen = this.trace === undefined ? 0 : this.trace.length;
    const bodyLen = Buffer.byteLength(this.json);
    const buf = Buffer.allocUnsafe(4 + roomLen + 4 + midLen + 8 + 4 + traceLen + HEADER + bodyLen);
    let o = buf.writeUInt32BE(roomLen, 0);
    o += buf.write(this.room, o, roomLen, 'utf8');
    o = buf.writeUInt32BE(midLen, o);
    o += buf.write(this.mid, o, midLen, 'latin1');
    o = buf.writeDoubleBE(this.ts, o);
    o = buf.writeUInt32BE(traceLen, o);
    if (this.trace !== undefined) o += buf.write(this.trace, o, traceLen, 'latin1');
    writeBinaryFrame(buf, o, this.json, bodyLen);
    return (this.record_ = buf);
  }
}

/**
 * The messages of one egress entry for one gateway, in the kind that gateway reads: `f` for
 * version 2, `b` for older gateways.
 */
export class EgressBatch {
  private readonly messages: EgressMessage[] = [];

  constructor(
    private readonly key: string,
    private readonly version: number,
  ) {}

  get size(): number {
    return this.messages.length;
  }

  add(m: EgressMessage): void {
    this.messages.push(m);
  }

  /**
   * The XADD arguments of the batch's entries, each trimmed per the message-count policy: one
   * entry of kind `f`; kind `b` (five arguments a message) in entries of at most
   * V1_ENTRY_MESSAGES, since every argument goes onto the stack when ioredis builds the command
   * and a burst routed to an older gateway would otherwise overflow it.
   */
  finish(maxMessages: number): (string | number | Buffer)[][] {
    const n = this.messages.length;
    if (this.version >= 2) {
      const records = new Array<Buffer>(n);
      for (let i = 0; i < n; i++) records[i] = this.messages[i].record();
      return [[this.key, 'MAXLEN', '~', egressTrim(maxMessages, n), '*', 'k', 'f', 'b', n === 1 ? records[0] : Buffer.concat(records)]];
    }
    const entries: (string | number)[][] = [];
    for (let from = 0; from < n; from += V1_ENTRY_MESSAGES) {
      const part = this.messages.slice(from, from + V1_ENTRY_MESSAGES);
      const args: (string | number)[] = [this.key, 'MAXLEN', '~', egressTrim(maxMessages, part.length), '*', 'k', 'b'];
      for (const m of part) args.push(m.room, m.mid, m.ts, m.json, m.trace ?? '');
      if (part.length % 2 === 1) args.push('');
      entries.push(args);
    }
    return entries;
  }
}

/** Messages per egress entry of kind `b` (older gateways): see EgressBatch.finish. */
export const V1_ENTRY_MESSAGES = 1000;

/** The XADD arguments of a `k d` egress entry. */
export function directEntry(key: string, maxMessages: number, user: string, json: string): (string | number)[] {
  return [key, 'MAXLEN', '~', egressTrim(maxMessages, 1), '*', 'k', 'd', 'u', user, 'm', json];
}

/** What reading an egress entry hands on. */
export interface EgressHandler {
  room(room: string, msg: Outbound, ts: number, mid: string, trace: string | undefined): void;
  direct(user: string, msg: Outbound): void;
}

const KIND_FRAMES = 0x66; // 'f'

/**
 * Read one egress entry's fields (as Redis returned them, undecoded) and hand every message in
 * it to `h`. Throws on a malformed `f` entry, after handing on the messages before the fault.
 */
export function readEgress(f: readonly Buffer[], h: EgressHandler): void {
  if (f.length < 2 || f[1].length !== 1) return;
  const kind = f[1][0];
  if (kind === KIND_FRAMES) {
    if (f.length >= 4) readFrames(f[3], h);
  } else if (kind === 0x62 /* b */) {
    for (let i = 2; i + 4 < f.length; i += 5) {
      const tp = f[i + 4];
      h.room(f[i].toString(), new Outbound(f[i + 3].toString()), Number(f[i + 2].toString()), f[i + 1].toString(), tp.length === 0 ? undefined : tp.toString());
    }
  } else if (kind === 0x64 /* d */ && f.length >= 6) {
    h.direct(f[3].toString(), new Outbound(f[5].toString()));
  }
}

function readFrames(b: Buffer, h: EgressHandler): void {
  let o = 0;
  while (o < b.length) {
    const roomLen = b.readUInt32BE(o);
    const room = b.toString('utf8', o + 4, (o += 4 + roomLen));
    const midLen = b.readUInt32BE(o);
    const mid = b.toString('latin1', o + 4, (o += 4 + midLen));
    const ts = b.readDoubleBE(o);
    const traceLen = b.readUInt32BE(o + 8);
    const trace = traceLen === 0 ? undefined : b.toString('latin1', o + 12, o + 12 + traceLen);
    o += 12 + traceLen;
    const end = o + HEADER + b.readUInt32BE(o);
    if (end > b.length || room.length === 0) throw new Error(`malformed egress record at byte ${o} of ${b.length}`);
    h.room(room, Outbound.fromBinaryFrame(b.subarray(o, end)), ts, mid, trace);
    o = end;
  }
}
