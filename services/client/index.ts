/**
 * The TypeScript client for wire protocol v1: connect, hello, rooms, chat, direct messages,
 * history and presence, with automatic reconnect (exponential backoff with jitter, rotating
 * over the given servers), rejoin, and recovery of missed room messages through `history`.
 *
 * Used by the tests and the load generator, and meant for Node.js backends and bots.
 */
import { EventEmitter } from 'node:events';
import { connect as netConnect, type Socket } from 'node:net';
import {
  BinaryParser,
  BINARY_PREAMBLE,
  Codec,
  CODEC_MASK,
  decompressBody,
  encodeBinaryFrame,
  encodeFrameMaybeCompressed,
  encodeTextFrame,
  ErrorCode,
  InOrder,
  TextParser,
  type CodecName,
  type FrameSink,
  type RequestId,
  type RoomMessage,
  type Welcome,
} from '../protocol';

export interface ServerAddress {
  host: string;
  port: number;
}

export interface ClientOptions {
  /** Servers to use, in order; reconnects rotate through them. */
  servers: ServerAddress[];
  user: string;
  token?: string;
  /** @default 'text' */
  mode?: 'text' | 'binary';
  /** Reconnect after an unexpected close or a `reconnect` push. @default true */
  reconnect?: boolean;
  /** First reconnect delay; doubles up to maxBackoffMs, with full jitter. @default 100 */
  initialBackoffMs?: number;
  /** @default 5000 */
  maxBackoffMs?: number;
  /** Reject requests not answered in time. @default 10000 */
  requestTimeoutMs?: number;
  /** Largest frame accepted from the server. @default 16 MiB */
  maxFrameBytes?: number;
  /** Extra fields for hello (codecs, client info). */
  helloFields?: Record<string, unknown>;
  /** Binary mode: compression codecs offered in hello (lz4, zstd), most preferred first. @default [] (none) */
  codecs?: CodecName[];
  /** Outbound bodies above this many bytes are compressed with the negotiated codec. @default 512 */
  compressionThreshold?: number;
}

/** The server pushes the client hands out, as the protocol defines them. */
export type { DirectMessage, RoomMessage, Welcome } from '../protocol';

/** A request answered with `error`. */
export class ClientError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(`${code}: ${message}`);
    this.name = 'ClientError';
  }
}

/**
 * Errors of a recovery's requests that a new connection may not get: the connection is closed and
 * the reconnect recovers the room (a recovery that failed otherwise would leave its gap for good,
 * with nothing to retry it in a quiet room).
 */
const RETRY_RECOVERY: ReadonlySet<string> = new Set(['timeout', 'unavailable', 'rate_limited', 'overloaded']);

/** A request waiting for the client to be connected. */
interface Waiter {
  go(): void;
  fail(err: Error): void;
}

interface Pending {
  resolve(v: Record<string, unknown>): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout;
}

type Json = Record<string, unknown>;

/**
 * Events: 'welcome' (Welcome), 'message' (RoomMessage), 'direct' (DirectMessage),
 * 'push' (any other server push), 'error' (an error push without id, or a transport error),
 * 'reconnect' (the server's reconnect push), 'connected', 'disconnected', 'recovered'
 * ({room, count, recovered}), 'epoch_changed' ({room, previous, epoch}).
 *
 * Room messages are emitted once each, in `seq` order: after a reconnect, a `position` push, or a
 * live message whose `seq` skips some in the same epoch, the client fetches what it missed
 * through `history` and merges it with the live messages that arrive meanwhile.
 */
/** The reply to `history`. */
export interface HistoryReply {
  room: string;
  epoch: string;
  seq: number;
  recovered: boolean;
  more: boolean;
  messages: RoomMessage[];
}

export class SwitchboardClient extends EventEmitter implements FrameSink {
  private socket: Socket | null = null;
  private nextId = 1;
  private readonly pending = new Map<RequestId, Pending>();
  /** room -> where this client stands in it: the last seq seen and its epoch */
  private readonly joined = new Map<string, { seq: number; epoch: string }>();
  /** The last `position` push per room that came while the room was being recovered. */
  private readonly positionLater = new Map<string, Json>();
  /** The last join or leave of each room still in flight (see join). */
  private readonly lastMembershipOp = new Map<string, number>();
  private membershipOps = 0;
  /** Rooms being recovered after a reconnect -> live messages held until history is merged. */
  private readonly recovering = new Map<string, RoomMessage[]>();
  private serverIndex = 0;
  private attempts = 0;
  /** close() was called, or the server said not to come back: no reconnect. */
  private closedByUser = false;
  private reconnectTimer: NodeJS.Timeout | null = null;
  /** The connect in progress (connect() or a reconnect): a second call shares it. */
  private connecting: Promise<Welcome> | null = null;
  /** Welcomed and the rooms rejoined: requests go out at once. */
  private ready = false;
  /**
   * Welcomed at least once since the last connect() or close(): only then does a close lead to
   * reconnects (a connect() that fails is the caller's to handle).
   */
  private established = false;
  /** Requests made while (re)connecting, waiting for `ready`. */
  private readonly waiters = new Set<Waiter>();
  /** Codec for frames we send, from welcome; frames we receive name theirs in the flags. */
  private txCodec: Codec = Codec.None;
  /** Frames being (de)compressed asynchronously (zstd), and the frames waiting behind them. */
  private readonly tx = new InOrder<CodecWork>((w) => this.takeTx(w));
  private readonly rx = new InOrder<CodecWork>((w) => this.takeRx(w));
  /** `ordered`'s way out for a frame nothing waits before: made once, not per frame. */
  private readonly receiveNow = (frame: Buffer): void => this.handleFrame(frame);
  private readonly sendNow = (frame: Buffer): void => void this.socket?.write(frame);
  private readonly opts: Required<Omit<ClientOptions, 'token' | 'helloFields'>> & Pick<ClientOptions, 'token' | 'helloFields'>;
  welcome: Welcome | null = null;
  /** Times this client has (re)connected successfully. */
  connects = 0;

  constructor(opts: ClientOptions) {
    super();
    if (opts.servers.length === 0) throw new Error('at least one server is required');
    this.opts = {
      mode: 'text',
      reconnect: true,
      initialBackoffMs: 100,
      maxBackoffMs: 5000,
      requestTimeoutMs: 10_000,
      maxFrameBytes: 16 * 1024 * 1024,
      codecs: [],
      compressionThreshold: 512,
      ...opts,
    };
    // Unhandled 'error' events must not crash a process that only cares about messages.
    this.on('error', () => {});
  }

  /**
   * Connect and say hello; resolves with the welcome. It tries each server of the list once, in
   * turn, and rejects with the last failure (at once on a refused hello). While a connect or a
   * reconnect is in progress this is that one; when connected, the current welcome. A connect()
   * that fails does not retry; once connected, the client reconnects by itself (`reconnect`).
   */
  connect(): Promise<Welcome> {
    this.closedByUser = false;
    if (this.ready && this.welcome !== null) return Promise.resolve(this.welcome);
    if (this.connecting !== null) return this.connecting;
    if (this.reconnectTimer !== null) {
      // A reconnect was coming: it happens now. If it fails, the reconnects go on.
      clearTimeout(this.reconnectTimer);
      this.reconnectTimer = null;
      return this.track(this.open());
    }
    this.established = false;
    return this.track(this.connectAny());
  }

  private async connectAny(): Promise<Welcome> {
    for (let tried = 1; ; tried++) {
      try {
        return await this.open();
      } catch (err) {
        if (this.closedByUser || tried >= this.opts.servers.length || this.established) throw err;
        this.serverIndex++;
      }
    }
  }

  /** Welcomed, with every room rejoined and recovered: requests are sent at once. */
  get connected(): boolean {
    return this.ready;
  }

  /** The token for the next hello (after `token_expired` or `unauthorized`, then connect()). */
  setToken(token: string): void {
    this.opts.token = token;
  }

  /** The connect in progress is `p` until it settles. */
  private track(p: Promise<Welcome>): Promise<Welcome> {
    this.connecting = p;
    const done = () => {
      if (this.connecting === p) this.connecting = null;
    };
    p.then(done, done);
    return p;
  }

  /** Rooms this client is in, with the last sequence number seen in each and its epoch. */
  get rooms(): ReadonlyMap<string, { readonly seq: number; readonly epoch: string }> {
    return this.joined;
  }

  private open(): Promise<Welcome> {
    const addr = this.opts.servers[this.serverIndex % this.opts.servers.length];
    // One socket at a time: a previous one (there should be none) is let go first.
    if (this.socket !== null) this.onClose(this.socket, true);
    return new Promise<Welcome>((resolve, reject) => {
      const socket = netConnect({ host: addr.host, port: addr.port, noDelay: true });
      this.socket = socket;
      this.txCodec = Codec.None;
      const parser = this.opts.mode === 'binary' ? new BinaryParser(this, this.opts.maxFrameBytes) : new TextParser(this, this.opts.maxFrameBytes);
      let settled = false;
      const fail = (err: Error) => {
        if (settled) return;
        settled = true;
        reject(err);
      };
      socket.once('connect', () => {
        if (socket !== this.socket) return;
        if (this.opts.mode === 'binary') socket.write(BINARY_PREAMBLE);
        const hello: Json = { type: 'hello', user: this.opts.user, ...this.opts.helloFields };
        if (this.opts.mode === 'binary' && this.opts.codecs.length > 0) hello.codecs = this.opts.codecs;
        if (this.opts.token !== undefined) hello.token = this.opts.token;
        this.sendRequest(hello).then(
          async (w) => {
            if (socket !== this.socket) return fail(new ClientError(ErrorCode.Unavailable, 'connection closed'));
            this.welcome = w as unknown as Welcome;
            this.txCodec = w.codec === 'lz4' ? Codec.Lz4 : w.codec === 'zstd' ? Codec.Zstd : Codec.None;
            this.connects++;
            this.established = true;
            await this.rejoin(socket);
            // Closed while rejoining: no welcome for a connection that is gone (the reconnect
            // that follows rejoins again).
            if (socket !== this.socket) return fail(new ClientError(ErrorCode.Unavailable, 'connection closed'));
            settled = true;
            this.ready = true;
            // The backoff starts over only for a connection that got this far (a server that
            // welcomes and then drops every connection is not reconnected to in a loop).
            this.attempts = 0;
            // Requests that waited go first, in the order they were made, before anything the
            // application sends from its 'connected' handler.
            for (const w of this.waiters) w.go();
            this.waiters.clear();
            this.emit('welcome', this.welcome);
            this.emit('connected', addr);
            resolve(this.welcome);
          },
          (err: Error) => {
            // A refused hello (bad or expired token) would be refused again: no reconnect with
            // it. setToken() and connect() start again.
            if (err instanceof ClientError && (err.code === ErrorCode.Unauthorized || err.code === ErrorCode.TokenExpired)) this.giveUp(err);
            fail(err);
            socket.destroy();
          },
        );
      });
      socket.on('data', (chunk: Buffer) => {
        if (socket === this.socket) parser.push(chunk);
      });
      socket.on('error', (err) => {
        fail(err);
        this.emit('error', err);
      });
      socket.on('close', () => {
        fail(new ClientError(ErrorCode.Unavailable, 'connection closed'));
        this.onClose(socket);
      });
    });
  }

  /** No more reconnects: requests waiting for one fail with `err`, and it is emitted. */
  private giveUp(err: Error): void {
    this.closedByUser = true;
    this.emit('error', err);
    this.rejectWaiters(err);
  }

  private rejectWaiters(err: Error): void {
    for (const w of this.waiters) w.fail(err);
    this.waiters.clear();
  }

  /**
   * After a reconnect: join the rooms again and fetch what was missed since the last seq, page by
   * page. When the room's epoch changed (the server lost the room's state), what was missed is
   * gone: the client says so with an `epoch_changed` event and starts over in the new epoch.
   */
  private async rejoin(socket: Socket): Promise<void> {
    if (this.connects <= 1 || this.joined.size === 0) return;
    for (const [room, pos] of this.joined) {
      if (socket !== this.socket) return;
      // One room that fails (too_many_rooms, a flag turned off) does not keep the others out.
      await this.recover(room, pos, true).catch((err: unknown) => this.emit('error', err));
    }
  }

  /**
   * Fetch what was missed in a room since the last seq, page by page (after joining it again
   * when `join`), merging live messages that arrive meanwhile.
   */
  private async recover(room: string, pos: { seq: number; epoch: string }, join: boolean): Promise<void> {
    // Live messages of the room that arrive before the history reply are held and merged, or
    // the first of them would mark everything missed before it as already seen.
    const live: RoomMessage[] = [];
    const socket = this.socket;
    this.recovering.set(room, live);
    try {
      if (join) await this.sendRequest({ type: 'join_room', room });
      let count = 0;
      let recovered = true;
      // Every page while `more`, as long as each one moves the position on. (A cap of 1,000 pages
      // stopped a long recovery halfway and still said `recovered`: the held live messages then
      // moved the position past the rest.)
      let changes = 0;
      for (;;) {
        const before = pos.seq;
        const h = (await this.sendRequest({ type: 'history', room, since: pos.seq, epoch: pos.epoch })) as unknown as HistoryReply;
        const changed = h.epoch !== undefined && h.epoch !== pos.epoch;
        if (changed) this.epochChanged(room, pos, h.epoch!);
        recovered &&= h.recovered !== false;
        for (const m of h.messages) count += this.accept(pos, m) ? 1 : 0;
        if (h.more !== true) break;
        // The server says more but gives nothing new, or its epoch keeps changing: what is left
        // is unknown.
        if (h.messages.length === 0 || (changed ? ++changes > 1 : pos.seq <= before)) {
          recovered = false;
          break;
        }
      }
      for (const m of live.sort((a, b) => a.seq - b.seq)) count += this.accept(pos, m) ? 1 : 0;
      this.emit('recovered', { room, count, recovered });
    } catch (err) {
      if (socket === null || socket !== this.socket) {
        // The connection went meanwhile: the reconnect rejoins every room from its last seq, and
        // history gives the held live messages again. Accepting them here moved the position
        // past the messages this recovery was fetching, and they were never asked for again.
      } else if (err instanceof ClientError && RETRY_RECOVERY.has(err.code)) {
        // No answer in time, or the server could not answer now: this connection cannot be
        // trusted to recover the room. Close it; the reconnect rejoins every room from its last
        // seq, the held live messages included.
        socket.destroy();
      } else {
        // The server will not give this room's history (a flag off, not in the room): what came
        // live is still better delivered than lost.
        for (const m of live.sort((a, b) => a.seq - b.seq)) this.accept(pos, m);
      }
      throw err;
    } finally {
      this.recovering.delete(room);
      // A position push that came during the recovery: look at it again now, on the same
      // connection (after a reconnect, the rejoin recovers the room anyway).
      const later = this.positionLater.get(room);
      if (later !== undefined) {
        this.positionLater.delete(room);
        if (socket !== null && socket === this.socket) this.position(later);
      }
    }
  }

  /**
   * The server says where a room is (`position` push: routed messages may have missed this
   * connection's gateway). Behind it, or in another epoch: recover through history now, since no
   * later message may come to show the gap.
   */
  private position(msg: Json): void {
    const room = String(msg.room);
    const pos = this.joined.get(room);
    if (pos === undefined) return;
    if (this.recovering.has(room)) {
      // Checked once the recovery ends: the history page it got may have been read before the
      // messages this push announces (a quiet room would then stay behind for good).
      this.positionLater.set(room, msg);
      return;
    }
    if (msg.epoch === pos.epoch && typeof msg.seq === 'number' && msg.seq <= pos.seq) return;
    this.recover(room, pos, false).catch((err: unknown) => this.emit('error', err));
  }

  /** Emit a room message unless already seen; follows an epoch change. */
  private accept(pos: { seq: number; epoch: string }, m: RoomMessage): boolean {
    if (m.epoch !== undefined && m.epoch !== pos.epoch) this.epochChanged(m.room, pos, m.epoch);
    if (m.seq <= pos.seq) return false; // already seen (recovered through history)
    pos.seq = m.seq;
    this.emit('message', m);
    return true;
  }

  private epochChanged(room: string, pos: { seq: number; epoch: string }, epoch: string): void {
    const previous = pos.epoch;
    pos.epoch = epoch;
    pos.seq = 0;
    // An empty epoch is a room this client never saw a position of: nothing to lose.
    if (previous !== '') this.emit('epoch_changed', { room, previous, epoch });
  }

  /**
   * The current socket closed (or is `replaced` by a new one): its requests fail with
   * `unavailable`. A client that had been connected reconnects (unless closed or told not to);
   * a first connect that failed does not: its caller has the rejection.
   */
  private onClose(socket: Socket, replaced = false): void {
    if (socket !== this.socket) return;
    this.socket = null;
    const wasConnected = this.ready;
    this.ready = false;
    this.welcome = null;
    if (replaced) socket.destroy();
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new ClientError(ErrorCode.Unavailable, 'connection closed'));
      this.pending.delete(id);
    }
    if (!replaced) {
      // The reconnect is scheduled before 'disconnected' is emitted, so that a request or a
      // connect() from its handler sees it coming (connect() then takes its place).
      if (this.closedByUser || !this.opts.reconnect || !this.established) this.rejectWaiters(new ClientError(ErrorCode.Unavailable, 'not connected'));
      else this.scheduleReconnect();
    }
    if (wasConnected) this.emit('disconnected');
  }

  private scheduleReconnect(): void {
    if (this.reconnectTimer !== null) return;
    this.serverIndex++;
    const cap = Math.min(this.opts.maxBackoffMs, this.opts.initialBackoffMs * 2 ** this.attempts);
    this.attempts++;
    const delay = Math.random() * cap;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      if (this.closedByUser || this.connecting !== null || this.ready) return;
      this.track(this.open()).catch(() => {
        if (!this.closedByUser && (this.socket === null || this.socket.destroyed)) this.scheduleReconnect();
      });
    }, delay);
  }

  onFrameError(code: string, message: string): void {
    this.emit('error', new ClientError(code, message));
    this.socket?.destroy();
  }

  onFrame(body: Buffer, flags: number): void {
    const codec = (flags & CODEC_MASK) as Codec;
    if (codec === Codec.None && !this.rx.holding) {
      this.handleFrame(body);
      return;
    }
    let out: Buffer | Promise<Buffer>;
    try {
      out = codec === Codec.None ? Buffer.from(body) : decompressBody(codec, body, this.opts.maxFrameBytes);
    } catch (err) {
      this.onFrameError(ErrorCode.BadFrame, (err as Error).message);
      return;
    }
    // zstd decompresses asynchronously: frames after it wait, so messages keep the server's order.
    this.ordered(this.rx, out, this.receiveNow);
  }

  /**
   * Put a frame that may still be (de)compressing in order behind the frames before it. A frame
   * that is ready while nothing waits goes straight to `now`, with no queue item.
   */
  private ordered(queue: InOrder<CodecWork>, frame: Buffer | Promise<Buffer>, now: (frame: Buffer) => void): void {
    if (!(frame instanceof Promise)) {
      if (!queue.holding) now(frame);
      else queue.push({ frame, error: null, done: true, socket: this.socket });
      return;
    }
    const work: CodecWork = { frame: null, error: null, done: false, socket: this.socket };
    queue.hold(work);
    frame.then(
      (f) => settleWork(queue, work, f, null),
      (err: unknown) => settleWork(queue, work, null, err instanceof Error ? err : new Error(String(err))),
    );
  }

  /** InOrder: a received frame at the head, once decompressed (dropped if its socket is gone). */
  private takeRx(w: CodecWork): boolean {
    if (!w.done) return false;
    if (w.socket !== this.socket) return true;
    if (w.frame !== null) this.handleFrame(w.frame);
    else this.onFrameError(ErrorCode.BadFrame, w.error?.message ?? 'corrupt compressed frame');
    return true;
  }

  /** InOrder: a frame to send at the head, once compressed. */
  private takeTx(w: CodecWork): boolean {
    if (!w.done) return false;
    if (w.socket !== this.socket || w.socket === null) return true;
    if (w.frame !== null) w.socket.write(w.frame);
    else this.emit('error', w.error);
    return true;
  }

  private handleFrame(body: Buffer): void {
    let msg: Json;
    try {
      msg = JSON.parse(body.toString('utf8')) as Json;
    } catch (err) {
      this.emit('error', err);
      return;
    }
    const type = msg.type;
    if (type === 'message') {
      const m = msg as unknown as RoomMessage;
      const held = this.recovering.get(m.room);
      if (held !== undefined) {
        held.push(m);
        return;
      }
      const pos = this.joined.get(m.room);
      if (pos === undefined) this.emit('message', m);
      else if (pos.epoch !== '' && (m.epoch === pos.epoch || m.epoch === undefined ? m.seq > pos.seq + 1 : m.seq > 1)) {
        // A gap: messages before this one missed this connection (dropped for a slow reader, or
        // lost on their way to its gateway), in this epoch or, when the room's epoch changed, at
        // the start of the new one (those are in history; only the old epoch's are gone).
        // Recover them through history; this one is held and merged like any live message
        // during a recovery.
        this.recover(m.room, pos, false).catch((err: unknown) => this.emit('error', err));
        this.recovering.get(m.room)!.push(m);
      } else this.accept(pos, m);
      return;
    }
    const id = msg.id as RequestId | undefined;
    if (id !== undefined && this.pending.has(id)) {
      const p = this.pending.get(id)!;
      this.pending.delete(id);
      clearTimeout(p.timer);
      if (type === 'error') p.reject(new ClientError(String(msg.code), String(msg.message)));
      else p.resolve(msg);
      return;
    }
    // The reply to a request that already timed out (its caller has the `timeout`): not a push.
    if (typeof id === 'number' && id < this.nextId) return;
    if (type === 'position') {
      this.position(msg);
      return;
    }
    if (type === 'direct') this.emit('direct', msg);
    else if (type === 'reconnect') {
      // The server says whether coming back makes sense (not after kicked or unauthorized).
      if (msg.reconnect === false) this.closedByUser = true;
      this.emit('reconnect', msg);
    }
    else if (type === 'error') {
      const err = new ClientError(String(msg.code), String(msg.message));
      // The session's token is no longer good: coming back with it would be refused (or end the
      // same way). setToken() and connect() start again.
      if (err.code === ErrorCode.TokenExpired || err.code === ErrorCode.Unauthorized) this.giveUp(err);
      else this.emit('error', err);
    }
    else this.emit('push', msg);
  }

  /**
   * Send a message and wait for its reply (`ok`, a typed reply, or an error -> ClientError).
   * While the client (re)connects, the request waits until it is welcomed and has rejoined its
   * rooms (within `requestTimeoutMs`); with no connection and none coming it fails at once with
   * `unavailable`. A message larger than the server's `maxFrameBytes` fails with `too_large`
   * and is not sent (the server would close the connection for it).
   */
  request(msg: Json): Promise<Json> {
    if (this.ready) return this.sendRequest(msg);
    if (this.closedByUser || (this.connecting === null && this.reconnectTimer === null)) {
      return Promise.reject(new ClientError(ErrorCode.Unavailable, 'not connected'));
    }
    return new Promise<Json>((resolve, reject) => {
      const waiter: Waiter = {
        go: () => {
          clearTimeout(timer);
          this.sendRequest(msg).then(resolve, reject);
        },
        fail: (err) => {
          clearTimeout(timer);
          reject(err);
        },
      };
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        reject(new ClientError('timeout', `not connected within ${this.opts.requestTimeoutMs} ms to send ${String(msg.type)}`));
      }, this.opts.requestTimeoutMs);
      this.waiters.add(waiter);
    });
  }

  /** Write a request on the current connection and wait for its reply (no waiting for ready). */
  private sendRequest(msg: Json): Promise<Json> {
    const id = this.nextId++;
    return new Promise<Json>((resolve, reject) => {
      if (this.socket === null) {
        reject(new ClientError(ErrorCode.Unavailable, 'not connected'));
        return;
      }
      const json = JSON.stringify({ ...msg, id });
      const max = this.welcome?.limits.maxFrameBytes;
      if (max !== undefined && json.length > max / 3 && Buffer.byteLength(json) > max) {
        reject(new ClientError(ErrorCode.TooLarge, `${String(msg.type)} is ${Buffer.byteLength(json)} bytes, over the server's maxFrameBytes of ${max}`));
        return;
      }
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new ClientError('timeout', `no reply to ${String(msg.type)} within ${this.opts.requestTimeoutMs} ms`));
      }, this.opts.requestTimeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      this.writeJson(json);
    });
  }

  /** Send without waiting for a reply (no id: the server sends none unless it fails). */
  post(msg: Json): void {
    this.write(msg);
  }

  private write(msg: Json): void {
    this.writeJson(JSON.stringify(msg));
  }

  private writeJson(json: string): void {
    if (this.opts.mode !== 'binary') {
      this.socket?.write(encodeTextFrame(json));
      return;
    }
    if (this.txCodec === Codec.None && !this.tx.holding) {
      this.socket?.write(encodeBinaryFrame(json));
      return;
    }
    if (this.socket === null) return;
    this.ordered(this.tx, encodeFrameMaybeCompressed(this.txCodec, Buffer.from(json), this.opts.compressionThreshold), this.sendNow);
  }

  async join(room: string): Promise<void> {
    const op = this.membershipOp(room);
    try {
      const r = await this.request({ type: 'join_room', room });
      // A leave made after this join decides: the room is not rejoined on the next reconnect.
      if (this.lastMembershipOp.get(room) !== op) return;
      // Start from the room's current position, so a later recovery does not replay older history.
      if (!this.joined.has(room)) this.joined.set(room, { seq: typeof r.seq === 'number' ? r.seq : 0, epoch: typeof r.epoch === 'string' ? r.epoch : '' });
    } finally {
      if (this.lastMembershipOp.get(room) === op) this.lastMembershipOp.delete(room);
    }
  }

  async leave(room: string): Promise<void> {
    const op = this.membershipOp(room);
    this.joined.delete(room);
    try {
      await this.request({ type: 'leave_room', room });
    } finally {
      if (this.lastMembershipOp.get(room) === op) this.lastMembershipOp.delete(room);
    }
  }

  /** Number a join or leave of `room`: the last one made is the one whose outcome counts. */
  private membershipOp(room: string): number {
    const op = ++this.membershipOps;
    this.lastMembershipOp.set(room, op);
    return op;
  }

  /** Publish to a room; resolves with the sequence number once the server accepted it. */
  async send(room: string, data: unknown): Promise<number | undefined> {
    const r = await this.request({ type: 'send_chat', room, data });
    return r.seq as number | undefined;
  }

  async direct(to: string, data: unknown): Promise<void> {
    await this.request({ type: 'direct', to, data });
  }

  async presence(room: string): Promise<string[]> {
    return (await this.request({ type: 'presence', room })).users as string[];
  }

  async history(room: string, since?: number, limit?: number): Promise<RoomMessage[]> {
    return (await this.historyPage(room, { since, limit })).messages;
  }

  /** One page of history with its position and flags (see docs/protocol.md, `history`). */
  async historyPage(room: string, q: { since?: number; epoch?: string; limit?: number } = {}): Promise<HistoryReply> {
    const msg: Json = { type: 'history', room };
    if (q.since !== undefined) msg.since = q.since;
    if (q.epoch !== undefined) msg.epoch = q.epoch;
    if (q.limit !== undefined) msg.limit = q.limit;
    return (await this.request(msg)) as unknown as HistoryReply;
  }

  /** Close for good (no reconnect). Resolves when the socket is closed. */
  close(): Promise<void> {
    this.closedByUser = true;
    this.established = false;
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this.rejectWaiters(new ClientError(ErrorCode.Unavailable, 'client closed'));
    // Not connected from now on: a connect() right after this one starts a new connection.
    if (this.ready) {
      this.ready = false;
      this.emit('disconnected');
    }
    const s = this.socket;
    if (s === null || s.destroyed) return Promise.resolve();
    return new Promise((resolve) => {
      s.once('close', () => resolve());
      // Not welcomed yet: nothing to finish, and a hello written after end() would fail.
      if (this.welcome === null) s.destroy();
      else {
        s.end();
        setTimeout(() => s.destroy(), 1000).unref();
      }
    });
  }
}

/** A frame being (de)compressed, in the order it was sent or received. */
interface CodecWork {
  frame: Buffer | null;
  error: Error | null;
  done: boolean;
  /** The socket it belongs to: after a reconnect, work of the old one is dropped. */
  socket: Socket | null;
}

function settleWork(queue: InOrder<CodecWork>, work: CodecWork, frame: Buffer | null, error: Error | null): void {
  work.frame = frame;
  work.error = error;
  work.done = true;
  queue.drain();
}
