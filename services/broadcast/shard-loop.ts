/**
 * The consuming loop of one ingress shard that this worker owns: reclaim what a predecessor left
 * pending, then read batches on the shard's own blocking connection and hand them to the worker
 * to route (worker.ts), acknowledging each batch once it is routed. Entries are taken only
 * through read.lua, which checks the lease in the same step (a fence: a worker that lost the
 * lease is never handed an entry), and a batch is processed only while the lease is surely still
 * ours (docs/cluster.md, "Shard ownership").
 */
import { GROUP, Keys } from '../bus/keys';
import { createRedis, isReady, type RedisClient, type StreamEntry } from '../bus/redis-conn';
import { READ_LUA } from './scripts';
import type { BroadcastWorker } from './worker';

type ReaderClient = RedisClient & {
  /** read.lua: lease, ingress; owner, group, mode, count[, cursor]. */
  sbRead(lease: string, key: string, owner: string, group: string, mode: 'read' | 'claim', count: number, cursor?: string): Promise<unknown>;
};

/** How long the reader's XREAD waits for a new entry before it looks again. */
const BLOCK_MS = 1000;

/** read.lua refused: the lease is not ours (any more). */
const isNotOwner = (err: unknown) => err instanceof Error && err.message.startsWith('NOTOWNER');

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** The consuming loop of one owned shard, on its own (blocking) connection. */
export class ShardLoop {
  private running = true;
  private readonly reader: ReaderClient;
  private readonly key: string;
  private readonly lease: string;
  /** XREAD waits for entries after this id: every entry up to it has been handed out. */
  private after = '0-0';
  readonly done: Promise<void>;
  private needReclaim = true;
  /**
   * Ids of the last batch, routed (in every gateway's egress stream) but not acknowledged yet:
   * the XACK goes out with the next read. Acknowledging late is always safe, only a redelivery.
   */
  private unacked: string[] | null = null;
  /** Until when (local clock) the lease is surely ours: set on acquire and on every renewal. */
  validUntil = 0;

  constructor(
    readonly shard: number,
    private readonly worker: BroadcastWorker,
  ) {
    this.key = Keys.ingress(shard);
    this.lease = Keys.lease(shard);
    const o = worker.opts;
    this.reader = createRedis({ url: o.url, cluster: o.cluster, name: `sb-bc-${o.workerId}-s${shard}`, log: o.log, autoPipelining: false }) as ReaderClient;
    this.reader.defineCommand('sbRead', { numberOfKeys: 2, lua: READ_LUA });
    this.done = this.run();
  }

  /** Stop after the batch in flight, acknowledge what was routed, and close the connection. */
  async stop(): Promise<void> {
    this.running = false;
    this.reader.disconnect();
    await this.done;
  }

  private async run(): Promise<void> {
    while (this.running) {
      if (!isReady(this.reader) || !isReady(this.worker.cmd) || !isReady(this.worker.egressConn) || Date.now() >= this.validUntil) {
        // Not surely the owner any more: what we read stays pending, for us after a renewal or
        // for the next owner, who reclaims it before reading anything new.
        if (Date.now() >= this.validUntil) this.needReclaim = true;
        await this.ackNow();
        await sleep(50);
        continue;
      }
      try {
        if (this.needReclaim) {
          await this.ensureGroup();
          await this.ackNow();
          await this.reclaim();
          this.needReclaim = false;
          // Entries after the reclaimed ones may have been handed out before (and acknowledged):
          // the first read finds where the undelivered ones start.
          this.after = '0-0';
          continue;
        }
        const entries = await this.read();
        if (entries === null || !this.running) continue;
        if (Date.now() >= this.validUntil) {
          this.needReclaim = true;
          continue;
        }
        await this.worker.process(this.key, entries);
        this.unacked = entries.map((e) => e[0]);
      } catch (err) {
        if (!this.running) break;
        if (isNotOwner(err)) {
          // The lease went (expired, taken, or lost with Redis' data) before our clock said so:
          // read nothing more until a renewal proves it ours again (the tick stops this loop
          // when it does not).
          this.validUntil = 0;
          this.needReclaim = true;
          continue;
        }
        this.worker.counters.failures++;
        this.worker.opts.log.warn('shard batch failed; will retry from pending', { shard: this.shard, err: (err as Error).message });
        this.needReclaim = true;
        await sleep(100);
      }
    }
    // Stopped (released, or the worker stops): what was routed need not be redelivered.
    await this.ackNow();
  }

  /**
   * The next batch, in one write: the previous batch's XACK and XTRIM, an XREAD that blocks until
   * an entry newer than `after` exists (it assigns nothing), then read.lua, which Redis runs right
   * after the XREAD returns and which hands out the entries only if we hold the lease. One round
   * trip per batch, as a blocking XREADGROUP would be, but fenced by the lease.
   */
  private async read(): Promise<StreamEntry[] | null> {
    const { workerId, batch } = this.worker.opts;
    const ack = this.unacked;
    this.unacked = null;
    const p = this.reader.pipeline();
    if (ack !== null) p.call('XACK', this.key, GROUP, ...ack).call('XTRIM', this.key, 'MINID', '~', ack[ack.length - 1]);
    p.call('XREAD', 'COUNT', 1, 'BLOCK', BLOCK_MS, 'STREAMS', this.key, this.after);
    (p as unknown as ReaderClient).sbRead(this.lease, this.key, workerId, GROUP, 'read', batch);
    const replies = (await p.exec().catch((err: unknown) => {
      // The connection failed: the XACK may not have reached Redis. Acknowledge again before
      // reclaiming (harmless if it did), or these entries would be routed twice.
      this.unacked = ack;
      throw err;
    })) as [Error | null, unknown][] | null;
    if (replies === null) throw new Error('pipeline discarded');
    if (ack !== null && replies[0][0] !== null) this.unacked = ack;
    for (const [err] of replies) if (err !== null) throw err;
    const [after, entries] = replies[replies.length - 1][1] as [string, StreamEntry[]];
    this.after = after;
    return entries.length === 0 ? null : entries;
  }

  /** Acknowledge the routed batch now (no read follows soon); best effort, it is pending otherwise. */
  private async ackNow(): Promise<void> {
    const ack = this.unacked;
    if (ack === null || !isReady(this.worker.cmd)) return;
    this.unacked = null;
    try {
      await this.worker.cmd.call('XACK', this.key, GROUP, ...ack);
      await this.worker.cmd.call('XTRIM', this.key, 'MINID', '~', ack[ack.length - 1]);
    } catch {
      // Still pending: the next owner (or our reclaim) routes it again, and gateways drop it.
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
      const res = (await this.reader.sbRead(this.lease, this.key, workerId, GROUP, 'claim', batch, cursor)) as [string, StreamEntry[], ...unknown[]];
      cursor = res[0];
      const entries = res[1].filter((e) => e !== null && e[1] !== null);
      if (entries.length > 0) {
        this.worker.counters.reclaimed += entries.length;
        await this.worker.process(this.key, entries);
        this.unacked = entries.map((e) => e[0]);
        await this.ackNow();
      }
    } while (cursor !== '0-0' && this.running);
  }
}

