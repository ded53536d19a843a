/**
 * The consuming loop of one ingress shard that this worker owns: reclaim what a predecessor left
 * pending, then read batches on the shard's own blocking connection and hand them to the worker
 * to route (worker.ts), acknowledging each batch once it is routed. Processes a batch only while
 * the lease is surely still ours (docs/cluster.md, "Shard ownership").
 */
import { GROUP, Keys } from '../bus/keys';
import { createRedis, isReady, type RedisClient, type StreamEntry } from '../bus/redis-conn';
import type { BroadcastWorker } from './worker';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** The consuming loop of one owned shard, on its own (blocking) connection. */
export class ShardLoop {
  private running = true;
  private readonly reader: RedisClient;
  private readonly key: string;
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
    const o = worker.opts;
    this.reader = createRedis({ url: o.url, cluster: o.cluster, name: `sb-bc-${o.workerId}-s${shard}`, log: o.log, autoPipelining: false });
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
   * XREADGROUP the next batch; the previous batch's XACK and XTRIM go in the same write (one
   * round trip instead of three). Redis runs them before the read blocks.
   */
  private async read(): Promise<StreamEntry[] | null> {
    const { workerId, batch } = this.worker.opts;
    const ack = this.unacked;
    let res: [string, StreamEntry[]][] | null;
    if (ack === null) {
      res = (await this.reader.call('XREADGROUP', 'GROUP', GROUP, workerId, 'COUNT', batch, 'BLOCK', 1000, 'STREAMS', this.key, '>')) as typeof res;
    } else {
      this.unacked = null;
      const replies = (await this.reader
        .pipeline()
        .call('XACK', this.key, GROUP, ...ack)
        .call('XTRIM', this.key, 'MINID', '~', ack[ack.length - 1])
        .call('XREADGROUP', 'GROUP', GROUP, workerId, 'COUNT', batch, 'BLOCK', 1000, 'STREAMS', this.key, '>')
        .exec()
        .catch((err: unknown) => {
          // The connection failed: the XACK may not have reached Redis. Acknowledge again
          // before reclaiming (harmless if it did), or these entries would be routed twice.
          this.unacked = ack;
          throw err;
        })) as [Error | null, unknown][] | null;
      if (replies === null) throw new Error('pipeline discarded');
      if (replies[0][0] !== null) this.unacked = ack;
      for (const [err] of replies) if (err !== null) throw err;
      res = replies[2][1] as typeof res;
    }
    return res === null ? null : res[0][1];
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
      const res = (await this.worker.cmd.call('XAUTOCLAIM', this.key, GROUP, workerId, 0, cursor, 'COUNT', batch)) as [string, StreamEntry[], ...unknown[]];
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

