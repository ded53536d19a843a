/**
 * REPLY_TOTAL_BYTES_PER_SEC: the bytes of bulk replies (`history` pages, `presence` lists: replies
 * whose size follows the server's state, not the request's) that all connections together may be
 * sent per second.
 *
 * Each connection's large replies are charged to its own INBOUND_BYTES_PER_SEC, after they are
 * built; its first one is free. Five hundred connections each asking one 40-byte `history` for a
 * 2 MB page made one turn write a gigabyte (every other client waited 4-10 s), and in cluster mode
 * a thousand of them grew Redis by 2.4 GB of output buffers. Here a bulk request reserves the
 * most its reply may be (half of MAX_OUTBOUND_BYTES: the page bound) before it runs, and the
 * reservation is settled with the reply's real size once it is built. A request that finds the
 * bucket empty waits, and its connection is not read meanwhile (the session holds its input);
 * other clients' requests never wait here. The bucket holds an eighth of a second's worth, at
 * least BULK_RESERVATIONS: what is reserved at once, so what runs in Redis and is built at once,
 * stays within it. Places go round the users that wait (acquire()), and a request that waited
 * BULK_WAIT_MS is answered `overloaded`.
 */
import { TokenBucket } from './token-bucket';

/** A session with a bulk request waiting for a place. */
export interface BulkWaiter {
  /** Whose turn it takes: places go round the users waiting, not first come first served. */
  readonly user: string;
  /** A place was reserved for it: run the next waiting bulk request, or give the place back. */
  bulkGranted(): void;
}

/**
 * How long a bulk request may wait for its place before it is answered `overloaded` (ms). Replies
 * leave in request order, so everything a client asked after it waits too; the bound keeps one
 * connection's replies moving whatever floods the gate.
 */
export const BULK_WAIT_MS = 5000;

/**
 * Reservations the bucket holds at once when full: bulk requests running together (in cluster
 * mode each one is a Redis round trip, holding its reservation until the reply). Two (4 MiB at the
 * defaults) let only a handful of small `history` reads run at once on a whole gateway, which a
 * reconnect storm would queue for seconds.
 */
const BULK_RESERVATIONS = 16;

export class BulkGate {
  private readonly bucket: TokenBucket | null;
  /** Per user, its sessions waiting for a place, in order (each session at most once). */
  private readonly byUser = new Map<string, BulkWaiter[]>();
  /** Users with waiting sessions, in the order their turns come (each at most once). */
  private turns: string[] = [];
  private head = 0;
  private timer: NodeJS.Timeout | null = null;
  /** Inside pump(): a settle from a request run synchronously by a grant only adjusts the bucket. */
  private pumping = false;

  /**
   * `perSec` 0: no budget (every request runs at once). `reserve`: what each request holds until
   * its reply is built. `onWait`: counted each time a request has to wait.
   */
  constructor(
    perSec: number,
    readonly reserve: number,
    private readonly onWait: () => void,
  ) {
    this.bucket = perSec > 0 ? new TokenBucket(perSec, Math.max(BULK_RESERVATIONS * reserve, perSec / 8), Date.now()) : null;
  }

  /**
   * A place now (true), or `w.bulkGranted()` later. Places go round the users that wait, one at
   * a time, and within a user in arrival order: a user on many connections (or many users of one
   * attacker, each on many) takes one turn in each round, not one per connection, so a flood of
   * history requests cannot push everyone else's to the back of one long line.
   */
  acquire(w: BulkWaiter): boolean {
    if (this.bucket === null) return true;
    if (this.head === this.turns.length && this.admit()) return true;
    const queue = this.byUser.get(w.user);
    if (queue === undefined) {
      this.byUser.set(w.user, [w]);
      this.turns.push(w.user);
    } else queue.push(w);
    this.onWait();
    this.arm();
    return false;
  }

  /** A bulk request that held a place finished with a reply of `bytes` (0: none sent). */
  settle(bytes: number): void {
    const b = this.bucket;
    if (b === null) return;
    if (bytes < this.reserve) b.refund(this.reserve - bytes);
    else b.spend(bytes - this.reserve);
    if (!this.pumping) this.pump();
  }

  /** Sessions waiting for a place (all users). */
  get waiting(): number {
    let n = 0;
    for (const q of this.byUser.values()) n += q.length;
    return n;
  }

  close(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  private admit(): boolean {
    const b = this.bucket!;
    if (!b.positive(Date.now())) return false;
    b.spend(this.reserve);
    return true;
  }

  /** Admit the waiting requests the bucket has room for, a user at a time. */
  pump(): void {
    this.pumping = true;
    try {
      while (this.head < this.turns.length && this.admit()) {
        const user = this.turns[this.head++];
        const queue = this.byUser.get(user)!;
        const w = queue.shift()!;
        if (queue.length === 0) this.byUser.delete(user);
        else this.turns.push(user);
        w.bulkGranted();
      }
    } finally {
      this.pumping = false;
    }
    if (this.head === this.turns.length) {
      this.turns = [];
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 > this.turns.length) {
      this.turns = this.turns.slice(this.head);
      this.head = 0;
    }
    this.arm();
  }

  private arm(): void {
    if (this.timer !== null || this.head === this.turns.length) return;
    this.timer = setTimeout(onRefill, this.bucket!.debtMs, this);
    this.timer.unref();
  }

  /** The refill timer fired. */
  refilled(): void {
    this.timer = null;
    this.pump();
  }
}

function onRefill(gate: BulkGate): void {
  gate.refilled();
}
