/**
 * Order that survives asynchronous work: items leave in the order they came, and an item whose
 * work is not done yet holds back every item behind it.
 *
 * The gateway needs this in three places, each with its own kind of work: frames a client sent
 * compressed (zstd decompresses asynchronously, and the frames after one must wait for it),
 * frames to a client that are being compressed (shared with every other recipient), and replies
 * of handlers that finish out of order (cluster mode). The client library needs it for the same
 * two codec directions. ws' Sender does this with a DEFLATING state and a queue; this is that
 * queue, written once: `take` says whether the item at the head is ready (and, when it is, sends
 * it on), and whoever finishes work calls `drain`.
 *
 * Nothing is allocated while nothing waits: `push` of a ready item on an empty queue hands it
 * straight to `take`. The queue is an array with a moving head: an item that left is let go at
 * once, and the array is compacted when it empties, or when the items that left are most of it
 * (a client that always has a request in flight never lets it empty: without that, every reply it
 * ever got stayed referenced).
 */

/** Compact once at least this many items have left and they are at least half the array. */
const COMPACT_AFTER = 64;

export class InOrder<T> {
  private items: T[] = [];
  private head = 0;
  private draining = false;

  /** `take(item)`: false when the item is not ready yet (it stays at the head); true once sent on. */
  constructor(private readonly take: (item: T) => boolean) {}

  /** Whether an item is waiting (its work, or the work of one ahead of it, is not done). */
  get holding(): boolean {
    return this.head < this.items.length;
  }

  /** Items waiting. */
  get size(): number {
    return this.items.length - this.head;
  }

  /**
   * Add an item behind the others. When nothing waits it is offered to `take` at once; returns
   * true when it went through now, false when it waits.
   */
  push(item: T): boolean {
    if (this.head === this.items.length && !this.draining && this.take(item)) return true;
    this.items.push(item);
    return false;
  }

  /** Add an item known not to be ready yet (its work was just started) behind the others. */
  hold(item: T): void {
    this.items.push(item);
  }

  /** Work finished somewhere: send on every ready item from the head. */
  drain(): void {
    if (this.draining) return;
    this.draining = true;
    try {
      const items = this.items;
      while (this.head < items.length) {
        if (!this.take(items[this.head])) break;
        if (this.items !== items) return; // cleared while sending on
        (items as (T | undefined)[])[this.head] = undefined;
        this.head++;
      }
      if (this.head === items.length) this.reset();
      else if (this.head >= COMPACT_AFTER && this.head * 2 >= items.length) {
        this.items = items.slice(this.head);
        this.head = 0;
      }
    } finally {
      this.draining = false;
    }
  }

  /** Length of the array behind the queue (items waiting, and left ones not compacted away yet). */
  get retained(): number {
    return this.items.length;
  }

  /** Forget every waiting item (the connection closed). */
  clear(): void {
    this.reset();
  }

  private reset(): void {
    this.items = this.items.length === 0 ? this.items : [];
    this.head = 0;
  }
}
