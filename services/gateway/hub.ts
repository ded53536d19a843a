/**
 * Local fan-out: which connections of this gateway are in which room, which belong to which
 * user, and the once-per-turn flush that turns queued frames into one write per socket.
 *
 * A room message arrives encoded once (an Outbound); the hub queues the same bytes on every
 * member. Connections that got something are put on a dirty list, and one setImmediate per
 * event-loop turn writes each dirty socket once (its queued frames corked into one writev),
 * which is what makes fan-out cheap: the cost is per socket per turn, not per message.
 *
 * A turn writes about FLUSH_TURN_BYTES at most (inline flushes included, see OutboundQueue):
 * the dirty connections past it wait, in order, for the next turn, so that a megabyte message
 * to hundreds of members (300 MB handed to sockets) no longer holds the event loop for a second.
 * A connection that yielded its turn after a burst of frames (Inbound, TURN_BYTES) is read
 * again only once the flush has caught up (`waitForFlush`): the sender of the fan-out is slowed
 * down, not its readers cut off as slow consumers.
 */
import type { Bus, MaybePromise } from '../bus';
import type { DisconnectReason, Outbound } from '../protocol';
import { preciseNow } from '../telemetry/clock';
import { DropReason, type Counters } from '../telemetry/counters';
import { SpanKind, startSpan, tracing, type Span } from '../telemetry/tracing';

/** The part of a connection the hub needs. */
export interface HubMember {
  readonly user: string;
  /** Queue a frame; returns false when the connection dropped it (closed or slow). */
  enqueue(msg: Outbound): boolean;
  /** A message of `room` was dropped for this member (it may have to be told the room's position). */
  missedRoom(room: string): void;
  /** Bytes queued and not written yet (past the turn's budget, small queues are still written). */
  readonly queuedBytes: number;
  /** Write everything queued (called by the flush). */
  flush(): void;
  /** Taking input and sending (not closing). */
  readonly live: boolean;
  /** When the member's client last sent a frame (ms since the epoch). */
  readonly lastSeen: number;
  /** Close with a `reconnect` push giving the reason. */
  disconnect(reason: DisconnectReason): void;
}

/**
 * Bytes the flush hands to sockets in one event-loop turn before the remaining dirty connections
 * wait for the next turn (docs/operations.md, "Limits and abuse"). Copying 8 MiB into loopback
 * socket buffers takes a few milliseconds on the 2-core test machine; ordinary fan-out writes
 * well under a megabyte per turn (the fanout load test at 20,000 messages a second to rooms of
 * 50: 1.5 MiB in its busiest turn), so it never meets the budget. One connection's queue is
 * written whole, so a turn may go past it by one connection's queue (MAX_OUTBOUND_BYTES, or one
 * frame).
 */
export const FLUSH_TURN_BYTES = 8 * 1024 * 1024;

/**
 * Past FLUSH_TURN_BYTES a queue below this (the inline flush threshold: a pong, a few chat lines)
 * is still written in the turn, up to another FLUSH_TURN_BYTES, so that ordinary clients' replies
 * and messages do not wait behind hundreds of megabytes carried over.
 */
const SMALL_QUEUE_BYTES = 32 * 1024;

/** Something waiting for the flush to catch up (an Inbound that yielded its turn). */
export interface FlushWaiter {
  flushCaughtUp(): void;
}

interface LocalRoom {
  readonly members: Set<HubMember>;
  /** user -> connections of that user in the room */
  readonly users: Map<string, number>;
}

export class Hub {
  private readonly rooms = new Map<string, LocalRoom>();
  private readonly users = new Map<string, Set<HubMember>>();
  /** Dirty connections in the order they became dirty, and each entry's number (dirtyPushed then). */
  private dirty: HubMember[] = [];
  private dirtyIdx: number[] = [];
  /** Dirty-list entries ever pushed: a message is written once no entry numbered below its mark waits. */
  private dirtyPushed = 0;
  private flushScheduled = false;
  /**
   * Bytes the queues may still hand to their sockets in this turn (OutboundQueue charges every
   * write, inline ones too; flushNow gives it FLUSH_TURN_BYTES again).
   */
  turnLeft = FLUSH_TURN_BYTES;
  /** The last flush carried dirty connections over to the next turn. */
  flushBehind = false;
  private flushWaiters: FlushWaiter[] = [];
  /**
   * Accept timestamps, recipient counts and dirty marks of messages fanned out and not yet
   * written to every recipient (a flush may carry recipients over), for latency; from latHead.
   */
  private latTs: number[] = [];
  private latN: number[] = [];
  private latMark: number[] = [];
  private latHead = 0;
  /** `gateway deliver` spans of sampled messages, ended once their recipients are written. */
  private spans: Span[] = [];
  private spanMark: number[] = [];

  constructor(
    private readonly bus: Bus,
    private readonly counters: Counters,
  ) {}

  get roomCount(): number {
    return this.rooms.size;
  }

  localMembers(room: string): number {
    return this.rooms.get(room)?.members.size ?? 0;
  }

  /** Add a member; tells the bus when the user's first connection enters the room here. */
  join(room: string, member: HubMember): MaybePromise<void> {
    let r = this.rooms.get(room);
    if (r === undefined) {
      r = { members: new Set(), users: new Map() };
      this.rooms.set(room, r);
    }
    if (r.members.has(member)) return;
    r.members.add(member);
    const n = r.users.get(member.user) ?? 0;
    r.users.set(member.user, n + 1);
    if (n === 0) return this.bus.join(room, member.user);
  }

  leave(room: string, member: HubMember): MaybePromise<void> {
    const r = this.rooms.get(room);
    if (r === undefined || !r.members.delete(member)) return;
    const n = (r.users.get(member.user) ?? 1) - 1;
    if (n > 0) {
      r.users.set(member.user, n);
      return;
    }
    r.users.delete(member.user);
    const empty = r.members.size === 0;
    if (empty) this.rooms.delete(room);
    const left = this.bus.leave(room, member.user);
    const emptied = empty && this.bus.roomEmpty !== undefined ? this.bus.roomEmpty(room) : undefined;
    if (left instanceof Promise || emptied instanceof Promise) return Promise.all([left, emptied]).then(noop);
  }

  /** Register a connection under its user; tells the bus on the user's first connection. */
  addUser(member: HubMember): MaybePromise<void> {
    let set = this.users.get(member.user);
    if (set === undefined) {
      set = new Set();
      this.users.set(member.user, set);
    }
    set.add(member);
    if (set.size === 1) return this.bus.userOnline(member.user);
  }

  removeUser(member: HubMember): MaybePromise<void> {
    const set = this.users.get(member.user);
    if (set === undefined || !set.delete(member)) return;
    if (set.size > 0) return;
    this.users.delete(member.user);
    return this.bus.userOffline(member.user);
  }

  registrations(): { rooms: Iterable<readonly [string, Iterable<string>]>; users: Iterable<string> } {
    return { rooms: roomUsers(this.rooms), users: this.users.keys() };
  }

  usersIn(room: string): Iterable<string> {
    return this.rooms.get(room)?.users.keys() ?? NO_USERS;
  }

  duplicate(): void {
    this.counters.dropped[DropReason.Duplicate]++;
  }

  connectionsOf(user: string): ReadonlySet<HubMember> | undefined {
    return this.users.get(user);
  }

  /** Fan a message out to the local members of a room: same bytes for everyone. */
  deliverRoom(room: string, msg: Outbound, ts: number, trace?: string): number {
    const r = this.rooms.get(room);
    if (r === undefined) return 0;
    let n = 0;
    for (const m of r.members) {
      if (m.enqueue(msg)) n++;
      else m.missedRoom(room);
    }
    if (n > 0) {
      this.latTs.push(ts);
      this.latN.push(n);
      this.latMark.push(this.dirtyPushed);
      this.counters.delivered += n;
    }
    // Sampled messages only: the span ends when the flush has written the sockets.
    if (trace !== undefined && tracing.enabled) {
      this.spans.push(startSpan('gateway deliver', trace, SpanKind.CONSUMER, { 'messaging.destination.name': room, 'switchboard.recipients': n }));
      this.spanMark.push(this.dirtyPushed);
    }
    return n;
  }

  /** A notice for the local members of a room (not a room message: no delivery counted). */
  pushRoom(room: string, msg: Outbound): number {
    const r = this.rooms.get(room);
    if (r === undefined) return 0;
    let n = 0;
    for (const m of r.members) if (m.enqueue(msg)) n++;
    return n;
  }

  deliverUser(user: string, msg: Outbound): number {
    const set = this.users.get(user);
    if (set === undefined) return 0;
    let n = 0;
    for (const m of set) if (m.enqueue(msg)) n++;
    this.counters.delivered += n;
    return n;
  }

  /** Called by a connection when its queue goes from empty to non-empty. */
  markDirty(member: HubMember): void {
    this.dirty.push(member);
    this.dirtyIdx.push(this.dirtyPushed++);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(flushHub, this);
    }
  }

  /** Call `waiter.flushCaughtUp()` once the flush has written what it carried over (flushBehind). */
  waitForFlush(waiter: FlushWaiter): void {
    this.flushWaiters.push(waiter);
  }

  /**
   * Write the dirty connections, in order, until FLUSH_TURN_BYTES have been handed to sockets in
   * this turn; past it only small queues (SMALL_QUEUE_BYTES: a pong, a few chat lines) are
   * written, up to FLUSH_TURN_BYTES more, and the rest wait, in order, for the next turn (other
   * clients are read in between). Then record the delivery latency of the messages now written
   * to every recipient, and let the senders that waited for the flush be read again.
   */
  flushNow(): void {
    this.flushScheduled = false;
    this.turnLeft = FLUSH_TURN_BYTES;
    const list = this.dirty;
    const idx = this.dirtyIdx;
    let i = 0;
    // The common case: everything fits. Connections marked dirty by these flushes (none,
    // normally) join the end of the list and are written too.
    while (i < list.length && this.turnLeft > 0) list[i++].flush();
    let kept = 0;
    const over = i < list.length;
    if (over) {
      // Over the budget: what is left keeps its order at the front of the list, except small
      // queues, which are written now (their connections do not wait behind megabytes).
      kept = 0;
      for (; i < list.length; i++) {
        const m = list[i];
        if (m.queuedBytes < SMALL_QUEUE_BYTES && this.turnLeft > -FLUSH_TURN_BYTES) m.flush();
        else {
          list[kept] = m;
          idx[kept++] = idx[i];
        }
      }
    }
    const behind = over && kept > 0;
    // Every entry numbered below `written` has been written: the carried-over ones kept their order.
    const written = behind ? idx[0] : this.dirtyPushed;
    list.length = kept;
    idx.length = kept;
    this.flushBehind = behind;
    if (behind && !this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(flushHub, this);
    }
    const ts = this.latTs;
    if (ts.length > this.latHead) {
      // Accept times are sub-millisecond wall time (preciseNow), so now must be as well.
      const now = preciseNow();
      const ns = this.latN;
      const marks = this.latMark;
      const h = this.counters.deliveryLatency;
      let k = this.latHead;
      // A message is written once every connection marked dirty before it was fanned out is.
      for (; k < ts.length && marks[k] <= written; k++) h.observeMany(Math.max(0, now - ts[k]) / 1000, ns[k]);
      if (k === ts.length) {
        ts.length = 0;
        ns.length = 0;
        marks.length = 0;
        k = 0;
      } else if (k >= 1024 && k * 2 >= ts.length) {
        ts.splice(0, k);
        ns.splice(0, k);
        marks.splice(0, k);
        k = 0;
      }
      this.latHead = k;
    }
    if (this.spans.length > 0) {
      const spans = this.spans;
      const marks = this.spanMark;
      let k = 0;
      for (; k < spans.length && marks[k] <= written; k++) spans[k].end();
      spans.splice(0, k);
      marks.splice(0, k);
    }
    if (!behind && this.flushWaiters.length > 0) {
      const waiters = this.flushWaiters;
      this.flushWaiters = [];
      for (let w = 0; w < waiters.length; w++) waiters[w].flushCaughtUp();
    }
  }
}

function noop(): void {}

const NO_USERS: readonly string[] = [];

function* roomUsers(rooms: Map<string, LocalRoom>): Iterable<readonly [string, Iterable<string>]> {
  for (const [room, r] of rooms) yield [room, r.users.keys()] as const;
}

function flushHub(hub: Hub): void {
  hub.flushNow();
}
