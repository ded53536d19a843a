/**
 * HTTP servers for the admin endpoints, with the same defences on every port of every role:
 * request timeouts enforced (a request dribbled a byte at a time is answered 408 and closed),
 * bad requests answered and closed rather than thrown, listener errors (EMFILE on accept)
 * reported rather than fatal, and at most `maxConnections` sockets at once (past it the oldest idle
 * one makes room: gateway/eviction.ts).
 *
 * The gateway builds its two HTTP servers (admin port, and HTTP sniffed on the client port) with
 * createTimedHttpServer and counts their sockets against MAX_CONNECTIONS itself; the broadcast
 * and operator roles run an AdminServer.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { DESCRIPTOR_RESERVE, descriptorLimit } from '../gateway/descriptors';
import { EvictionQueue } from '../gateway/eviction';
import { createAdminHandler, type AdminEndpoints, type AdminHandler } from './handler';

export interface HttpTimeouts {
  /** Time from connecting to the end of the request headers. @default 5000 */
  readonly headersTimeoutMs: number;
  /** Time to receive a whole request. @default 10000 */
  readonly requestTimeoutMs: number;
  /** An idle keep-alive connection is closed after this long. @default 5000 */
  readonly keepAliveTimeoutMs: number;
}

export const DEFAULT_HTTP_TIMEOUTS: HttpTimeouts = { headersTimeoutMs: 5000, requestTimeoutMs: 10_000, keepAliveTimeoutMs: 5000 };

export interface TimedServerHooks {
  /** A request timed out (counted by the gateway as limit HTTP_*_TIMEOUT_MS). */
  onTimeout?(): void;
  /** The listener failed (accept errors among them); never thrown. */
  onListenerError?(err: NodeJS.ErrnoException): void;
  /**
   * A socket has a request being answered (`busy`), or no longer any (`idle`): what the eviction
   * queue of a full port follows (gateway/eviction.ts). Counted with the bound on unanswered
   * requests, pipelined ones included.
   */
  busy?(socket: Socket): void;
  idle?(socket: Socket): void;
}

const HTTP_408 = 'HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n';
const HTTP_431 = 'HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n';
const HTTP_400 = 'HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n';
const HTTP_405 = 'HTTP/1.1 405 Method Not Allowed\r\nAllow: GET, HEAD\r\nConnection: close\r\nContent-Length: 0\r\n\r\n';
const HTTP_413 = 'HTTP/1.1 413 Content Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n';

/** How long a connection that sent a body may take to get its 413 before it is destroyed. */
const BODY_CLOSE_MS = 100;

function destroySocketNow(socket: Socket): void {
  socket.destroy();
}

/** A request that says it carries a body (every endpoint here is GET or HEAD, none takes one). */
function hasBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

function refuseConnect(_req: IncomingMessage, socket: Duplex): void {
  socket.on('error', ignoreSocketError);
  // Closed once written: the HTTP timeouts no longer cover a socket Node has handed over.
  socket.end(HTTP_405, () => socket.destroy());
}

function ignoreSocketError(): void {
  // The peer went away before the 405: nothing to answer.
}

/**
 * Requests one HTTP connection may have unanswered at once (pipelined). Node parses every request
 * of a chunk it reads (a 64 kB read holds 1,700 `GET /stats`) and calls the handler for each
 * before it looks at the socket's write buffer, so a client that pipelines without reading had
 * every answer buffered for it (637 MB with 4 connections). Past this the connection is closed;
 * no HTTP client we know of pipelines (curl, browsers, Prometheus do not).
 */
export const MAX_HTTP_UNANSWERED = 8;
/** Output an HTTP connection may have waiting in its socket when a request arrives; past it, closed. */
export const MAX_HTTP_PENDING_BYTES = 1024 * 1024;

/**
 * The handler, for connections that keep to the bounds above: a request that would go past them
 * closes its connection instead of being answered.
 */
function bounded(handler: AdminHandler, hooks: TimedServerHooks): AdminHandler {
  const unanswered = new WeakMap<Socket, number>();
  return (req, res) => {
    const socket = req.socket;
    const n = (unanswered.get(socket) ?? 0) + 1;
    if (n > MAX_HTTP_UNANSWERED || socket.writableLength > MAX_HTTP_PENDING_BYTES) {
      // Node still parses the rest of the chunk it read (up to 64 kB: 1,700 requests, each an
      // IncomingMessage and a ServerResponse, pausing its parser does not stop it), but answers
      // none of them: the cost is bounded by what one read holds.
      socket.destroy();
      return;
    }
    if (hasBody(req)) {
      // Node would read and discard the body for the whole request timeout, uncharged, at
      // loopback speed (175 MB/s a connection), or a byte at a time: four connections raised the
      // client port's p99 to 341 ms. No endpoint takes a body: 413, and the connection goes.
      // The 413 only when no earlier request on the socket is still being answered (its answer
      // would come after ours). Closed within BODY_CLOSE_MS whatever happens: a peer that does
      // not read would otherwise keep the write from finishing, and the body being read.
      if (n === 1 && socket.writable) socket.end(HTTP_413);
      else socket.end();
      setTimeout(destroySocketNow, BODY_CLOSE_MS, socket).unref();
      return;
    }
    unanswered.set(socket, n);
    if (n === 1) hooks.busy?.(socket);
    res.once('close', () => {
      const left = (unanswered.get(socket) ?? 1) - 1;
      unanswered.set(socket, left);
      if (left === 0 && !socket.destroyed) hooks.idle?.(socket);
    });
    handler(req, res);
  };
}

/** An HTTP server for `handler` with the timeouts enforced and client errors answered. */
export function createTimedHttpServer(handler: AdminHandler, timeouts: HttpTimeouts, hooks: TimedServerHooks = {}): Server {
  const requestTimeout = timeouts.requestTimeoutMs;
  const headersTimeout = Math.min(timeouts.headersTimeoutMs, requestTimeout);
  const server = createServer(
    {
      headersTimeout,
      requestTimeout,
      keepAliveTimeout: timeouts.keepAliveTimeoutMs,
      // Node checks the two timeouts on this period (30 s by default): a fraction of the shorter.
      connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(headersTimeout / 4))),
    },
    bounded(handler, hooks),
  );
  // A connection that neither reads its answers nor sends goes after the request timeout (the
  // socket's inactivity timer; idle keep-alive connections go sooner, at keepAliveTimeout).
  server.timeout = requestTimeout;
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    // What Node does by default for a bad or timed-out request, counting the timeouts.
    const timedOut = err.code === 'ERR_HTTP_REQUEST_TIMEOUT';
    if (timedOut) hooks.onTimeout?.();
    if (socket.writable && socket.bytesWritten === 0) socket.write(timedOut ? HTTP_408 : err.code === 'HPE_HEADER_OVERFLOW' ? HTTP_431 : HTTP_400);
    socket.destroy();
  });
  // CONNECT never reaches the handler: Node emits 'connect' for it and, with no listener,
  // destroys the socket without an answer. It gets the 405 every other method we do not serve gets.
  server.on('connect', refuseConnect);
  server.on('error', (err: NodeJS.ErrnoException) => hooks.onListenerError?.(err));
  return server;
}

/** The admin port's cap when the descriptor limit allows it. */
const ADMIN_MAX_CONNECTIONS = 256;

/**
 * How many sockets the admin port of a role without a client port holds at once: 256, or fewer
 * when the descriptor limit is low, so that `reserved` descriptors (the role's own Redis
 * connections, which must be able to reconnect) and DESCRIPTOR_RESERVE stay free. A fixed 256
 * under a limit of 256 let a flood of idle sockets on a broadcast worker's admin port take every
 * descriptor: after a Redis blip its connections could not reconnect (EMFILE) and routing stopped.
 */
export function adminConnectionCap(reserved: number, fdLimit: number | null = descriptorLimit()): number {
  if (fdLimit === null) return ADMIN_MAX_CONNECTIONS;
  return Math.max(1, Math.min(ADMIN_MAX_CONNECTIONS, Math.floor(fdLimit * 0.9) - DESCRIPTOR_RESERVE - reserved));
}

export interface AdminServerOptions {
  host: string;
  /** 0 picks a free port. */
  port: number;
  /** @default DEFAULT_HTTP_TIMEOUTS */
  timeouts?: HttpTimeouts;
  /**
   * Sockets held at once. Past it the oldest idle one (no request being answered: a half-open
   * socket, a request dribbled in, an idle keep-alive) is closed to admit the newcomer, or the
   * newcomer is, when every one is answering a request. @default adminConnectionCap(0)
   */
  maxConnections?: number;
  onListenerError?(err: NodeJS.ErrnoException): void;
}

/** The admin port of a role that has no client port (broadcast, operator). */
export class AdminServer {
  private readonly server: Server;

  constructor(
    endpoints: AdminEndpoints,
    private readonly opts: AdminServerOptions,
  ) {
    // Refusing the newcomer (http.Server's maxConnections) let a flood of idle sockets, opened
    // again as they were closed, keep every probe out: the pod failed its liveness probe.
    const cap = opts.maxConnections ?? adminConnectionCap(0);
    const idle = new EvictionQueue<Socket>((s) => !s.destroyed);
    const server = createTimedHttpServer(createAdminHandler(endpoints), opts.timeouts ?? DEFAULT_HTTP_TIMEOUTS, {
      onListenerError: opts.onListenerError,
      busy: (socket) => idle.delete(socket),
      idle: (socket) => idle.add(socket),
    });
    this.server = server;
    let open = 0;
    server.on('connection', (socket: Socket) => {
      if (open >= cap && !idle.evictOldest()) {
        socket.destroy();
        return;
      }
      open++;
      idle.add(socket);
      socket.once('close', () => {
        open--;
        idle.delete(socket);
      });
    });
  }

  /** Listen; resolves with the port. */
  async listen(): Promise<number> {
    const server = this.server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: this.opts.host, port: this.opts.port }, () => {
        server.removeListener('error', reject);
        resolve();
      });
    });
    return (server.address() as AddressInfo).port;
  }

  get port(): number | null {
    const a = this.server.address() as AddressInfo | null;
    return a === null ? null : a.port;
  }

  /** Stop listening and close every connection, idle or not. */
  async close(): Promise<void> {
    if (!this.server.listening) return;
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
