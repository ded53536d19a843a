/**
 * The embedded bus: one process, no Redis. Assigns per-room sequence numbers in accept order,
 * keeps a bounded history per room and delivers synchronously to the local gateway, so a message
 * is fanned out in the same event-loop turn it was accepted in.
 *
 * History is the one thing a client can make this process hold after it has gone, so it has a
 * budget in messages per room, bytes per room and bytes in total (docs/operations.md, "Limits and
 * abuse"). Over the total, the history of the rooms idle longest goes first, then the oldest
 * messages of the room being written: a flood pays with its own history, not other rooms'.
 */
import { Outbound, roomMessageJson } from '../protocol';
import { injectTraceparent, SpanKind, startSpan, tracing } from '../telemetry/tracing';
import { newEpoch } from './epoch';
import type { Bus, BusSink, HistoryPage, HistoryQuery, PublishRequest, PublishResult, RoomPosition } from './types';

/**
 * What one kept message costs the process, estimated: its JSON string (two bytes a character at
 * the most) and its ring slots. History keeps the JSON text only, never the frames a message was
 * encoded to: those are small slices of Node's shared 8 KiB buffer pool, and one kept slice holds
 * its whole slab, so kept frames of small messages interleaved with other output held about
 * fifteen times their size (1 GB of buffers for a 64 MiB HISTORY_TOTAL_BYTES).
 */
function costOf(json: string): number {
  return 2 * json.length + 64;
}

/** The kept messages of one room, oldest first, bounded by count and bytes. */
class RoomHistory {
  /** The messages' JSON texts. */
  private readonly items: string[] = [];
  private readonly seqs: number[] = [];
  private head = 0;
  bytes = 0;

  get size(): number {
    return this.items.length - this.head;
  }

  get oldestSeq(): number {
    return this.size === 0 ? 0 : this.seqs[this.head];
  }

  push(seq: number, json: string): void {
    this.items.push(json);
    this.seqs.push(seq);
    this.bytes += costOf(json);
  }

  /** Drop the oldest message; returns the bytes freed. */
  shift(): number {
    const freed = costOf(this.items[this.head]);
    (this.items as (string | undefined)[])[this.head] = undefined;
    this.head++;
    this.bytes -= freed;
    // Compact once the dead prefix is as large as the live part: amortised O(1) per message.
    if (this.head >= 64 && this.head * 2 >= this.items.length) {
      this.items.splice(0, this.head);
      this.seqs.splice(0, this.head);
      this.head = 0;
    }
    return freed;
  }

  /** Index of the first kept message with seq > since. */
  private after(since: number): number {
    let lo = this.head;
    let hi = this.items.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.seqs[mid] <= since) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Up to `limit` messages after `since` (oldest first), or the newest `limit` without it. */
  page(since: number | undefined, limit: number): { messages: string[]; more: boolean } {
    const end = this.items.length;
    const from = since === undefined ? Math.max(this.head, end - limit) : this.after(since);
    const to = Math.min(end, from + limit);
    return { messages: this.items.slice(from, to), more: to < end };
  }
}

interface RoomState {
  seq: number;
  epoch: string;
  history: RoomHistory | null;
  /** users with a connection in the room */
  members: Set<string>;
}

export interface MemoryBusOptions {
  /** Messages kept per room. @default 100 */
  historySize?: number;
  /** Estimated bytes of history kept per room. @default 4194304 (4 MiB) */
  historyRoomBytes?: number;
  /** Estimated bytes of history kept over all rooms. @default 67108864 (64 MiB) */
  historyTotalBytes?: number;
  /** Rooms with no members whose history is kept; the least recently left are forgotten. @default 10000 */
  maxIdleRooms?: number;
}

/** History accounting, for /stats and metrics. */
export interface HistoryUsage {
  bytes: number;
  rooms: number;
  /** Messages dropped from history because a byte budget was reached. */
  evicted: number;
}

export class MemoryBus implements Bus {
  readonly kind = 'memory';
  ready = false;
  private sink: BusSink | null = null;
  private readonly rooms = new Map<string, RoomState>();
  private readonly online = new Set<string>();
  /** Rooms without members, in the order they became empty (a Set keeps insertion order). */
  private readonly idle = new Set<string>();
  private readonly historySize: number;
  private readonly roomBytes: number;
  private readonly totalBytes: number;
  private readonly maxIdleRooms: number;
  readonly usage: HistoryUsage = { bytes: 0, rooms: 0, evicted: 0 };

  constructor(opts: MemoryBusOptions = {}) {
    this.historySize = opts.historySize ?? 100;
    this.roomBytes = opts.historyRoomBytes ?? 4 * 1024 * 1024;
    this.totalBytes = opts.historyTotalBytes ?? 64 * 1024 * 1024;
    this.maxIdleRooms = opts.maxIdleRooms ?? 10_000;
  }

  async start(sink: BusSink): Promise<void> {
    this.sink = sink;
    this.ready = true;
  }

  async stop(): Promise<void> {
    this.ready = false;
  }

  private room(name: string): RoomState {
    let r = this.rooms.get(name);
    if (r === undefined) {
      r = { seq: 0, epoch: newEpoch(), history: null, members: new Set() };
      this.rooms.set(name, r);
    }
    return r;
  }

  private forget(name: string): void {
    const r = this.rooms.get(name);
    if (r === undefined) return;
    this.dropHistory(r);
    this.rooms.delete(name);
    this.idle.delete(name);
  }

  private dropHistory(r: RoomState): void {
    if (r.history === null) return;
    this.usage.bytes -= r.history.bytes;
    this.usage.rooms--;
    r.history = null;
  }

  publish(req: PublishRequest): PublishResult {
    const r = this.room(req.room);
    const seq = ++r.seq;
    const msg = new Outbound(roomMessageJson(req.room, req.from, req.dataJson, seq, r.epoch, req.ts));
    if (this.historySize > 0) this.keep(r, seq, msg.json);
    if (r.members.size === 0 && seq === 1) this.markIdle(req.room);
    if (req.trace !== undefined && tracing.enabled) {
      // The embedded stand-in for the broadcast tier's routing step, so traces look the same.
      const route = startSpan('broadcast route', req.trace, SpanKind.CONSUMER, { 'messaging.destination.name': req.room });
      this.sink!.deliverRoom(req.room, msg, req.ts, injectTraceparent(route));
      route.end();
    } else {
      this.sink!.deliverRoom(req.room, msg, req.ts);
    }
    return { seq };
  }

  /** Append to the room's history within its count and byte budgets, then the total budget. */
  private keep(r: RoomState, seq: number, json: string): void {
    let h = r.history;
    if (h === null) {
      h = r.history = new RoomHistory();
      this.usage.rooms++;
    }
    const before = h.bytes;
    h.push(seq, json);
    while (h.size > this.historySize || (h.bytes > this.roomBytes && h.size > 0)) {
      h.shift();
      if (h.size >= this.historySize) continue;
      this.usage.evicted++;
    }
    this.usage.bytes += h.bytes - before;
    if (this.usage.bytes <= this.totalBytes) return;
    // Over the total: idle rooms' history first (longest idle first), then this room's oldest.
    for (const idleName of this.idle) {
      if (this.usage.bytes <= this.totalBytes) return;
      const ir = this.rooms.get(idleName);
      if (ir === undefined || ir === r || ir.history === null) continue;
      this.usage.evicted += ir.history.size;
      this.dropHistory(ir);
    }
    while (this.usage.bytes > this.totalBytes && h.size > 0) {
      this.usage.bytes -= h.shift();
      this.usage.evicted++;
    }
  }

  join(room: string, user: string): void {
    this.room(room).members.add(user);
    this.idle.delete(room);
  }

  leave(room: string, user: string): void {
    const r = this.rooms.get(room);
    if (r === undefined) return;
    r.members.delete(user);
    if (r.members.size > 0) return;
    // Forget rooms nobody is in and nothing was said in, and bound the empty rooms whose history
    // is kept for late readers, so random room names cannot pile up.
    if (r.seq === 0) {
      this.forget(room);
      return;
    }
    this.markIdle(room);
  }

  private markIdle(room: string): void {
    this.idle.delete(room);
    this.idle.add(room);
    if (this.idle.size > this.maxIdleRooms) this.forget(this.idle.values().next().value as string);
  }

  userOnline(user: string): void {
    this.online.add(user);
  }

  userOffline(user: string): void {
    this.online.delete(user);
  }

  /**
   * True when the user has a connection, whether or not each one took the message: a connection
   * that drops it (SLOW_CONSUMER_POLICY=drop) is still connected, and the sender was answered
   * `user_offline` for a user presence listed (cluster mode answered `ok`).
   */
  direct(to: string, msg: Outbound): boolean {
    if (!this.online.has(to)) return false;
    this.sink!.deliverUser(to, msg);
    return true;
  }

  presence(room: string): string[] {
    const r = this.rooms.get(room);
    return r === undefined ? [] : [...r.members];
  }

  history(room: string, q: HistoryQuery): HistoryPage {
    const r = this.rooms.get(room);
    if (r === undefined) {
      // Nothing kept: a room never used, or forgotten. A client that knew an epoch lost it.
      return { seq: 0, epoch: '', messages: [], more: false, recovered: q.epoch === undefined && (q.since ?? 0) === 0 };
    }
    const sameEpoch = q.epoch === undefined || q.epoch === r.epoch;
    const since = sameEpoch ? q.since : 0;
    const h = r.history;
    const { messages, more } = h === null ? { messages: [], more: false } : h.page(since, q.limit);
    // Recovered when nothing after `since` was trimmed: the oldest kept message follows it
    // directly, or nothing was said since.
    const oldest = h === null || h.size === 0 ? r.seq + 1 : h.oldestSeq;
    const recovered = sameEpoch && (since === undefined || oldest <= since + 1);
    return { seq: r.seq, epoch: r.epoch, messages, more, recovered };
  }

  position(room: string): RoomPosition {
    // Joining creates the room, so its epoch exists from the first join on.
    const r = this.room(room);
    return { seq: r.seq, epoch: r.epoch };
  }
}
