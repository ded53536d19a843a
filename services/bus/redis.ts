/**
 * The cluster bus, gateway side: Redis Streams between stateless gateways and the broadcast tier.
 *
 * - publish: XADD to the room's ingress shard (through the ingress writer, which sends what
 *   queued up behind one write as one call: ingress.ts); resolves once Redis has the entry, so a
 *   client's `ok` means the message can no longer be lost.
 * - routing: SADD/SREM this gateway in `sb:room:{room}` on the first/last local member; users in
 *   `sb:user:{uid}`; presence in `sb:pres:{room}`; every key this gateway adds is also recorded in
 *   its own sets so that a janitor can remove it when the gateway dies.
 * - egress: a dedicated connection reads `sb:out:{gw}` with XREAD BLOCK and hands entries to the
 *   hub; message ids already seen are dropped (at-least-once upstream).
 * - heartbeat: `sb:gw:{gw}` with a TTL, refreshed at a third of it. The heartbeat also notices
 *   when this gateway's registration vanished (Redis restarted empty, or the janitor took a
 *   stalled gateway for dead): the previous value is gone, and the gateway re-registers every room,
 *   presence entry and user it holds, as a Centrifugo node resubscribes its channels.
 * - every command has a reply bound (REDIS_TIMEOUT_MS): a stalled Redis turns into `unavailable`
 *   within it, and readiness follows a ping prober, not just the socket state.
 */
import { ErrorCode, Outbound, SwitchboardError } from '../protocol';
import { newEpoch } from './epoch';
import type { Logger } from '../telemetry/log';
import { Keys, shardOf } from './keys';
import { createRedis, isReady, isRedisTimeout, RedisHealth, type RedisClient, type StreamEntry } from './redis-conn';
import { IngressWriter } from './ingress';
import { loadLua } from './lua';
import { directEntry, gatewayHeartbeat, ingressFields, readEgress, type EgressHandler } from './wire';
import type { Bus, BusSink, HistoryPage, HistoryQuery, PublishRequest, PublishResult, RoomPosition } from './types';

const HISTORY_LUA = loadLua(__dirname, 'bus', 'history.lua');
const TRIMMED_LUA = loadLua(__dirname, 'bus', 'trimmed.lua');
const UNROUTE_LUA = loadLua(__dirname, 'bus', 'unroute.lua');
const POSITION_LUA = loadLua(__dirname, 'bus', 'position.lua');

/**
 * A read of this many egress entries may have jumped a trimmed gap: trimming always leaves at
 * least this many (wire.ts, egressTrim), all of them unread when a gap is behind them.
 */
const TRIM_FLOOR = 100;

type GatewayClient = RedisClient & {
  /** trimmed.lua, replies as Buffers: [entries-added or -1, the entries after `last`]. */
  sbTrimmedBuffer(key: string, last: string, count: number): Promise<[number, [Buffer, Buffer[]][]]>;
  /** history.lua: history key; '' or the first id, limit, byte budget -> [more, entries]. */
  sbHistory(key: string, from: string, limit: number, maxBytes: number): Promise<unknown>;
  /** position.lua: seq key, routing set; epoch to create, ttl, 1 = only if routed -> [seq, epoch] (null when absent). */
  sbPosition(seqKey: string, roomKey: string, epoch: string, ttlSec: number, ifRouted: 0 | 1): Promise<[string | null, string | null]>;
  /** unroute.lua: routing set, seq key; gateway -> 1 when the position was deleted. */
  sbUnroute(roomKey: string, seqKey: string, gw: string): Promise<number>;
};

export interface RedisBusOptions {
  url: string;
  cluster: boolean;
  gatewayId: string;
  shards: number;
  /** Approximate cap of each ingress stream (safety bound; the broadcast tier trims what it processed). */
  ingressMaxLen: number;
  /** Messages kept per egress stream (direct messages use it too). @default 100000 */
  egressMaxLen?: number;
  heartbeatMs: number;
  /**
   * Seconds a room's position created by a join lives without a message, and the period (a
   * quarter of it) at which the positions of rooms held here are renewed (HISTORY_TTL_SEC; 0: for
   * ever). @default 0
   */
  roomTtlSec?: number;
  /** Reply bound of every command (REDIS_TIMEOUT_MS). @default 2000 */
  timeoutMs?: number;
  log: Logger;
}

/**
 * A Redis failure as the protocol's `unavailable`. Two cases a client must tell apart: the
 * connection was down, so the command was never sent and nothing happened (retry is safe); or
 * Redis did not answer within REDIS_TIMEOUT_MS, so the command may still be applied when Redis
 * wakes up (a retried publish may then be delivered twice: docs/reliability.md).
 */
/** Egress entries one read takes at most, and how long it waits for one. */
const EGRESS_COUNT = 1000;
const EGRESS_BLOCK_MS = 1000;
/**
 * A gateway trims what it has read from its egress stream once this many entries were read, or
 * this long after the last trim. Nothing reads an entry twice (the stream is this incarnation's
 * alone), but XADD trims only by count (EGRESS_MAXLEN): delivered direct messages of 512 KiB kept
 * Redis at 320 MiB after every client had gone, and a client at its byte rate could fill it.
 */
const EGRESS_TRIM_ENTRIES = 256;
const EGRESS_TRIM_MS = 1000;
/** Position renewals sent together (renewPositions): a gateway may hold a great many rooms. */
const RENEW_CHUNK = 1000;

function unavailable(err: unknown): never {
  const message = isRedisTimeout(err) ? 'Redis did not answer in time: the request may still take effect' : 'the message bus (Redis) is unavailable';
  throw new SwitchboardError(ErrorCode.Unavailable, message, { cause: err });
}

/** Remembers recently seen message ids in two generations: bounded memory, O(1) checks. */
class RecentIds {
  private cur = new Set<string>();
  private old = new Set<string>();
  constructor(private readonly cap: number) {}
  /** True if the id was seen before; records it otherwise. */
  seen(id: string): boolean {
    if (this.cur.has(id) || this.old.has(id)) return true;
    this.cur.add(id);
    if (this.cur.size >= this.cap) {
      this.old = this.cur;
      this.cur = new Set();
    }
    return false;
  }
}

export class RedisBus implements Bus {
  readonly kind = 'redis';
  private readonly cmd: GatewayClient;
  private readonly reader: GatewayClient;
  private sink: BusSink | null = null;
  private running = false;
  private heartbeat: NodeJS.Timeout | null = null;
  private readerDone: Promise<void> = Promise.resolve();
  private readonly recent = new RecentIds(50_000);
  private readonly gw: string;
  private readonly health: RedisHealth;
  private readonly ingress: IngressWriter;
  private resyncing: Promise<void> | null = null;
  /** The registration was found gone while a pass ran: another whole pass follows it. */
  private goneDuringResync = false;
  /**
   * A membership write (join, leave, room empty, user on/offline, a rollback) failed: what Redis
   * holds for this gateway may differ from what the hub holds (a user who left still in presence
   * and reachable by `direct`, or one who joined missing). The next heartbeat registers again what
   * the hub holds and removes the rest, as after Redis lost its data.
   */
  private stale = false;
  /** Rooms and users whose membership write failed: what the repair looks at beyond the sets. */
  private staleRooms = new Set<string>();
  private staleUsers = new Set<string>();
  /** When the positions of the rooms held here were last renewed (renewPositions), and whether that runs. */
  private renewedAt = 0;
  private renewing = false;

  /** A membership write failed: mark it for the repair, and fail as unavailable. */
  private membershipFailed(err: unknown, room: string | null, user: string | null): never {
    this.stale = true;
    if (room !== null) this.staleRooms.add(room);
    if (user !== null) this.staleUsers.add(user);
    return unavailable(err);
  }
  /** Duplicates dropped (at-least-once redelivery). */
  duplicates = 0;
  /** Times this gateway found its registration gone and registered everything again. */
  resyncs = 0;
  /** The reader's next read first asks whether entries were trimmed before it read them. */
  private trimCheckDue = false;
  /** Egress entries read, and entries found trimmed before they were read (already announced). */
  private egressRead = 0;
  private egressLost = 0;
  /** Entries read since the last trim of what was read, and when it was. */
  private readSinceTrim = 0;
  private trimmedAt = 0;
  /** The registration was found gone (and so, maybe, the stream): counting starts again. */
  private egressRecreated = false;

  constructor(private readonly opts: RedisBusOptions) {
    this.gw = opts.gatewayId;
    const timeout = opts.timeoutMs ?? 2000;
    this.cmd = createRedis({ url: opts.url, cluster: opts.cluster, name: `sb-gw-${this.gw}`, log: opts.log, commandTimeoutMs: timeout }) as GatewayClient;
    this.cmd.defineCommand('sbHistory', { numberOfKeys: 1, lua: HISTORY_LUA });
    this.cmd.defineCommand('sbPosition', { numberOfKeys: 2, lua: POSITION_LUA });
    this.cmd.defineCommand('sbUnroute', { numberOfKeys: 2, lua: UNROUTE_LUA });
    this.reader = createRedis({ url: opts.url, cluster: opts.cluster, name: `sb-gw-${this.gw}-egress`, log: opts.log, autoPipelining: false }) as GatewayClient;
    this.reader.defineCommand('sbTrimmed', { numberOfKeys: 1, lua: TRIMMED_LUA });
    this.health = new RedisHealth(this.cmd, timeout);
    this.ingress = new IngressWriter(this.cmd, opts.ingressMaxLen, opts.cluster);
    // After every reconnect, beat at once: if Redis lost our registration, it comes back now.
    this.cmd.on('ready', () => {
      if (this.running) void this.beat();
    });
  }

  get ready(): boolean {
    return this.running && this.health.healthy && isReady(this.reader);
  }

  get client(): RedisClient {
    return this.cmd;
  }

  async start(sink: BusSink): Promise<void> {
    this.sink = sink;
    this.running = true;
    this.heartbeat = setInterval(() => void this.beat(), Math.max(100, Math.floor(this.opts.heartbeatMs / 3)));
    this.heartbeat.unref();
    this.health.start();
    if (isReady(this.cmd)) await this.beat();
    this.readerDone = this.readEgress();
  }

  async stop(): Promise<void> {
    this.running = false;
    if (this.heartbeat !== null) clearInterval(this.heartbeat);
    this.health.stop();
    await this.resyncing;
    // Unblock the reader and leave routing cleanly so no one routes to a gateway that is gone.
    this.reader.disconnect();
    await this.readerDone;
    try {
      if (isReady(this.cmd)) await this.cleanupSelf();
    } catch (err) {
      this.opts.log.warn('cleanup on stop failed', { err });
    }
    this.cmd.disconnect();
  }

  private async beat(): Promise<void> {
    if (!isReady(this.cmd) || !this.running) return;
    const ttl = this.opts.heartbeatMs * 3;
    let previous: unknown;
    try {
      [previous] = await Promise.all([
        this.cmd.call('SET', Keys.gateway(this.gw), gatewayHeartbeat(this.gw, Date.now()), 'PX', ttl, 'GET'),
        this.cmd.sadd(Keys.gateways, this.gw),
      ]);
    } catch {
      // Redis down or stalled: readiness says so; the next beat retries.
      return;
    }
    // Not behind a repair, which may take long: positions held here must not expire meanwhile.
    void this.renewPositions();
    // No previous heartbeat: Redis lost its data, or our registration was removed as dead. Either
    // way the routing of every room we hold is gone, and messages to them would reach no one.
    if ((previous === null || this.stale) && this.running) await this.resync(previous === null ? 'gone' : 'stale');
    // The reader checks, once per beat, whether its stream was trimmed past what it had read.
    this.trimCheckDue = true;
  }

  /**
   * Keep the positions of the rooms held here alive: a room with members whose position expired
   * would start a new epoch at its next message, and its members would see `epoch_changed` though
   * nothing was lost. Every quarter of HISTORY_TTL_SEC, `EXPIRE ... GT` on the position of each
   * room held (GT never shortens an expiry and leaves a position without one alone; a position
   * that is gone stays gone). History is not renewed: it is kept HISTORY_TTL_SEC after the room's
   * last message, members or not.
   */
  private async renewPositions(): Promise<void> {
    const ttl = this.opts.roomTtlSec ?? 0;
    const sink = this.sink;
    if (ttl <= 0 || sink === null || this.renewing || Date.now() - this.renewedAt < ttl * 250) return;
    this.renewing = true;
    this.renewedAt = Date.now();
    try {
      const rooms = roomsHeld(sink);
      for (let i = 0; i < rooms.length && this.running; i += RENEW_CHUNK) {
        await Promise.all(rooms.slice(i, i + RENEW_CHUNK).map((room) => this.cmd.call('EXPIRE', Keys.seq(room), ttl, 'GT')));
      }
    } catch {
      // Redis down or stalled: the next beat tries again.
      this.renewedAt = 0;
    } finally {
      this.renewing = false;
    }
  }

  /**
   * Tell the members of every room held here the room's current position (`position` push), after
   * routed messages may have missed this gateway: a member whose last seq is below it (or in
   * another epoch) recovers with `history` (docs/protocol.md, "Positions and recovery"), even in
   * a room where no later message would show it the gap.
   */
  private async announcePositions(why: 'gone' | 'trimmed'): Promise<void> {
    const sink = this.sink;
    if (sink === null || sink.pushRoom === undefined) return;
    const rooms = roomsHeld(sink);
    if (rooms.length === 0) return;
    const positions = await Promise.all(rooms.map((room) => this.positionUnguarded(room).catch(() => null)));
    let n = 0;
    for (let i = 0; i < rooms.length; i++) {
      const pos = positions[i];
      if (pos === null) continue;
      n += sink.pushRoom(rooms[i], Outbound.of({ type: 'position', room: rooms[i], seq: pos.seq, epoch: pos.epoch }));
    }
    this.opts.log.warn(why === 'gone' ? 'this gateway was taken for dead: members told where their rooms are' : 'egress stream trimmed past what this gateway had read: members told where their rooms are', { rooms: rooms.length, members: n });
  }

  /**
   * Register again every room, presence entry and user the hub holds; at most one pass at a time.
   * A registration found gone while a pass runs gets a whole pass of its own afterwards: the one
   * running may have re-added its entries before the janitor removed them.
   */
  private resync(why: 'gone' | 'stale'): Promise<void> {
    if (this.resyncing !== null) {
      if (why === 'gone') this.goneDuringResync = true;
      return this.resyncing;
    }
    // Failures from here on are not covered by this pass: they mark it stale again.
    this.stale = false;
    const rooms = this.staleRooms;
    const users = this.staleUsers;
    this.staleRooms = new Set();
    this.staleUsers = new Set();
    this.resyncing = this.resyncUnguarded(why, rooms, users)
      .catch((err: unknown) => {
        // Half done is still better than nothing; the next beat retries.
        this.stale = true;
        for (const r of rooms) this.staleRooms.add(r);
        for (const u of users) this.staleUsers.add(u);
        this.opts.log.warn('re-registration failed; retrying with the next heartbeat', { err: (err as Error).message });
        // A registration that was gone stays "gone" for the next beat (which then tells members
        // where their rooms are); a failed repair of one write is only retried, not escalated.
        if (why === 'gone') return this.cmd.del(Keys.gateway(this.gw)).then(noop, noop);
      })
      .finally(() => {
        this.resyncing = null;
        if (this.goneDuringResync && this.running) {
          this.goneDuringResync = false;
          void this.resync('gone');
        }
      });
    return this.resyncing;
  }

  /**
   * What the hub holds at this moment, for decisions made right after a Redis reply: anything a
   * join or leave changes later is written after the commands decided here, on the same connection.
   */
  private heldNow(): { rooms: Map<string, ReadonlySet<string>>; users: ReadonlySet<string> } {
    const reg = this.sink!.registrations();
    const rooms = new Map<string, ReadonlySet<string>>();
    for (const [room, members] of reg.rooms) rooms.set(room, new Set(members));
    return { rooms, users: new Set(reg.users) };
  }

  /**
   * The users the hub holds in `room` at this moment (see heldNow): a direct lookup, asked once per
   * presence scan reply of every stale room (a walk over all rooms here made a repair after a mass
   * leave quadratic in the rooms held).
   */
  private heldIn(room: string): ReadonlySet<string> {
    return new Set(this.sink!.usersIn(room));
  }

  private async resyncUnguarded(why: 'gone' | 'stale', staleRooms: ReadonlySet<string>, staleUsers: ReadonlySet<string>): Promise<void> {
    const sink = this.sink;
    if (sink === null) return;
    const snapshot = sink.registrations();
    // Taken whole: the hub hands out iterators, and the comparison below walks them again.
    const rooms = [...snapshot.rooms].map(([room, members]) => [room, [...members]] as const);
    const users = [...snapshot.users];
    const ops: Promise<unknown>[] = [];
    let nRooms = 0;
    for (const [room, members] of rooms) {
      nRooms++;
      ops.push(this.cmd.sadd(Keys.room(room), this.gw), this.cmd.sadd(Keys.gatewayRooms(this.gw), room));
      for (const user of members) ops.push(this.cmd.hset(Keys.presence(room), `${this.gw}|${user}`, '1'));
    }
    let nUsers = 0;
    for (const user of users) {
      nUsers++;
      ops.push(this.cmd.sadd(Keys.user(user), this.gw), this.cmd.sadd(Keys.gatewayUsers(this.gw), user));
    }
    await Promise.all(ops);
    // Joins and leaves went on meanwhile: drop what the hub no longer holds (a leave that ran
    // before our re-add, or a registration left over from before the outage). Every decision is
    // taken against the hub as it is when the reply it needs has come: a member who joined while
    // a reply was on its way is kept (a snapshot from before would remove it for good).
    const [regRooms, regUsers] = await Promise.all([this.cmd.smembers(Keys.gatewayRooms(this.gw)), this.cmd.smembers(Keys.gatewayUsers(this.gw))]);
    const { rooms: held, users: heldUsers } = this.heldNow();
    const keepOf = (room: string) => () => this.heldIn(room);
    const stale: Promise<unknown>[] = [];
    for (const room of regRooms) {
      if (!held.has(room)) stale.push(this.unroute(room), this.cmd.srem(Keys.gatewayRooms(this.gw), room), removePresenceOf(this.cmd, room, this.gw, keepOf(room)));
    }
    for (const [room, members] of rooms) {
      const h = held.get(room);
      if (h === undefined) continue;
      for (const user of members) if (!h.has(user)) stale.push(this.cmd.hdel(Keys.presence(room), `${this.gw}|${user}`));
    }
    // Where a write failed halfway (the room's set updated, its presence not), the sets above do
    // not show it: look at those rooms' presence and users' entries themselves.
    for (const room of staleRooms) {
      if (!held.has(room)) stale.push(this.unroute(room), this.cmd.srem(Keys.gatewayRooms(this.gw), room));
      stale.push(removePresenceOf(this.cmd, room, this.gw, keepOf(room)));
    }
    const gone = new Set([...regUsers, ...staleUsers]);
    for (const user of gone) if (!heldUsers.has(user)) stale.push(this.cmd.srem(Keys.user(user), this.gw), this.cmd.srem(Keys.gatewayUsers(this.gw), user));
    await Promise.all(stale);
    // A gateway's first heartbeat finds no previous one too; with nothing held, nothing was lost.
    if (nRooms === 0 && nUsers === 0 && stale.length === 0) return;
    this.resyncs++;
    // Messages routed while this gateway was not registered never reached it.
    if (why === 'gone') {
      this.egressRecreated = true;
      this.trimCheckDue = true;
    }
    if (why === 'gone' && nRooms > 0) await this.announcePositions('gone');
    if (why === 'gone') this.opts.log.warn('registration was gone from Redis: registered every room and user again', { rooms: nRooms, users: nUsers });
    else this.opts.log.info('a membership write had failed: registered every room and user again', { rooms: nRooms, users: nUsers, removed: stale.length });
  }

  /** Remove everything this gateway registered (graceful shutdown). */
  private async cleanupSelf(): Promise<void> {
    await removeGateway(this.cmd, this.gw);
  }

  /**
   * Read the egress stream on the dedicated connection: XREAD BLOCK returns as soon as an entry
   * arrives (no polling), with everything that accumulated meanwhile. Replies stay Buffers: the
   * broadcast tier's frames go to the sockets as they came.
   */
  private async readEgress(): Promise<void> {
    const key = Keys.egress(this.gw);
    // The gateway id is unique per incarnation, so its egress stream starts empty: read it all.
    let last = '0-0';
    while (this.running) {
      if (!isReady(this.reader)) {
        await new Promise((r) => setTimeout(r, 50));
        continue;
      }
      const issuedAt = Date.now();
      let entries: [Buffer, Buffer[]][];
      try {
        if (!this.trimCheckDue) {
          const res = (await this.reader.callBuffer('XREAD', 'COUNT', EGRESS_COUNT, 'BLOCK', EGRESS_BLOCK_MS, 'STREAMS', key, last)) as [Buffer, [Buffer, Buffer[]][]][] | null;
          entries = res === null ? [] : res[0][1];
        } else {
          // Instead of this read: the same entries, and in the same step how many were ever added.
          this.trimCheckDue = false;
          const [added, next] = await this.reader.sbTrimmedBuffer(key, last, EGRESS_COUNT);
          entries = next;
          if (next.length < EGRESS_COUNT) this.checkTrim(Number(added), next.length);
          else this.trimCheckDue = true; // more unread than one read: count after the next
        }
      } catch {
        if (this.running) await new Promise((r) => setTimeout(r, 50));
        continue;
      }
      // A read that took well over its block (this process was stopped or starved), or that
      // brought as many entries as a trim leaves, may have jumped a trimmed gap: count at the next
      // read rather than at the next beat.
      if (Date.now() - issuedAt > EGRESS_BLOCK_MS + 250 || entries.length >= TRIM_FLOOR) this.trimCheckDue = true;
      if (entries.length === 0) {
        // Quiet for a whole block: what was read since the last trim goes now.
        this.trimRead(key, last, 0);
        continue;
      }
      for (let i = 0; i < entries.length; i++) this.deliver(entries[i]);
      last = entries[entries.length - 1][0].toString();
      this.egressRead += entries.length;
      this.trimRead(key, last, entries.length);
    }
  }

  /**
   * Trim the egress stream up to `last` (read and delivered) now and then, and after a read that
   * found nothing (`n` 0: a quiet block): sent on the reader's
   * connection without waiting, so it goes out with the next XREAD and costs no round trip. `~`
   * trims whole stream nodes only; large entries fill a node each and go at once. The counts the
   * trim check uses (entries ever added, entries read) do not change.
   */
  private trimRead(key: string, last: string, n: number): void {
    this.readSinceTrim += n;
    const now = Date.now();
    if (this.readSinceTrim === 0 || (n > 0 && this.readSinceTrim < EGRESS_TRIM_ENTRIES && now - this.trimmedAt < EGRESS_TRIM_MS)) return;
    this.readSinceTrim = 0;
    this.trimmedAt = now;
    this.reader.call('XTRIM', key, 'MINID', '~', last).catch(ignoreTrimFailure);
  }

  /**
   * Whether the egress stream lost entries before this gateway read them (it lagged more than
   * EGRESS_MAXLEN behind): of `added` entries ever, `egressRead` were read and `unread` wait after
   * the reader's position, so the rest were trimmed unread, wherever the reader stands now. Those
   * messages were acknowledged and routed here, and a member of a quiet room would never see a
   * later message that shows the gap: tell every member where its rooms are (once per loss).
   */
  private checkTrim(added: number, unread: number): void {
    if (added < 0) return; // no stream yet, or Redis before 7.0
    if (this.egressRecreated || added < this.egressRead + this.egressLost + unread) {
      // The stream may have been made anew (Redis lost its data, or the janitor deleted it with
      // the registration: both found "gone", whose pass told every member where its rooms are),
      // or fewer were ever added than this gateway read. Count from here.
      this.egressRecreated = false;
      this.egressRead = added - unread;
      this.egressLost = 0;
      return;
    }
    const lost = added - this.egressRead - unread;
    if (lost <= this.egressLost) return;
    this.egressLost = lost;
    this.announcePositions('trimmed').catch((err: unknown) => this.opts.log.warn('position notices failed', { err: (err as Error).message }));
  }

  /** Egress entries go through the wire module; messages already seen are dropped. */
  private deliver(entry: [Buffer, Buffer[]]): void {
    try {
      readEgress(entry[1], this.egress);
    } catch (err) {
      // Never written by us; the messages before the fault were delivered, the rest is skipped.
      this.opts.log.warn('unreadable egress entry skipped', { id: entry[0].toString(), err: (err as Error).message });
    }
  }

  /** What this gateway does with each message of an egress entry (one object, no per-entry closures). */
  private readonly egress: EgressHandler = {
    room: (room, msg, ts, mid, trace) => {
      if (this.recent.seen(mid)) {
        this.duplicates++;
        this.sink!.duplicate?.();
        return;
      }
      this.sink!.deliverRoom(room, msg, ts, trace);
    },
    direct: (user, msg) => void this.sink!.deliverUser(user, msg),
  };

  /** Through the ingress writer: one XADD, or one call for everything queued behind the last. */
  publish(req: PublishRequest): Promise<PublishResult> {
    const key = Keys.ingress(shardOf(req.room, this.opts.shards));
    return this.ingress.append(key, ingressFields(req)).then(noResult, unavailable);
  }

  join(room: string, user: string): Promise<void> {
    return this.joinUnguarded(room, user).catch((err: unknown) => this.membershipFailed(err, room, null));
  }

  private async joinUnguarded(room: string, user: string): Promise<void> {
    await Promise.all([
      this.cmd.sadd(Keys.room(room), this.gw),
      this.cmd.hset(Keys.presence(room), `${this.gw}|${user}`, '1'),
      this.cmd.sadd(Keys.gatewayRooms(this.gw), room),
    ]);
  }

  leave(room: string, user: string): Promise<void> {
    return this.leaveUnguarded(room, user).catch((err: unknown) => this.membershipFailed(err, room, null));
  }

  private async leaveUnguarded(room: string, user: string): Promise<void> {
    await this.cmd.hdel(Keys.presence(room), `${this.gw}|${user}`);
  }

  /** Called by the hub when the last local member of a room left. */
  roomEmpty(room: string): Promise<void> {
    return this.roomEmptyUnguarded(room).catch((err: unknown) => this.membershipFailed(err, room, null));
  }

  /**
   * Take this gateway out of `room`'s routing set; when no gateway is left and nothing was ever
   * said in the room, its position goes too (lua/unroute.lua). The gateway's own removals go
   * through here (its last member leaving, the repair); removeGateway does not (see there).
   */
  private unroute(room: string): Promise<number> {
    return this.cmd.sbUnroute(Keys.room(room), Keys.seq(room), this.gw);
  }

  private async roomEmptyUnguarded(room: string): Promise<void> {
    await Promise.all([this.unroute(room), this.cmd.srem(Keys.gatewayRooms(this.gw), room)]);
  }

  userOnline(user: string): Promise<void> {
    return this.userOnlineUnguarded(user).catch((err: unknown) => this.membershipFailed(err, null, user));
  }

  private async userOnlineUnguarded(user: string): Promise<void> {
    await Promise.all([this.cmd.sadd(Keys.user(user), this.gw), this.cmd.sadd(Keys.gatewayUsers(this.gw), user)]);
  }

  userOffline(user: string): Promise<void> {
    return this.userOfflineUnguarded(user).catch((err: unknown) => this.membershipFailed(err, null, user));
  }

  private async userOfflineUnguarded(user: string): Promise<void> {
    await Promise.all([this.cmd.srem(Keys.user(user), this.gw), this.cmd.srem(Keys.gatewayUsers(this.gw), user)]);
  }

  direct(to: string, msg: Outbound): Promise<boolean> {
    return this.directUnguarded(to, msg).catch(unavailable);
  }

  private async directUnguarded(to: string, msg: Outbound): Promise<boolean> {
    const targets = await aliveGateways(this.cmd, await this.cmd.smembers(Keys.user(to)), this.gw);
    if (targets.length === 0) return false;
    await Promise.all(targets.map((g) => this.cmd.call('XADD', ...directEntry(Keys.egress(g), this.opts.egressMaxLen ?? 100_000, to, msg.json))));
    return true;
  }

  presence(room: string): Promise<string[]> {
    return this.presenceUnguarded(room).catch(unavailable);
  }

  private async presenceUnguarded(room: string): Promise<string[]> {
    const fields = await this.cmd.hkeys(Keys.presence(room));
    const byGw = new Map<string, string[]>();
    for (const f of fields) {
      const bar = f.indexOf('|');
      const gw = f.slice(0, bar);
      (byGw.get(gw) ?? byGw.set(gw, []).get(gw)!).push(f.slice(bar + 1));
    }
    const users = new Set<string>();
    for (const g of await aliveGateways(this.cmd, [...byGw.keys()], this.gw)) for (const u of byGw.get(g)!) users.add(u);
    return [...users];
  }

  history(room: string, q: HistoryQuery): Promise<HistoryPage> {
    return this.historyUnguarded(room, q).catch(unavailable);
  }

  private async historyUnguarded(room: string, q: HistoryQuery): Promise<HistoryPage> {
    const [[seqText, epochText], entries] = await Promise.all([this.cmd.hmget(Keys.seq(room), 'seq', 'epoch'), this.readHistory(room, q.since, q.limit, q.maxBytes ?? Number.MAX_SAFE_INTEGER)]);
    const seq = Number(seqText ?? 0);
    const epoch = epochText ?? '';
    if (q.epoch !== undefined && q.epoch !== epoch) {
      // Another epoch: the client's seq means nothing here. Start it at the current one's oldest.
      const fresh = await this.readHistory(room, 0, q.limit, q.maxBytes ?? Number.MAX_SAFE_INTEGER);
      return { seq, epoch, recovered: false, ...fresh };
    }
    const oldest = entries.first ?? seq + 1;
    return { seq, epoch, recovered: q.since === undefined || oldest <= q.since + 1, messages: entries.messages, more: entries.more };
  }

  /**
   * History entries (ids `<seq>-1`): after `since` oldest first, or the newest `limit`; at most
   * `maxBytes` of messages (history.lua), so a page of large messages is never built whole.
   */
  private async readHistory(room: string, since: number | undefined, limit: number, maxBytes: number): Promise<{ messages: string[]; more: boolean; first: number | undefined }> {
    if (limit <= 0) return { messages: [], more: false, first: undefined };
    const [moreFlag, entries] = (await this.cmd.sbHistory(Keys.history(room), since === undefined ? '' : `${since + 1}-0`, limit, maxBytes)) as [number, StreamEntry[]];
    // Read backwards for the newest: a page is oldest first. Only a forward page says `more`.
    if (since === undefined) entries.reverse();
    const more = since !== undefined && moreFlag === 1;
    const messages: string[] = [];
    for (const [, f] of entries) {
      const m = f.indexOf('m');
      if (m >= 0 && m % 2 === 0) messages.push(f[m + 1]);
    }
    const first = entries.length > 0 ? Number(entries[0][0].slice(0, entries[0][0].indexOf('-'))) : undefined;
    return { messages, more, first };
  }

  position(room: string, joining = false): Promise<RoomPosition> {
    return this.positionUnguarded(room, joining).catch(unavailable);
  }

  /**
   * The room's position (lua/position.lua). Its epoch is created by whoever needs it first: a join,
   * a `position` notice or the broadcast tier. For a join only while the room has routing (the
   * member's own leave may have overtaken it). A position a join created goes when the room's last
   * member leaves with nothing said (unroute.lua), and expires unless a message comes (apply.lua
   * renews it): joins of room names nobody publishes to must not fill Redis.
   */
  private async positionUnguarded(room: string, joining = false): Promise<RoomPosition> {
    const [seq, epoch] = await this.cmd.sbPosition(Keys.seq(room), Keys.room(room), newEpoch(), this.opts.roomTtlSec ?? 0, joining ? 1 : 0);
    return { seq: Number(seq ?? 0), epoch: epoch ?? '' };
  }
}

/**
 * The gateways of `gws` whose heartbeat has not expired (`self` is alive by definition). Routing
 * sets may name a gateway that died since; this is the one place that filters them.
 */
export async function aliveGateways(redis: RedisClient, gws: readonly string[], self?: string): Promise<string[]> {
  if (gws.length === 0) return [];
  const alive = await Promise.all(gws.map((g) => (g === self ? 1 : redis.exists(Keys.gateway(g)))));
  return gws.filter((_, i) => alive[i] === 1);
}

/**
 * Remove a gateway from routing, presence and the user map, and delete its egress stream.
 * Used by a gateway on shutdown and by the broadcast tier's janitor for gateways that died.
 */
export async function removeGateway(redis: RedisClient, gw: string): Promise<void> {
  const [rooms, users] = await Promise.all([redis.smembers(Keys.gatewayRooms(gw)), redis.smembers(Keys.gatewayUsers(gw))]);
  const ops: Promise<unknown>[] = [];
  for (const room of rooms) {
    // A plain SREM, not unroute: a gateway taken for dead may only have stalled, and its members
    // would see their quiet rooms' epoch change for nothing. Such positions expire (HISTORY_TTL_SEC).
    ops.push(redis.srem(Keys.room(room), gw));
    ops.push(removePresenceOf(redis, room, gw));
  }
  for (const user of users) ops.push(redis.srem(Keys.user(user), gw));
  await Promise.all(ops);
  await Promise.all([
    redis.del(Keys.gatewayRooms(gw)),
    redis.del(Keys.gatewayUsers(gw)),
    redis.del(Keys.egress(gw)),
    redis.del(Keys.gateway(gw)),
    redis.srem(Keys.gateways, gw),
  ]);
}

/**
 * Remove gateway `gw`'s presence entries of `room`, except the users `keep()` returns; `keep` is
 * asked after each scan reply, right before the HDEL it decides (a user who joined meanwhile is
 * kept). Without `keep`, every entry of the gateway goes.
 */
async function removePresenceOf(redis: RedisClient, room: string, gw: string, keep?: () => ReadonlySet<string>): Promise<void> {
  const key = Keys.presence(room);
  let cursor = '0';
  do {
    const [next, fields] = (await redis.call('HSCAN', key, cursor, 'MATCH', `${gw}|*`, 'COUNT', 200)) as [string, string[]];
    cursor = next;
    const kept = keep?.();
    const names = fields.filter((name, i) => i % 2 === 0 && (kept === undefined || !kept.has(name.slice(gw.length + 1))));
    if (names.length > 0) await redis.hdel(key, ...names);
  } while (cursor !== '0');
}

function noop(): void {}

/** The names of the rooms the hub holds, taken whole (the hub hands out iterators). */
function roomsHeld(sink: BusSink): string[] {
  return [...sink.registrations().rooms].map(([room]) => room);
}

const NO_RESULT: PublishResult = Object.freeze({});
function noResult(): PublishResult {
  return NO_RESULT;
}

function ignoreTrimFailure(): void {
  // Redis down or the connection reset: the next trim covers these entries too.
}
