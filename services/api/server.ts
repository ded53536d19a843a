/**
 * The gRPC server API (package switchboard.v1, services/api/switchboard.proto), served by every
 * gateway on API_PORT: how backend services publish into rooms, reach users and watch the server.
 *
 * The .proto is loaded at run time with @grpc/proto-loader, so there is no generated code to keep
 * in sync; the request and reply shapes below mirror it (a test calls every method through a real
 * client built from the same file). Everything goes through the gateway's bus, exactly as client
 * requests do, so the API behaves the same in standalone and cluster mode: a Publish on any
 * gateway reaches the room's members on every gateway. Publish and SendDirect are the very calls
 * `send_chat` and `direct` make (publishChat, sendDirect: traced and stamped alike), and
 * Disconnect sends the same `reconnect` push as every other disconnect (reconnectFrame).
 *
 * Authentication: the API key (API_KEY) in metadata, `x-api-key` or `authorization: Bearer`.
 * Without a configured key the API refuses every call, so an API port exposed by mistake cannot be
 * used. The key is checked by a server interceptor on the call's metadata, before grpc-js reads
 * the request message: a call without a valid key ends with UNAUTHENTICATED and its stream is reset
 * (the client stops sending), so its message is never received in full, buffered or decoded.
 * Failures are SwitchboardErrors mapped through ErrorInfo[code].grpc, with the protocol code
 * in the `switchboard-error-code` trailer.
 *
 * Bounded like client input: a request message is at most MAX_FRAME_BYTES (grpc-js refuses a
 * larger one with RESOURCE_EXHAUSTED before it reaches a handler), at most MAX_CALLS_READING calls
 * with a valid key are read and handled at once per process (the others wait, unread, in order),
 * `data` nests at most MAX_JSON_DEPTH levels (INVALID_ARGUMENT), and neither a listener error nor
 * a failing stats read on a timer can throw. WatchStats streams are bounded too: at most
 * MAX_WATCHERS at once per process (RESOURCE_EXHAUSTED past it), an interval within
 * [WATCH_MIN_MS, WATCH_MAX_MS], one stats snapshot shared by every watcher per STATS_SHARE_MS, and
 * nothing written to a stream whose previous message has not drained (a client that does not read
 * gets fewer snapshots, and the server holds at most grpc-js's buffer for it).
 *
 * Connections: the listener is ours (node:net), and grpc-js gets each socket through a
 * connection injector, so that the port is held to the same rules as the others. A connection
 * counts against MAX_CONNECTIONS (with the gateway's client and HTTP connections); one remote
 * address opens at most API_ACCEPTS_PER_SEC a second (API_ACCEPT_BURST at once: the others are
 * closed at accept); one that has not sent the HTTP/2 connection preface within
 * HTTP_HEADERS_TIMEOUT_MS is closed (a half-open socket would otherwise be held for ever); one
 * with no call open for IDLE_TIMEOUT_MS is closed with a GOAWAY (grpc.max_connection_idle_ms:
 * clients reconnect on their next call); a connection opens
 * at most MAX_STREAMS calls at once, and the port holds at most MAX_API_CONNECTIONS connections, so
 * that the request messages it buffers (of calls with a valid key: the others are not read) are
 * bounded (MAX_API_CONNECTIONS x MAX_STREAMS x MAX_FRAME_BYTES). A connection must make a call
 * with a valid key within HTTP_REQUEST_TIMEOUT_MS, or it is closed, and may open at most
 * MAX_UNPROVEN_CALLS calls before one has a valid key: the next closes it with a GOAWAY (HTTP/2
 * "rapid reset" without a key costs at most that many streams a connection).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { existsSync } from 'node:fs';
import { constants as http2Constants, type Http2Session, type ServerHttp2Stream } from 'node:http2';
import { createServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net';
import { join, resolve } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { Config } from '../control';
import { API_RESERVE, reconnectFrame, Session, type GatewayServer } from '../gateway';
import { publishChat, sendDirect } from '../plugins';
import {
  boundedJson,
  DisconnectReason,
  ErrorCode,
  ErrorInfo,
  isSwitchboardError,
  isWellFormedName,
  jsonTextDepthExceeds,
  malformedNameMessage,
  MAX_NAME_LENGTH,
  SwitchboardError,
} from '../protocol';
import { TokenBucket } from '../gateway/token-bucket';
import { Limit } from '../telemetry/counters';
import type { Logger } from '../telemetry/log';

/**
 * Calls one API connection may have open at once (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS). Each
 * open call may hold a request message of up to MAX_FRAME_BYTES that it has not finished sending
 * (grpc-js buffers it until it is complete): with 100 streams, 8 connections sending 990 kB of a
 * 1 MB Publish each and never finishing held 900 MB, with or without a key (the key was read only
 * once the message was complete; now a call without one is not read at all).
 */
export const MAX_STREAMS = 8;
/**
 * API connections open at once (past it, closed at accept): with MAX_STREAMS, the unfinished
 * requests of the whole port are at most MAX_API_CONNECTIONS x MAX_STREAMS x MAX_FRAME_BYTES
 * (128 MiB with the default 1 MiB). Backends hold one connection per channel, so this is how
 * many channels may reach one gateway. Defined with the gateway's other connection reserves.
 */
export const MAX_API_CONNECTIONS = API_RESERVE;
/**
 * Calls a connection may open before one of them has a valid key; the next closes it (a GOAWAY). A
 * client with the key proves its connection on its first call; without it, every call is refused
 * anyway. HTTP/2 "rapid reset" (open a stream, reset it at once, again and again, no key) cost
 * about 1000 streams a connection before Node ended the session, and the attacker reconnected.
 */
export const MAX_UNPROVEN_CALLS = 16;
/**
 * nghttp2's own memory per connection (header tables, streams, queued output), MiB; new streams
 * are refused past it. grpc-js lifts Node's default (10) to unbounded unless it is set.
 */
const MAX_SESSION_MEMORY_MB = 10;
/**
 * New API connections a second from one remote address (API_ACCEPT_BURST at once); past it they
 * are closed at accept. Backends keep their connections (one a channel), so they open a few, once;
 * a rapid-reset client that reconnects as each connection is closed (MAX_UNPROVEN_CALLS) opened
 * over 100 a second.
 */
export const API_ACCEPTS_PER_SEC = 16;
export const API_ACCEPT_BURST = 32;
/** Remote addresses whose connection rate is remembered (API_ACCEPTS_PER_SEC). */
const ACCEPT_ADDRESSES = 1024;
/**
 * Calls with a valid key whose request message is read at once, per process; the others wait,
 * unread (HTTP/2 flow control holds each to a 64 KiB window), in arrival order, and a call that
 * ends while it waits (deadline, cancel) leaves the queue. A call holds its place until its reply
 * (or first streamed message) or its status is sent. Keyed 1 MB Publish calls on every stream of
 * the port (16 x 8 at once) raised RSS by 205 MiB, each buffered, decoded and re-serialised at
 * once.
 */
export const MAX_CALLS_READING = 16;
/** The HTTP/2 connection preface: what a client sends first. */
const PREFACE_BYTES = 24;
/** At most one log line per this long about listener errors. */
const LISTENER_LOG_MS = 10_000;
/**
 * WatchStats streams open at once per process; past it a call ends with RESOURCE_EXHAUSTED. Half of
 * what the port can hold (MAX_API_CONNECTIONS x MAX_STREAMS), so that watchers leave room for calls.
 */
export const MAX_WATCHERS = 64;
/**
 * WatchStats intervals are clamped to this range: below it a watcher would cost more than the
 * stats are worth; above it Node would turn the timer into 1 ms (a delay over 2^31-1 ms).
 */
export const WATCH_MIN_MS = 100;
export const WATCH_MAX_MS = 3_600_000;
const WATCH_DEFAULT_MS = 1000;
/** Watchers ticking within this long of each other get the same snapshot (built once). */
const STATS_SHARE_MS = 100;

function ignoreSocketError(): void {
  // ECONNRESET and friends: 'close' follows.
}

function destroySocket(socket: Socket): void {
  socket.destroy();
}

/** Where the .proto lives: next to this file in the sources, or under services/api from dist/. */
export function protoPath(): string {
  const candidates = [join(__dirname, 'switchboard.proto'), resolve(__dirname, '../../../services/api/switchboard.proto')];
  const found = candidates.find((p) => existsSync(p));
  if (found === undefined) throw new Error(`switchboard.proto not found (looked in ${candidates.join(', ')})`);
  return found;
}

/** The loaded package definition; also used by tests and Node clients to build a client. */
export function loadSwitchboardProto(): grpc.GrpcObject {
  const def = protoLoader.loadSync(protoPath(), { keepCase: true, longs: Number, defaults: true, oneofs: true });
  return grpc.loadPackageDefinition(def);
}

export function switchboardService(): grpc.ServiceClientConstructor {
  const pkg = loadSwitchboardProto() as unknown as { switchboard: { v1: { Switchboard: grpc.ServiceClientConstructor } } };
  return pkg.switchboard.v1.Switchboard;
}

export const ERROR_CODE_TRAILER = 'switchboard-error-code';

interface PublishRequest {
  room: string;
  data: string;
  from: string;
}
interface SendDirectRequest {
  user: string;
  data: string;
  from: string;
}
interface DisconnectRequest {
  user: string;
  reason: string;
}
interface WatchStatsRequest {
  interval_ms: number;
}

function name(value: string, field: string): string {
  if (value === '') throw new SwitchboardError(ErrorCode.BadRequest, `field "${field}" must be a non-empty string`);
  if (value.length > MAX_NAME_LENGTH) throw new SwitchboardError(ErrorCode.BadRequest, `field "${field}" must be at most ${MAX_NAME_LENGTH} characters`);
  if (!isWellFormedName(value)) throw new SwitchboardError(ErrorCode.BadRequest, malformedNameMessage(field));
  // The protobuf decoder turns bytes that are not UTF-8 into U+FFFD, so different byte strings
  // would name one room or user; the client port refuses such bytes outright. A name here may not
  // contain the replacement character.
  if (value.includes('\uFFFD')) throw new SwitchboardError(ErrorCode.BadRequest, `field "${field}" must be valid UTF-8 (U+FFFD is not accepted in names over the API)`);
  return value;
}

/** Payloads are JSON text; re-serialised so a line-delimited client never sees a raw newline. */
function jsonData(value: string, maxDepth: number, maxBytes: number): string {
  if (value === '') throw new SwitchboardError(ErrorCode.BadRequest, 'field "data" is required (JSON text)');
  if (jsonTextDepthExceeds(value, maxDepth)) throw new SwitchboardError(ErrorCode.BadRequest, `field "data" nests objects and arrays deeper than ${maxDepth} levels`);
  let json: string;
  try {
    json = JSON.stringify(JSON.parse(value));
  } catch {
    throw new SwitchboardError(ErrorCode.BadRequest, 'field "data" must be JSON text, e.g. "\\"hello\\"" or {"n":1}');
  }
  return boundedJson(json, maxBytes);
}

/** A gRPC error from any failure: protocol codes map one to one, the rest is INTERNAL. */
export function toGrpcError(err: unknown): grpc.ServiceError {
  const code = isSwitchboardError(err) ? err.code : ErrorCode.Internal;
  const metadata = new grpc.Metadata();
  metadata.set(ERROR_CODE_TRAILER, code);
  const message = isSwitchboardError(err) ? err.message : 'internal error';
  return Object.assign(new Error(message), { code: ErrorInfo[code].grpc as number, details: message, metadata }) as grpc.ServiceError;
}

/**
 * End `call` with `err` before its message is read, and reset its HTTP/2 stream (NO_ERROR, after
 * the status: RFC 9113 8.1), so that the client stops sending the message. grpc-js would otherwise
 * read the rest of it and throw it away. The stream is grpc-js's own (the call the first
 * interceptor gets holds it); without it, the status alone still ends the call.
 */
function refuse(call: grpc.ServerInterceptingCallInterface, err: grpc.ServiceError): void {
  call.sendStatus({ code: err.code, details: err.details, metadata: err.metadata });
  const stream = (call as unknown as { stream?: Partial<ServerHttp2Stream> }).stream;
  if (typeof stream?.close === 'function' && stream.closed === false) stream.close(http2Constants.NGHTTP2_NO_ERROR);
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

export interface ApiServerOptions {
  gateway: GatewayServer;
  config: Config;
  log: Logger;
}

export class ApiServer {
  readonly grpc: grpc.Server;
  private listener: NetServer | null = null;
  private injector: grpc.ConnectionInjector | null = null;
  /** Accepted sockets that have not sent the preface yet (not grpc-js's to close). */
  private readonly beforePreface = new Set<Socket>();
  /** Open API connections. */
  private readonly open = new Set<Socket>();
  /**
   * Open connections that have not had a call with a valid key yet, oldest first, by peer
   * (`address:port`, what a call's getPeer() says), with the timer that closes them.
   */
  private readonly unproven = new Map<string, { socket: Socket; timer: NodeJS.Timeout; calls: number }>();

  /** `socket` (of `peer`) is closed, or being closed: it no longer counts. */
  private forget(socket: Socket, peer: string): void {
    this.open.delete(socket);
    const u = this.unproven.get(peer);
    if (u?.socket !== socket) return;
    clearTimeout(u.timer);
    this.unproven.delete(peer);
  }
  private lastListenerLog = 0;
  /** New connections by remote address: a token bucket each (API_ACCEPTS_PER_SEC, API_ACCEPT_BURST). */
  private readonly accepts = new Map<string, TokenBucket>();
  private readonly keyDigest: Buffer | null;
  /** Open WatchStats streams, by their timer. */
  private readonly watchers = new Map<NodeJS.Timeout, grpc.ServerWritableStream<WatchStatsRequest, unknown>>();
  /** The stats snapshot watchers share, and when it was built. */
  private shared: Record<string, unknown> | null = null;
  private sharedAt = 0;
  port = -1;

  constructor(private readonly opts: ApiServerOptions) {
    this.grpc = new grpc.Server({
      // A request (Publish data and the rest) is bounded like a client frame.
      'grpc.max_receive_message_length': opts.config.maxFrameBytes,
      'grpc.max_connection_idle_ms': opts.config.idleTimeoutMs,
      'grpc.max_concurrent_streams': MAX_STREAMS,
      'grpc-node.max_session_memory': MAX_SESSION_MEMORY_MB,
      // The key is checked on a call's metadata, before grpc-js reads its message.
      interceptors: [(_method, call) => this.intercept(call)],
    });
    this.keyDigest = opts.config.apiKey === '' ? null : digest(opts.config.apiKey);
    this.guardRefusals();
    const service = switchboardService().service;
    this.grpc.addService(service, {
      Publish: this.unary((call: grpc.ServerUnaryCall<PublishRequest, unknown>, caller) => this.publish(call.request, caller)),
      SendDirect: this.unary((call: grpc.ServerUnaryCall<SendDirectRequest, unknown>, caller) => this.sendDirect(call.request, caller)),
      Presence: this.unary((call: grpc.ServerUnaryCall<{ room: string }, unknown>) => this.presence(call.request.room)),
      Disconnect: this.unary((call: grpc.ServerUnaryCall<DisconnectRequest, unknown>) => this.disconnect(call.request)),
      GetStats: this.unary(() => this.stats()),
      WatchStats: (call: grpc.ServerWritableStream<WatchStatsRequest, unknown>) => this.watchStats(call),
    });
  }

  /** Bind API_HOST:API_PORT; resolves with the bound port. */
  start(): Promise<number> {
    const { apiHost, apiPort } = this.opts.config;
    this.injector = this.grpc.createConnectionInjector(grpc.ServerCredentials.createInsecure());
    this.countStreams();
    // At most MAX_API_CONNECTIONS open (accept() enforces it, evicting connections that have not
    // proved a key first).
    const listener = createServer({ noDelay: true }, (socket) => this.accept(socket));
    this.listener = listener;
    return new Promise((res, rej) => {
      listener.once('error', rej);
      listener.listen(apiPort, apiHost, () => {
        listener.removeListener('error', rej);
        // accept(2) failing (EMFILE when descriptors run out): libuv has dropped that connection.
        listener.on('error', (err: NodeJS.ErrnoException) => this.listenerError(err));
        this.port = (listener.address() as AddressInfo).port;
        res(this.port);
      });
    });
  }

  /**
   * A new API connection: ours until it has sent the 24-byte HTTP/2 connection preface, then
   * grpc-js's (the bytes read are put back first). At most MAX_API_CONNECTIONS are open: past it
   * the oldest that has not made a call with a valid key yet is closed to make room (else the
   * new one is), so connections that never prove a key cannot keep real callers out.
   */
  private accept(socket: Socket): void {
    if (!this.acceptRate(socket.remoteAddress ?? '')) {
      this.opts.gateway.services.counters.limitHits[Limit.ApiAccepts]++;
      socket.destroy();
      return;
    }
    if (!this.opts.gateway.admitApiConnection(socket)) return;
    if (this.open.size >= MAX_API_CONNECTIONS) {
      this.opts.gateway.services.counters.limitHits[Limit.ApiConnections]++;
      const [oldest] = this.unproven;
      if (oldest === undefined) {
        socket.destroy();
        return;
      }
      this.forget(oldest[1].socket, oldest[0]);
      oldest[1].socket.destroy();
    }
    const peer = `${socket.remoteAddress}:${socket.remotePort}`;
    this.open.add(socket);
    this.awaitProof(socket, peer);
    socket.once('close', () => this.forget(socket, peer));
    socket.on('error', ignoreSocketError);
    const timer = setTimeout(destroySocket, this.opts.config.httpHeadersTimeoutMs, socket);
    timer.unref();
    this.beforePreface.add(socket);
    const chunks: Buffer[] = [];
    let bytes = 0;
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      bytes += chunk.length;
      if (bytes < PREFACE_BYTES) return;
      clearTimeout(timer);
      this.beforePreface.delete(socket);
      socket.removeListener('data', onData);
      socket.removeListener('close', onClose);
      socket.pause();
      socket.unshift(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks));
      this.injector!.injectConnection(socket);
    };
    const onClose = (): void => {
      clearTimeout(timer);
      this.beforePreface.delete(socket);
    };
    socket.on('data', onData);
    socket.once('close', onClose);
  }

  /**
   * May `address` open one more connection? At most API_ACCEPTS_PER_SEC a second from one address
   * (API_ACCEPT_BURST at once). Backends hold their connections, so this is far beyond what they
   * need; a client that reconnects for every few calls (each connection holds at most
   * MAX_UNPROVEN_CALLS calls without a key) is slowed to it. At most ACCEPT_ADDRESSES addresses
   * are remembered: past it, those whose bucket has filled up again are forgotten (they would
   * start full anyway), or, when none has, all of them.
   */
  private acceptRate(address: string): boolean {
    const now = Date.now();
    let b = this.accepts.get(address);
    if (b === undefined) {
      if (this.accepts.size >= ACCEPT_ADDRESSES) {
        for (const [a, v] of this.accepts) if (v.full(now)) this.accepts.delete(a);
        if (this.accepts.size >= ACCEPT_ADDRESSES) this.accepts.clear();
      }
      b = new TokenBucket(API_ACCEPTS_PER_SEC, API_ACCEPT_BURST, now);
      this.accepts.set(address, b);
    }
    return b.take(now);
  }

  /**
   * A connection must make a call with a valid key within HTTP_REQUEST_TIMEOUT_MS of its accept,
   * or it is closed (intercept() recognises the key, on the call's metadata). When grpc-js read
   * a call's key only once its request message was complete, 16 connections each holding one
   * unfinished call, without a key, shut every real caller out of the API for as long as they
   * stayed; a connection that makes no call, or only calls without a key, still holds a place.
   */
  private awaitProof(socket: Socket, peer: string): void {
    // Two sockets with one peer name (two local addresses): the older, unproven, goes.
    const before = this.unproven.get(peer);
    if (before !== undefined) {
      clearTimeout(before.timer);
      before.socket.destroy();
    }
    const timer = setTimeout(() => {
      this.opts.gateway.services.counters.limitHits[Limit.HttpTimeout]++;
      socket.destroy();
    }, this.opts.config.httpRequestTimeoutMs);
    timer.unref();
    this.unproven.set(peer, { socket, timer, calls: 0 });
  }

  /** A call on `peer`'s connection had a valid key: the connection stays. */
  /**
   * One more call on `peer`'s connection before a valid key (MAX_UNPROVEN_CALLS). Past it, a
   * GOAWAY: the calls open end as they would (a wrong key still reads UNAUTHENTICATED), and HTTP/2
   * refuses new ones; the socket goes once they have ended (at HTTP_REQUEST_TIMEOUT_MS at the
   * latest: it is still unproven).
   */
  private countUnproven(peer: string, session: Partial<Http2Session> | undefined): void {
    const u = this.unproven.size === 0 ? undefined : this.unproven.get(peer);
    if (u === undefined || ++u.calls !== MAX_UNPROVEN_CALLS + 1) return;
    this.opts.gateway.services.counters.limitHits[Limit.ApiUnprovenCalls]++;
    if (typeof session?.close === 'function') session.close();
    else u.socket.destroy();
  }

  /**
   * grpc-js answers a stream with an unknown path or a wrong content-type itself, before any
   * interceptor, by calling respond() on it, which throws when the stream was already reset: the
   * preface, HEADERS for `/nope/X` and a RST_STREAM, in one packet and without a key, ended the
   * process (grpc-js 1.14.7, Server._respondWithError and _verifyContentType). Those two methods,
   * on this server only, skip a stream that is already gone. When a grpc-js release renames them,
   * the wrapping is skipped (the attack test then fails).
   */
  private guardRefusals(): void {
    type Stream = { destroyed?: boolean; closed?: boolean };
    const server = this.grpc as unknown as Record<string, unknown>;
    const respond = server._respondWithError;
    if (typeof respond === 'function') {
      server._respondWithError = function (this: unknown, err: unknown, stream: Stream, ...rest: unknown[]): unknown {
        if (stream.destroyed === true || stream.closed === true) return undefined;
        return (respond as (...a: unknown[]) => unknown).call(this, err, stream, ...rest);
      };
    }
    const verify = server._verifyContentType;
    if (typeof verify === 'function') {
      server._verifyContentType = function (this: unknown, stream: Stream, ...rest: unknown[]): unknown {
        if (stream.destroyed === true || stream.closed === true) return false;
        return (verify as (...a: unknown[]) => unknown).call(this, stream, ...rest);
      };
    }
  }

  /** Whether every stream is counted as it opens (countStreams), or only calls that reach intercept(). */
  private streamsCounted = false;

  /**
   * Count every stream of a connection without a proven key as it opens (MAX_UNPROVEN_CALLS), on
   * the HTTP/2 server grpc-js made for the injector: streams with an unknown path or a wrong
   * content-type never reach an interceptor, and rapid resets on them were not counted at all.
   */
  private countStreams(): void {
    const servers = (this.grpc as unknown as { http2Servers?: Map<unknown, unknown> }).http2Servers;
    if (!(servers instanceof Map)) return;
    for (const s of servers.keys()) {
      if (typeof (s as { on?: unknown }).on !== 'function') continue;
      // By session: a stream reset in the same packet as its HEADERS is already detached from its
      // session when 'stream' is emitted.
      (s as { on(event: 'session', fn: (session: Http2Session) => void): void }).on('session', (session) => {
        const socket = session.socket;
        const peer = `${socket.remoteAddress}:${socket.remotePort}`;
        session.on('stream', () => this.countUnproven(peer, session));
      });
      this.streamsCounted = true;
    }
  }

  private proven(peer: string): void {
    if (this.unproven.size === 0) return;
    const u = this.unproven.get(peer);
    if (u === undefined) return;
    clearTimeout(u.timer);
    this.unproven.delete(peer);
    // A connection that proved a key costs its address nothing (API_ACCEPTS_PER_SEC): backends
    // behind one address (a proxy, SNAT) that all hold the key are never slowed by it.
    const b = this.accepts.get(peer.slice(0, peer.lastIndexOf(':')));
    b?.refund(1);
  }

  private listenerError(err: NodeJS.ErrnoException): void {
    const now = Date.now();
    if (now - this.lastListenerLog < LISTENER_LOG_MS) return;
    this.lastListenerLog = now;
    this.opts.log.warn('api listener error', { code: err.code, err: err.message });
  }

  /** Stop accepting calls, end watch streams, and wait for calls in flight (bounded). */
  async stop(graceMs = 2000): Promise<void> {
    // Watch streams end now, with an OK status: a watcher reconnects to another gateway.
    for (const [t, call] of this.watchers) {
      clearInterval(t);
      call.end();
    }
    this.watchers.clear();
    // No new connections; grpc-js closes the ones it has, and those still before the preface go
    // now. (Not waiting for the listener's close: it waits for every connection it accepted.)
    this.listener?.close();
    this.listener = null;
    for (const socket of this.beforePreface) socket.destroy();
    this.beforePreface.clear();
    for (const u of this.unproven.values()) clearTimeout(u.timer);
    this.unproven.clear();
    await new Promise<void>((res) => {
      const timer = setTimeout(() => {
        this.grpc.forceShutdown();
        res();
      }, graceMs);
      this.grpc.tryShutdown(() => {
        clearTimeout(timer);
        res();
      });
    });
  }

  /** The caller's name for `from` defaults, once the key is verified; throws unauthorized. */
  private authenticate(metadata: grpc.Metadata): string {
    if (this.keyDigest === null) throw new SwitchboardError(ErrorCode.Unauthorized, 'the API is disabled: no API_KEY is configured on this server');
    const direct = metadata.get('x-api-key')[0];
    const bearer = metadata.get('authorization')[0];
    const key = typeof direct === 'string' ? direct : typeof bearer === 'string' && bearer.startsWith('Bearer ') ? bearer.slice(7) : undefined;
    if (key === undefined) throw new SwitchboardError(ErrorCode.Unauthorized, 'missing API key (metadata x-api-key or authorization: Bearer)');
    if (!timingSafeEqual(digest(key), this.keyDigest)) throw new SwitchboardError(ErrorCode.Unauthorized, 'invalid API key');
    const caller = metadata.get('x-caller')[0];
    return typeof caller === 'string' && caller !== '' ? caller.slice(0, 64) : 'api';
  }

  /** Calls holding one of the MAX_CALLS_READING places; those waiting for one, oldest first. */
  private reading = 0;
  private readonly waiting: Array<() => void> = [];

  /** A place is free: the oldest waiting call takes it. */
  private release(): void {
    const next = this.waiting.shift();
    if (next !== undefined) next();
    else this.reading--;
  }

  /**
   * Every call, before grpc-js reads its request message: one without a valid key ends here with
   * UNAUTHENTICATED (handlers read a call's metadata only once its message is complete, so a wrong
   * key used to cost the server the whole message: received, buffered and decoded). Its stream is
   * reset as well, so the client stops sending the rest of it. A call with a valid key proves its
   * connection, and is let through once it has one of the MAX_CALLS_READING places; a connection
   * past MAX_UNPROVEN_CALLS calls without one is closed.
   */
  private intercept(call: grpc.ServerInterceptingCallInterface): grpc.ServerInterceptingCall {
    const peer = call.getPeer();
    // Counted as the stream opens (countStreams), or else here: a stream reset at once never gets
    // as far as its metadata.
    if (!this.streamsCounted) this.countUnproven(peer, (call as unknown as { stream?: { session?: Partial<Http2Session> } }).stream?.session);
    // 'waiting' until it has a place, 'reading' while it holds one, 'done' once it gave it back.
    let state: 'new' | 'waiting' | 'reading' | 'done' = 'new';
    // A place is held until the request message is in, at most HTTP_REQUEST_TIMEOUT_MS: a keyed
    // call whose message stops coming (a stalled backend, a partition) held its place until its
    // deadline, or for ever without one, and two connections' worth stopped every API call.
    let stalled: NodeJS.Timeout | undefined;
    const timeoutMs = this.opts.config.httpRequestTimeoutMs;
    const go = (): void => {
      state = 'reading';
      stalled = setTimeout(() => {
        if (state !== 'reading') return;
        this.opts.gateway.services.counters.limitHits[Limit.HttpTimeout]++;
        refuse(call, toGrpcError(new SwitchboardError(ErrorCode.FrameTimeout, `request message not received within ${timeoutMs} ms`)));
        done();
      }, timeoutMs);
      stalled.unref();
      pass();
    };
    let pass: () => void = () => undefined;
    const done = (): void => {
      clearTimeout(stalled);
      if (state === 'reading') this.release();
      else if (state === 'waiting') this.waiting.splice(this.waiting.indexOf(go), 1);
      state = 'done';
    };
    return new grpc.ServerInterceptingCall(call, {
      start: (next) =>
        next({
          onReceiveMetadata: (metadata, forward) => {
            try {
              this.authenticate(metadata);
            } catch (err) {
              refuse(call, toGrpcError(err));
              return;
            }
            this.proven(peer);
            pass = () => forward(metadata);
            if (this.reading < MAX_CALLS_READING) {
              this.reading++;
              go();
            } else {
              state = 'waiting';
              this.waiting.push(go);
            }
          },
          onReceiveMessage: (message, forward) => {
            clearTimeout(stalled);
            forward(message);
          },
          onCancel: done,
        }),
      sendMessage: (message, next) => {
        done();
        next(message);
      },
      sendStatus: (status, next) => {
        done();
        next(status);
      },
    });
  }

  private unary<Req>(fn: (call: grpc.ServerUnaryCall<Req, unknown>, caller: string) => unknown): grpc.handleUnaryCall<Req, unknown> {
    return (call, callback) => {
      let result: unknown;
      try {
        const caller = this.authenticate(call.metadata);
        result = fn(call, caller);
      } catch (err) {
        callback(toGrpcError(err));
        return;
      }
      Promise.resolve(result).then(
        (value) => callback(null, value),
        (err: unknown) => {
          if (!isSwitchboardError(err)) this.opts.log.error('api call failed', { err, method: call.getPath() });
          callback(toGrpcError(err));
        },
      );
    };
  }

  private async publish(req: PublishRequest, caller: string): Promise<{ seq: number }> {
    const room = name(req.room, 'room');
    const from = req.from === '' ? `api:${caller}` : name(req.from, 'from');
    const dataJson = jsonData(req.data, this.opts.config.maxJsonDepth, this.opts.config.maxFrameBytes);
    const bus = this.opts.gateway.services.bus;
    let r;
    try {
      r = await publishChat(bus, room, from, dataJson);
    } catch (err) {
      if (isSwitchboardError(err)) throw err;
      throw new SwitchboardError(ErrorCode.Unavailable, 'the message could not be accepted', { cause: err });
    }
    return { seq: r.seq ?? 0 };
  }

  private async sendDirect(req: SendDirectRequest, caller: string): Promise<object> {
    const to = name(req.user, 'user');
    const from = req.from === '' ? `api:${caller}` : name(req.from, 'from');
    const dataJson = jsonData(req.data, this.opts.config.maxJsonDepth, this.opts.config.maxFrameBytes);
    let ok: boolean;
    try {
      ok = await sendDirect(this.opts.gateway.services.bus, from, to, dataJson);
    } catch (err) {
      throw new SwitchboardError(ErrorCode.Unavailable, 'the message could not be sent', { cause: err });
    }
    if (!ok) throw new SwitchboardError(ErrorCode.UserOffline, `user "${to}" is not connected`);
    return {};
  }

  private async presence(room: string): Promise<{ users: string[] }> {
    return { users: await this.opts.gateway.services.bus.presence(name(room, 'room')) };
  }

  /** Close the user's connections on this gateway (cluster mode: other gateways are not told). */
  private disconnect(req: DisconnectRequest): { connections: number } {
    const user = name(req.user, 'user');
    const members = this.opts.gateway.services.hub.connectionsOf(user);
    if (members === undefined) return { connections: 0 };
    const push = reconnectFrame(DisconnectReason.Kicked, req.reason);
    let n = 0;
    for (const m of [...members]) {
      if (m instanceof Session && m.live) {
        m.close(DisconnectReason.Kicked, push);
        n++;
      }
    }
    this.opts.log.info('api: user disconnected', { user, connections: n, reason: req.reason.slice(0, 512) });
    return { connections: n };
  }

  private stats(): Record<string, unknown> {
    const s = this.opts.gateway.statsSnapshot();
    const num = (k: string) => (typeof s[k] === 'number' ? (s[k] as number) : 0);
    return {
      msg_per_sec: num('msg_per_sec'),
      latency_p99: num('latency_p99'),
      memory_mb: num('memory_mb'),
      connections: num('connections'),
      error_rate: num('error_rate'),
      delivered_per_sec: num('delivered_per_sec'),
      latency_p50: num('latency_p50'),
      messages_received_total: num('messages_received_total'),
      messages_delivered_total: num('messages_delivered_total'),
      errors_total: num('errors_total'),
      uptime_s: num('uptime_s'),
      server: String(s.server ?? ''),
      json: JSON.stringify(s),
    };
  }

  /** The stats for watchers: built at most once per STATS_SHARE_MS however many there are. */
  private sharedStats(): Record<string, unknown> {
    const now = Date.now();
    if (this.shared === null || now - this.sharedAt >= STATS_SHARE_MS) {
      this.shared = this.stats();
      this.sharedAt = now;
    }
    return this.shared;
  }

  private watchStats(call: grpc.ServerWritableStream<WatchStatsRequest, unknown>): void {
    try {
      this.authenticate(call.metadata);
    } catch (err) {
      call.emit('error', toGrpcError(err));
      return;
    }
    if (this.watchers.size >= MAX_WATCHERS) {
      // No protocol code fits a per-process cap of streams: the status alone says it.
      const message = `at most ${MAX_WATCHERS} WatchStats streams may be open at once on this server`;
      call.emit('error', Object.assign(new Error(message), { code: grpc.status.RESOURCE_EXHAUSTED, details: message }));
      return;
    }
    const every = Math.min(WATCH_MAX_MS, Math.max(WATCH_MIN_MS, call.request.interval_ms || WATCH_DEFAULT_MS));
    // Stats are snapshots: one is only worth sending once the previous one has gone. A client
    // that does not read skips ticks instead of having every tick buffered for it. (Stricter than
    // write()'s return, which in object mode stays true until 16 messages are queued.)
    // On a timer: a failure to build the stats must not throw (skip that tick instead).
    const tick = () => {
      if (call.writableLength > 0) return;
      try {
        call.write(this.sharedStats());
      } catch (err) {
        this.opts.log.warn('api: stats not available', { err: err instanceof Error ? err.message : String(err) });
      }
    };
    tick();
    const timer = setInterval(tick, every);
    this.watchers.set(timer, call);
    const done = () => {
      clearInterval(timer);
      this.watchers.delete(timer);
    };
    call.on('cancelled', done);
    call.on('close', done);
    call.on('error', done);
  }
}

/**
 * Start the API for a gateway, unless API_PORT is -1. Roles call this after the gateway started.
 * Resolves with the server (null when disabled).
 */
export async function startApiServer(gateway: GatewayServer, config: Config, log: Logger): Promise<ApiServer | null> {
  if (config.apiPort < 0) return null;
  const apiLog = log.child({ component: 'api' });
  if (config.apiKey === '') apiLog.warn('API_KEY is not set: the gRPC API refuses every call (UNAUTHENTICATED)');
  const api = new ApiServer({ gateway, config, log: apiLog });
  const port = await api.start();
  apiLog.info('api listening', { host: config.apiHost, port });
  return api;
}
