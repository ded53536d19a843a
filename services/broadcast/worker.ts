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
 * Per batch: routing sets for the batch's rooms, one APPLY script per room of the batch (sequence
 * numbers and history of all its entries), one XADD per gateway carrying every message of the
 * batch routed to it (egress entry kind `b`), then XACK and XTRIM of the processed prefix. Commands
 * of a batch are auto-pipelined, so a batch costs a few round trips and a few commands per room
 * and gateway, not a few per message: per-message commands were what saturated the worker and
 * Redis (docs/performance.md, "Cluster").
 */
import { Keys, GROUP } from '../bus/keys';
import { createRedis, isReady, type RedisClient, type StreamEntry } from '../bus/redis-conn';
import { EgressBatch, messageId, parseIngress, type IngressMessage } from '../bus/wire';
import { aliveGateways, removeGateway } from '../bus/redis';
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
}

type ApplyClient = RedisClient & {
  /** See APPLY_LUA: maxlen, epoch, the JSON before the epoch, then id, head, end per entry. */
  sbApply(seqKey: string, histKey: string, maxlen: number, epoch: string, epochJson: string, ...idHeadEnd: string[]): Promise<(number | string | null)[]>;
  sbHeartbeat(workers: string, id: string, leaseMs: number): Promise<string[]>;
  sbRenew(lease: string, owner: string, ttl: number): Promise<number>;
  sbRelease(lease: string, owner: string): Promise<number>;
};

function defineScripts(client: RedisClient): ApplyClient {
  client.defineCommand('sbApply', { numberOfKeys: 2, lua: APPLY_LUA });
  client.defineCommand('sbHeartbeat', { numberOfKeys: 1, lua: HEARTBEAT_LUA });
  client.defineCommand('sbRenew', { numberOfKeys: 1, lua: RENEW_LUA });
  client.defineCommand('sbRelease', { numberOfKeys: 1, lua: RELEASE_LUA });
  return client as ApplyClient;
}

/** One ingress entry of a batch, with what APPLY assigned it. */
interface Parsed {
  id: string;
  m: IngressMessage | null;
  seq: number;
  json: string | null;
}

/** The entries of one room in a batch, the APPLY arguments, and the room's routing set. */
interface RoomBatch {
  entries: Parsed[];
  args: string[];
  gws: Promise<string[]>;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** The consuming loop of one owned shard, on its own (blocking) connection. */
class ShardLoop {
  private running = true;
  private readonly reader: RedisClient;
  private readonly key: string;
  readonly done: Promise<void>;
  private needReclaim = true;
  /** Until when (local clock) the lease is surely ours: set on acquire and on every renewal. */
  validUntil = 0;

  constructor(
    readonly shard: number,
    private readonly worker: BroadcastWorker,
  ) {
    this.key = Keys.ingress(shard);
    const o = worker.opts;
    this.reader = createRedis({ url: o.url, cluster: o.cluster, name: `sb-bc-${o.workerId}-s${shard}`, log: o.log, autoPipelining: false });
    this.done = this.run();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.reader.disconnect();
    await this.done;
  }

  private async run(): Promise<void> {
    const { workerId, batch } = this.worker.opts;
    while (this.running) {
      if (!isReady(this.reader) || !isReady(this.worker.cmd) || Date.now() >= this.validUntil) {
        // Not surely the owner any more: what we read stays pending, for us after a renewal or
        // for the next owner, who reclaims it before reading anything new.
        if (Date.now() >= this.validUntil) this.needReclaim = true;
        await sleep(50);
        continue;
      }
      try {
        if (this.needReclaim) {
          await this.ensureGroup();
          await this.reclaim();
          this.needReclaim = false;
          continue;
        }
        const res = (await this.reader.call('XREADGROUP', 'GROUP', GROUP, workerId, 'COUNT', batch, 'BLOCK', 1000, 'STREAMS', this.key, '>')) as
          | [string, StreamEntry[]][]
          | null;
        if (res === null || !this.running) continue;
        if (Date.now() >= this.validUntil) {
          this.needReclaim = true;
          continue;
        }
        await this.worker.process(this.key, res[0][1]);
      } catch (err) {
        if (!this.running) break;
        this.worker.counters.failures++;
        this.worker.opts.log.warn('shard batch failed; will retry from pending', { shard: this.shard, err: (err as Error).message });
        this.needReclaim = true;
        await sleep(100);
      }
    }
  }

  private async ensureGroup(): Promise<void> {
    try {
      await this.worker.cmd.call('XGROUP', 'CREATE', this.key, GROUP, '0', 'MKSTREAM');
    } catch (err) {
      if (!String((err as Error).message).includes('BUSYGROUP')) throw err;
    }
  }

  /** Take over every pending entry of the shard (a dead owner's, or ours after a failure), in id order. */
  private async reclaim(): Promise<void> {
    const { workerId, batch } = this.worker.opts;
    let cursor = '0-0';
    do {
      const res = (await this.worker.cmd.call('XAUTOCLAIM', this.key, GROUP, workerId, 0, cursor, 'COUNT', batch)) as [string, StreamEntry[], ...unknown[]];
      cursor = res[0];
      const entries = res[1].filter((e) => e !== null && e[1] !== null);
      if (entries.length > 0) {
        this.worker.counters.reclaimed += entries.length;
        await this.worker.process(this.key, entries);
      }
    } while (cursor !== '0-0' && this.running);
  }
}

export class BroadcastWorker {
  readonly cmd: ApplyClient;
  readonly counters = new BroadcastCounters();
  private readonly loops = new Map<number, ShardLoop>();
  private timer: NodeJS.Timeout | null = null;
  private ticking = false;
  private stopped = false;

  private readonly health: RedisHealth;
  /** The live workers in the order every worker agrees on, as of the last heartbeat. */
  live: string[] = [];

  constructor(readonly opts: BroadcastOptions) {
    const timeout = opts.timeoutMs ?? 2000;
    this.cmd = defineScripts(createRedis({ url: opts.url, cluster: opts.cluster, name: `sb-bc-${opts.workerId}`, log: opts.log, commandTimeoutMs: timeout }));
    this.health = new RedisHealth(this.cmd, timeout);
  }

  get ready(): boolean {
    return !this.stopped && this.health.healthy;
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

  /** Route one batch of ingress entries; acknowledges only after every egress XADD succeeded. */
  async process(key: string, entries: StreamEntry[]): Promise<void> {
    if (entries.length === 0) return;
    const { egressMaxLen, historySize } = this.opts;
    const cmd = this.cmd;
    // Group the batch by room, keeping batch order within a room (the stream's order).
    const byRoom = new Map<string, RoomBatch>();
    const parsed: Parsed[] = new Array(entries.length);
    for (let i = 0; i < entries.length; i++) {
      const [id, flat] = entries[i];
      const m = parseIngress(flat);
      const e: Parsed = { id, m, seq: 0, json: null };
      parsed[i] = e;
      if (m === null) continue;
      const room = m.room;
      let rb = byRoom.get(room);
      if (rb === undefined) {
        const gws = cmd.smembers(Keys.room(room));
        // Awaited later, room by room; if the batch fails first, its rejection is handled here.
        gws.catch(noop);
        rb = { entries: [], args: [], gws };
        byRoom.set(room, rb);
      }
      rb.entries.push(e);
      rb.args.push(id, roomMessageHead(room, m.from, m.dataJson), roomMessageEnd(m.ts));
    }
    const applied: Promise<void>[] = [];
    // Used only by rooms that have no epoch yet (new, or Redis lost them).
    const epoch = newEpoch();
    for (const [room, rb] of byRoom) {
      applied.push(
        cmd.sbApply(Keys.seq(room), Keys.history(room), historySize, epoch, ROOM_MESSAGE_EPOCH, ...rb.args).then((res) => {
          for (let j = 0; j < rb.entries.length; j++) {
            rb.entries[j].seq = Number(res[2 * j]);
            rb.entries[j].json = res[2 * j + 1] as string | null;
          }
        }),
      );
    }
    await Promise.all(applied);
    // One egress entry per gateway with every message of the batch routed to it (wire.ts).
    const egress = new Map<string, EgressBatch>();
    let spans: Span[] | null = null;
    for (let i = 0; i < parsed.length; i++) {
      const e = parsed[i];
      if (e.m === null || e.json === null || e.json === undefined || e.seq === 0) continue;
      const room = e.m.room;
      const gws = await byRoom.get(room)!.gws;
      // A sampled message: the routing span continues the publisher's trace, and the gateways'
      // deliver spans continue from it.
      let trace = e.m.trace;
      if (trace !== undefined && tracing.enabled) {
        const span = startSpan('broadcast route', trace, SpanKind.CONSUMER, { 'messaging.destination.name': room, 'switchboard.gateways': gws.length });
        (spans ??= []).push(span);
        trace = injectTraceparent(span) ?? trace;
      }
      const mid = messageId(key, e.id);
      for (const gw of gws) {
        let batch = egress.get(gw);
        if (batch === undefined) {
          batch = new EgressBatch(Keys.egress(gw));
          egress.set(gw, batch);
        }
        batch.add(room, mid, e.m.ts, e.json, trace);
      }
      this.counters.routed += gws.length;
    }
    const writes: Promise<unknown>[] = [];
    for (const batch of egress.values()) writes.push(cmd.call('XADD', ...batch.finish(egressMaxLen)));
    await Promise.all(writes);
    if (spans !== null) for (const s of spans) s.end();
    await cmd.call('XACK', key, GROUP, ...parsed.map((e) => e.id));
    cmd.call('XTRIM', key, 'MINID', '~', parsed[parsed.length - 1].id).catch(() => {});
    this.counters.entries += parsed.length;
    this.counters.batches++;
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

function noop(): void {}
