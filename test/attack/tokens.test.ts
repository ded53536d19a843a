// Attack class: tokens. A session lasts as long as its token (token_expired at exp, unless the
// client refreshes it with a token for the same user); AUTH_REQUIRE_EXP refuses tokens that
// never expire; a signature is accepted in its one canonical spelling only.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { signHs256, verifyHs256 } from '../../services/gateway';
import { ErrorCode, SwitchboardError } from '../../services/protocol';
import { startServer } from '../helpers/server';
import { WireClient } from '../helpers/wire';

const SECRET = 'attack-secret';
const now = () => Math.floor(Date.now() / 1000);

async function session(port: number, claims: Record<string, unknown>, t: { after(fn: () => void): void }): Promise<WireClient> {
  const c = await WireClient.connect(port);
  t.after(() => c.destroy());
  const w = await c.request({ type: 'hello', token: signHs256(claims, SECRET) });
  assert.equal(w.type, 'welcome', JSON.stringify(w));
  return c;
}

test('a session ends with token_expired at its exp; a refresh for the same user extends it', async (t) => {
  const srv = await startServer({ authSecret: SECRET });
  t.after(() => srv.close());
  const bystander = await session(srv.port, { sub: 'bystander', exp: now() + 3600 }, t);
  const short = await session(srv.port, { sub: 'ada', exp: now() + 2 }, t);
  const renewed = await session(srv.port, { sub: 'bob', exp: now() + 2 }, t);
  const ok = await renewed.request({ type: 'refresh', token: signHs256({ sub: 'bob', exp: now() + 3600 }, SECRET) });
  assert.equal(ok.type, 'ok');
  assert.equal(typeof ok.exp, 'number');
  const e = await short.nextOfType('error', 5000);
  assert.equal(e.code, 'token_expired');
  await short.waitClosed();
  assert.equal((await renewed.request({ type: 'ping' })).type, 'pong', 'the refreshed session lives on');
  assert.equal((await bystander.request({ type: 'ping' })).type, 'pong');
  assert.equal(srv.server.counters.errors.token_expired, 1);
});

test('refresh: another user, a bad token or no token at all are refused; refresh before hello is unauthorized', async (t) => {
  const srv = await startServer({ authSecret: SECRET });
  t.after(() => srv.close());
  const other = await session(srv.port, { sub: 'ada', exp: now() + 3600 }, t);
  const e1 = await other.request({ type: 'refresh', token: signHs256({ sub: 'mallory', exp: now() + 3600 }, SECRET) });
  assert.equal(e1.code, 'unauthorized');
  await other.waitClosed();
  const forged = await session(srv.port, { sub: 'ada', exp: now() + 3600 }, t);
  assert.equal((await forged.request({ type: 'refresh', token: signHs256({ sub: 'ada', exp: now() + 3600 }, 'wrong') })).code, 'unauthorized');
  const missing = await session(srv.port, { sub: 'ada', exp: now() + 3600 }, t);
  assert.equal((await missing.request({ type: 'refresh' })).code, 'bad_request');
  assert.equal(missing.closed, false);
  const early = await WireClient.connect(srv.port);
  t.after(() => early.destroy());
  assert.equal((await early.request({ type: 'refresh', token: signHs256({ sub: 'ada' }, SECRET) })).code, 'unauthorized');
  await early.waitClosed();
  // Without AUTH_SECRET there is nothing to refresh.
  const dev = await startServer();
  t.after(() => dev.close());
  const d = await WireClient.connect(dev.port);
  t.after(() => d.destroy());
  await d.hello('dev');
  assert.equal((await d.request({ type: 'refresh', token: 'x' })).code, 'bad_request');
});

test('a token that is not a string is unauthorized and closes, in hello and in refresh', async (t) => {
  const srv = await startServer({ authSecret: SECRET });
  t.after(() => srv.close());
  for (const token of [42, { sub: 'ada' }, ['x'], null, true]) {
    const c = await WireClient.connect(srv.port);
    t.after(() => c.destroy());
    const e = await c.request({ type: 'hello', token });
    assert.equal(e.code, 'unauthorized', JSON.stringify(token));
    assert.equal(await c.waitClosed(), true, `closed after hello with token ${JSON.stringify(token)}`);
  }
  const s = await session(srv.port, { sub: 'ada', exp: now() + 3600 }, t);
  assert.equal((await s.request({ type: 'refresh', token: 7 })).code, 'unauthorized');
});

test('AUTH_REQUIRE_EXP: a token without exp is unauthorized', async (t) => {
  const srv = await startServer({ authSecret: SECRET, authRequireExp: true });
  t.after(() => srv.close());
  const c = await WireClient.connect(srv.port);
  t.after(() => c.destroy());
  const e = await c.request({ type: 'hello', token: signHs256({ sub: 'ada' }, SECRET) });
  assert.equal(e.code, 'unauthorized');
  assert.match(String(e.message), /exp is required/);
  await c.waitClosed();
  await session(srv.port, { sub: 'ada', exp: now() + 60 }, t);
});

test('signatures are compared in canonical form: another spelling of the same bytes is refused', () => {
  const token = signHs256({ sub: 'ada', exp: now() + 60 }, SECRET);
  assert.equal(verifyHs256(token, SECRET).sub, 'ada');
  const [h, p, sig] = token.split('.');
  assert.equal(sig.length, 43);
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
  const last = alphabet.indexOf(sig[42]);
  // The last character carries 4 bits of the signature and 2 unused bits: flip an unused one.
  const twin = sig.slice(0, 42) + alphabet[last ^ 1];
  assert.deepEqual(Buffer.from(twin, 'base64url'), Buffer.from(sig, 'base64url'), 'the twin decodes to the same bytes');
  const refused = (tok: string) =>
    assert.throws(() => verifyHs256(tok, SECRET), (err: unknown) => err instanceof SwitchboardError && err.code === ErrorCode.Unauthorized);
  refused(`${h}.${p}.${twin}`);
  refused(`${h}.${p}.${sig}=`);
  refused(`${h}.${p}.${sig}A`);
  refused(`${h}.${p}.${sig.slice(0, 42)}`);
  refused(`${h}.${p}.${Buffer.from(sig, 'base64url').toString('base64')}`);
});
