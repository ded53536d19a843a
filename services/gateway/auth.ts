/**
 * HS256 JWT verification for `hello` tokens, with node:crypto only.
 *
 * Accepts exactly alg HS256 (no "none", no algorithm confusion), compares signatures in constant
 * time and in canonical form (the decoded bytes, and only the one base64url spelling of them: a
 * signature with altered padding bits or other non-canonical text is refused, so a token has one
 * accepted form), checks `exp` and `nbf` with a small clock skew, optionally requires `exp`, and
 * requires `sub` (the user id: a name, at most 128 characters of well-formed UTF-16).
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { ErrorCode, isWellFormedName, MAX_NAME_LENGTH, SwitchboardError } from '../protocol';

const CLOCK_SKEW_S = 30;
/** HMAC-SHA256 output: 32 bytes, 43 characters of unpadded base64url. */
const SIGNATURE_BYTES = 32;

function b64urlDecode(part: string): Buffer {
  if (!/^[A-Za-z0-9_-]*$/.test(part)) throw new Error('not base64url');
  return Buffer.from(part, 'base64url');
}

function parseJsonPart(part: string): Record<string, unknown> {
  const value: unknown = JSON.parse(b64urlDecode(part).toString('utf8'));
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new Error('not an object');
  return value as Record<string, unknown>;
}

export interface VerifyOptions {
  /** Refuse tokens without `exp` (AUTH_REQUIRE_EXP). @default false */
  requireExp?: boolean;
}

export interface VerifiedToken {
  sub: string;
  exp?: number;
  claims: Record<string, unknown>;
}

/** Verify a token; throws SwitchboardError(unauthorized) with a reason that never echoes the token. */
export function verifyHs256(token: string, secret: string, nowMs = Date.now(), opts: VerifyOptions = {}): VerifiedToken {
  const fail = (why: string, cause?: unknown): never => {
    throw new SwitchboardError(ErrorCode.Unauthorized, `invalid token: ${why}`, { cause });
  };
  if (typeof token !== 'string' || token.length > 8192) fail('malformed');
  const parts = token.split('.');
  if (parts.length !== 3) fail('malformed');
  let header: Record<string, unknown>;
  let payload: Record<string, unknown>;
  try {
    header = parseJsonPart(parts[0]);
    payload = parseJsonPart(parts[1]);
  } catch (err) {
    return fail('malformed', err);
  }
  if (header.alg !== 'HS256') fail('unsupported algorithm');
  let sig: Buffer;
  try {
    sig = b64urlDecode(parts[2]);
  } catch (err) {
    return fail('malformed', err);
  }
  // Canonical form: exactly 32 bytes, and the text is the one encoding of them (Buffer.from
  // ignores the unused low bits of the last character, so several spellings decode alike).
  if (sig.length !== SIGNATURE_BYTES || sig.toString('base64url') !== parts[2]) fail('bad signature');
  const expected = createHmac('sha256', secret).update(`${parts[0]}.${parts[1]}`).digest();
  if (!timingSafeEqual(sig, expected)) fail('bad signature');
  const now = nowMs / 1000;
  if (payload.exp === undefined && opts.requireExp === true) fail('exp is required');
  if (payload.exp !== undefined && (typeof payload.exp !== 'number' || payload.exp + CLOCK_SKEW_S < now)) fail('expired');
  if (payload.nbf !== undefined && (typeof payload.nbf !== 'number' || payload.nbf - CLOCK_SKEW_S > now)) fail('not yet valid');
  if (typeof payload.sub !== 'string' || payload.sub.length === 0 || payload.sub.length > MAX_NAME_LENGTH) fail('missing sub');
  // `sub` is the user's name: held to the rules of names (a "\ud800" escape in the JSON would
  // otherwise give one).
  if (!isWellFormedName(payload.sub as string)) fail('sub is not well-formed Unicode (a lone UTF-16 surrogate)');
  return { sub: payload.sub as string, exp: payload.exp as number | undefined, claims: payload };
}

/** Sign a token (tests, the CLI's `token` helper, backends that mint tokens). */
export function signHs256(claims: Record<string, unknown>, secret: string): string {
  const enc = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const head = `${enc({ alg: 'HS256', typ: 'JWT' })}.${enc(claims)}`;
  return `${head}.${createHmac('sha256', secret).update(head).digest('base64url')}`;
}
