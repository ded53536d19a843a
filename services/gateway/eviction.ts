/**
 * Which connection goes when a port is full. Refusing the newcomer let a flood of sockets that
 * never say anything (opened again as fast as they are closed) keep every new client out for as
 * long as it lasted: each one is held until HELLO_TIMEOUT_MS or HTTP_HEADERS_TIMEOUT_MS. Instead,
 * the oldest connection that has proven nothing yet is closed to make room: a client socket that
 * has not said hello, or an HTTP connection (either port) with no request being answered. A
 * flood then only displaces itself, while a real client, which says hello within a round trip,
 * is never the oldest. Sessions past hello, and HTTP requests in flight, are never chosen: when
 * every connection is one of those, the newcomer is refused as before.
 */

/** What may be closed to admit a newcomer. */
export interface Evictable {
  destroy(): void;
}

/**
 * Candidates in the order they became candidates, oldest first. An entry that stopped being one
 * for good (a session past hello) is dropped lazily, when the scan for the oldest meets it; one
 * that stops for a while (an HTTP connection with a request in flight) is taken out with
 * `delete` and put back, as the newest, with `add`.
 */
export class EvictionQueue<T extends Evictable> {
  private readonly queue = new Set<T>();

  constructor(private readonly stillEvictable: (t: T) => boolean) {}

  /** A candidate from now on (the newest; an entry already queued moves to the end). */
  add(t: T): void {
    this.queue.delete(t);
    this.queue.add(t);
  }

  delete(t: T): void {
    this.queue.delete(t);
  }

  get size(): number {
    return this.queue.size;
  }

  /** Close the oldest candidate; false when there is none. */
  evictOldest(): boolean {
    for (const t of this.queue) {
      this.queue.delete(t);
      if (this.stillEvictable(t)) {
        t.destroy();
        return true;
      }
    }
    return false;
  }
}

