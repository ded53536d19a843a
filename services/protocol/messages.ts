/**
 * Message shapes of wire protocol v1 and the small validators every handler uses.
 *
 * Inbound messages are parsed once (JSON.parse) into plain objects; handlers read fields through
 * these helpers so that a missing or wrong-typed field always becomes `bad_request` with a message
 * naming the field, never a TypeError.
 */
import type { CodecName } from './compression';
import { ErrorCode, SwitchboardError } from './errors';

export const PROTOCOL_VERSION = 1;

/** Correlation id chosen by the client; echoed in `ok`/`error`. */
export type RequestId = string | number;

/** A parsed inbound message: a JSON object with a string `type`. */
export interface InboundMessage {
  readonly type: string;
  readonly id?: RequestId;
  readonly [field: string]: unknown;
}

/** Limits announced in `welcome` so clients can size themselves. */
export interface WelcomeLimits {
  maxFrameBytes: number;
  maxRooms: number;
  rateLimitPerSec: number;
  idleTimeoutMs: number;
}

/** The answer to `hello`. */
export interface Welcome {
  type: 'welcome';
  session: string;
  user: string;
  server: string;
  protocol: number;
  limits: WelcomeLimits;
  flags: Record<string, boolean>;
  /** Codec the server compresses with (binary mode): 'none', 'lz4' or 'zstd'. */
  codec?: 'none' | CodecName;
}

/** A room message as pushed to members. */
export interface RoomMessage {
  type: 'message';
  room: string;
  from: string;
  data: unknown;
  seq: number;
  /** The room's epoch: seqs compare only within one epoch (see docs/protocol.md). */
  epoch: string;
  ts: number;
}

/** A direct message as pushed to its recipient. */
export interface DirectMessage {
  type: 'direct';
  from: string;
  data: unknown;
  ts: number;
}

export const MAX_NAME_LENGTH = 128;

declare global {
  interface String {
    /** ES2024, in Node since 20 (V8 11.1); not in the ES2022 lib this project compiles against. */
    isWellFormed(): boolean;
  }
}

/**
 * Whether a name is well-formed UTF-16, i.e. has no lone surrogate. A lone surrogate has no UTF-8
 * form: in cluster mode, where names travel through Redis as UTF-8, it would become U+FFFD, so
 * "r\ud800" would be another room than the one its members joined, and the same room as
 * "r\ufffd". Refused everywhere, standalone too, so a name means the same in both modes.
 */
export function isWellFormedName(name: string): boolean {
  return name.isWellFormed();
}

/** The message for a name refused by isWellFormedName. */
export function malformedNameMessage(field: string): string {
  return `field "${field}" must be well-formed Unicode (it contains a lone UTF-16 surrogate)`;
}

/** Validate the envelope of a parsed JSON value. */
export function asInbound(value: unknown): InboundMessage {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new SwitchboardError(ErrorCode.BadRequest, 'a message must be a JSON object');
  }
  const msg = value as { type?: unknown; id?: unknown };
  if (typeof msg.type !== 'string' || msg.type.length === 0) {
    throw new SwitchboardError(ErrorCode.BadRequest, 'field "type" must be a non-empty string');
  }
  if (msg.id !== undefined && !isRequestId(msg.id)) {
    throw new SwitchboardError(ErrorCode.BadRequest, 'field "id" must be a string or a number');
  }
  return value as InboundMessage;
}

function isRequestId(id: unknown): id is RequestId {
  return (typeof id === 'string' && id.length <= MAX_NAME_LENGTH) || (typeof id === 'number' && Number.isFinite(id));
}

/** The id of a message if it is a valid one, for error replies to messages that failed validation. */
export function requestIdOf(value: unknown): RequestId | undefined {
  if (value === null || typeof value !== 'object') return undefined;
  const id = (value as { id?: unknown }).id;
  return isRequestId(id) ? id : undefined;
}

/** A required identifier field (room, user): a non-empty, well-formed string of at most 128 characters. */
export function nameField(msg: InboundMessage, field: string): string {
  const v = msg[field];
  if (typeof v !== 'string' || v.length === 0) {
    throw new SwitchboardError(ErrorCode.BadRequest, `field "${field}" must be a non-empty string`);
  }
  if (v.length > MAX_NAME_LENGTH) {
    throw new SwitchboardError(ErrorCode.BadRequest, `field "${field}" must be at most ${MAX_NAME_LENGTH} characters`);
  }
  if (!isWellFormedName(v)) throw new SwitchboardError(ErrorCode.BadRequest, malformedNameMessage(field));
  return v;
}

export function optionalStringField(msg: InboundMessage, field: string): string | undefined {
  const v = msg[field];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw new SwitchboardError(ErrorCode.BadRequest, `field "${field}" must be a string`);
  return v;
}

/** An optional non-negative integer field. */
export function optionalCountField(msg: InboundMessage, field: string): number | undefined {
  const v = msg[field];
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    throw new SwitchboardError(ErrorCode.BadRequest, `field "${field}" must be a non-negative integer`);
  }
  return v;
}

/** A required payload field: any JSON value except undefined (absent). */
export function dataField(msg: InboundMessage, field = 'data'): unknown {
  const v = msg[field];
  if (v === undefined) throw new SwitchboardError(ErrorCode.BadRequest, `field "${field}" is required`);
  return v;
}

/**
 * A required payload field as the JSON text every recipient gets, at most `maxBytes` of UTF-8
 * (MAX_FRAME_BYTES). Serialising again can make a value longer than the frame that carried it:
 * `1e20` is written `100000000000000000000`, so a legal 1 MiB frame of such numbers became a
 * 4.6 MB message, past every recipient's outbound bound (each was cut as a slow consumer).
 */
export function dataJsonField(msg: InboundMessage, maxBytes: number, field = 'data'): string {
  return boundedJson(JSON.stringify(dataField(msg, field)), maxBytes, field);
}

/** `json`, or bad_request when it is more than `maxBytes` of UTF-8. */
export function boundedJson(json: string, maxBytes: number, field = 'data'): string {
  // A UTF-16 unit is 1-3 bytes of UTF-8: count the bytes only when the length cannot tell.
  if (json.length > maxBytes || (json.length * 3 > maxBytes && Buffer.byteLength(json) > maxBytes)) {
    throw new SwitchboardError(ErrorCode.BadRequest, `field "${field}" is ${Buffer.byteLength(json)} bytes as JSON, over the maximum frame size of ${maxBytes} bytes`);
  }
  return json;
}

export function optionalStringArrayField(msg: InboundMessage, field: string): string[] | undefined {
  const v = msg[field];
  if (v === undefined) return undefined;
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) {
    throw new SwitchboardError(ErrorCode.BadRequest, `field "${field}" must be an array of strings`);
  }
  return v as string[];
}

const OPEN_BRACE = 0x7b;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACE = 0x7d;
const CLOSE_BRACKET = 0x5d;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;

/** JSON nesting allowed by default (MAX_JSON_DEPTH): objects and arrays inside each other. */
export const DEFAULT_MAX_JSON_DEPTH = 64;

/**
 * Whether the JSON text in `buf` nests objects and arrays deeper than `max` (the top level is
 * depth 1). Checked before JSON.parse: V8 parses any depth, but everything recursive after it
 * (JSON.stringify of `data`, a plugin walking the value) throws RangeError on deep input, which
 * would be an `internal` error caused by a client.
 *
 * Linear and cheap for ordinary frames: the openers are counted with the native indexOf first,
 * and only a frame with more than `max` of them is scanned byte by byte (strings skipped).
 * Invalid JSON may give either answer; JSON.parse rejects it afterwards.
 */
export function jsonDepthExceeds(buf: Buffer, max: number): boolean {
  if (max <= 0) return false;
  if (!moreOpenersThan(buf, max)) return false;
  let depth = 0;
  let inString = false;
  const len = buf.length;
  for (let i = 0; i < len; i++) {
    const b = buf[i];
    if (inString) {
      if (b === BACKSLASH) i++;
      else if (b === QUOTE) inString = false;
      continue;
    }
    if (b === QUOTE) inString = true;
    else if (b === OPEN_BRACE || b === OPEN_BRACKET) {
      if (++depth > max) return true;
    } else if (b === CLOSE_BRACE || b === CLOSE_BRACKET) depth--;
  }
  return false;
}

/** The same check for JSON text held in a string (the gRPC API's `data`). */
export function jsonTextDepthExceeds(text: string, max: number): boolean {
  if (max <= 0) return false;
  let openers = 0;
  for (let i = text.indexOf('{'); i !== -1 && openers <= max; i = text.indexOf('{', i + 1)) openers++;
  for (let i = text.indexOf('['); i !== -1 && openers <= max; i = text.indexOf('[', i + 1)) openers++;
  if (openers <= max) return false;
  return jsonDepthExceeds(Buffer.from(text, 'utf8'), max);
}

/** Whether `buf` holds more than `max` bytes `{` and `[` in total (native scans, early exit). */
function moreOpenersThan(buf: Buffer, max: number): boolean {
  let n = 0;
  for (let i = buf.indexOf(OPEN_BRACE); i !== -1; i = buf.indexOf(OPEN_BRACE, i + 1)) if (++n > max) return true;
  for (let i = buf.indexOf(OPEN_BRACKET); i !== -1; i = buf.indexOf(OPEN_BRACKET, i + 1)) if (++n > max) return true;
  return false;
}

const COLON = 0x3a;
const MAX_ID_TEXT = 1024;

function isJsonSpace(b: number): boolean {
  return b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09;
}

/** Index just past the string starting at `start` (a quote), or -1 when it does not end. */
function stringEnd(buf: Buffer, start: number): number {
  const len = buf.length;
  for (let i = start + 1; i < len; i++) {
    const b = buf[i];
    if (b === BACKSLASH) i++;
    else if (b === QUOTE) return i + 1;
  }
  return -1;
}

/**
 * The `id` of a message without parsing it: the value of the first top-level `"id"` key, when it
 * is a valid request id (a string of at most 128 characters or a finite number). For replies to
 * frames that are not parsed, because they are past the rate limit or nest too deep, so that a
 * request with an id still gets its one reply. One linear scan; anything odd gives undefined.
 */
export function topLevelId(buf: Buffer): RequestId | undefined {
  let depth = 0;
  const len = buf.length;
  for (let i = 0; i < len; i++) {
    const b = buf[i];
    if (b === QUOTE) {
      const end = stringEnd(buf, i);
      if (end === -1) return undefined;
      if (depth === 1 && end - i === 4 && buf[i + 1] === 0x69 && buf[i + 2] === 0x64) {
        let j = end;
        while (j < len && isJsonSpace(buf[j])) j++;
        if (j < len && buf[j] === COLON) {
          j++;
          while (j < len && isJsonSpace(buf[j])) j++;
          return scalarAt(buf, j);
        }
      }
      i = end - 1;
    } else if (b === OPEN_BRACE || b === OPEN_BRACKET) depth++;
    else if (b === CLOSE_BRACE || b === CLOSE_BRACKET) depth--;
  }
  return undefined;
}

/** A JSON string or number starting at `at`, as a request id; undefined otherwise. */
function scalarAt(buf: Buffer, at: number): RequestId | undefined {
  if (at >= buf.length) return undefined;
  let end: number;
  if (buf[at] === QUOTE) {
    end = stringEnd(buf, at);
    if (end === -1) return undefined;
  } else {
    end = at;
    while (end < buf.length && end - at <= 64 && /[0-9eE+\-.]/.test(String.fromCharCode(buf[end]))) end++;
  }
  if (end === at || end - at > MAX_ID_TEXT) return undefined;
  try {
    return requestIdOf({ id: JSON.parse(buf.toString('utf8', at, end)) as unknown });
  } catch {
    return undefined;
  }
}
