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

import type { IncomingMessage, Server as HttpServer, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

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

/**
 * Keep `server`'s sockets in `queue` only while none of their requests is being answered: taken
 * out at a request, put back (as the newest) once every request of the socket is answered. A
 * count, not a flag: a client may pipeline requests, and the first answer must not make the
 * socket a candidate while the next is still being answered. `tracked` says which sockets are
 * the queue's at all.
 */
export function evictableWhileIdle(server: HttpServer, queue: Pick<EvictionQueue<Socket>, 'add' | 'delete'>, tracked: (socket: Socket) => boolean): void {
  const answering = new WeakMap<Socket, number>();
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const socket = req.socket;
    if (!tracked(socket)) return;
    answering.set(socket, (answering.get(socket) ?? 0) + 1);
    queue.delete(socket);
    res.once('close', () => {
      const n = (answering.get(socket) ?? 1) - 1;
      answering.set(socket, n);
      if (n === 0 && !socket.destroyed && tracked(socket)) queue.add(socket);
    });
  });
}
