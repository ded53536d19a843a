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
  missedRoom(): void {}
  readonly live = true;
  readonly lastSeen = 0;
  disconnect(): void {}
  get queuedBytes(): number {
    return this.queued.length;
  }
  flush(): void {
    this.flushes.push(this.queued);
    this.queued = [];
  }
}

const sinkOf = (hub: Hub): BusSink => ({
  deliverRoom: (room, msg, ts) => void hub.deliverRoom(room, msg, ts),
  deliverUser: (user, msg) => hub.deliverUser(user, msg),
  registrations: () => hub.registrations(),
  usersIn: (room) => hub.usersIn(room),
});

const NO_SINK: BusSink = { deliverRoom: () => {}, deliverUser: () => 0, registrations: () => ({ rooms: [], users: [] }), usersIn: () => [] };

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
    assert.deepEqual([...hub.usersIn('r')], ['a']);
    assert.deepEqual([...hub.usersIn('elsewhere')], []);
    await hub.leave('r', a1);
    assert.deepEqual(bus.presence('r'), ['a'], 'a still has a connection in r');
    assert.deepEqual([...hub.usersIn('r')], ['a']);
    await hub.leave('r', a2);
    assert.deepEqual([...hub.usersIn('r')], []);
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
  const seqOf = (json: string) => (JSON.parse(json) as { seq: number }).seq;

  test('sequence numbers in accept order; history is a bounded ring paged forward from since', async () => {
    const bus = new MemoryBus({ historySize: 5 });
    await bus.start(NO_SINK);
    const seqs = [];
    for (let i = 1; i <= 8; i++) seqs.push(bus.publish({ room: 'r', from: 'u', dataJson: String(i), ts: 1 }).seq);
    assert.deepEqual(seqs, [1, 2, 3, 4, 5, 6, 7, 8]);
    assert.deepEqual(bus.history('r', { limit: 100 }).messages.map(seqOf), [4, 5, 6, 7, 8], 'only the last 5 are kept');
    assert.deepEqual(bus.history('r', { limit: 2 }).messages.map(seqOf), [7, 8], 'without since, the newest');
    const after6 = bus.history('r', { since: 6, limit: 100 });
    assert.deepEqual(after6.messages.map(seqOf), [7, 8]);
    assert.equal(after6.recovered, true);
    assert.equal(after6.more, false);
    const page = bus.history('r', { since: 3, limit: 2 });
    assert.deepEqual(page.messages.map(seqOf), [4, 5], 'since pages forward, oldest first');
    assert.equal(page.more, true, 'more follows the page');
    assert.equal(page.recovered, true);
    assert.equal(bus.history('r', { since: 0, limit: 100 }).recovered, false, 'seqs 1-3 were trimmed: not recovered');
    assert.deepEqual(bus.history('other', { since: 0, limit: 10 }).messages, []);
    const pos = bus.position('r');
    assert.equal(pos.seq, 8);
    assert.match(pos.epoch, /^[0-9a-f]{12}$/);
    const first = JSON.parse(bus.history('r', { since: 7, limit: 1 }).messages[0]) as Record<string, unknown>;
    assert.deepEqual(Object.keys(first), ['type', 'room', 'from', 'data', 'seq', 'epoch', 'ts']);
    assert.equal(first.data, 8);
    assert.equal(first.epoch, pos.epoch);
  });

  test('a room forgotten and used again starts a new epoch; history in the old one is not recovered', async () => {
    const bus = new MemoryBus({ maxIdleRooms: 1 });
    await bus.start(NO_SINK);
    bus.join('r', 'u');
    const before = bus.position('r');
    bus.publish({ room: 'r', from: 'u', dataJson: '1', ts: 1 });
    bus.leave('r', 'u');
    bus.join('s', 'u');
    bus.publish({ room: 's', from: 'u', dataJson: '1', ts: 1 });
    bus.leave('s', 'u'); // r is forgotten: only one idle room is kept
    bus.join('r', 'u');
    const after = bus.position('r');
    assert.equal(after.seq, 0);
    assert.notEqual(after.epoch, before.epoch);
    bus.publish({ room: 'r', from: 'u', dataJson: '2', ts: 1 });
    const h = bus.history('r', { since: 1, epoch: before.epoch, limit: 10 });
    assert.equal(h.recovered, false);
    assert.equal(h.epoch, after.epoch);
    assert.deepEqual(h.messages.map(seqOf), [1], 'the page starts at the new epoch\'s beginning');
  });

  test('history bytes are bounded per room and in total; idle rooms lose theirs first', async () => {
    const big = JSON.stringify('x'.repeat(10_000)); // about 20 kB per kept message, estimated
    const bus = new MemoryBus({ historySize: 1000, historyRoomBytes: 100_000, historyTotalBytes: 200_000 });
    await bus.start(NO_SINK);
    bus.join('idle', 'u');
    for (let i = 0; i < 3; i++) bus.publish({ room: 'idle', from: 'u', dataJson: big, ts: 1 });
    bus.leave('idle', 'u');
    assert.equal(bus.history('idle', { limit: 1000 }).messages.length, 3);
    bus.join('busy', 'u');
    for (let i = 0; i < 50; i++) bus.publish({ room: 'busy', from: 'u', dataJson: big, ts: 1 });
    const kept = bus.history('busy', { limit: 1000 }).messages.length;
    assert.ok(kept >= 1 && kept <= 5, `per-room budget keeps ${kept} of 50`);
    assert.ok(bus.usage.bytes <= 200_000, `total ${bus.usage.bytes} within budget`);
    for (let i = 0; i < 3; i++) {
      bus.join(`r${i}`, 'u');
      for (let j = 0; j < 3; j++) bus.publish({ room: `r${i}`, from: 'u', dataJson: big, ts: 1 });
    }
    assert.ok(bus.usage.bytes <= 200_000, `total ${bus.usage.bytes} within budget`);
    assert.equal(bus.history('idle', { limit: 1000 }).messages.length, 0, 'the idle room went first');
    assert.ok(bus.usage.evicted > 0);
  });

  test('history size 0 keeps nothing', async () => {
    const bus = new MemoryBus({ historySize: 0 });
    await bus.start(NO_SINK);
    bus.publish({ room: 'r', from: 'u', dataJson: '1', ts: 1 });
    assert.deepEqual(bus.history('r', { limit: 10 }).messages, []);
    assert.equal(bus.history('r', { since: 0, limit: 10 }).recovered, false);
  });

  test('empty rooms are forgotten: never-used ones at once, used ones beyond maxIdleRooms', async () => {
    const bus = new MemoryBus({ maxIdleRooms: 3 });
    await bus.start(NO_SINK);
    for (let i = 0; i < 10; i++) {
      bus.join(`quiet-${i}`, 'u');
      bus.leave(`quiet-${i}`, 'u');
    }
    for (let i = 0; i < 10; i++) {
      bus.join(`busy-${i}`, 'u');
      bus.publish({ room: `busy-${i}`, from: 'u', dataJson: '1', ts: 1 });
      bus.leave(`busy-${i}`, 'u');
    }
    const kept = [...Array(10).keys()].filter((i) => bus.history(`busy-${i}`, { limit: 10 }).seq > 0);
    assert.deepEqual(kept, [7, 8, 9], 'the three most recently idle rooms keep their history');
    assert.equal(bus.history('quiet-0', { limit: 10 }).epoch, '', 'never-used rooms are not kept');
  });
});
