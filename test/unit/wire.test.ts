// The cluster wire module (services/bus/wire.ts): what the broadcast tier writes into an egress
// stream is what a gateway reads back, in both egress kinds, with the frames clients get; old
// gateways keep getting the kind they read; a malformed entry is contained.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { EgressBatch, EgressMessage, gatewayHeartbeat, readEgress, V1_ENTRY_MESSAGES, WIRE_VERSION, wireVersionOf, type EgressHandler } from '../../services/bus/wire';
import { encodeBinaryFrame, encodeTextFrame, Outbound, roomMessageJson } from '../../services/protocol';

interface Got {
  room: string;
  msg: Outbound;
  ts: number;
  mid: string;
  trace: string | undefined;
}

function collector(): { got: Got[]; direct: [string, string][]; h: EgressHandler } {
  const got: Got[] = [];
  const direct: [string, string][] = [];
  return {
    got,
    direct,
    h: {
      room: (room, msg, ts, mid, trace) => got.push({ room, msg, ts, mid, trace }),
      direct: (user, msg) => direct.push([user, msg.json]),
    },
  };
}

/** XADD arguments after the id, as Redis hands the fields back: every one a Buffer. */
function fieldsOf(args: (string | number | Buffer)[]): Buffer[] {
  const star = args.indexOf('*');
  return args.slice(star + 1).map((a) => (Buffer.isBuffer(a) ? a : Buffer.from(String(a))));
}

const messages = [
  new EgressMessage('lobby', 'sb:in:{3}/1700000000000-0', 1700000000000.25, roomMessageJson('lobby', 'ann', '{"t":"hi"}', 1, 'abcdef012345', 1700000000000), undefined),
  new EgressMessage('café ☕', 'sb:in:{5}/1700000000001-7', 1700000000001.5, roomMessageJson('café ☕', 'bob', '{"t":"ünïcødé ☕"}', 42, 'abcdef012345', 1700000000001), '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'),
  new EgressMessage('{a}b', 'sb:in:{0}/1-1', 3, roomMessageJson('{a}b', 'c', '"x"', 7, 'abcdef012345', 3), undefined),
];

describe('egress entries', () => {
  for (const version of [2, 1]) {
    test(`kind ${version === 2 ? 'f' : 'b'} (wire version ${version}): every message comes back with its room, id, time, trace and bytes`, () => {
      const batch = new EgressBatch('sb:out:{x}gw', version);
      for (const m of messages) batch.add(m);
      const [args, ...more] = batch.finish(100_000);
      assert.equal(more.length, 0, 'one entry');
      assert.equal(args[0], 'sb:out:{x}gw');
      assert.deepEqual(args.slice(1, 5), ['MAXLEN', '~', Math.ceil(100_000 / messages.length), '*']);
      const { got, h } = collector();
      readEgress(fieldsOf(args), h);
      assert.equal(got.length, messages.length);
      for (let i = 0; i < messages.length; i++) {
        const m = messages[i];
        assert.equal(got[i].room, m.room);
        assert.equal(got[i].mid, m.mid);
        assert.equal(got[i].ts, m.ts);
        assert.equal(got[i].trace, m.trace);
        assert.equal(got[i].msg.json, m.json);
        assert.deepEqual(got[i].msg.binary(), encodeBinaryFrame(m.json));
        assert.deepEqual(got[i].msg.text(), encodeTextFrame(m.json));
      }
    });
  }

  test('kind f carries the frames themselves: a gateway sends the bytes it read, without re-encoding', () => {
    const batch = new EgressBatch('k', 2);
    batch.add(messages[1]);
    const fields = fieldsOf(batch.finish(10)[0]);
    assert.deepEqual(fields.slice(0, 3).map(String), ['k', 'f', 'b']);
    const { got, h } = collector();
    readEgress(fields, h);
    // The Outbound's binary form is a view of the entry's bytes, not a copy.
    assert.equal(got[0].msg.binary().buffer, fields[3].buffer);
    assert.equal(messages[1].record(), messages[1].record(), 'one record per message, shared by every gateway');
  });

  test('kind b (older gateways) in entries of at most V1_ENTRY_MESSAGES, every message in order', () => {
    const batch = new EgressBatch('k', 1);
    const n = 2 * V1_ENTRY_MESSAGES + 1;
    for (let i = 0; i < n; i++) batch.add(new EgressMessage('r', `sb:in:{0}/1-${i}`, i, roomMessageJson('r', 'u', String(i), i + 1, 'e', i), undefined));
    const entries = batch.finish(100_000);
    assert.equal(entries.length, 3);
    assert.deepEqual(entries.map((e) => e[3]), [100, 100, 100_000], 'each trimmed for its own count of messages');
    const { got, h } = collector();
    for (const e of entries) readEgress(fieldsOf(e), h);
    assert.deepEqual(got.map((g) => g.mid), Array.from({ length: n }, (_, i) => `sb:in:{0}/1-${i}`));
  });

  test('a direct message entry', () => {
    const { direct, h } = collector();
    readEgress(fieldsOf(['k', 'MAXLEN', '~', 100, '*', 'k', 'd', 'u', 'ann', 'm', '{"type":"direct"}']), h);
    assert.deepEqual(direct, [['ann', '{"type":"direct"}']]);
  });

  test('a truncated kind f entry hands on the messages before the fault, then throws', () => {
    const batch = new EgressBatch('k', 2);
    for (const m of messages) batch.add(m);
    const fields = fieldsOf(batch.finish(10)[0]);
    fields[3] = fields[3].subarray(0, fields[3].length - 3);
    const { got, h } = collector();
    assert.throws(() => readEgress(fields, h));
    assert.equal(got.length, messages.length - 1);
  });

  test('unknown kinds and short entries are ignored', () => {
    const { got, direct, h } = collector();
    readEgress([Buffer.from('k'), Buffer.from('z')], h);
    readEgress([Buffer.from('k')], h);
    readEgress([Buffer.from('k'), Buffer.from('f')], h);
    assert.equal(got.length + direct.length, 0);
  });
});

describe('wire versions', () => {
  test('a gateway announces the version it reads in its heartbeat; older heartbeats mean version 1', () => {
    assert.equal(wireVersionOf(gatewayHeartbeat('gw-1', 5)), WIRE_VERSION);
    assert.equal(wireVersionOf(JSON.stringify({ id: 'gw-1', at: 5 })), 1);
    assert.equal(wireVersionOf(null), 1);
    assert.equal(wireVersionOf('not json'), 1);
    assert.equal(wireVersionOf('{"wire":"2"}'), 1);
  });
});

describe('Outbound.fromBinaryFrame', () => {
  test('text, binary and JSON forms equal those of the same message built from its JSON', () => {
    const json = roomMessageJson('r', 'u', '{"a":"ü"}', 3, 'abcdef012345', 9);
    const a = new Outbound(json);
    const b = Outbound.fromBinaryFrame(encodeBinaryFrame(json));
    assert.deepEqual(b.text(), a.text());
    assert.deepEqual(b.binary(), a.binary());
    assert.equal(b.json, a.json);
  });
});
