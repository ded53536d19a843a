// Order behind asynchronous work (InOrder), the outbound queue's verdicts and hold-back, and the
// sharing of compressed frames between recipients: the pieces the connection was split into.
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { OutboundQueue, Verdict } from '../../services/gateway/outbound-queue';
import { Codec, InOrder, Mode, Outbound } from '../../services/protocol';
import { MAX_TIMER_MS } from '../../services/control/config';
import { TokenBucket } from '../../services/gateway/token-bucket';
import { waitFor } from '../helpers/wait';

interface Work {
  name: string;
  done: boolean;
}

test('InOrder: ready items pass straight through; an unfinished one holds back all behind it', () => {
  const out: string[] = [];
  const q = new InOrder<Work>((w) => {
    if (!w.done) return false;
    out.push(w.name);
    return true;
  });
  assert.equal(q.push({ name: 'a', done: true }), true, 'nothing waits: straight through');
  const b = { name: 'b', done: false };
  assert.equal(q.push(b), false);
  q.push({ name: 'c', done: true });
  q.hold({ name: 'd', done: true });
  assert.deepEqual(out, ['a']);
  assert.equal(q.size, 3);
  q.drain();
  assert.deepEqual(out, ['a'], 'b is not done: nothing moves');
  b.done = true;
  q.drain();
  assert.deepEqual(out, ['a', 'b', 'c', 'd']);
  assert.equal(q.holding, false);
});

test('InOrder: items added while draining go behind; clearing while draining stops it', () => {
  const out: string[] = [];
  let q: InOrder<Work>;
  q = new InOrder<Work>((w) => {
    if (!w.done) return false;
    out.push(w.name);
    if (w.name === 'b') q.push({ name: 'late', done: true }); // e.g. a reply that queues another
    if (w.name === 'stop') q.clear(); // e.g. the connection closed while sending on
    return true;
  });
  const a = { name: 'a', done: false };
  q.push(a);
  q.push({ name: 'b', done: true });
  q.push({ name: 'c', done: true });
  a.done = true;
  q.drain();
  assert.deepEqual(out, ['a', 'b', 'c', 'late']);
  const s = { name: 'first', done: false };
  q.push(s);
  q.push({ name: 'stop', done: true });
  q.push({ name: 'never', done: true });
  s.done = true;
  q.drain();
  assert.deepEqual(out.slice(4), ['first', 'stop']);
  assert.equal(q.holding, false);
  assert.equal(q.push({ name: 'after', done: true }), true, 'usable again after a clear');
});

/** A sink whose peer does not read: every write stays buffered until release(). */
class StalledSink extends Writable {
  private pending: (() => void)[] = [];
  constructor() {
    super({ highWaterMark: 1 });
  }
  override _write(_chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.pending.push(cb);
  }
  release(): void {
    for (const cb of this.pending.splice(0)) cb();
  }
}

test('OutboundQueue: Full past MAX_OUTBOUND_BYTES (a client with nothing pending always gets one frame); replies get twice the bound under drop', () => {
  const sink = new StalledSink();
  let dirty = 0;
  let wrote = 0;
  const limits = { maxOutboundBytes: 1000, slowConsumerPolicy: 'drop' as const, compressionThreshold: 512 };
  const q = new OutboundQueue(sink, limits, () => dirty++, (n) => (wrote += n));
  q.mode = Mode.Text;
  const big = new Outbound(JSON.stringify({ type: 'message', data: 'x'.repeat(1500) }));
  assert.equal(q.enqueue(big, false), Verdict.Queued, 'nothing pending: the frame goes whatever its size');
  assert.equal(dirty, 1);
  const small = new Outbound(JSON.stringify({ type: 'message', data: 'y'.repeat(100) }));
  assert.equal(q.enqueue(small, false), Verdict.Full, 'a push past the bound');
  q.flush();
  assert.equal(wrote, big.text().length);
  assert.ok(q.bufferedAmount >= big.text().length, 'the socket buffer counts');
  // Pending is now the socket's buffer (over the bound): a push is refused, a reply admitted up to
  // twice the bound, and past that refused too.
  assert.equal(q.enqueue(small, false), Verdict.Full);
  assert.equal(q.enqueue(small, true), Verdict.Queued, 'under drop a reply may use up to twice the bound');
  const push = new Outbound(JSON.stringify({ type: 'message', data: 'w'.repeat(600) }));
  const reply = new Outbound(JSON.stringify({ type: 'ok', id: 1, pad: 'z'.repeat(600) }));
  assert.equal(q.enqueue(reply, true), Verdict.Full, 'a reply past twice the bound is refused');
  sink.release();
  assert.equal(q.bufferedAmount, small.text().length, 'the socket took its bytes: only the queued reply is pending');
  assert.equal(q.enqueue(push, false), Verdict.Queued);
  assert.equal(q.enqueue(push, false), Verdict.Full, 'the second push passes the bound');
  const shortReply = new Outbound(JSON.stringify({ type: 'ok', id: 2, pad: 'z'.repeat(300) }));
  assert.equal(q.enqueue(shortReply, true), Verdict.Queued, 'a reply within twice the bound');
  q.close(false);
  assert.equal(q.enqueue(small, false), Verdict.Closed);
});

test('OutboundQueue: frames behind one being compressed (zstd) keep their order; every recipient shares one compression', async () => {
  const written: Buffer[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      written.push(chunk);
      cb();
    },
  });
  const limits = { maxOutboundBytes: 1 << 20, slowConsumerPolicy: 'disconnect' as const, compressionThreshold: 64 };
  const queues = [0, 1, 2].map(() => new OutboundQueue(sink, limits, () => undefined, () => undefined));
  for (const q of queues) {
    q.mode = Mode.Binary;
    q.codec = Codec.Zstd;
  }
  const large = new Outbound(JSON.stringify({ type: 'message', seq: 1, data: 'abc'.repeat(4000) }));
  const small = new Outbound(JSON.stringify({ type: 'message', seq: 2, data: 'short' }));
  for (const q of queues) {
    assert.equal(q.enqueue(large, false), Verdict.Queued);
    assert.equal(q.enqueue(small, false), Verdict.Queued, 'held behind the large one, not sent ahead');
    q.flush();
  }
  assert.equal(written.length, 0, 'nothing leaves before the compressed frame is ready');
  await waitFor(() => {
    for (const q of queues) q.flush();
    return written.length === 6;
  }, 5000, 'the compressed frames');
  assert.equal(written[0] === written[2] && written[2] === written[4], true, 'the same compressed Buffer for every recipient');
  assert.equal(written[0][4], Codec.Zstd, 'the large frame went out compressed');
  assert.equal(written[0], large.binaryFor(Codec.Zstd, 64), 'compressed once, kept on the message');
  assert.ok(written.every((b, i) => (i % 2 === 0 ? b === written[0] : b === small.binary())), 'large then small, per recipient');
});

test('Outbound: lz4 frames are compressed once and shared', () => {
  const m = new Outbound(JSON.stringify({ type: 'message', data: 'q'.repeat(5000) }));
  const a = m.binaryFor(Codec.Lz4, 64);
  const b = m.binaryFor(Codec.Lz4, 64);
  assert.ok(a !== null && a === b);
  assert.equal(a[4], Codec.Lz4);
  assert.equal(m.binaryFor(Codec.Lz4, 1 << 20), m.binary(), 'below the threshold: the plain frame');
});

test('TokenBucket: a burst, then the sustained rate', () => {
  const b = new TokenBucket(10, 5, 0);
  for (let i = 0; i < 5; i++) assert.equal(b.take(0), true, `burst token ${i}`);
  assert.equal(b.take(0), false, 'empty');
  assert.equal(b.take(50), false, 'half a token after 50 ms at 10/s');
  assert.equal(b.take(100), true, 'one token after 100 ms');
  assert.equal(b.take(100), false);
  assert.equal(b.take(10_000), true, 'refilled');
  for (let i = 0; i < 4; i++) assert.equal(b.take(10_000), true, 'up to the burst, not beyond');
  assert.equal(b.take(10_000), false);
  assert.equal(b.refillMs, 100);
  assert.equal(b.resumeMs, 100, 'a tenth of a second at 10/s is one token');
  assert.equal(new TokenBucket(2000, 4000, 0).resumeMs, 100, "a tenth of a second's tokens");
  assert.equal(new TokenBucket(2000, 50, 0).resumeMs, 100, 'a tenth of a second with a small burst too');
  assert.equal(new TokenBucket(2000, 2, 0).resumeMs, 100, 'the smallest burst the config takes');
  assert.equal(new TokenBucket(1, 1, 0).resumeMs, 1000, 'at least one token');
});

test('TokenBucket metered: spending leaves it in debt, and it is positive again once the debt is repaid', () => {
  const b = new TokenBucket(1000, 1000, 0); // 1000 a second, a second's worth held
  assert.equal(b.positive(0), true);
  b.spend(2500); // one use may take more than is left
  assert.equal(b.positive(0), false);
  assert.equal(b.debtMs, 1501);
  assert.equal(b.positive(1000), false); // 500 still owed
  assert.equal(b.positive(1501), true);
  b.spend(1);
  assert.equal(b.positive(100_000), true); // refilled to the cap, not beyond
  b.spend(1001);
  assert.equal(b.positive(100_000), false);
});

test('TokenBucket metered: the debt is a timer delay, never past the longest timer Node takes', () => {
  // INBOUND_BYTES_PER_SEC=1 and a 4 MiB frame: 4.2e9 ms, which setTimeout takes as 1 ms.
  const b = new TokenBucket(1, 4 << 20, 0);
  b.spend(8 << 20);
  assert.equal(b.positive(0), false);
  assert.equal(b.debtMs, MAX_TIMER_MS);
  assert.equal(b.positive(MAX_TIMER_MS), false, 'still owing after one timer: the next one waits again');
});

test('InOrder: a queue that never empties (a client always one request ahead) does not keep what left', () => {
  let taken = 0;
  const q = new InOrder<Work>((w) => {
    if (!w.done) return false;
    taken++;
    return true;
  });
  let pending: Work = { name: '0', done: false };
  q.hold(pending);
  for (let i = 1; i <= 10_000; i++) {
    const next = { name: String(i), done: false };
    q.hold(next);
    pending.done = true;
    q.drain();
    pending = next;
  }
  assert.equal(taken, 10_000);
  assert.equal(q.size, 1);
  assert.ok(q.retained <= 2 * 64 + 2, `${q.retained} slots kept for 1 waiting item`);
});

test('TokenBucket after a rate pause: credited with what it earned, beyond a small burst', () => {
  // 1000/s with a burst of 1: a client sending 500/s that overshot once was paused 100 ms, found
  // one token, had the other 49 frames refused, and paused again, for good.
  const b = new TokenBucket(1000, 1, 0);
  assert.equal(b.take(0), true);
  assert.equal(b.take(0), false, 'empty: the connection is paused');
  b.resumed(b.resumeMs);
  let taken = 0;
  while (b.take(b.resumeMs)) taken++;
  assert.equal(taken, 100, "a tenth of a second's tokens after a tenth of a second's pause");
  // A large burst is unchanged: refilled up to the burst, as take() refills.
  const big = new TokenBucket(1000, 4000, 0);
  for (let i = 0; i < 4000; i++) big.take(0);
  big.resumed(100);
  let more = 0;
  while (big.take(100)) more++;
  assert.equal(more, 100);
});

// Found in review: the process-wide inflate budget charges a frame's output bound up front and
// refunds what it did not use; refunds landing after the bucket had refilled raised it past its
// size (8, 12, ... 28 MiB against 4 MiB), and with it how much could decompress at once.
test('TokenBucket refund: what was charged in advance comes back, never past the burst', () => {
  const b = new TokenBucket(1000, 1000, 0);
  b.spend(800); // charged in advance
  assert.equal(b.positive(10_000), true, 'refilled to the burst meanwhile');
  b.refund(800); // the advance was not used
  b.spend(1000);
  assert.equal(b.positive(10_000), false, 'the bucket held its burst, not burst + refund');
  const c = new TokenBucket(1000, 1000, 0);
  c.spend(1500);
  c.refund(1000);
  assert.equal(c.positive(0), true, 'a refund repays debt');
});
