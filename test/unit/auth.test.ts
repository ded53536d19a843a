// HS256 tokens for hello: only valid, unexpired, correctly signed tokens with a sub pass.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { describe, test } from 'node:test';
import { signHs256, verifyHs256 } from '../../services/gateway';
import { ErrorCode, SwitchboardError } from '../../services/protocol';

const SECRET = 'unit-secret';

function rejects(token: string, why: RegExp, secret = SECRET): void {
  assert.throws(
    () => verifyHs256(token, secret),
    (err: unknown) => err instanceof SwitchboardError && err.code === ErrorCode.Unauthorized && why.test(err.message),
  );
}

describe('verifyHs256', () => {
  test('a valid token yields its sub', () => {
    const t = signHs256({ sub: 'ada', exp: Math.floor(Date.now() / 1000) + 60 }, SECRET);
    assert.equal(verifyHs256(t, SECRET).sub, 'ada');
  });
  test('expired', () => rejects(signHs256({ sub: 'ada', exp: Math.floor(Date.now() / 1000) - 3600 }, SECRET), /expired/));
  test('not yet valid', () => rejects(signHs256({ sub: 'ada', nbf: Math.floor(Date.now() / 1000) + 3600 }, SECRET), /not yet valid/));
  test('wrongly signed', () => rejects(signHs256({ sub: 'ada' }, 'other-secret'), /bad signature/));
  test('malformed', () => {
    rejects('not-a-jwt', /malformed/);
    rejects('a.b', /malformed/);
    rejects('!!.??.**', /malformed/);
    rejects('x'.repeat(9000), /malformed/);
  });
  test('missing sub', () => rejects(signHs256({ name: 'ada' }, SECRET), /missing sub/));
  // "\ud800" in the JSON gives a lone surrogate: no UTF-8 form, so not a name (docs/protocol.md).
  test('a sub with a lone surrogate', () => rejects(signHs256({ sub: 'ada\ud800' }, SECRET), /sub is not well-formed/));
  test('a sub with a surrogate pair is a name like any other', () => assert.equal(verifyHs256(signHs256({ sub: 'ada\u{1F600}' }, SECRET), SECRET).sub, 'ada\u{1F600}'));
  test('alg none and other algorithms are refused', () => {
    const enc = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
    rejects(`${enc({ alg: 'none' })}.${enc({ sub: 'ada' })}.`, /unsupported algorithm/);
    const head = `${enc({ alg: 'HS512' })}.${enc({ sub: 'ada' })}`;
    rejects(`${head}.${createHmac('sha512', SECRET).update(head).digest('base64url')}`, /unsupported algorithm/);
  });
  test('a tampered payload fails the signature', () => {
    const [h, , s] = signHs256({ sub: 'ada' }, SECRET).split('.');
    rejects(`${h}.${Buffer.from('{"sub":"root"}').toString('base64url')}.${s}`, /bad signature/);
  });
});
