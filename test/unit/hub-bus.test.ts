// The hub (encode once, one flush per connection per turn) and the embedded memory bus
// (per-room sequence in accept order, bounded history ring, bounded idle rooms).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { MemoryBus, type BusSink } from '../../services/bus';
import { Hub, type HubMember } from '../../services/gateway';
import { Outbound } from '../../services/protocol';
import { Counters } from '../../services/telemetry';
import { tick } from '../helpers/wait';

class FakeMember implements HubMember {
  queued: Outbound[] = [];
  flushes: Outbound[][] = [];
  constructor(
    readonly user: string,
    private readonly hub: Hub,
  ) {}
  enqueue(msg: Outbound): boolean {
    if (this.queued.length === 0) this.hub.markDirty(this);
    this.queued.push(msg);
    return true;
  }
  flush(): void {
    this.flushes.push(this.queued);
    this.queued = [];
  }
}

const sinkOf = (hub: Hub): BusSink => ({
  deliverRoom: (room, msg, ts) => void hub.deliverRoom(room, msg, ts),
  deliverUser: (user, msg) => hub.deliverUser(user, msg),
});

describe('Hub', () => {
  test('one Outbound object reaches every member, and each member is flushed once per turn', async () => {
    const bus = new MemoryBus();
    const hub = new Hub(bus, new Counters());
    await bus.start(sinkOf(hub));
    const members = [1, 2, 3].map((i) => new FakeMember(`u${i}`, hub));
    for (const m of members) await hub.join('r', m);
    for (let i = 0; i < 5; i++) bus.publish({ room: 'r', from: 'u1', dataJson: String(i), ts: Date.now() });
    for (const m of members) assert.equal(m.flushes.length, 0, 'nothing is written before the turn ends');
    await tick();
    for (const m of members) {
      assert.equal(m.flushes.length, 1, 'five messages, one flush');
      assert.equal(m.flushes[0].length, 5);
    }
    for (let i = 0; i < 5; i++) {
      assert.ok(members.every((m) => m.flushes[0][i] === members[0].flushes[0][i]), 'the same encoded object for every member');
    }
  });

  test('membership bookkeeping: rooms and users are forgotten when the last member leaves', async () => {
    const bus = new MemoryBus();
    const hub = new Hub(bus, new Counters());
    await bus.start(sinkOf(hub));
    const a1 = new FakeMember('a', hub);
    const a2 = new FakeMember('a', hub);
    await hub.join('r', a1);
    await hub.join('r', a2);
    await hub.addUser(a1);
    await hub.addUser(a2);
    assert.deepEqual(bus.presence('r'), ['a']);
    await hub.leave('r', a1);
    assert.deepEqual(bus.presence('r'), ['a'], 'a still has a connection in r');
    await hub.leave('r', a2);
    assert.equal(hub.roomCount, 0);
    assert.deepEqual(bus.presence('r'), []);
    await hub.removeUser(a1);
    assert.ok(hub.connectionsOf('a'));
    await hub.removeUser(a2);
    assert.equal(hub.connectionsOf('a'), undefined);
    assert.equal(bus.direct('a', Outbound.of({ type: 'direct' })), false);
  });
});

describe('MemoryBus', () => {
  test('sequence numbers in accept order; history is a bounded ring with since and limit', async () => {
    const bus = new MemoryBus({ historySize: 5 });
    await bus.start({ deliverRoom: () => {}, deliverUser: () => 0 });
    const seqs = [];
    for (let i = 1; i <= 8; i++) seqs.push(bus.publish({ room: 'r', from: 'u', dataJson: String(i), ts: 1 }).seq);
    assert.deepEqual(seqs, [1, 2, 3, 4, 5, 6, 7, 8]);
    const seqOf = (o: Outbound) => (JSON.parse(o.json) as { seq: number }).seq;
    assert.deepEqual(bus.history('r', undefined, 100).map(seqOf), [4, 5, 6, 7, 8], 'only the last 5 are kept');
    assert.deepEqual(bus.history('r', 6, 100).map(seqOf), [7, 8]);
    assert.deepEqual(bus.history('r', 0, 2).map(seqOf), [7, 8], 'limit keeps the newest');
    assert.deepEqual(bus.history('other', 0, 10), []);
    assert.equal(bus.lastSeq('r'), 8);
    const first = JSON.parse(bus.history('r', 7, 1)[0].json) as Record<string, unknown>;
    assert.deepEqual(Object.keys(first), ['type', 'room', 'from', 'data', 'seq', 'ts']);
    assert.equal(first.data, 8);
  });

  test('history size 0 keeps nothing', async () => {
    const bus = new MemoryBus({ historySize: 0 });
    await bus.start({ deliverRoom: () => {}, deliverUser: () => 0 });
    bus.publish({ room: 'r', from: 'u', dataJson: '1', ts: 1 });
    assert.deepEqual(bus.history('r', undefined, 10), []);
  });

  test('empty rooms are forgotten: never-used ones at once, used ones beyond maxIdleRooms', async () => {
    const bus = new MemoryBus({ maxIdleRooms: 3 });
    await bus.start({ deliverRoom: () => {}, deliverUser: () => 0 });
    for (let i = 0; i < 10; i++) {
      bus.join(`quiet-${i}`, 'u');
      bus.leave(`quiet-${i}`, 'u');
    }
    for (let i = 0; i < 10; i++) {
      bus.join(`busy-${i}`, 'u');
      bus.publish({ room: `busy-${i}`, from: 'u', dataJson: '1', ts: 1 });
      bus.leave(`busy-${i}`, 'u');
    }
    const kept = [...Array(10).keys()].filter((i) => bus.lastSeq(`busy-${i}`) > 0);
    assert.deepEqual(kept, [7, 8, 9], 'the three most recently idle rooms keep their history');
    assert.equal(bus.lastSeq('quiet-0'), 0);
  });
});
