/**
 * A client's TCP connection: the socket, its inbound side (bytes to messages), its outbound
 * queue (messages to bytes) and the session between them. This module is the only one that knows
 * the transport is a net.Socket; the session would sit the same way on a WebSocket.
 *
 * Hot-path rules: socket listeners are shared functions found through a symbol on the socket
 * (no closures per connection or per message), frames are parsed once, and the hub writes each
 * dirty queue once per event-loop turn.
 */
import type { Socket } from 'node:net';
import { Inbound, type InboundLimits, type PartialBudget } from './inbound';
import { OutboundQueue, type OutboundLimits } from './outbound-queue';
import { Session, type SessionHost, type SessionTransport } from './session';

/** What a connection needs from the server that accepted it. */
export interface ConnectionHost extends SessionHost, PartialBudget {
  readonly inboundLimits: InboundLimits;
  readonly outboundLimits: OutboundLimits;
  /** Give an HTTP connection (sniffed on the client port) to the HTTP handler. */
  handOverHttp(socket: Socket, firstBytes: Buffer): void;
  closed(conn: Connection): void;
  /** The connection's output is piling up in its socket (see OutboundQueue's `backlogged`). */
  outboundBacklogged(conn: Connection): void;
}

const CONN = Symbol('switchboard.connection');
type ConnSocket = Socket & { [CONN]?: Connection };

export class Connection implements SessionTransport {
  readonly session: Session;
  readonly inbound: Inbound;
  private closeTimer: NodeJS.Timeout | null = null;
  private gone = false;

  constructor(
    readonly socket: Socket,
    private readonly host: ConnectionHost,
    now: number,
  ) {
    const { hub, counters } = host.services;
    const out = new OutboundQueue(
      socket,
      host.outboundLimits,
      () => hub.markDirty(this.session),
      (bytes) => (counters.bytesSent += bytes),
      () => host.outboundBacklogged(this),
      hub,
    );
    this.session = new Session(host, out, this, now);
    this.inbound = new Inbound(socket, this.session, host.inboundLimits, counters, host, (first) => this.handOver(first), now, hub);
    (socket as ConnSocket)[CONN] = this;
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 30_000);
    socket.on('data', onSocketData);
    socket.on('error', onSocketError);
    socket.on('close', onSocketClose);
  }

  // ---- SessionTransport --------------------------------------------------------------------

  stopInput(): void {
    this.inbound.stop();
  }

  holdInput(hold: boolean): void {
    this.inbound.holdRequests(hold);
  }

  end(): void {
    this.socket.end();
  }

  endWithin(graceMs: number): void {
    if (this.closeTimer !== null) return;
    this.closeTimer = setTimeout(destroySocket, graceMs, this.socket);
    this.closeTimer.unref();
  }

  destroy(): void {
    this.socket.destroy();
  }

  chargeReply(bytes: number): void {
    this.inbound.chargeReply(bytes);
  }

  get lastSeen(): number {
    return this.inbound.lastSeen;
  }

  // ---- socket events -----------------------------------------------------------------------

  /** The first bytes were HTTP: this is no client session; the HTTP server takes the socket. */
  private handOver(firstBytes: Buffer): void {
    this.detach();
    this.host.handOverHttp(this.socket, firstBytes);
  }

  private detach(): void {
    this.gone = true;
    const socket = this.socket;
    socket.removeListener('data', onSocketData);
    socket.removeListener('error', onSocketError);
    socket.removeListener('close', onSocketClose);
    (socket as ConnSocket)[CONN] = undefined;
    this.host.services.counters.connections--;
    this.host.closed(this);
  }

  /** @internal 'close' of the socket. */
  onClosed(): void {
    if (this.gone) return;
    this.gone = true;
    this.inbound.stop();
    if (this.closeTimer !== null) clearTimeout(this.closeTimer);
    this.session.closed();
    this.host.services.counters.connections--;
    this.host.closed(this);
  }
}

function onSocketData(this: ConnSocket, chunk: Buffer): void {
  this[CONN]?.inbound.push(chunk);
}

function onSocketError(this: ConnSocket): void {
  // ECONNRESET and friends: 'close' follows and cleans up.
}

function onSocketClose(this: ConnSocket): void {
  this[CONN]?.onClosed();
}

function destroySocket(socket: Socket): void {
  socket.destroy();
}
