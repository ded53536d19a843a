/** The chaos checker on hand-written event lists: each invariant passes and fails as documented. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { check, formatSummary, pending } from './checker';
import type { ChaosEvent, Via } from './events';
import { Prng } from './prng';
import { makeLayout, roomNames, SHARDS } from './run';
import { makeSchedule } from './schedule';
import { shardOf } from '../../services/bus/keys';

const P = { leaseMs: 1000, slackMs: 500 };

/** A small world: room r with members a and b, both joined at t=0. */
function world(): ChaosEvent[] {
  return [
    { t: 0, e: 'joined', room: 'r', member: 'a', seq: 0, epoch: 'E1', first: true },
    { t: 0, e: 'joined', room: 'r', member: 'b', seq: 0, epoch: 'E1', first: true },
  ];
}

function sendAck(ev: ChaosEvent[], t: number, key: string, room = 'r', member = 'a'): void {
  ev.push({ t, e: 'sent', room, member, key }, { t: t + 1, e: 'ack', room, member, key });
}

function recv(ev: ChaosEvent[], t: number, member: string, key: string, seq: number, epoch = 'E1', via: Via = 'live', room = 'r'): void {
  ev.push({ t, e: 'recv', room, member, key, seq, epoch, via });
}

describe('chaos checker', () => {
  it('passes a clean run and counts live and recovered deliveries', () => {
    const ev = world();
    sendAck(ev, 10, 'a:1');
    sendAck(ev, 20, 'a:2');
    recv(ev, 15, 'a', 'a:1', 1);
    recv(ev, 15, 'b', 'a:1', 1);
    recv(ev, 25, 'a', 'a:2', 2);
    recv(ev, 400, 'b', 'a:2', 2, 'E1', 'history');
    const s = check(ev, P);
    assert.equal(s.ok, true, formatSummary(s));
    assert.equal(s.acked, 2);
    assert.equal(s.delivered, 3);
    assert.equal(s.recovered, 1);
    assert.equal(s.lost, 0);
    assert.equal(s.longestStallMs, 4);
    assert.equal(pending(ev).count, 0);
  });

  it('reports an acknowledged message a member never got as lost, with the last fault before it', () => {
    const ev = world();
    ev.push({ t: 5, e: 'fault', kind: 'worker_kill9', detail: 'bc1' });
    sendAck(ev, 10, 'a:1');
    recv(ev, 15, 'a', 'a:1', 1);
    const s = check(ev, P);
    assert.equal(s.ok, false);
    assert.equal(s.lost, 1);
    assert.equal(s.firstFailure?.invariant, 'lost');
    assert.equal(s.firstFailure?.room, 'r');
    assert.equal(s.firstFailure?.member, 'b');
    assert.match(s.firstFailure?.lastFault ?? '', /^worker_kill9 \(bc1\)/);
    assert.deepEqual(pending(ev), { count: 1, sample: [{ room: 'r', member: 'b', key: 'a:1' }] });
    assert.match(formatSummary(s), /FIRST FAILURE: lost room=r member=b key=a:1/);
  });

  it('does not expect messages sent before a member joined, nor unacknowledged ones', () => {
    const ev: ChaosEvent[] = [{ t: 0, e: 'joined', room: 'r', member: 'a', seq: 0, epoch: 'E1', first: true }];
    sendAck(ev, 10, 'a:1');
    ev.push({ t: 20, e: 'joined', room: 'r', member: 'b', seq: 1, epoch: 'E1', first: true });
    ev.push({ t: 30, e: 'sent', room: 'r', member: 'a', key: 'a:2' }, { t: 31, e: 'nack', room: 'r', member: 'a', key: 'a:2', code: 'unavailable' });
    ev.push({ t: 40, e: 'sent', room: 'r', member: 'a', key: 'a:3' }, { t: 45, e: 'noreply', room: 'r', member: 'a', key: 'a:3', why: 'disconnected' });
    recv(ev, 12, 'a', 'a:1', 1);
    recv(ev, 50, 'b', 'a:3', 2); // accepted after all: fine
    recv(ev, 51, 'b', 'a:2', 3); // "unavailable", yet accepted: allowed, but counted
    recv(ev, 51, 'a', 'a:2', 3);
    const s = check(ev, P);
    assert.equal(s.ok, true, formatSummary(s));
    assert.deepEqual(s.nacked, { unavailable: 1 });
    assert.equal(s.noReply, 1);
    assert.equal(s.deliveredUnacked, 2);
    assert.deepEqual(s.deliveredUnackedBy, { noreply: 1, unavailable: 1 });
    assert.deepEqual(s.deliveredUnackedAfter, { none: 2 });
  });

  it('excuses messages acknowledged before Redis lost its data when the member was told the epoch changed', () => {
    const ev = world();
    sendAck(ev, 10, 'a:1');
    recv(ev, 12, 'a', 'a:1', 1);
    ev.push({ t: 50, e: 'fault', kind: 'redis_restart_empty', detail: '' });
    ev.push({ t: 80, e: 'outage', start: 50, end: 80, kind: 'redis_restart_empty' }, { t: 80, e: 'dataloss' });
    ev.push({ t: 100, e: 'epoch', room: 'r', member: 'b', from: 'E1', to: 'E2', via: 'join' });
    sendAck(ev, 110, 'a:2');
    recv(ev, 120, 'a', 'a:2', 1, 'E2');
    recv(ev, 120, 'b', 'a:2', 1, 'E2');
    const s = check(ev, P);
    assert.equal(s.ok, true, formatSummary(s));
    assert.equal(s.lostToEpochChange, 1);
    assert.equal(s.lost, 0);
    assert.equal(s.epochChangesSeen, 1);
    assert.equal(pending(ev).count, 0);
  });

  it('does not excuse a message acknowledged after the data loss, nor a member never told', () => {
    const ev = world();
    ev.push({ t: 80, e: 'dataloss' });
    sendAck(ev, 90, 'a:1'); // in the new Redis: must arrive
    recv(ev, 95, 'a', 'a:1', 1, 'E2');
    ev.push({ t: 100, e: 'epoch', room: 'r', member: 'b', from: 'E1', to: 'E2', via: 'join' });
    const s1 = check(ev, P);
    assert.equal(s1.lost, 1);
    assert.equal(s1.lostToEpochChange, 0);

    const ev2 = world();
    sendAck(ev2, 10, 'a:1');
    recv(ev2, 12, 'a', 'a:1', 1);
    ev2.push({ t: 80, e: 'dataloss' });
    const s2 = check(ev2, P);
    assert.equal(s2.lost, 1, 'b was never told its epoch changed');
  });

  it('flags an epoch change without data loss', () => {
    const ev = world();
    ev.push({ t: 100, e: 'epoch', room: 'r', member: 'b', from: 'E1', to: 'E2', via: 'live' });
    const s = check(ev, P);
    assert.equal(s.unexplainedEpochChanges, 1);
    assert.equal(s.firstFailure?.invariant, 'unexplained-epoch');
  });

  it('drops repeats of an (epoch, seq) but reports a message applied under two seqs', () => {
    const ev = world();
    sendAck(ev, 10, 'a:1');
    recv(ev, 12, 'a', 'a:1', 1);
    recv(ev, 13, 'a', 'a:1', 1, 'E1', 'history'); // overlap of live and history: harmless
    recv(ev, 12, 'b', 'a:1', 1);
    recv(ev, 14, 'b', 'a:1', 2); // the same message again with another seq
    const s = check(ev, P);
    assert.equal(s.duplicatesBeforeDedupe, 1);
    assert.equal(s.duplicates, 1);
    assert.equal(s.firstFailure?.invariant, 'duplicate');
    assert.equal(s.firstFailure?.member, 'b');
  });

  it('reports seqs going backwards in an epoch, and two messages with one (epoch, seq)', () => {
    const ev = world();
    sendAck(ev, 10, 'a:1');
    sendAck(ev, 11, 'a:2');
    sendAck(ev, 12, 'a:3');
    recv(ev, 20, 'a', 'a:2', 2);
    recv(ev, 21, 'a', 'a:1', 1); // reordered
    recv(ev, 22, 'a', 'a:3', 3);
    recv(ev, 20, 'b', 'a:1', 1);
    recv(ev, 21, 'b', 'a:2', 2);
    recv(ev, 22, 'b', 'a:3', 2); // conflict: seq 2 twice
    const s = check(ev, P);
    assert.equal(s.reordered, 1);
    assert.equal(s.seqConflicts, 1);
    assert.equal(s.violations.reordered, 1);
    assert.equal(s.violations['seq-conflict'], 1);
    assert.equal(s.lost, 1, 'b never applied a:3 (its seq collided)');
  });

  it('bounds stalls by two leases plus slack plus overlapping Redis outages', () => {
    const ev = world();
    sendAck(ev, 0, 'a:1'); // ack at 1
    recv(ev, 2000, 'a', 'a:1', 1); // 1999 ms: within 2 x 1000 + 500
    recv(ev, 2000, 'b', 'a:1', 1);
    sendAck(ev, 3000, 'a:2'); // ack at 3001
    recv(ev, 6000, 'a', 'a:2', 2); // 2999 ms: too long...
    recv(ev, 6000, 'b', 'a:2', 2);
    let s = check(ev, P);
    assert.equal(s.stallViolations, 1);
    assert.equal(s.longestStallMs, 2999);
    assert.equal(s.firstFailure?.invariant, 'stall');
    ev.push({ t: 5000, e: 'outage', start: 3500, end: 4200, kind: 'redis_pause' }); // ...unless Redis was paused for 700 ms
    s = check(ev, P);
    assert.equal(s.stallViolations, 0, formatSummary(s));
  });

  it('reports messages nobody sent and processes that exited on their own', () => {
    const ev = world();
    recv(ev, 5, 'a', 'ghost:1', 1);
    ev.push({ t: 6, e: 'exit', proc: 'bc1', code: 1, signal: null, expected: false, told: null, tail: ['boom'] });
    ev.push({ t: 7, e: 'exit', proc: 'gw0.1', code: null, signal: 'SIGKILL', expected: true, told: 'SIGKILL', tail: [] });
    ev.push({ t: 8, e: 'exit', proc: 'gw1.2', code: 1, signal: null, expected: true, told: 'SIGTERM', tail: ['shutdown failed'] });
    ev.push({ t: 9, e: 'fault', kind: 'gateway_term', detail: 'gw1.2' });
    const s = check(ev, P);
    assert.equal(s.foreignMessages, 1);
    assert.deepEqual(s.unexpectedExits, [{ proc: 'bc1', code: 1, signal: null, t: 6 }]);
    assert.equal(s.violations['unclean-shutdown'], 1);
    assert.equal(s.faults.gateway_term, 1);
  });
});

describe('chaos layout and schedule', () => {
  it('spreads rooms over every shard, 2-3 members each on different gateways', () => {
    const rooms = roomNames(64, 7);
    assert.equal(new Set(rooms).size, 64);
    const perShard = new Map<number, number>();
    for (const r of rooms) perShard.set(shardOf(r, SHARDS), (perShard.get(shardOf(r, SHARDS)) ?? 0) + 1);
    assert.equal(perShard.size, SHARDS);
    for (const n of perShard.values()) assert.equal(n, 8);
    const layout = makeLayout(new Prng(7), rooms, 3, 8);
    assert.equal(layout.members.length, 24);
    for (const m of layout.members) assert.ok(m.rooms.length > 0, `${m.user} has a room`);
    for (const r of rooms) {
      const ms = layout.members.filter((m) => m.rooms.includes(r));
      assert.ok(ms.length >= 2 && ms.length <= 3, `${r} has ${ms.length} members`);
      assert.ok(new Set(ms.map((m) => m.home)).size >= 2, `${r} spans gateways`);
    }
  });

  it('is reproducible from the seed and covers every kind first', () => {
    const a = makeSchedule(new Prng(42), 12);
    const b = makeSchedule(new Prng(42), 12);
    assert.deepEqual(a, b);
    assert.notDeepEqual(a, makeSchedule(new Prng(43), 12));
    assert.equal(new Set(a.slice(0, 7).map((s) => s.kind)).size, 7);
    for (const s of a) if (s.kind === 'redis_pause') assert.ok(s.holdMs >= 1000 && s.holdMs <= 5000);
  });
});
