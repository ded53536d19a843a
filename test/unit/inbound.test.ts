// The inbound side's fairness: a connection yields the rest of the event-loop turn after every
// TURN_BYTES (64 KiB) of frames it has had handled, whether in one large frame or many small ones.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Inbound, type InboundSink } from '../../services/gateway/inbound';
import { ErrorCode, Mode, type InboundMessage, type RequestId } from '../../services/protocol';
import { Counters } from '../../services/telemetry/counters';

class FakeSocket {
  paused = false;
  pauses = 0;
  pause(): void {
    this.paused = true;
    this.pauses++;
  }
  resume(): void {
    this.paused = false;
  }
}

class Sink implements InboundSink {
  readonly live = true;
  readonly inboundCodecs = 0;
  readonly messages: InboundMessage[] = [];
  readonly failures: ErrorCode[] = [];
  onMode(_mode: Mode): void {}
  onMessage(msg: InboundMessage): void {
    this.messages.push(msg);
  }
  fail(_id: RequestId | undefined, code: ErrorCode): void {
    this.failures.push(code);
  }
  disconnect(): void {}
}

function inbound(): { socket: FakeSocket; sink: Sink; inbound: Inbound } {
  const socket = new FakeSocket();
  const sink = new Sink();
  const limits = { maxFrameBytes: 1 << 20, maxJsonDepth: 32, rateLimitPerSec: 1e6, rateLimitBurst: 1e6, partialFramesBudgetBytes: 0, inflateBytesPerSec: 0, inflateTotal: null, inboundBytesPerSec: 0 };
  const budget = { waitForPartialBudget: () => {}, partialBudgetFreed: () => {}, partialOverflow: () => {} };
  const i = new Inbound(socket, sink, limits, new Counters(), budget, () => assert.fail('not HTTP'), Date.now());
  return { socket, sink, inbound: i };
}

/** `n` text frames of about `bytes` each, in one chunk. */
function frames(n: number, bytes: number, from = 0): Buffer {
  const pad = 'x'.repeat(bytes - 40);
  let s = '';
  for (let k = 0; k < n; k++) s += JSON.stringify({ type: 'ping', id: `p${from + k}`, pad }) + '\n';
  return Buffer.from(s);
}

const nextTurn = () => new Promise((r) => setImmediate(r));

test('many small frames: the connection handles the whole chunk, then yields the turn once past 64 KiB', async () => {
  const { socket, sink, inbound: i } = inbound();
  i.push(frames(10, 2048));
  assert.equal(socket.paused, false, '20 kB: no yield');
  i.push(frames(30, 2048, 10));
  assert.equal(sink.messages.length, 40, 'every frame of the chunk was handled');
  assert.equal(socket.paused, true, 'past 64 kB in all: the rest of the turn is for the others');
  await nextTurn();
  assert.equal(socket.paused, false, 'read again from the next turn');
  // The count starts again after a yield: 20 kB more is no reason to yield.
  i.push(frames(10, 2048, 40));
  assert.equal(socket.paused, false);
  assert.deepEqual(sink.messages.map((m) => m.id), Array.from({ length: 50 }, (_, k) => `p${k}`));
  assert.deepEqual(sink.failures, []);
});

test('one frame of 64 KiB or more yields the turn by itself', async () => {
  const { socket, sink, inbound: i } = inbound();
  i.push(frames(1, 70 * 1024));
  assert.equal(sink.messages.length, 1);
  assert.equal(socket.paused, true);
  await nextTurn();
  assert.equal(socket.paused, false);
  assert.equal(socket.pauses, 1);
});
