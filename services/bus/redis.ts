/**
 * The cluster bus, gateway side: Redis Streams between stateless gateways and the broadcast tier.
 *
 * - publish: XADD to the room's ingress shard; resolves once Redis has the entry, so a client's
 *   `ok` means the message can no longer be lost.
 * - routing: SADD/SREM this gateway in `sb:room:{room}` on the first/last local member; users in
 *   `sb:user:{uid}`; presence in `sb:pres:{room}`; every key this gateway adds is also recorded in
 *   its own sets so that a janitor can remove it when the gateway dies.
 * - egress: a dedicated connection reads `sb:out:{gw}` with XREAD BLOCK and hands entries to the
 *   hub; message ids already seen are dropped (at-least-once upstream).
 * - heartbeat: `sb:gw:{gw}` with a TTL, refreshed at a third of it.
 */
import { ErrorCode, Outbound, SwitchboardError } from '../protocol';
import type { Logger } from '../telemetry/log';
import { Keys, shardOf } from './keys';
import { createRedis, isReady, type RedisClient, type StreamEntry } from './redis-conn';
import type { Bus, BusSink, PublishRequest, PublishResult } from './types';

export interface RedisBusOptions {
  url: string;
  cluster: boolean;
  gatewayId: string;
  shards: number;
  /** Approximate cap of each ingress stream (safety bound; the broadcast tier trims what it processed). */
  ingressMaxLen: number;
  historySize: number;
  heartbeatMs: number;
  log: Logger;
}

/** A Redis failure as the protocol's `unavailable`: the request was not accepted, retry. */
function unavailable(err: unknown): never {
  throw new SwitchboardError(ErrorCode.Unavailable, 'the message bus (Redis) is unavailable', { cause: err });
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
  private readonly cmd: RedisClient;
  private readonly reader: RedisClient;
  private sink: BusSink | null = null;
  private running = false;
  private heartbeat: NodeJS.Timeout | null = null;
  private readerDone: Promise<void> = Promise.resolve();
  private readonly recent = new RecentIds(50_000);
  private readonly gw: string;
  /** Duplicates dropped (at-least-once redelivery). */
  duplicates = 0;

  constructor(private readonly opts: RedisBusOptions) {
    this.gw = opts.gatewayId;
    this.cmd = createRedis({ url: opts.url, cluster: opts.cluster, name: `sb-gw-${this.gw}`, log: opts.log });
    this.reader = createRedis({ url: opts.url, cluster: opts.cluster, name: `sb-gw-${this.gw}-egress`, log: opts.log, autoPipelining: false });
  }

  get ready(): boolean {
    return this.running && isReady(this.cmd) && isReady(this.reader);
  }

  get client(): RedisClient {
    return this.cmd;
  }

  async start(sink: BusSink): Promise<void> {
    this.sink = sink;
    this.running = true;
    this.heartbeat = setInterval(() => void this.beat(), Math.max(100, Math.floor(this.opts.heartbeatMs / 3)));
    this.heartbeat.unref();
    if (isReady(this.cmd)) await this.beat();
    else this.cmd.once('ready', () => void this.beat());
    this.readerDone = this.readEgress();
  }

  async stop(): Promise<void> {
    this.running = false;
    if (this.heartbeat !== null) clearInterval(this.heartbeat);
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
    if (!isReady(this.cmd)) return;
    const ttl = this.opts.heartbeatMs * 3;
    try {
      await Promise.all([
        this.cmd.set(Keys.gateway(this.gw), JSON.stringify({ id: this.gw, at: Date.now() }), 'PX', ttl),
        this.cmd.sadd(Keys.gateways, this.gw),
      ]);
    } catch {
      // Redis down: readiness says so; the next beat retries.
    }
  }

  /** Remove everything this gateway registered (graceful shutdown). */
  private async cleanupSelf(): Promise<void> {
    await removeGateway(this.cmd, this.gw);
  }

  private async readEgress(): Promise<void> {
    const key = Keys.egress(this.gw);
    // The gateway id is unique per incarnation, so its egress stream starts empty: read it all.
    let last = '0-0';
    while (this.running) {
      if (!isReady(this.reader)) {
        await new Promise((r) => setTimeout(r, 50));
        continue;
      }
      let res: [string, StreamEntry[]][] | null;
      try {
        res = (await this.reader.call('XREAD', 'COUNT', '1000', 'BLOCK', '1000', 'STREAMS', key, last)) as [string, StreamEntry[]][] | null;
      } catch {
        if (this.running) await new Promise((r) => setTimeout(r, 50));
        continue;
      }
      if (res === null) continue;
      const entries = res[0][1];
      for (let i = 0; i < entries.length; i++) this.deliver(entries[i][1]);
      last = entries[entries.length - 1][0];
    }
  }

  /**
   * One egress entry: k=b (a batch of room messages, what the broadcast tier writes), k=r (one
   * room message, the earlier layout) or k=d (direct). Fields are positional, see broadcast.
   */
  private deliver(f: string[]): void {
    const kind = f[1];
    if (kind === 'b') {
      // k b  then per message: <room> <mid> <ts> <json> <traceparent or ''>  [one '' pad]
      const sink = this.sink!;
      for (let i = 2; i + 4 < f.length; i += 5) {
        const mid = f[i + 1];
        if (this.recent.seen(mid)) {
          this.duplicates++;
          continue;
        }
        const tp = f[i + 4];
        sink.deliverRoom(f[i], new Outbound(f[i + 3]), Number(f[i + 2]), mid, tp === '' ? undefined : tp);
      }
    } else if (kind === 'r') {
      // k r  r <room>  i <mid>  t <ts>  m <json>  [p <traceparent>]
      const mid = f[5];
      if (this.recent.seen(mid)) {
        this.duplicates++;
        return;
      }
      this.sink!.deliverRoom(f[3], new Outbound(f[9]), Number(f[7]), mid, f[10] === 'p' ? f[11] : undefined);
    } else if (kind === 'd') {
      // k d  u <user>  m <json>
      this.sink!.deliverUser(f[3], new Outbound(f[5]));
    }
  }

  publish(req: PublishRequest): Promise<PublishResult> {
    const shard = shardOf(req.room, this.opts.shards);
    const args: (string | number)[] = [Keys.ingress(shard), 'MAXLEN', '~', this.opts.ingressMaxLen, '*', 'r', req.room, 'f', req.from, 'd', req.dataJson, 't', req.ts];
    if (req.trace !== undefined) args.push('p', req.trace);
    return (this.cmd.call('XADD', ...args) as Promise<string>).then(() => ({}), unavailable);
  }

  join(room: string, user: string): Promise<void> {
    return this.joinUnguarded(room, user).catch(unavailable);
  }

  private async joinUnguarded(room: string, user: string): Promise<void> {
    await Promise.all([
      this.cmd.sadd(Keys.room(room), this.gw),
      this.cmd.hset(Keys.presence(room), `${this.gw}|${user}`, '1'),
      this.cmd.sadd(Keys.gatewayRooms(this.gw), room),
    ]);
  }

  leave(room: string, user: string): Promise<void> {
    return this.leaveUnguarded(room, user).catch(unavailable);
  }

  private async leaveUnguarded(room: string, user: string): Promise<void> {
    await this.cmd.hdel(Keys.presence(room), `${this.gw}|${user}`);
  }

  /** Called by the hub when the last local member of a room left. */
  roomEmpty(room: string): Promise<void> {
    return this.roomEmptyUnguarded(room).catch(unavailable);
  }

  private async roomEmptyUnguarded(room: string): Promise<void> {
    await Promise.all([this.cmd.srem(Keys.room(room), this.gw), this.cmd.srem(Keys.gatewayRooms(this.gw), room)]);
  }

  userOnline(user: string): Promise<void> {
    return this.userOnlineUnguarded(user).catch(unavailable);
  }

  private async userOnlineUnguarded(user: string): Promise<void> {
    await Promise.all([this.cmd.sadd(Keys.user(user), this.gw), this.cmd.sadd(Keys.gatewayUsers(this.gw), user)]);
  }

  userOffline(user: string): Promise<void> {
    return this.userOfflineUnguarded(user).catch(unavailable);
  }

  private async userOfflineUnguarded(user: string): Promise<void> {
    await Promise.all([this.cmd.srem(Keys.user(user), this.gw), this.cmd.srem(Keys.gatewayUsers(this.gw), user)]);
  }

  direct(to: string, msg: Outbound): Promise<boolean> {
    return this.directUnguarded(to, msg).catch(unavailable);
  }

  private async directUnguarded(to: string, msg: Outbound): Promise<boolean> {
    const gws = await this.cmd.smembers(Keys.user(to));
    if (gws.length === 0) return false;
    const alive = await Promise.all(gws.map((g) => (g === this.gw ? 1 : this.cmd.exists(Keys.gateway(g)))));
    const targets = gws.filter((_, i) => alive[i] === 1);
    if (targets.length === 0) return false;
    await Promise.all(targets.map((g) => this.cmd.call('XADD', Keys.egress(g), 'MAXLEN', '~', 10000, '*', 'k', 'd', 'u', to, 'm', msg.json)));
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
    const gws = [...byGw.keys()];
    const alive = await Promise.all(gws.map((g) => (g === this.gw ? 1 : this.cmd.exists(Keys.gateway(g)))));
    const users = new Set<string>();
    gws.forEach((g, i) => {
      if (alive[i] === 1) for (const u of byGw.get(g)!) users.add(u);
    });
    return [...users];
  }

  history(room: string, since: number | undefined, limit: number): Promise<Outbound[]> {
    return this.historyUnguarded(room, since, limit).catch(unavailable);
  }

  private async historyUnguarded(room: string, since: number | undefined, limit: number): Promise<Outbound[]> {
    if (limit <= 0) return [];
    const start = since === undefined ? '-' : `${since + 1}-0`;
    const entries = (await this.cmd.call('XREVRANGE', Keys.history(room), '+', start, 'COUNT', limit)) as StreamEntry[];
    const out: Outbound[] = [];
    for (let i = entries.length - 1; i >= 0; i--) {
      const f = entries[i][1];
      const m = f.indexOf('m');
      if (m >= 0 && m % 2 === 0) out.push(new Outbound(f[m + 1]));
    }
    return out;
  }

  lastSeq(room: string): Promise<number> {
    return this.lastSeqUnguarded(room).catch(unavailable);
  }

  private async lastSeqUnguarded(room: string): Promise<number> {
    return Number((await this.cmd.hget(Keys.seq(room), 'seq')) ?? 0);
  }
}

/**
 * Remove a gateway from routing, presence and the user map, and delete its egress stream.
 * Used by a gateway on shutdown and by the broadcast tier's janitor for gateways that died.
 */
export async function removeGateway(redis: RedisClient, gw: string): Promise<void> {
  const [rooms, users] = await Promise.all([redis.smembers(Keys.gatewayRooms(gw)), redis.smembers(Keys.gatewayUsers(gw))]);
  const ops: Promise<unknown>[] = [];
  for (const room of rooms) {
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

async function removePresenceOf(redis: RedisClient, room: string, gw: string): Promise<void> {
  const key = Keys.presence(room);
  let cursor = '0';
  do {
    const [next, fields] = (await redis.call('HSCAN', key, cursor, 'MATCH', `${gw}|*`, 'COUNT', 200)) as [string, string[]];
    cursor = next;
    const names = fields.filter((_, i) => i % 2 === 0);
    if (names.length > 0) await redis.hdel(key, ...names);
  } while (cursor !== '0');
}
