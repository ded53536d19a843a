/**
 * One client session, independent of the transport (ws' WebSocket class to the Receiver and
 * Sender): hello, token verification and refresh, codec negotiation, welcome, dispatch to the
 * core types and plugins, replies in request order, and every way a session ends.
 *
 * Its lifecycle is one explicit state, changed only by `enter`:
 *
 *   Sniffing -> AwaitingHello -> Registering -> Open -> Ending -> Closed
 *                     ^--------------'   (registration failed)
 *
 * Sniffing until the inbound side knows the protocol; AwaitingHello until a hello is accepted;
 * Registering while the hub registers the user (asynchronous in cluster mode; requests sent
 * behind the hello are handled and their replies wait for welcome); Open; Ending once a close
 * began (the last frames flush, then the transport ends); Closed when the transport is gone.
 *
 * The outbound queue only measures; the policy is applied here: a full queue drops the push
 * under SLOW_CONSUMER_POLICY=drop, and otherwise ends the session with `slow_consumer`.
 */
import { BULK_WAIT_MS, type BulkGate, type BulkWaiter } from './bulk-gate';
import type { MaybePromise, RoomPosition } from '../bus';
import {
  Codec,
  codecName,
  codecOf,
  DisconnectReason,
  DisconnectReconnect,
  ErrorCode,
  ErrorInfo,
  InOrder,
  isSwitchboardError,
  Mode,
  nameField,
  negotiateCodec,
  optionalStringArrayField,
  optionalStringField,
  Outbound,
  PROTOCOL_VERSION,
  SwitchboardError,
  type InboundMessage,
  type RequestId,
  type WelcomeLimits,
} from '../protocol';
import { DropReason, Limit } from '../telemetry/counters';
import { verifyHs256 } from './auth';
import type { HubMember } from './hub';
import type { InboundSink } from './inbound';
import { Verdict, type OutboundQueue } from './outbound-queue';
import type { GatewayServices, MessageProcessor, PluginContext, PluginRegistry, ProcessResult } from './plugins';

export const SessionState = {
  Sniffing: 0,
  AwaitingHello: 1,
  Registering: 2,
  Open: 3,
  Ending: 4,
  Closed: 5,
} as const;
export type SessionState = (typeof SessionState)[keyof typeof SessionState];

/** What a session may do, from AUTH_*, MAX_ROOMS_*, COMPRESSION_* and SLOW_CONSUMER_POLICY. */
export interface SessionLimits {
  /** HS256 secret of hello tokens; '' trusts `hello.user` (development). */
  readonly authSecret: string;
  readonly authRequireExp: boolean;
  readonly maxRoomsPerConnection: number;
  readonly maxRoomsTotal: number;
  /** Connections one user may hold here at once; 0: no cap. */
  readonly maxConnectionsPerUser: number;
  /** Codecs offered, most preferred first; empty: no compression. */
  readonly compressionCodecs: readonly ('lz4' | 'zstd')[];
  readonly slowConsumerPolicy: 'disconnect' | 'drop';
}

/** What a session needs from the server that accepted it. */
export interface SessionHost {
  readonly services: GatewayServices;
  readonly plugins: PluginRegistry;
  /** Announced in welcome. */
  readonly welcomeLimits: WelcomeLimits;
  readonly sessionLimits: SessionLimits;
  /** REPLY_TOTAL_BYTES_PER_SEC: places for bulk requests, shared by every session of the server. */
  readonly bulkGate: BulkGate;
  nextSessionId(): string;
  /** Whether a feature flag is on for a user; gated plugins check it. */
  featureEnabled(flag: string, user: string): boolean;
  /** Flags to announce in welcome. */
  flagsFor(user: string): Record<string, boolean>;
  /** Whether a new session may start (false while overloaded past the margin). */
  admitSession(): boolean;
}

/** What a session needs from its transport. */
export interface SessionTransport {
  /** Stop reading input for good (the session is ending). */
  stopInput(): void;
  /** Stop reading input for now (true), or read again (false). */
  holdInput(hold: boolean): void;
  /** End the stream once the queued bytes are written. */
  end(): void;
  /** The session is ending: destroy the stream if it has not gone within `graceMs`. */
  endWithin(graceMs: number): void;
  destroy(): void;
  /** A reply of `bytes` to one of this client's requests: charged like bytes it sent (INBOUND_BYTES_PER_SEC). */
  chargeReply(bytes: number): void;
  /** When the client last sent a complete frame (ms since the epoch). */
  readonly lastSeen: number;
}

/**
 * Replies from this size (JSON characters) on are charged to the client's byte budget. A
 * 40-byte `history` or `presence` request can be answered with a megabyte: eight clients that
 * kept two each in flight and read the answers as fast as they came made the server send
 * 1.75 GB in 6 s, and every other client waited up to 340 ms. Charged, a client gets its
 * replies at INBOUND_BYTES_PER_SEC at the most (its next requests wait in TCP, none is refused);
 * small replies (`ok`, errors) are not worth the arithmetic.
 */
const REPLY_CHARGE_MIN = 1024;

/** How long a closing connection may take to flush its last frames before it is destroyed. */
export const CLOSE_GRACE_MS = 2000;

/**
 * Bulk requests (`history`, `presence`: MessageProcessor.bulk) one connection may have in flight
 * at once (a store read, each reply up to half of MAX_OUTBOUND_BYTES). Later ones wait, in order,
 * and the connection is not read until one finishes: a client that pipelines history requests
 * waits in TCP instead of having the gateway fetch and hold every page at once
 * (docs/operations.md, "Limits"). Across connections, REPLY_TOTAL_BYTES_PER_SEC (bulk-gate.ts).
 */
export const MAX_BULK_IN_FLIGHT = 4;

/**
 * Requests of any kind one connection may have running at once (waiting for the bus: in cluster
 * mode every join, leave, publish, presence and direct is a Redis round trip). Past it the
 * connection is not read until half of them finished: its next requests wait in TCP. Without it,
 * eight clients pipelining join/leave pairs at their rate limit queued requests faster than Redis
 * answered them; the gateway held hundreds of thousands, grew 350 MiB, and every other client
 * waited more than a second. A client one round trip from Redis keeps 16 requests busy at far
 * more than RATE_LIMIT_PER_SEC.
 */
export const MAX_REQUESTS_IN_FLIGHT = 16;

const reconnectFrames = new Map<DisconnectReason, Outbound>();
/**
 * The `reconnect` push for a reason (whether to come back follows the reason, in one table:
 * DisconnectReconnect), encoded once per process; with a `message` (the gRPC Disconnect's
 * reason, at most 512 characters), built for that call.
 */
export function reconnectFrame(reason: DisconnectReason, message?: string): Outbound {
  if (message !== undefined && message !== '') {
    return Outbound.of({ type: 'reconnect', reason, reconnect: DisconnectReconnect[reason], message: message.slice(0, 512) });
  }
  let f = reconnectFrames.get(reason);
  if (f === undefined) {
    f = Outbound.of({ type: 'reconnect', reason, reconnect: DisconnectReconnect[reason] });
    reconnectFrames.set(reason, f);
  }
  return f;
}

export function errorFrame(id: RequestId | undefined, code: ErrorCode, message: string): Outbound {
  return Outbound.of(id === undefined ? { type: 'error', code, message } : { type: 'error', id, code, message });
}

/** The disconnect reason of an error that closes the connection (centrifuge's disconnect table). */
function disconnectReasonOf(code: ErrorCode): DisconnectReason {
  if (code === ErrorCode.Unauthorized || code === ErrorCode.TokenExpired) return DisconnectReason.Unauthorized;
  if (code === ErrorCode.SlowConsumer) return DisconnectReason.SlowConsumer;
  return DisconnectReason.ProtocolError;
}

/**
 * A user at MAX_CONNECTIONS_PER_USER says hello again: whether there is room, counting only
 * connections still live, and otherwise by closing the user's quietest connection if it has sent
 * nothing since `quietBefore` (half of IDLE_TIMEOUT_MS: longer than a client's ping interval): a client whose network dropped
 * without a FIN reconnects at once, instead of being locked out until its dead sockets time out.
 * The one closed gets `reconnect` with reason `idle_timeout`.
 */
function makeRoomFor(held: ReadonlySet<HubMember>, cap: number, quietBefore: number): boolean {
  let live = 0;
  let quietest: HubMember | null = null;
  for (const m of held) {
    if (!m.live) continue;
    live++;
    if (quietest === null || m.lastSeen < quietest.lastSeen) quietest = m;
  }
  if (live < cap) return true;
  if (quietest === null || quietest.lastSeen >= quietBefore) return false;
  quietest.disconnect(DisconnectReason.IdleTimeout);
  return true;
}

/** The frame answering a request: a plugin's Outbound as is, an object as `ok` with the id; undefined: nothing to build. */
function replyOf(id: RequestId | undefined, r: ProcessResult): Outbound | undefined {
  if (r === undefined) return undefined;
  if (r instanceof Outbound) return r;
  const out: Record<string, unknown> = { type: 'ok' };
  if (id !== undefined) out.id = id;
  return Outbound.of(Object.assign(out, r));
}

const EMPTY_ROOMS: ReadonlySet<string> = new Set();
const STATE_ENDING = SessionState.Ending;
const VERDICT_QUEUED = Verdict.Queued;

/** A reply waiting for the replies of earlier requests (async handlers). */
interface ReplySlot {
  /** A bulk request waiting for a place (MAX_BULK_IN_FLIGHT, the BulkGate); null once it runs. */
  waiting: { msg: InboundMessage; plugin: MessageProcessor; at: number } | null;
  /** A bulk request running asynchronously: it holds a place here and in the BulkGate. */
  bulk: boolean;
  /** It counts against MAX_REQUESTS_IN_FLIGHT: its handler runs asynchronously. */
  running: boolean;
  done: boolean;
  id: RequestId | undefined;
  result: ProcessResult;
  error: unknown;
  failed: boolean;
}

export class Session implements HubMember, PluginContext, InboundSink, BulkWaiter {
  state: SessionState = SessionState.Sniffing;
  user = '';
  sessionId = '';
  mode: Mode = Mode.Unknown;
  readonly openedAt: number;
  /** When the session's token expires (ms since the epoch); 0 without exp or without a token. */
  tokenExpiresAt = 0;
  /** Monitor interval in which this session last counted a server-side error (Counters.countError). */
  errorEpoch = 0;
  /** Bit (1 << codec) for each codec the client may send compressed frames in. */
  inboundCodecs = 0;
  private roomSet: Set<string> | null = null;
  /**
   * SLOW_CONSUMER_POLICY=drop: rooms whose messages were dropped for this client. Once it has
   * caught up (nothing pending, the server's sweep), it gets a `position` push for each, so that
   * it recovers them even if the room has gone quiet and no later message shows the gap.
   */
  private missed: Set<string> | null = null;
  private readonly replies = new InOrder<ReplySlot>((slot) => this.takeReply(slot));
  /** Bulk requests running (asynchronously), and those waiting for a place, in order. */
  private bulkRunning = 0;
  /** Whether this session waits in the BulkGate's queue (at most once: it asks for one place at a time). */
  private bulkQueued = false;
  /** Requests whose handler has not settled yet (MAX_REQUESTS_IN_FLIGHT). */
  private running = 0;
  /** Whether input is held (history places, or requests in flight); holdInput is told on changes only. */
  private inputHeld = false;
  private bulkWaiting: ReplySlot[] | null = null;

  constructor(
    private readonly host: SessionHost,
    readonly out: OutboundQueue,
    private readonly transport: SessionTransport,
    now: number,
  ) {
    this.openedAt = now;
  }

  /** The one place the state changes. */
  private enter(next: SessionState): void {
    this.state = next;
  }

  get services(): GatewayServices {
    return this.host.services;
  }

  get rooms(): ReadonlySet<string> {
    return this.roomSet ?? EMPTY_ROOMS;
  }

  /** When the client last sent a frame (HubMember: the quietest of a user's is replaced at its cap). */
  get lastSeen(): number {
    return this.transport.lastSeen;
  }

  /** Taking input and sending (any state before Ending). */
  get live(): boolean {
    return this.state < STATE_ENDING;
  }

  // ---- from the inbound side ---------------------------------------------------------------

  onMode(mode: Mode): void {
    this.mode = mode;
    this.out.mode = mode;
    if (this.state === SessionState.Sniffing) this.enter(SessionState.AwaitingHello);
  }

  onMessage(msg: InboundMessage): void {
    const counters = this.host.services.counters;
    const type = msg.type;
    if (type === 'ping') {
      counters.countReceived(type);
      this.reply(msg.id, Outbound.of(msg.id === undefined ? { type: 'pong', ts: Date.now() } : { type: 'pong', id: msg.id, ts: Date.now() }));
      return;
    }
    if (type === 'hello') {
      counters.countReceived(type);
      if (this.state === SessionState.AwaitingHello && !this.host.admitSession()) {
        // Refused before any work: the client should come back later or elsewhere.
        counters.countError(ErrorCode.Overloaded);
        this.enqueue(errorFrame(msg.id, ErrorCode.Overloaded, 'server overloaded: try again later or another server'), true);
        this.disconnect(DisconnectReason.Overloaded);
        return;
      }
      this.execute(msg, null);
      return;
    }
    if (this.state < SessionState.Registering) {
      this.fail(msg.id, ErrorCode.Unauthorized, 'send hello first');
      return;
    }
    if (type === 'refresh') {
      counters.countReceived(type);
      this.execute(msg, null);
      return;
    }
    const plugin = this.host.plugins.find(type);
    if (plugin === undefined) {
      counters.countReceived('unknown');
      this.fail(msg.id, ErrorCode.UnknownType, `unknown message type "${type.length > 64 ? type.slice(0, 64) + '...' : type}"`);
      return;
    }
    counters.countReceived(type);
    const flag = plugin.flagFor !== undefined ? plugin.flagFor(type) : plugin.flag;
    if (flag !== undefined && !this.host.featureEnabled(flag, this.user)) {
      this.fail(msg.id, ErrorCode.FeatureDisabled, `feature "${flag}" is disabled`);
      return;
    }
    this.execute(msg, plugin);
  }

  // ---- requests and replies ----------------------------------------------------------------

  /** Run a core type (plugin null: hello, refresh) or a plugin; reply now or when it settles. */
  private execute(msg: InboundMessage, plugin: MessageProcessor | null): void {
    if (plugin === null || plugin.bulk === undefined || !plugin.bulk(msg.type)) {
      this.run(msg, plugin, null, false);
      return;
    }
    const waiting = this.bulkWaiting;
    if ((waiting === null || waiting.length === 0) && this.bulkRunning < MAX_BULK_IN_FLIGHT && !this.bulkQueued) {
      if (this.host.bulkGate.acquire(this)) {
        this.run(msg, plugin, null, true);
        return;
      }
      this.bulkQueued = true;
    }
    // Its reply keeps its place in the order; the request runs once it has a place.
    const slot: ReplySlot = { waiting: { msg, plugin, at: Date.now() }, bulk: false, running: false, done: false, id: msg.id, result: undefined, error: undefined, failed: false };
    this.replies.hold(slot);
    (this.bulkWaiting ??= []).push(slot);
    this.updateInputHold();
  }

  /**
   * Run a request; `slot`: its reply's place, already held (it waited for a bulk place). `bulk`:
   * it holds a place in the BulkGate, settled here when it answers at once, else in settle().
   */
  private run(msg: InboundMessage, plugin: MessageProcessor | null, slot: ReplySlot | null, bulk: boolean): void {
    let result: MaybePromise<ProcessResult>;
    try {
      result = plugin !== null ? plugin.process(msg, this) : msg.type === 'hello' ? this.hello(msg) : this.refresh(msg);
    } catch (err) {
      if (bulk) this.host.bulkGate.settle(0);
      if (slot !== null) this.settle(slot, undefined, err, true);
      else this.replyInOrder(msg.id, undefined, err, true);
      return;
    }
    if (result instanceof Promise) {
      // Replies leave in request order even when handlers finish out of order (cluster mode).
      if (slot === null) {
        slot = { waiting: null, bulk: false, running: false, done: false, id: msg.id, result: undefined, error: undefined, failed: false };
        this.replies.hold(slot);
      }
      if (bulk) {
        slot.bulk = true;
        this.bulkRunning++;
      }
      slot.running = true;
      if (++this.running >= MAX_REQUESTS_IN_FLIGHT) this.updateInputHold();
      const s = slot;
      result.then(
        (r) => this.settle(s, r, undefined, false),
        (err: unknown) => this.settle(s, undefined, err, true),
      );
      return;
    }
    if (bulk) {
      try {
        result = this.bulkAnswered(msg.id, result);
      } catch (err) {
        if (slot !== null) this.settle(slot, undefined, err, true);
        else this.replyInOrder(msg.id, undefined, err, true);
        return;
      }
    }
    if (slot !== null) this.settle(slot, result, undefined, false);
    else this.replyInOrder(msg.id, result, undefined, false);
  }

  /**
   * A bulk request's reply, built now to settle its place in the BulkGate with its real size; a
   * reply that cannot be built (a plugin's BigInt) settles the place and throws.
   */
  private bulkAnswered(id: RequestId | undefined, result: ProcessResult): Outbound | undefined {
    let reply: Outbound | undefined;
    try {
      reply = replyOf(id, result);
    } catch (err) {
      this.host.bulkGate.settle(0);
      throw err;
    }
    this.host.bulkGate.settle(reply === undefined ? 0 : reply.json.length);
    return reply;
  }

  /**
   * The BulkGate reserved a place for this session (it waited in the gate's queue): run its
   * first waiting bulk request, or give the place back if the connection has gone.
   */
  bulkGranted(): void {
    this.bulkQueued = false;
    const slot = this.bulkWaiting?.shift();
    if (slot === undefined || !this.live) {
      this.host.bulkGate.settle(0);
      if (slot !== undefined) this.startBulk(slot);
    } else this.startBulk(slot);
    this.nextBulk();
  }

  /**
   * The server's sweep: bulk requests that waited BULK_WAIT_MS for a place are answered
   * `overloaded` (their replies, and everything asked after them, would wait on). The session
   * keeps its turn in the gate; a place granted with nothing waiting is given back.
   */
  expireBulk(now: number): void {
    const waiting = this.bulkWaiting;
    // Only a wait for the gate's place: one for the connection's own MAX_BULK_IN_FLIGHT is the client's.
    if (!this.bulkQueued || waiting === null || waiting.length === 0 || now - waiting[0].waiting!.at < BULK_WAIT_MS) return;
    while (waiting.length > 0 && now - waiting[0].waiting!.at >= BULK_WAIT_MS) {
      const slot = waiting.shift()!;
      slot.waiting = null;
      this.settle(slot, undefined, new SwitchboardError(ErrorCode.Overloaded, `no place for this request within ${BULK_WAIT_MS} ms: too many history and presence requests; retry later`), true);
    }
    if (waiting.length === 0) this.updateInputHold();
  }

  /** Run a waiting bulk request that has its place (or, once the session ended, answer nothing). */
  private startBulk(slot: ReplySlot): void {
    const w = slot.waiting!;
    slot.waiting = null;
    if (!this.live) {
      this.settle(slot, undefined, undefined, false);
      return;
    }
    this.run(w.msg, w.plugin, slot, true);
  }

  /** Start the waiting bulk requests that get a place now; queue in the gate for the next one. */
  private nextBulk(): void {
    const waiting = this.bulkWaiting;
    while (waiting !== null && waiting.length > 0 && !this.bulkQueued && this.bulkRunning < MAX_BULK_IN_FLIGHT) {
      if (!this.live) {
        this.startBulk(waiting.shift()!);
        continue;
      }
      if (!this.host.bulkGate.acquire(this)) {
        this.bulkQueued = true;
        break;
      }
      this.startBulk(waiting.shift()!);
    }
    if (waiting !== null && waiting.length === 0) this.updateInputHold();
  }

  /**
   * Hold input while a bulk request waits for a place, or while MAX_REQUESTS_IN_FLIGHT run;
   * read again once neither holds (requests: once half of them finished, so that a client at the
   * bound is not read a frame at a time).
   */
  private updateInputHold(): void {
    const hold =
      (this.bulkWaiting !== null && this.bulkWaiting.length > 0) ||
      this.running >= (this.inputHeld ? MAX_REQUESTS_IN_FLIGHT / 2 : MAX_REQUESTS_IN_FLIGHT);
    if (hold === this.inputHeld || !this.live) return;
    this.inputHeld = hold;
    this.transport.holdInput(hold);
  }

  /** A result ready now: sent at once unless replies of earlier requests are still pending. */
  private replyInOrder(id: RequestId | undefined, result: ProcessResult, error: unknown, failed: boolean): void {
    if (!this.replies.holding) {
      if (failed) this.replyFailure(id, error);
      else this.reply(id, result);
      return;
    }
    this.replies.hold({ waiting: null, bulk: false, running: false, done: true, id, result, error, failed });
  }

  private settle(slot: ReplySlot, result: ProcessResult, error: unknown, failed: boolean): void {
    let bulk = false;
    if (slot.bulk) {
      slot.bulk = false;
      bulk = true;
      this.bulkRunning--;
      if (failed) this.host.bulkGate.settle(0);
      else {
        try {
          result = this.bulkAnswered(slot.id, result);
        } catch (err) {
          result = undefined;
          error = err;
          failed = true;
        }
      }
    }
    slot.done = true;
    slot.result = result;
    slot.error = error;
    slot.failed = failed;
    this.replies.drain();
    if (bulk) this.nextBulk();
    // Last: reading again runs the requests that waited, which should find this one's places free.
    if (slot.running) {
      slot.running = false;
      if (--this.running < MAX_REQUESTS_IN_FLIGHT / 2 && this.inputHeld) this.updateInputHold();
    }
  }

  /** InOrder: the reply at the head, once its handler finished. */
  private takeReply(slot: ReplySlot): boolean {
    if (!slot.done) return false;
    if (slot.failed) this.replyFailure(slot.id, slot.error);
    else this.reply(slot.id, slot.result);
    return true;
  }

  private reply(id: RequestId | undefined, r: ProcessResult): void {
    if (!this.live) return;
    if (r === undefined) {
      if (id !== undefined) this.enqueue(Outbound.of({ type: 'ok', id }), true);
      return;
    }
    const reply = r instanceof Outbound ? r : replyOf(id, r)!;
    const n = reply.json.length;
    if (n >= REPLY_CHARGE_MIN) this.transport.chargeReply(n);
    this.enqueue(reply, true);
  }

  private replyFailure(id: RequestId | undefined, err: unknown): void {
    if (isSwitchboardError(err)) {
      this.fail(id, err.code, err.message);
      return;
    }
    this.host.services.log.error('handler failed', { err, session: this.sessionId });
    this.fail(id, ErrorCode.Internal, 'internal error');
  }

  /** Send an error; when its code closes the connection, close it after the frame. */
  fail(id: RequestId | undefined, code: ErrorCode, message: string): void {
    this.host.services.counters.countError(code, this);
    if (!this.live) return;
    const frame = errorFrame(id, code, message);
    if (ErrorInfo[code].closes) this.close(disconnectReasonOf(code), frame);
    else this.enqueue(frame, true);
  }

  // ---- hello, refresh, welcome -------------------------------------------------------------

  private hello(msg: InboundMessage): MaybePromise<ProcessResult> {
    if (this.state !== SessionState.AwaitingHello) throw new SwitchboardError(ErrorCode.BadRequest, 'hello was already sent');
    const codecs = optionalStringArrayField(msg, 'codecs');
    const limits = this.host.sessionLimits;
    const secret = limits.authSecret;
    let user: string;
    let expiresAt = 0;
    if (secret !== '') {
      if (typeof msg.token !== 'string') throw new SwitchboardError(ErrorCode.Unauthorized, msg.token === undefined ? 'a token is required' : 'the token must be a string');
      const token = msg.token;
      const verified = verifyHs256(token, secret, Date.now(), { requireExp: limits.authRequireExp });
      user = verified.sub;
      expiresAt = tokenDeadline(verified.exp);
      const claimed = optionalStringField(msg, 'user');
      if (claimed !== undefined && claimed !== user) throw new SwitchboardError(ErrorCode.Unauthorized, 'user does not match the token');
    } else {
      user = nameField(msg, 'user');
    }
    // Every connection of a user gets each direct message to that user, and holds memory here:
    // without a cap one user (one token) on hundreds of sockets multiplied both.
    const cap = limits.maxConnectionsPerUser;
    if (cap > 0) {
      const held = this.host.services.hub.connectionsOf(user);
      if (held !== undefined && held.size >= cap && !makeRoomFor(held, cap, Date.now() - this.host.services.config.idleTimeoutMs / 2)) {
        this.host.services.counters.limitHits[Limit.ConnectionsPerUser]++;
        throw new SwitchboardError(ErrorCode.TooManyConnections, `this user already holds ${cap} connections here`);
      }
    }
    this.user = user;
    this.tokenExpiresAt = expiresAt;
    this.negotiateCompression(codecs);
    this.sessionId = this.host.nextSessionId();
    this.enter(SessionState.Registering);
    const registered = this.host.services.hub.addUser(this);
    if (registered instanceof Promise) return registered.then(() => this.welcome(), (err: unknown) => this.helloFailed(err));
    return this.welcome();
  }

  private helloFailed(err: unknown): never {
    const undo = this.host.services.hub.removeUser(this);
    if (undo instanceof Promise) undo.catch(ignoreRollbackFailure);
    if (this.state === SessionState.Registering) this.enter(SessionState.AwaitingHello);
    this.user = '';
    this.sessionId = '';
    this.tokenExpiresAt = 0;
    this.out.codec = Codec.None;
    this.inboundCodecs = 0;
    throw new SwitchboardError(ErrorCode.Unavailable, 'session could not be registered', { cause: err });
  }

  /**
   * `refresh` {token}: a new token for the same user (same `sub`) before the session's token
   * expires; the session then ends at the new token's `exp`. A token that does not verify, or is
   * for another user, is `unauthorized` (and closes, like a failed hello).
   */
  private refresh(msg: InboundMessage): ProcessResult {
    const limits = this.host.sessionLimits;
    if (limits.authSecret === '') throw new SwitchboardError(ErrorCode.BadRequest, 'this server uses no tokens (no AUTH_SECRET): nothing to refresh');
    if (msg.token === undefined) throw new SwitchboardError(ErrorCode.BadRequest, 'field "token" is required');
    // A token of another type is a token that does not verify, as in hello.
    if (typeof msg.token !== 'string') throw new SwitchboardError(ErrorCode.Unauthorized, 'the token must be a string');
    const token = msg.token;
    const verified = verifyHs256(token, limits.authSecret, Date.now(), { requireExp: limits.authRequireExp });
    if (verified.sub !== this.user) throw new SwitchboardError(ErrorCode.Unauthorized, 'the token is for another user');
    this.tokenExpiresAt = tokenDeadline(verified.exp);
    return verified.exp === undefined ? undefined : { exp: verified.exp };
  }

  /**
   * Binary mode, when the `compression` flag is on for the user: outbound frames use the server's
   * first preferred codec the client lists; the client may send frames in any codec both list.
   */
  private negotiateCompression(offered: readonly string[] | undefined): void {
    const prefs = this.host.sessionLimits.compressionCodecs;
    if (offered === undefined || this.mode !== Mode.Binary || prefs.length === 0) return;
    if (!this.host.featureEnabled('compression', this.user)) return;
    this.out.codec = negotiateCodec(prefs, offered);
    for (const name of prefs) if (offered.includes(name)) this.inboundCodecs |= 1 << codecOf(name);
  }

  private welcome(): Record<string, unknown> {
    if (this.state === SessionState.Registering) this.enter(SessionState.Open);
    return {
      type: 'welcome',
      session: this.sessionId,
      user: this.user,
      server: this.host.services.serverId,
      protocol: PROTOCOL_VERSION,
      codec: codecName(this.out.codec),
      limits: this.host.welcomeLimits,
      flags: this.host.flagsFor(this.user),
    };
  }

  /** Called by the server's sweep once the session's token has expired without a refresh. */
  tokenExpired(): void {
    this.tokenExpiresAt = 0;
    this.fail(undefined, ErrorCode.TokenExpired, 'the session token expired: send refresh with a new token before exp');
  }

  // ---- rooms (PluginContext) ---------------------------------------------------------------

  joinRoom(room: string): MaybePromise<void> {
    if (this.roomSet?.has(room)) return;
    const rooms = (this.roomSet ??= new Set());
    const { hub, counters } = this.host.services;
    const limits = this.host.sessionLimits;
    const max = limits.maxRoomsPerConnection;
    if (rooms.size >= max) {
      counters.limitHits[Limit.RoomsPerConnection]++;
      throw new SwitchboardError(ErrorCode.TooManyRooms, `at most ${max} rooms per connection`);
    }
    if (hub.roomCount >= limits.maxRoomsTotal && hub.localMembers(room) === 0) {
      counters.limitHits[Limit.RoomsTotal]++;
      throw new SwitchboardError(ErrorCode.TooManyRooms, `this server holds its maximum of ${limits.maxRoomsTotal} rooms`);
    }
    rooms.add(room);
    const joined = hub.join(room, this);
    if (joined instanceof Promise) {
      return joined.catch((err: unknown) => {
        rooms.delete(room);
        // The rollback needs the same dependency that just failed: its own failure is expected
        // and must not escape as an unhandled rejection (that took whole gateways down). The
        // gateway re-registers what it holds once Redis is back, so nothing stale remains.
        const undo = hub.leave(room, this);
        if (undo instanceof Promise) undo.catch(ignoreRollbackFailure);
        throw new SwitchboardError(ErrorCode.Unavailable, 'could not join the room', { cause: err });
      });
    }
  }

  /**
   * Leaving cannot fail: the member is out of the room here at once, and no message reaches it
   * from now on. When the bus could not record it (Redis away), the bus has marked it for its
   * repair, which removes the presence and routing entries once Redis is back; answering
   * `unavailable` would tell the client it is still a member when it is not.
   */
  leaveRoom(room: string): MaybePromise<void> {
    if (this.roomSet === null || !this.roomSet.delete(room)) return;
    const left = this.host.services.hub.leave(room, this);
    if (left instanceof Promise) return left.catch(this.leftAnyway);
  }

  private readonly leftAnyway = (err: unknown): void => {
    this.host.services.log.debug('leave recorded later, by the repair', { err, session: this.sessionId });
  };

  send(msg: Outbound): void {
    this.enqueue(msg);
  }

  // ---- output ------------------------------------------------------------------------------

  /**
   * Queue a frame (the hub's fan-out calls this for every member). `reply`: it answers this
   * client's own request, which `drop` does not drop. False when the frame was not queued.
   */
  enqueue(msg: Outbound, reply = false): boolean {
    const verdict = this.out.enqueue(msg, reply);
    if (verdict === VERDICT_QUEUED) return true;
    if (verdict === Verdict.Full) this.slowConsumer(reply);
    return false;
  }

  /** The hub dropped a room message for this client (a slow consumer under `drop`). */
  missedRoom(room: string): void {
    if (this.state === SessionState.Closed || this.host.sessionLimits.slowConsumerPolicy !== 'drop') return;
    (this.missed ??= new Set()).add(room);
  }

  /** Messages were dropped for this client and it has caught up since: time to say where its rooms are. */
  get caughtUpAfterDrops(): boolean {
    return this.missed !== null && this.out.pendingBytes === 0;
  }

  /** A `position` push for every room whose messages this client missed (and is still in). */
  announceMissed(): void {
    const rooms = this.missed;
    this.missed = null;
    if (rooms === null) return;
    const bus = this.host.services.bus;
    for (const room of rooms) {
      if (this.roomSet?.has(room) !== true) continue;
      let pos: MaybePromise<RoomPosition>;
      try {
        pos = bus.position(room);
      } catch {
        this.missedRoom(room); // the bus is down: try again at the next sweep
        continue;
      }
      if (pos instanceof Promise) pos.then((p) => this.pushPosition(room, p), () => this.missedRoom(room));
      else this.pushPosition(room, pos);
    }
  }

  private pushPosition(room: string, p: RoomPosition): void {
    if (!this.enqueue(Outbound.of({ type: 'position', room, seq: p.seq, epoch: p.epoch }))) this.missedRoom(room);
  }

  /** Output pending for this client (queued, being compressed, in the socket). */
  get pendingOutput(): number {
    return this.out.pendingBytes;
  }

  /**
   * The server's OUTBOUND_BUDGET_BYTES is spent and this client holds more of it than the others:
   * a slow consumer, whatever the policy (dropping its pushes would not free what it holds).
   */
  outboundBudgetExceeded(): void {
    const counters = this.host.services.counters;
    counters.dropped[DropReason.SlowConsumer]++;
    counters.limitHits[Limit.OutboundBudget]++;
    this.out.discard();
    this.fail(undefined, ErrorCode.SlowConsumer, 'the server\'s outbound budget is spent and this client is among the furthest behind');
  }

  private slowConsumer(reply: boolean): void {
    const counters = this.host.services.counters;
    counters.dropped[DropReason.SlowConsumer]++;
    counters.limitHits[Limit.OutboundBytes]++;
    // Under `drop`, pushes are dropped (history recovers them); a reply reaches here only past
    // twice the bound, and then the client is disconnected as under `disconnect`.
    if (this.host.sessionLimits.slowConsumerPolicy === 'drop' && !reply) return;
    // Nothing queued will reach a client that does not read: free it, say why, close.
    this.out.discard();
    this.fail(undefined, ErrorCode.SlowConsumer, 'outbound buffer full: the client does not read fast enough');
  }

  /** Bytes queued, not written yet (the hub's flush). */
  get queuedBytes(): number {
    return this.out.queued;
  }

  /** The hub's once-per-turn flush. */
  flush(): void {
    if (this.state === SessionState.Closed) return;
    this.out.flush();
    if (this.state === STATE_ENDING) this.transport.end();
  }

  // ---- ending ------------------------------------------------------------------------------

  /**
   * Close gracefully: stop reading, send `final` (an error or a reconnect push) after what is
   * queued, end the stream, and destroy it if it has not gone within the grace period.
   */
  close(reason: DisconnectReason, final?: Outbound, graceMs = CLOSE_GRACE_MS): void {
    if (!this.live) return;
    this.transport.stopInput();
    this.out.close(false);
    this.replies.clear();
    if (final !== undefined) this.out.appendFinal(final);
    this.enter(SessionState.Ending);
    this.host.services.log.debug('closing connection', { session: this.sessionId, reason });
    if (this.out.empty) this.transport.end();
    this.transport.endWithin(graceMs);
  }

  /** Close with a `reconnect` push that tells the client why and whether to come back. */
  disconnect(reason: DisconnectReason, graceMs = CLOSE_GRACE_MS): void {
    if (this.state === SessionState.Sniffing) {
      this.transport.destroy();
      return;
    }
    this.close(reason, reconnectFrame(reason), graceMs);
  }

  /** The transport is gone: leave every room, unregister the user, tell the plugins. */
  closed(): void {
    if (this.state === SessionState.Closed) return;
    const hadUser = this.user !== '';
    this.enter(SessionState.Closed);
    this.out.close(true);
    this.replies.clear();
    const { hub, log } = this.host.services;
    const swallow = (err: unknown) => log.warn('cleanup after close failed', { err, session: this.sessionId });
    if (this.roomSet !== null) {
      for (const room of this.roomSet) {
        const p = hub.leave(room, this);
        if (p instanceof Promise) p.catch(swallow);
      }
    }
    if (hadUser) {
      const p = hub.removeUser(this);
      if (p instanceof Promise) p.catch(swallow);
      for (const plugin of this.host.plugins.list()) plugin.onClose?.(this);
    }
  }
}

function ignoreRollbackFailure(): void {}

/** A token's `exp` (seconds) as a session deadline (ms); 0 without one. */
function tokenDeadline(exp: number | undefined): number {
  return exp === undefined ? 0 : Math.max(1, exp * 1000);
}
