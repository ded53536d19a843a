/**
 * The embedded bus: one process, no Redis. Assigns per-room sequence numbers in accept order,
 * keeps a bounded history ring per room and delivers synchronously to the local gateway, so a
 * message is fanned out in the same event-loop turn it was accepted in.
 */
import { Outbound, roomMessageJson } from '../protocol';
import { injectTraceparent, SpanKind, startSpan, tracing } from '../telemetry/tracing';
import type { Bus, BusSink, PublishRequest, PublishResult } from './types';

/** Fixed-capacity ring of the most recent messages of one room. */
class HistoryRing {
  private readonly items: (Outbound | undefined)[];
  private readonly seqs: Float64Array;
  private next = 0;
  private size = 0;
  constructor(private readonly capacity: number) {
    this.items = new Array(capacity);
    this.seqs = new Float64Array(capacity);
  }
  push(seq: number, msg: Outbound): void {
    if (this.capacity === 0) return;
    this.items[this.next] = msg;
    this.seqs[this.next] = seq;
    this.next = (this.next + 1) % this.capacity;
    if (this.size < this.capacity) this.size++;
  }
  /** Messages with seq > since, at most `limit` (the newest ones), oldest first. */
  since(since: number, limit: number): Outbound[] {
    const out: Outbound[] = [];
    const start = (this.next - this.size + this.capacity) % Math.max(this.capacity, 1);
    for (let i = 0; i < this.size; i++) {
      const at = (start + i) % this.capacity;
      if (this.seqs[at] > since) out.push(this.items[at]!);
    }
    return out.length > limit ? out.slice(out.length - limit) : out;
  }
}

interface RoomState {
  seq: number;
  history: HistoryRing | null;
  /** user -> number of gateways (always 1 here) with a connection of the user in the room */
  members: Set<string>;
}

export interface MemoryBusOptions {
  /** Messages kept per room. @default 100 */
  historySize?: number;
  /** Rooms with no members whose history is kept; the least recently left are forgotten. @default 10000 */
  maxIdleRooms?: number;
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
  private readonly maxIdleRooms: number;
  private mids = 0;

  constructor(opts: MemoryBusOptions = {}) {
    this.historySize = opts.historySize ?? 100;
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
      r = { seq: 0, history: null, members: new Set() };
      this.rooms.set(name, r);
    }
    return r;
  }

  publish(req: PublishRequest): PublishResult {
    const r = this.room(req.room);
    const seq = ++r.seq;
    const msg = new Outbound(roomMessageJson(req.room, req.from, req.dataJson, seq, req.ts));
    if (this.historySize > 0) (r.history ??= new HistoryRing(this.historySize)).push(seq, msg);
    if (r.members.size === 0 && seq === 1) this.markIdle(req.room);
    if (req.trace !== undefined && tracing.enabled) {
      // The embedded stand-in for the broadcast tier's routing step, so traces look the same.
      const route = startSpan('broadcast route', req.trace, SpanKind.CONSUMER, { 'messaging.destination.name': req.room });
      this.sink!.deliverRoom(req.room, msg, req.ts, String(++this.mids), injectTraceparent(route));
      route.end();
    } else {
      this.sink!.deliverRoom(req.room, msg, req.ts, String(++this.mids));
    }
    return { seq };
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
      this.rooms.delete(room);
      return;
    }
    this.markIdle(room);
  }

  private markIdle(room: string): void {
    this.idle.delete(room);
    this.idle.add(room);
    if (this.idle.size > this.maxIdleRooms) {
      const oldest = this.idle.values().next().value as string;
      this.idle.delete(oldest);
      this.rooms.delete(oldest);
    }
  }

  userOnline(user: string): void {
    this.online.add(user);
  }

  userOffline(user: string): void {
    this.online.delete(user);
  }

  direct(to: string, msg: Outbound): boolean {
    if (!this.online.has(to)) return false;
    return this.sink!.deliverUser(to, msg) > 0;
  }

  presence(room: string): string[] {
    const r = this.rooms.get(room);
    return r === undefined ? [] : [...r.members];
  }

  history(room: string, since: number | undefined, limit: number): Outbound[] {
    const r = this.rooms.get(room);
    if (r === undefined || r.history === null) return [];
    return r.history.since(since ?? 0, limit);
  }

  lastSeq(room: string): number {
    return this.rooms.get(room)?.seq ?? 0;
  }
}
