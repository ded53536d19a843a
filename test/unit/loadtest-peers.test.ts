// The load generator's peer-protocol counters (load-tests/peers/): NATS MSG streams and
// Centrifugo WebSocket messages are counted and sampled without parsing, however the bytes are
// split, and what is not a delivery (errors, pings, replies) is told apart.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { CentrifugoCounter, centrifugoPublish } from '../../load-tests/peers/centrifugo';
import { NatsCounter, natsPublish } from '../../load-tests/peers/nats';
import { FrameTemplate, publishData, writeDigits } from '../../load-tests/lib/payload';
import { splitAt } from '../helpers/chunks';

function payload(ts: number): string {
  const d = Buffer.alloc(15);
  writeDigits(d, 0, ts);
  return `{"sbt":"${d.toString('latin1')}","p":"hello there"}`;
}

/** What nats-server sends a subscriber: n MSGs (one with a reply subject), a PING and an -ERR among them. */
function natsStream(n: number): Buffer {
  const parts: string[] = ['INFO {"server_id":"x","max_payload":1048576}\r\n'];
  for (let i = 0; i < n; i++) {
    const p = payload(1_000_000 + i);
    parts.push(i === 3 ? `MSG room.1 1 _INBOX.x ${Buffer.byteLength(p)}\r\n${p}\r\n` : `MSG room.1 1 ${Buffer.byteLength(p)}\r\n${p}\r\n`);
    if (i === 5) parts.push('PING\r\n', "-ERR 'Permissions Violation for Publish to \"x\"'\r\n");
  }
  return Buffer.from(parts.join(''));
}

describe('NatsCounter', () => {
  test('counts MSGs, samples their timestamps, answers control lines', () => {
    const samples: number[] = [];
    const control: string[] = [];
    const c = new NatsCounter({ recordValue: (v) => samples.push(v) }, 1, (op) => control.push(op));
    c.clock = () => 2_000_000;
    c.push(natsStream(10));
    assert.equal(c.messages, 10);
    assert.deepEqual(samples, Array.from({ length: 10 }, (_, i) => 1_000_000 - i));
    assert.deepEqual(control, ['INFO', 'PING', 'ERR']);
    assert.deepEqual([...c.others.keys()], ['nats_err:Permissions Violation for Publish to "x"']);
  });

  test('a payload holding CRLF and MSG-like text is skipped by its size, not scanned', () => {
    const p = 'MSG fake 1 3\r\nabc\r\nPING\r\n';
    const c = new NatsCounter(null, 1, () => assert.fail('no control line in a payload'));
    c.push(Buffer.from(`MSG r 1 ${p.length}\r\n${p}\r\n`));
    assert.equal(c.messages, 1);
  });

  test('any chunk split gives the same counts (property)', () => {
    const whole = natsStream(30);
    fc.assert(
      fc.property(fc.array(fc.nat(), { maxLength: 60 }), (cuts) => {
        let sampled = 0;
        let pings = 0;
        const c = new NatsCounter({ recordValue: () => sampled++ }, 3, (op) => (pings += op === 'PING' ? 1 : 0));
        for (const chunk of splitAt(whole, cuts)) c.push(chunk);
        assert.equal(c.messages, 30);
        assert.equal(pings, 1);
        assert.equal(c.others.size, 1);
        assert.ok(sampled > 0 && sampled <= 30);
        assert.equal(c.bytes, whole.length);
      }),
      { numRuns: 200 },
    );
  });

  test('the publish template stamps each PUB in place with a correct size', () => {
    const t = new FrameTemplate(natsPublish('room-7', publishData(20)));
    const b = t.batch(3, 123_456).toString('latin1');
    const frames = b.split('PUB ').slice(1);
    assert.equal(frames.length, 3);
    for (const f of frames) {
      const m = /^room-7 (\d+)\r\n([\s\S]*)\r\n$/.exec(f);
      assert.ok(m, f);
      assert.equal(Buffer.byteLength(m[2]), Number(m[1]));
      assert.equal((JSON.parse(m[2]) as { sbt: string }).sbt, '000000000123456');
    }
  });
});

describe('CentrifugoCounter', () => {
  const push = (ts: number) => `{"push":{"channel":"room-1","pub":{"data":${payload(ts)}}}}`;

  test('counts publications in batched messages; replies, pings and errors apart', () => {
    const samples: number[] = [];
    let pings = 0;
    const c = new CentrifugoCounter({ recordValue: (v) => samples.push(v) }, 1, () => pings++);
    c.clock = () => 2_000_000;
    c.push(Buffer.from([push(1_000_000), '{"id":3,"publish":{}}', push(1_000_001)].join('\n')));
    c.push(Buffer.from('{}'));
    c.push(Buffer.from(['{"id":3,"error":{"code":103,"message":"permission denied"}}', '{"push":{"channel":"room-1","unsubscribe":{"code":2000}}}', push(1_000_002)].join('\n')));
    assert.equal(c.messages, 3);
    assert.equal(c.acks, 1);
    assert.equal(pings, 1);
    assert.deepEqual(samples, [1_000_000, 999_999, 999_998]);
    assert.deepEqual(Object.fromEntries(c.others), { 'centrifugo_error:103 permission denied': 1, 'centrifugo_push:unsubscribe': 1 });
  });

  test('a batch of publishes is newline-separated commands, each stamped', () => {
    const t = new FrameTemplate(centrifugoPublish('room-1', publishData(10)));
    const b = t.batch(4, 42);
    const lines = b.subarray(0, b.length - 1).toString('utf8').split('\n');
    assert.equal(lines.length, 4);
    for (const l of lines) {
      const cmd = JSON.parse(l) as { id: number; publish: { channel: string; data: { sbt: string } } };
      assert.equal(cmd.publish.channel, 'room-1');
      assert.equal(cmd.publish.data.sbt, '000000000000042');
      assert.ok(cmd.id > 0);
    }
  });
});
