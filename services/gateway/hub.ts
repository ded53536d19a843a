/**
 * Local fan-out: which connections of this gateway are in which room, which belong to which
 * user, and the once-per-turn flush that turns queued frames into one write per socket.
 *
 * A room message arrives encoded once (an Outbound); the hub queues the same bytes on every
 * member. Connections that got something are put on a dirty list, and one setImmediate per
 * event-loop turn writes each dirty socket once (its queued frames corked into one writev),
 * which is what makes fan-out cheap: the cost is per socket per turn, not per message.
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
  /** Write everything queued (called by the flush). */
  flush(): void;
  /** Taking input and sending (not closing). */
  readonly live: boolean;
  /** When the member's client last sent a frame (ms since the epoch). */
  readonly lastSeen: number;
  /** Close with a `reconnect` push giving the reason. */
  disconnect(reason: DisconnectReason): void;
}

interface LocalRoom {
  readonly members: Set<HubMember>;
  /** user -> connections of that user in the room */
  readonly users: Map<string, number>;
}

export class Hub {
  private readonly rooms = new Map<string, LocalRoom>();
  private readonly users = new Map<string, Set<HubMember>>();
  private dirty: HubMember[] = [];
  private flushScheduled = false;
  /** Accept timestamps and recipient counts of messages fanned out this turn, for latency. */
  private latTs: number[] = [];
  private latN: number[] = [];
  /** `gateway deliver` spans of sampled messages fanned out this turn. */
  private spans: Span[] = [];

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
      this.counters.delivered += n;
    }
    // Sampled messages only: the span ends when the flush has written the sockets.
    if (trace !== undefined && tracing.enabled) {
      this.spans.push(startSpan('gateway deliver', trace, SpanKind.CONSUMER, { 'messaging.destination.name': room, 'switchboard.recipients': n }));
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
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(flushHub, this);
    }
  }

  /** Write every dirty connection once, then record delivery latency for this turn. */
  flushNow(): void {
    this.flushScheduled = false;
    const list = this.dirty;
    this.dirty = [];
    for (let i = 0; i < list.length; i++) list[i].flush();
    const ts = this.latTs;
    if (ts.length > 0) {
      // Accept times are sub-millisecond wall time (preciseNow), so now must be as well.
      const now = preciseNow();
      const ns = this.latN;
      const h = this.counters.deliveryLatency;
      for (let i = 0; i < ts.length; i++) h.observeMany(Math.max(0, now - ts[i]) / 1000, ns[i]);
      ts.length = 0;
      ns.length = 0;
    }
    if (this.spans.length > 0) {
      for (const span of this.spans) span.end();
      this.spans.length = 0;
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
