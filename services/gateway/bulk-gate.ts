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
 * bucket empty waits, in arrival order across connections; its connection is not read meanwhile
 * (the session holds its input), so nothing is refused and other clients' requests never wait
 * here. The bucket holds an eighth of a second's worth, at least two reservations: what is
 * reserved at once, so what runs in Redis and is built at once, stays within it.
 */
import { TokenBucket } from './token-bucket';

/** A session with a bulk request waiting for a place. */
export interface BulkWaiter {
  /** A place was reserved for it: run the next waiting bulk request, or give the place back. */
  bulkGranted(): void;
}

export class BulkGate {
  private readonly bucket: TokenBucket | null;
  private readonly queue: (BulkWaiter | null)[] = [];
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
    this.bucket = perSec > 0 ? new TokenBucket(perSec, Math.max(2 * reserve, perSec / 8), Date.now()) : null;
  }

  /** A place now (true), or `w.bulkGranted()` later, after those that waited before it. */
  acquire(w: BulkWaiter): boolean {
    if (this.bucket === null) return true;
    if (this.head === this.queue.length && this.admit()) return true;
    this.queue.push(w);
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

  /** Requests waiting for a place (all connections). */
  get waiting(): number {
    return this.queue.length - this.head;
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

  /** Admit the waiting requests the bucket has room for, in order. */
  pump(): void {
    this.pumping = true;
    try {
      while (this.head < this.queue.length && this.admit()) {
        const w = this.queue[this.head]!;
        this.queue[this.head++] = null;
        w.bulkGranted();
      }
    } finally {
      this.pumping = false;
    }
    if (this.head === this.queue.length) {
      this.queue.length = 0;
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue.splice(0, this.head);
      this.head = 0;
    }
    this.arm();
  }

  private arm(): void {
    if (this.timer !== null || this.head === this.queue.length) return;
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
