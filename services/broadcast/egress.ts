/**
 * The broadcast tier's egress writes: one XADD per gateway for everything routed to it while the
 * previous write was in flight, whichever shard it came from.
 *
 * Each shard loop routes its batch and waits for its messages to be in the gateways' egress
 * streams before it acknowledges the batch. Loops hand their messages to one EgressWriter per
 * worker, which keeps at most one flush in flight: when idle a flush starts at once (nothing is
 * held back at low rates), and what arrives while one is in flight goes out together in the next
 * one (batches grow with the rate, like ioredis' own auto-pipelining one level down). The writer
 * has a connection of its own, so a flush waits only for the previous flush, not behind the apply
 * scripts of other shards: a message waits at most one flush more than it would alone. A gateway's
 * entries are written in the order the loops handed them over, so a room's order, which one loop
 * decides, is kept. If a flush fails, every loop with messages in it fails its batch and retries
 * it from the pending entries (gateways drop what they had already).
 *
 * It also knows which egress kind each gateway reads (wire.ts "Versions"): a gateway announces it
 * in its heartbeat value, read once per gateway incarnation; until it is known, or while a
 * gateway announces an older version (rechecked every few seconds), it gets the older kind.
 */
import { Keys } from '../bus/keys';
import type { RedisClient } from '../bus/redis-conn';
import { EgressBatch, wireVersionOf, type EgressMessage } from '../bus/wire';

/** How long an older (or unknown) gateway version is believed before it is read again. */
const RECHECK_MS = 5000;
/** Gateway ids are per incarnation; forget them all past this many (a few GETs to relearn). */
const MAX_KNOWN = 4096;

interface Pending {
  batches: Map<string, EgressBatch>;
  done: Promise<void>;
  resolve: () => void;
  reject: (err: unknown) => void;
}

export class EgressWriter {
  private next: Pending | null = null;
  private inFlight = false;
  private scheduled = false;
  private readonly versions = new Map<string, { v: number; at: number }>();
  /** Flushes (XADD rounds) and entries written, for /stats. */
  flushes = 0;
  entries = 0;

  /**
   * `cluster`: Redis Cluster, where one pipeline cannot span the nodes that hold different
   * gateways' streams, so each XADD goes through ioredis' per-node auto-pipelining instead.
   */
  constructor(
    private readonly cmd: RedisClient,
    private readonly maxMessages: number,
    private readonly cluster = false,
  ) {}

  /**
   * Learn the wire version of any of `gws` not known yet (one pipelined GET each), so that
   * `write` can pick the egress kind without waiting.
   */
  async learn(gws: Iterable<string>): Promise<void> {
    const now = Date.now();
    const ask: string[] = [];
    for (const gw of gws) {
      const k = this.versions.get(gw);
      if (k === undefined || (k.v < 2 && now - k.at >= RECHECK_MS)) ask.push(gw);
    }
    if (ask.length === 0) return;
    const values = await Promise.all(ask.map((gw) => this.cmd.get(Keys.gateway(gw))));
    if (this.versions.size + ask.length > MAX_KNOWN) this.versions.clear();
    for (let i = 0; i < ask.length; i++) this.versions.set(ask[i], { v: wireVersionOf(values[i]), at: now });
  }

  /**
   * Queue `messages` (per gateway, in order) for the next flush; resolves once that flush is in
   * Redis, rejects if any of its writes failed.
   */
  write(messages: Map<string, EgressMessage[]>): Promise<void> {
    let p = this.next;
    if (p === null) {
      let resolve!: () => void;
      let reject!: (err: unknown) => void;
      const done = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      p = this.next = { batches: new Map(), done, resolve, reject };
    }
    for (const [gw, list] of messages) {
      let b = p.batches.get(gw);
      if (b === undefined) {
        b = new EgressBatch(Keys.egress(gw), this.versions.get(gw)?.v ?? 1);
        p.batches.set(gw, b);
      }
      for (let i = 0; i < list.length; i++) b.add(list[i]);
    }
    // Idle: flush at the end of this tick, with whatever the other loops hand over in it.
    if (!this.inFlight && !this.scheduled) {
      this.scheduled = true;
      process.nextTick(flushTick, this);
    }
    return p.done;
  }

  flush(): void {
    this.scheduled = false;
    if (this.inFlight) return;
    const p = this.next;
    if (p === null) return;
    this.next = null;
    this.inFlight = true;
    this.flushes++;
    this.entries += p.batches.size;
    let done: Promise<unknown>;
    if (this.cluster) {
      const writes: Promise<unknown>[] = [];
      for (const b of p.batches.values()) for (const args of b.finish(this.maxMessages)) writes.push(this.cmd.call('XADD', ...args));
      done = Promise.all(writes);
    } else {
      // An explicit pipeline is written at once, one write for every gateway's XADD: the
      // auto-pipeline would first wait for the event loop's next check phase.
      const pipe = this.cmd.pipeline();
      for (const b of p.batches.values()) for (const args of b.finish(this.maxMessages)) pipe.call('XADD', ...args);
      done = pipe.exec().then(failed);
    }
    done.then(
      () => this.settle(p, null),
      (err: unknown) => this.settle(p, err),
    );
  }

  private settle(p: Pending, err: unknown): void {
    this.inFlight = false;
    if (err === null) p.resolve();
    else p.reject(err);
    this.flush();
  }
}

/** Throw the first error of a pipeline's replies (ioredis resolves exec() with them). */
function failed(replies: [Error | null, unknown][] | null): void {
  if (replies === null) throw new Error('pipeline discarded');
  for (const [err] of replies) if (err !== null) throw err;
}

function flushTick(w: EgressWriter): void {
  w.flush();
}
