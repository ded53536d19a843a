// Attack class: hostile input. Deeply nested JSON (10k levels) in every place a client can put
// it, in text, binary and compressed frames, is bad_request and never `internal`; a flood of bad
// frames is rate limited, its errors included; none of it moves the process toward overload.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { compressSync } from 'lz4-napi';
import { waitFor } from '../helpers/wait';
import { binaryFrame, PREAMBLE } from '../helpers/wire';
import { assertRssWithin, assertWitnessServed, peakRss, RawClient, settledRss, startTarget, Witness } from './harness';

const DEEP = 10_000;
const deepArray = '['.repeat(DEEP) + ']'.repeat(DEEP);
const deepObject = '{"a":'.repeat(DEEP) + '1' + '}'.repeat(DEEP);

/** Lines of the binary-mode replies (u32 length | flags | body). */
function binaryMessages(raw: Buffer): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  let off = 0;
  while (raw.length - off >= 5) {
    const len = raw.readUInt32BE(off);
    if (raw.length - off - 5 < len) break;
    out.push(JSON.parse(raw.subarray(off + 5, off + 5 + len).toString('utf8')) as Record<string, unknown>);
    off += 5 + len;
  }
  return out;
}

test('nested input everywhere is bad_request, never internal; the process does not near overload', async (t) => {
  const target = await startTarget({ OVERLOAD_INTERVAL_MS: '200', OVERLOAD_ENTER_SAMPLES: '1' });
  t.after(() => target.stop());
  const witness = await Witness.start(target.port, t);
  await witness.served(5);
  const before = await settledRss(target);

  const { peak } = await peakRss(target, async () => {
    // Text mode, after hello: in data, in the id, as the whole message, in a plugin's fields.
    const a = await RawClient.open(target.port);
    t.after(() => a.destroy());
    await a.hello('nester');
    a.line({ type: 'join_room', room: 'deep', id: 'j' });
    await a.waitFor((m) => m.id === 'j');
    const cases = [
      `{"type":"send_chat","room":"deep","id":"c1","data":${deepArray}}`,
      `{"type":"send_chat","room":"deep","id":"c2","data":${deepObject}}`,
      `{"type":"direct","to":"nobody","id":"c3","data":${deepArray}}`,
      `{"type":"join_room","id":"c4","room":${deepObject}}`,
      `{"type":"history","room":"deep","id":"c5","limit":${deepArray}}`,
      `{"type":"ping","id":"c6","pad":${deepArray}}`,
      `{"type":"ping","id":${deepArray}}`,
      deepArray,
      deepObject,
    ];
    for (const c of cases) a.write(c + '\n');
    for (const id of ['c1', 'c2', 'c3', 'c4', 'c5', 'c6']) {
      const r = await a.waitFor((m) => m.id === id, 5000, `the reply to ${id}`);
      assert.equal(r.code, 'bad_request', `${id}: ${JSON.stringify(r)}`);
      assert.match(String(r.message), /deeper than 64/);
    }
    await waitFor(() => a.lines.filter((m) => m.type === 'error' && m.id === undefined).length >= 3, 5000, 'the three errors without id');
    // Before hello, in hello itself.
    const h = await RawClient.open(target.port);
    t.after(() => h.destroy());
    h.write(`{"type":"hello","id":"h","user":${deepObject}}\n`);
    assert.equal((await h.waitFor((m) => m.id === 'h')).code, 'bad_request');

    // Binary mode, plain and lz4-compressed.
    const b = await RawClient.open(target.port);
    t.after(() => b.destroy());
    const chunks: Buffer[] = [];
    b.socket.on('data', (c: Buffer) => chunks.push(c));
    b.write(Buffer.concat([PREAMBLE, binaryFrame(JSON.stringify({ type: 'hello', user: 'bin-nester', id: 'h', codecs: ['lz4'] }))]));
    const body = Buffer.from(`{"type":"ping","id":"b1","data":${deepArray}}`);
    b.write(binaryFrame(body));
    b.write(binaryFrame(compressSync(Buffer.from(`{"type":"ping","id":"b2","data":${deepObject}}`)), 1));
    const bin = await waitFor(() => {
      const msgs = binaryMessages(Buffer.concat(chunks));
      return msgs.some((m) => m.id === 'b2') ? msgs : undefined;
    }, 5000, 'binary replies');
    assert.equal(bin.find((m) => m.id === 'h')?.type, 'welcome');
    assert.equal(bin.find((m) => m.id === 'b1')?.code, 'bad_request');
    assert.equal(bin.find((m) => m.id === 'b2')?.code, 'bad_request');

    // The same, many times: still no internal, no overload.
    for (let i = 0; i < 200; i++) a.write(`{"type":"send_chat","room":"deep","id":"m${i}","data":${deepArray}}\n`);
    await a.waitFor((m) => m.id === 'm199', 10_000, 'the last reply');
    assert.ok(a.lines.filter((m) => typeof m.id === 'string' && m.id.startsWith('m')).every((m) => m.code === 'bad_request'));
  });

  // A few monitor intervals pass with the attack in them: none of it counts as server errors.
  await waitFor(async () => ((await target.stats()).event_loop_lag_ms as number) >= 0, 2000, 'a monitor sample');
  await new Promise((r) => setTimeout(r, 600));
  assert.equal(await target.metric('switchboard_errors_total{code="internal"}'), 0);
  assert.ok(((await target.metric('switchboard_limit_exceeded_total{limit="MAX_JSON_DEPTH"}')) ?? 0) >= 210);
  const stats = await target.stats();
  assert.equal(stats.overloaded, false, JSON.stringify(stats.overload_reasons));
  assert.equal(target.logs().filter((l) => l.level === 'error').length, 0, 'nothing logged as a server error');
  await assertWitnessServed(witness);
  assertRssWithin(before, peak, undefined, 'peak RSS');
  assertRssWithin(before, await settledRss(target));
});

test('a flood of bad frames is rate limited, its error replies included', async (t) => {
  const target = await startTarget({ RATE_LIMIT_PER_SEC: '100', RATE_LIMIT_BURST: '100' });
  t.after(() => target.stop());
  const witness = await Witness.start(target.port, t);
  const a = await RawClient.open(target.port);
  t.after(() => a.destroy());
  await a.hello('flooder');
  const N = 20_000;
  // Bad JSON, non-objects, missing types: none has a valid id.
  const bad = ['not json', '[1,2,3]', '{"no":"type"}', '{"type":7}', '"str"'];
  a.write(Array.from({ length: N }, (_, i) => bad[i % bad.length]).join('\n') + '\n');
  a.line({ type: 'ping', id: 'after' });
  const reply = await a.waitFor((m) => m.id === 'after', 10_000, 'the reply to the ping after the flood');
  // The ping came after the flood with the bucket still empty: it gets its one reply anyway.
  assert.ok(reply.type === 'pong' || reply.code === 'rate_limited', JSON.stringify(reply));
  const errors = a.lines.filter((m) => m.type === 'error');
  // About the burst (100) plus the refill while the flood was parsed, plus one rate_limited notice.
  assert.ok(errors.length < 400, `${errors.length} error replies to ${N} bad frames`);
  assert.ok(errors.some((e) => e.code === 'rate_limited'), 'the client was told it is rate limited');
  assert.ok(((await target.metric('switchboard_dropped_total{reason="rate_limited"}')) ?? 0) >= N - 400);
  assert.equal(a.closed, false);
  await witness.served(5);
  await assertWitnessServed(witness);
});

// A burst of a tenth of a second's tokens, and a small one: with a burst of 10 the pause was the
// burst's refill (10 ms), a read of refusals a hundred times a second.
for (const burst of [1000, 10]) {
  test(`requests with ids flooding past the rate limit (burst ${burst}): at most a read of refusals per tenth of a second`, async (t) => {
    const target = await startTarget({ RATE_LIMIT_PER_SEC: '1000', RATE_LIMIT_BURST: String(burst) });
    t.after(() => target.stop());
    const witness = await Witness.start(target.port, t);
    await witness.served(5);
    const a = await RawClient.open(target.port);
    t.after(() => a.destroy());
    await a.hello('flooder');
    // About 100 bytes a ping: a 64 KiB read holds about 650 of them, each refused with its id.
    const line = JSON.stringify({ type: 'ping', id: 1, pad: 'x'.repeat(60) }) + '\n';
    const block = line.repeat(650);
    let writing = true;
    const pump = (): void => {
      while (writing && a.socket.write(block));
      if (writing) a.socket.once('drain', pump);
    };
    const started = Date.now();
    pump();
    await new Promise((r) => setTimeout(r, 2000));
    writing = false;
    const seconds = (Date.now() - started) / 1000;
    const refused = a.lines.filter((m) => m.code === 'rate_limited').length;
    const answered = a.lines.filter((m) => m.type === 'pong').length;
    // Ten reads a second at the most once the bucket is dry, whatever the client sends and
    // whatever the burst: resuming at the first token instead refused a read every millisecond
    // (over 100,000 a second), and resuming at a small burst's refill every 10 ms.
    assert.ok(refused <= 10 * 650 * (seconds + 1), `${refused} refusals in ${seconds.toFixed(1)} s`);
    // The burst, then the rate (a tenth of a second's tokens per tenth of a second).
    assert.ok(answered >= Math.min(burst, 1000) && answered <= burst + 1000 * (seconds + 1), `${answered} pongs: the burst, then the rate`);
    assert.equal(a.closed, false);
    await witness.served(5);
    await assertWitnessServed(witness);
  });
}
