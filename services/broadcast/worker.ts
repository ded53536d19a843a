/**
 * The broadcast tier: consumes the ingress shards through the `broadcast` consumer group and
 * routes each room message to the egress stream of every gateway with members in the room.
 *
 * Ownership (docs/cluster.md, "Shard ownership"): one worker owns a shard at a time (lease
 * `sb:lease:{N}` with expiry), which keeps each room's messages in order. Live workers heartbeat
 * into `sb:workers` on Redis' clock; every worker sorts the live ids the same way and shard s
 * belongs to the worker at index s mod n, so all workers compute the same assignment whatever
 * their heartbeat timing (ordering by heartbeat time made every worker find itself last and
 * claim the same shards, leaving the others without an owner). A handover is stop, release,
 * reclaim: the old owner finishes its batch and releases the lease; the new owner takes it and
 * first reclaims the entries its predecessor read but never acknowledged (XAUTOCLAIM), so a
 * worker killed mid-batch loses nothing. An owner processes a batch only while its lease is
 * surely still its own (renewed less than 80% of a lease ago), so a worker cut off from Redis
 * stops before another one can take over.
 *
 * Per batch: one APPLY script per room of the batch (sequence numbers and history of all its
 * entries, and the room's routing set), then the batch's messages, already encoded as the frames
 * clients get, go to the EgressWriter, which writes one XADD per gateway for everything routed to
 * it meanwhile by any shard (egress.ts). Only once they are in Redis is the batch acknowledged, and
 * the XACK and the XTRIM of the processed prefix travel with the shard's next XREADGROUP, in one
 * write on the shard's own connection. So a batch costs three round trips (read, apply, egress)
 * and a few commands per room and gateway, not per message: per-message commands were what
 * saturated the worker and Redis (docs/performance.md, "Cluster").
 */
import { Keys, GROUP } from '../bus/keys';
import { createRedis, isReady, type RedisClient, type StreamEntry } from '../bus/redis-conn';
import { EgressMessage, messageId, parseIngress, type IngressMessage } from '../bus/wire';
import { aliveGateways, removeGateway } from '../bus/redis';
import { EgressWriter } from './egress';
import { ShardLoop } from './shard-loop';
import type { Logger } from '../telemetry/log';
import { injectTraceparent, SpanKind, startSpan, tracing, type Span } from '../telemetry/tracing';
import { newEpoch } from '../bus/epoch';
import { RedisHealth } from '../bus/redis-conn';
import { ROOM_MESSAGE_EPOCH, roomMessageEnd, roomMessageHead } from '../protocol';
import { APPLY_LUA, HEARTBEAT_LUA, RELEASE_LUA, RENEW_LUA } from './scripts';

export interface BroadcastOptions {
  url: string;
  cluster: boolean;
  workerId: string;
  shards: number;
  leaseMs: number;
  batch: number;
  egressMaxLen: number;
  historySize: number;
  /** Seconds a room's position and history live after its last message (HISTORY_TTL_SEC; 0: for ever). @default 0 */
  historyTtlSec?: number;
  /** Reply bound of every command (REDIS_TIMEOUT_MS). @default 2000 */
  timeoutMs?: number;
  log: Logger;
}

/** Counters for /stats and metrics. */
export class BroadcastCounters {
  entries = 0;
  routed = 0;
  reclaimed = 0;
  failures = 0;
  batches = 0;
  /**
   * Rooms started again in a new epoch because Redis held a lower seq in the epoch this worker had
   * seen (it came back behind and lost writes this worker made; apply.lua).
   */
  epochRestarts = 0;
}

type ApplyClient = RedisClient & {
  /**
   * See apply.lua: maxlen, epoch, the JSON before the epoch, ttl, the room's epoch and seq as this
   * worker last saw them ('' and 0: not seen), then id, head, end per entry.
   */
  sbApply(seqKey: string, histKey: string, roomKey: string, maxlen: number, epoch: string, epochJson: string, ttlSec: number, seenEpoch: string, seenSeq: number, ...idHeadEnd: string[]): Promise<ApplyReply>;
  sbHeartbeat(workers: string, id: string, leaseMs: number): Promise<string[]>;
  sbRenew(lease: string, owner: string, ttl: number): Promise<number>;
  sbRelease(lease: string, owner: string): Promise<number>;
};

function defineScripts(client: RedisClient): ApplyClient {
  client.defineCommand('sbApply', { numberOfKeys: 3, lua: APPLY_LUA });
  client.defineCommand('sbHeartbeat', { numberOfKeys: 1, lua: HEARTBEAT_LUA });
  client.defineCommand('sbRenew', { numberOfKeys: 1, lua: RENEW_LUA });
  client.defineCommand('sbRelease', { numberOfKeys: 1, lua: RELEASE_LUA });
  return client as ApplyClient;
}

/**
 * What apply.lua returns: the room's epoch, its routing set, 1 if the room started again in a new
 * epoch because Redis was behind what this worker had seen (else 0), then seq and stored JSON (or
 * null) per entry.
 */
type ApplyReply = [string, string[], number, ...(number | string | null)[]];

/** One ingress entry of a batch. */
interface Parsed {
  id: string;
  m: IngressMessage;
  /** The message JSON before its seq, and after its epoch (outbound.ts's template in pieces). */
  head: string;
  end: string;
}

/** The room's epoch and seq as apply.lua last returned them to this worker. */
interface Seen {
  epoch: string;
  seq: number;
}

/**
 * How many rooms' last (epoch, seq) a worker remembers to find Redis rolled back (apply.lua); the
 * oldest used is forgotten first. About 100 bytes a room.
 */
export const SEEN_ROOMS = 100_000;

/** The entries of one room in a batch and the APPLY arguments. */
interface RoomBatch {
  room: string;
  entries: Parsed[];
  args: string[];
}

export class BroadcastWorker {
  readonly cmd: ApplyClient;
  readonly counters = new BroadcastCounters();
  private readonly loops = new Map<number, ShardLoop>();
  private timer: NodeJS.Timeout | null = null;
  private ticking = false;
  private stopped = false;

  private readonly health: RedisHealth;
  /** Egress writes of every shard loop, one XADD per gateway per flush, on their own connection. */
  readonly egress: EgressWriter;
  readonly egressConn: RedisClient;
  /** The live workers in the order every worker agrees on, as of the last heartbeat. */
  live: string[] = [];
  /**
   * Per room this worker sequenced, the epoch and seq apply.lua last returned (at most
   * SEEN_ROOMS, the least recently used forgotten first). apply.lua compares them with what Redis
   * holds: the same epoch with a lower seq means Redis came back behind (a snapshot, an AOF
   * fsynced every second, a replica promoted early) and lost writes this worker made, and the room
   * starts again in a new epoch rather than give new messages the seqs members already had.
   */
  private readonly seen = new Map<string, Seen>();

  constructor(readonly opts: BroadcastOptions) {
    const timeout = opts.timeoutMs ?? 2000;
    this.cmd = defineScripts(createRedis({ url: opts.url, cluster: opts.cluster, name: `sb-bc-${opts.workerId}`, log: opts.log, commandTimeoutMs: timeout }));
    this.health = new RedisHealth(this.cmd, timeout);
    // Its own connection: a flush waits only for the previous flush, never behind apply scripts.
    this.egressConn = createRedis({ url: opts.url, cluster: opts.cluster, name: `sb-bc-${opts.workerId}-egress`, log: opts.log, commandTimeoutMs: timeout });
    this.egress = new EgressWriter(this.egressConn, opts.egressMaxLen, opts.cluster);
  }

  get ready(): boolean {
    // The egress connection too: without it the shard loops wait, and nothing is routed.
    return !this.stopped && this.health.healthy && isReady(this.egressConn);
  }

  get ownedShards(): number[] {
    return [...this.loops.keys()].sort((a, b) => a - b);
  }

  start(): void {
    this.timer = setInterval(() => void this.tick(), Math.max(50, Math.floor(this.opts.leaseMs / 3)));
    this.timer.unref();
    this.health.start();
    void this.tick();
  }

  /** Stop consuming, release leases (so others take over at once), leave the worker set. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== null) clearInterval(this.timer);
    this.health.stop();
    await Promise.all([...this.loops.values()].map((l) => l.stop()));
    if (isReady(this.cmd)) {
      try {
        await Promise.all([
          ...[...this.loops.keys()].map((s) => this.cmd.sbRelease(Keys.lease(s), this.opts.workerId)),
          this.cmd.zrem(Keys.workers, this.opts.workerId),
        ]);
      } catch {
        // Redis gone: the leases expire by themselves.
      }
    }
    this.loops.clear();
    this.cmd.disconnect();
    this.egressConn.disconnect();
  }

  /** Heartbeat, rebalance, renew or acquire leases, clean up dead gateways. */
  async tick(): Promise<void> {
    if (this.ticking || this.stopped || !isReady(this.cmd)) return;
    this.ticking = true;
    const { workerId, leaseMs, shards } = this.opts;
    try {
      // Plain code-unit order: the same on every worker, unlike localeCompare.
      const live = (await this.cmd.sbHeartbeat(Keys.workers, workerId, leaseMs)).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
      this.live = live;
      const index = live.indexOf(workerId);
      // Release first, then acquire: a shard moving between two workers is free as early as possible.
      for (let s = 0; s < shards; s++) {
        const loop = this.loops.get(s);
        if (loop === undefined || this.stopped) continue;
        const sent = Date.now();
        const renewed = await this.cmd.sbRenew(Keys.lease(s), workerId, leaseMs);
        if (renewed === 1 && assigned(s, live, index)) {
          loop.validUntil = sent + Math.floor(leaseMs * 0.8);
          continue;
        }
        this.loops.delete(s);
        await loop.stop();
        if (renewed === 1) await this.cmd.sbRelease(Keys.lease(s), workerId);
        this.opts.log.info(renewed === 1 ? 'released shard' : 'lost shard lease', { shard: s, live: live.length });
      }
      for (let s = 0; s < shards; s++) {
        if (this.loops.has(s) || this.stopped || !assigned(s, live, index)) continue;
        const sent = Date.now();
        const got = await this.cmd.set(Keys.lease(s), workerId, 'PX', leaseMs, 'NX');
        if (got === 'OK') {
          const loop = new ShardLoop(s, this);
          loop.validUntil = sent + Math.floor(leaseMs * 0.8);
          this.loops.set(s, loop);
          this.opts.log.info('acquired shard', { shard: s, live: live.length });
        }
      }
      if (this.loops.has(0)) await this.janitor();
    } catch (err) {
      this.opts.log.warn('broadcast tick failed', { err: (err as Error).message });
    } finally {
      this.ticking = false;
    }
  }

  /** Remove gateways whose heartbeat expired from routing, presence and the user map. */
  private async janitor(): Promise<void> {
    const gws = await this.cmd.smembers(Keys.gateways);
    const alive = new Set(await aliveGateways(this.cmd, gws));
    for (const gw of gws) {
      if (alive.has(gw)) continue;
      await removeGateway(this.cmd, gw);
      this.opts.log.info('removed dead gateway', { gateway: gw });
    }
  }

  /**
   * Route one batch of ingress entries: resolves once every message is in the egress stream of
   * every gateway routed to (the caller acknowledges the batch only then), rejects otherwise.
   */
  async process(key: string, entries: StreamEntry[]): Promise<void> {
    if (entries.length === 0) return;
    const { historySize } = this.opts;
    const ttl = this.opts.historyTtlSec ?? 0;
    const cmd = this.cmd;
    // Group the batch by room, keeping batch order within a room (the stream's order).
    const byRoom = new Map<string, RoomBatch>();
    for (let i = 0; i < entries.length; i++) {
      const [id, flat] = entries[i];
      const m = parseIngress(flat);
      if (m === null) continue;
      const room = m.room;
      let rb = byRoom.get(room);
      if (rb === undefined) {
        rb = { room, entries: [], args: [] };
        byRoom.set(room, rb);
      }
      const e: Parsed = { id, m, head: roomMessageHead(room, m.from, m.dataJson), end: roomMessageEnd(m.ts) };
      rb.entries.push(e);
      rb.args.push(id, e.head, e.end);
    }
    // Used only by rooms that have no epoch yet (new, or Redis lost them).
    const epoch = newEpoch();
    const rooms = [...byRoom.values()];
    const seen = this.seen;
    const prevs: (Seen | undefined)[] = new Array(rooms.length);
    const replies = await Promise.all(
      rooms.map((rb, r) => {
        const s = (prevs[r] = seen.get(rb.room));
        return cmd.sbApply(Keys.seq(rb.room), Keys.history(rb.room), Keys.room(rb.room), historySize, epoch, ROOM_MESSAGE_EPOCH, ttl, s?.epoch ?? '', s?.seq ?? 0, ...rb.args);
      }),
    );
    let restarted: RoomBatch | null = null;
    for (let r = 0; r < rooms.length; r++) {
      const reply = replies[r];
      if (reply[2] === 1) {
        this.counters.epochRestarts++;
        restarted = rooms[r];
      }
      this.remember(rooms[r].room, prevs[r], reply);
    }
    if (restarted !== null) this.opts.log.warn('Redis came back behind: rooms start again in a new epoch', { room: restarted.room, total: this.counters.epochRestarts });
    const routed = new Set<string>();
    for (const r of replies) for (const gw of r[1]) routed.add(gw);
    await this.egress.learn(routed);
    // Per gateway, every message of the batch routed to it, in the batch's order per room.
    const out = new Map<string, EgressMessage[]>();
    let spans: Span[] | null = null;
    for (let r = 0; r < rooms.length; r++) {
      const { room, entries: list } = rooms[r];
      const [roomEpoch, gws] = replies[r];
      if (gws.length === 0) continue;
      const lists = gws.map((gw) => out.get(gw) ?? out.set(gw, []).get(gw)!);
      for (let j = 0; j < list.length; j++) {
        const e = list[j];
        const seq = Number(replies[r][3 + 2 * j]);
        if (seq === 0) continue; // a redelivery older than the kept history: nothing to send
        const stored = replies[r][4 + 2 * j] as string | null;
        const json = stored ?? e.head + seq + ROOM_MESSAGE_EPOCH + roomEpoch + e.end;
        // A sampled message: the routing span continues the publisher's trace, and the gateways'
        // deliver spans continue from it.
        let trace = e.m.trace;
        if (trace !== undefined && tracing.enabled) {
          const span = startSpan('broadcast route', trace, SpanKind.CONSUMER, { 'messaging.destination.name': room, 'switchboard.gateways': gws.length });
          (spans ??= []).push(span);
          trace = injectTraceparent(span) ?? trace;
        }
        const msg = new EgressMessage(room, messageId(key, e.id), e.m.ts, json, trace);
        for (let g = 0; g < lists.length; g++) lists[g].push(msg);
        this.counters.routed += gws.length;
      }
    }
    if (out.size > 0) await this.egress.write(out);
    if (spans !== null) for (const s of spans) s.end();
    this.counters.entries += entries.length;
    this.counters.batches++;
  }

  /**
   * Remember the room's epoch and seq from its APPLY reply (`prev`: what we had): its last entry's
   * seq, the newest unless every entry was a redelivery (then no newer than what Redis held).
   */
  private remember(room: string, prev: Seen | undefined, reply: ApplyReply): void {
    const epoch = reply[0];
    const seq = Number(reply[reply.length - 2]);
    if (seq === 0) return; // redeliveries history no longer held: nothing learnt
    const seen = this.seen;
    if (prev !== undefined) {
      if (prev.epoch === epoch && seq <= prev.seq) return;
      // The same entry, updated and moved to the end: the least recently used room is the first
      // one forgotten, and a busy room costs no new object per batch.
      prev.epoch = epoch;
      prev.seq = seq;
      seen.delete(room);
      seen.set(room, prev);
      return;
    }
    if (seen.size >= SEEN_ROOMS) seen.delete(seen.keys().next().value!);
    seen.set(room, { epoch, seq });
  }

  /** Entries read but not yet acknowledged, over the shards this worker owns. */
  async pending(): Promise<number> {
    let total = 0;
    for (const s of this.loops.keys()) {
      const r = (await this.cmd.call('XPENDING', Keys.ingress(s), GROUP)) as [number, ...unknown[]];
      total += Number(r[0]);
    }
    return total;
  }
}

/** Whether shard s belongs to the worker at `index` of the sorted live workers. */
export function assigned(s: number, live: readonly string[], index: number): boolean {
  return index >= 0 && live.length > 0 && s % live.length === index;
}
