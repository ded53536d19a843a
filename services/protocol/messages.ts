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

/** A required identifier field (room, user): non-empty string of at most 128 characters. */
export function nameField(msg: InboundMessage, field: string): string {
  const v = msg[field];
  if (typeof v !== 'string' || v.length === 0) {
    throw new SwitchboardError(ErrorCode.BadRequest, `field "${field}" must be a non-empty string`);
  }
  if (v.length > MAX_NAME_LENGTH) {
    throw new SwitchboardError(ErrorCode.BadRequest, `field "${field}" must be at most ${MAX_NAME_LENGTH} characters`);
  }
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

export function optionalStringArrayField(msg: InboundMessage, field: string): string[] | undefined {
  const v = msg[field];
  if (v === undefined) return undefined;
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) {
    throw new SwitchboardError(ErrorCode.BadRequest, `field "${field}" must be an array of strings`);
  }
  return v as string[];
}
