/**
 * One client connection: mode sniffing, frame parsing, the session (hello), dispatch to the core
 * handlers and plugins, rate limiting, and a bounded outbound queue flushed once per turn.
 *
 * Hot-path rules: socket listeners are shared functions (no closures per connection), frames are
 * parsed once, replies and pushes are queued as already encoded bytes, and the queue is bounded
 * (ours plus the socket's own buffer); past the bound the client is a slow consumer.
 *
 * Hostile clients (docs/operations.md, "Limits and abuse"): only complete frames count as
 * activity; an incomplete frame is bounded in bytes (MAX_FRAME_BYTES, and all of them together
 * by PARTIAL_FRAMES_BUDGET_BYTES) and in time (FRAME_TIMEOUT_MS, enforced by the server's sweep);
 * every frame, a rejected one included, takes a token from the rate limiter, and past the limit
 * only requests with an id get a reply; nesting is bounded (MAX_JSON_DEPTH) so that no input
 * reaches `internal`; a session ends at its token's `exp` unless the client sends `refresh`.
 */
import type { Socket } from 'node:net';
import type { MaybePromise } from '../bus';
import {
  asInbound,
  BinaryParser,
  BINARY_PREAMBLE,
  Codec,
  CODEC_MASK,
  codecName,
  codecOf,
  CompressionError,
  decompressBody,
  DisconnectReason,
  DisconnectReconnect,
  ErrorCode,
  ErrorInfo,
  isSwitchboardError,
  jsonDepthExceeds,
  Mode,
  topLevelId,
  nameField,
  negotiateCodec,
  optionalStringArrayField,
  optionalStringField,
  Outbound,
  PROTOCOL_VERSION,
  requestIdOf,
  sniffMode,
  SwitchboardError,
  TextParser,
  type FrameSink,
  type FrameWaiter,
  type InboundMessage,
  type RequestId,
  type WelcomeLimits,
} from '../protocol';
import { DropReason, Limit } from '../telemetry/counters';
import { verifyHs256 } from './auth';
import type { HubMember } from './hub';
import type { GatewayServices, MessageProcessor, PluginContext, PluginRegistry, ProcessResult } from './plugins';

/** What a connection needs from the server that accepted it. */
export interface ConnectionHost {
  readonly services: GatewayServices;
  readonly plugins: PluginRegistry;
  readonly limits: WelcomeLimits;
  nextSessionId(): string;
  /** Give an HTTP connection (sniffed on the client port) to the HTTP handler. */
  handOverHttp(socket: Socket, firstBytes: Buffer): void;
  /** Whether a feature flag is on for a user (flags issue); gated plugins check it. */
  featureEnabled(flag: string, user: string): boolean;
  /** Flags to announce in welcome. */
  flagsFor(user: string): Record<string, boolean>;
  /** Whether a new session may start (false while overloaded past the margin). @default always */
  admitSession?(): boolean;
  /**
   * The connection grew its partial frame while all partial frames together are over
   * PARTIAL_FRAMES_BUDGET_BYTES: it has paused its socket; resume it (partialBudgetResume) once
   * the budget frees. @default never called without a budget
   */
  waitForPartialBudget?(conn: Connection): void;
  /** Partial-frame bytes were released (a frame completed, or a connection let go of one). */
  partialBudgetFreed?(): void;
  closed(conn: Connection): void;
}

const CONN = Symbol('switchboard.connection');
type ConnSocket = Socket & { [CONN]?: Connection };

const State = { Open: 0, Ending: 1, Closed: 2 } as const;
type State = (typeof State)[keyof typeof State];

/** How long a closing connection may take to flush its last frames before it is destroyed. */
const CLOSE_GRACE_MS = 2000;
/**
 * Queued bytes that trigger a write before the end of the turn (nats.js' inline threshold): a
 * busy turn must not pile up more than the outbound bound in our queue, or members that read
 * perfectly well would be taken for slow consumers.
 */
const INLINE_FLUSH_BYTES = 32 * 1024;

/**
 * Constants read once per delivery, copied out of the protocol module: `export *` compiles to a
 * getter per imported name, and enqueue read two of them for every recipient of every message
 * (1.7% of the server's busy time at a million deliveries a second).
 */
const MODE_BINARY = Mode.Binary;
const CODEC_NONE = Codec.None;

const reconnectFrames = new Map<DisconnectReason, Outbound>();
/** The `reconnect` push for a reason, encoded once per process. */
export function reconnectFrame(reason: DisconnectReason): Outbound {
  let f = reconnectFrames.get(reason);
  if (f === undefined) {
    f = Outbound.of({ type: 'reconnect', reason, reconnect: DisconnectReconnect[reason] });
    reconnectFrames.set(reason, f);
  }
  return f;
}

function errorFrame(id: RequestId | undefined, code: ErrorCode, message: string): Outbound {
  return Outbound.of(id === undefined ? { type: 'error', code, message } : { type: 'error', id, code, message });
}

function disconnectReasonOf(code: ErrorCode): DisconnectReason {
  if (code === ErrorCode.Unauthorized || code === ErrorCode.TokenExpired) return DisconnectReason.Unauthorized;
  if (code === ErrorCode.SlowConsumer) return DisconnectReason.SlowConsumer;
  return DisconnectReason.ProtocolError;
}

const EMPTY_ROOMS: ReadonlySet<string> = new Set();

/** Why a socket is not being read; it is read again when no reason is left. */
const Pause = {
  /** A compressed frame is being decompressed; later frames wait behind it. */
  Inflate: 1,
  /** All partial frames together are over PARTIAL_FRAMES_BUDGET_BYTES. */
  Budget: 2,
  /** The rate-limit bucket is empty: read no more than one chunk per refill. */
  Rate: 4,
  /** A large frame was handled: the rest of this event-loop turn belongs to the others. */
  Turn: 8,
} as const;

/**
 * A frame at least this large makes its connection yield the rest of the event-loop turn (it is
 * read again from the next one): handling a frame near MAX_FRAME_BYTES takes milliseconds, and
 * libuv reads up to 2 MB from one socket per turn, so a sender of large frames would otherwise
 * take whole turns from everyone else.
 */
const LARGE_FRAME_BYTES = 64 * 1024;

interface HeldFrame {
  body: Buffer;
  flags: number;
}

/** A reply waiting for the replies of earlier requests (async handlers). */
interface ReplySlot {
  done: boolean;
  emit: (() => void) | null;
}

export class Connection implements HubMember, FrameSink, FrameWaiter, PluginContext {
  user = '';
  sessionId = '';
  mode: Mode = Mode.Unknown;
  /** Last time the client completed a frame (ms, coarse): partial frames are not activity. */
  lastSeen: number;
  readonly openedAt: number;
  /** When the chunk being handled arrived (ms); the time of the frames it completes. */
  private chunkAt: number;
  /** Bytes of the incomplete frame held by the parser, as last added to counters.partialFrameBytes. */
  private partialBytes = 0;
  /** When the incomplete frame held now began (ms); 0 when none (FRAME_TIMEOUT_MS). */
  partialSince = 0;
  /** Why the socket is paused (Pause bits); 0 while it is read. */
  private paused = 0;
  /** When the session's token expires (ms since the epoch); 0 without exp or without a token. */
  tokenExpiresAt = 0;
  /** Monitor interval in which this connection last counted a server-side error (Counters.countError). */
  errorEpoch = 0;
  /** A `rate_limited` error without id was sent since the bucket last had a token. */
  private rateNoticeSent = false;
  /** A large frame was handled in this chunk (LARGE_FRAME_BYTES): yield after it. */
  private yieldTurn = false;
  private state: State = State.Open;
  private parser: TextParser | BinaryParser | null = null;
  private sniffed: Buffer | null = null;
  private roomSet: Set<string> | null = null;
  private queue: Buffer[] = [];
  private queuedBytes = 0;
  private tokens: number;
  private refilledAt: number;
  private closeTimer: NodeJS.Timeout | null = null;
  private helloPending = false;
  /** Codec of outbound binary frames, negotiated in hello (None: uncompressed). */
  codec: Codec = Codec.None;
  /** Bit (1 << codec) for each codec the client may send compressed frames in. */
  private inboundCodecs = 0;
  /** Messages waiting, in order, behind one still being compressed (zstd is asynchronous). */
  private heldOut: Outbound[] | null = null;
  private heldOutBytes = 0;
  /** Frames that arrived while an earlier one was being decompressed, in order. */
  private heldIn: HeldFrame[] | null = null;
  private replySlots: ReplySlot[] | null = null;

  constructor(
    readonly socket: Socket,
    private readonly host: ConnectionHost,
    now: number,
  ) {
    this.lastSeen = now;
    this.openedAt = now;
    this.chunkAt = now;
    this.tokens = host.services.config.rateLimitBurst;
    this.refilledAt = now;
    (socket as ConnSocket)[CONN] = this;
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 30_000);
    socket.on('data', onSocketData);
    socket.on('error', onSocketError);
    socket.on('close', onSocketClose);
  }

  get services(): GatewayServices {
    return this.host.services;
  }

  get rooms(): ReadonlySet<string> {
    return this.roomSet ?? EMPTY_ROOMS;
  }

  get isOpen(): boolean {
    return this.state === State.Open;
  }

  /** Bytes waiting to be written: our queue plus the socket's own buffer. */
  get bufferedAmount(): number {
    return this.queuedBytes + this.socket.writableLength;
  }

  // ---- input -------------------------------------------------------------------------------

  onData(chunk: Buffer): void {
    this.host.services.counters.bytesReceived += chunk.length;
    this.chunkAt = Date.now();
    const parser = this.parser;
    if (parser !== null) {
      const done = parser.framesCompleted;
      parser.push(chunk);
      this.trackPartial(parser, done);
      if (this.yieldTurn) this.yieldRestOfTurn();
      return;
    }
    this.sniff(chunk);
  }

  private yieldRestOfTurn(): void {
    this.yieldTurn = false;
    if (this.state !== State.Open || (this.paused & Pause.Turn) !== 0) return;
    this.pause(Pause.Turn);
    setImmediate(onNextTurn, this);
  }

  /** @internal setImmediate: a new turn, read again. */
  nextTurn(): void {
    this.unpause(Pause.Turn);
  }

  /**
   * After a push: account the incomplete frame the parser holds (bytes against the process-wide
   * budget, and when it began, for the frame timeout). A frame completed during the push means
   * the one held now began with this chunk.
   */
  private trackPartial(parser: TextParser | BinaryParser, doneBefore: number): void {
    const held = parser.bufferedBytes;
    const delta = held - this.partialBytes;
    if (delta !== 0) {
      const counters = this.host.services.counters;
      counters.partialFrameBytes += delta;
      this.partialBytes = held;
      if (delta < 0) this.host.partialBudgetFreed?.();
      else {
        const budget = this.host.services.config.partialFramesBudgetBytes;
        if (budget > 0 && counters.partialFrameBytes > budget && this.state === State.Open && (this.paused & Pause.Budget) === 0) {
          // Over the budget: stop reading this socket (TCP pushes back on the client) until
          // partial frames elsewhere complete or time out. Its own frame timeout still runs.
          counters.limitHits[Limit.PartialFramesBudget]++;
          this.pause(Pause.Budget);
          this.host.waitForPartialBudget?.(this);
        }
      }
    }
    if (held === 0) this.partialSince = 0;
    else if (this.partialSince === 0 || parser.framesCompleted !== doneBefore) this.partialSince = this.chunkAt;
  }

  /** Let go of the partial frame's bytes in the process-wide account (closing, handed over). */
  private releasePartial(): void {
    this.partialSince = 0;
    if (this.partialBytes === 0) return;
    this.host.services.counters.partialFrameBytes -= this.partialBytes;
    this.partialBytes = 0;
    this.host.partialBudgetFreed?.();
  }

  /** The server's budget wait is over: read again (unless something else holds the input). */
  partialBudgetResume(): void {
    this.unpause(Pause.Budget);
  }

  private pause(reason: number): void {
    if (this.paused === 0) this.socket.pause();
    this.paused |= reason;
  }

  private unpause(reason: number): void {
    if ((this.paused & reason) === 0) return;
    this.paused &= ~reason;
    if (this.paused === 0 && this.state === State.Open) this.socket.resume();
  }

  /** @internal timer: the bucket has a token again. */
  rateRefilled(): void {
    this.unpause(Pause.Rate);
  }

  /** Called by the server's sweep when the incomplete frame is older than FRAME_TIMEOUT_MS. */
  frameTimedOut(timeoutMs: number): void {
    this.host.services.counters.limitHits[Limit.FrameTimeout]++;
    this.fail(undefined, ErrorCode.FrameTimeout, `frame not completed within ${timeoutMs} ms of its first byte`);
  }

  /** Called by the server's sweep once the session's token has expired without a refresh. */
  tokenExpired(): void {
    this.tokenExpiresAt = 0;
    this.fail(undefined, ErrorCode.TokenExpired, 'the session token expired: send refresh with a new token before exp');
  }

  private sniff(chunk: Buffer): void {
    const data = this.sniffed === null ? chunk : Buffer.concat([this.sniffed, chunk]);
    this.sniffed = null;
    const mode = sniffMode(data);
    const maxFrame = this.host.services.config.maxFrameBytes;
    switch (mode) {
      case Mode.Unknown:
        this.sniffed = data;
        return;
      case Mode.Text: {
        this.mode = Mode.Text;
        const parser = new TextParser(this, maxFrame);
        this.parser = parser;
        parser.push(data);
        this.trackPartial(parser, 0);
        return;
      }
      case Mode.Binary: {
        this.mode = Mode.Binary;
        const parser = new BinaryParser(this, maxFrame);
        this.parser = parser;
        if (data.length > BINARY_PREAMBLE.length) {
          parser.push(data.subarray(BINARY_PREAMBLE.length));
          this.trackPartial(parser, 0);
        }
        return;
      }
      case Mode.Http:
        this.detach();
        this.host.services.counters.connections--;
        this.host.closed(this);
        this.host.handOverHttp(this.socket, data);
        return;
      default:
        // Unknown first bytes: answer in text mode, which a human with nc can read, then close.
        this.mode = Mode.Text;
        this.fail(undefined, ErrorCode.BadFrame, 'unrecognised protocol preamble: send JSON lines, the binary preamble, or HTTP');
    }
  }

  onFrameError(code: ErrorCode, message: string): void {
    if (code === ErrorCode.TooLarge) this.host.services.counters.limitHits[Limit.MaxFrameBytes]++;
    this.fail(undefined, code, message);
  }

  onFrame(body: Buffer, flags: number): void {
    if (this.state !== State.Open) return;
    // A complete frame is activity (the idle timer); bytes of an incomplete one are not.
    this.lastSeen = this.chunkAt;
    if (this.heldIn !== null) {
      // Keep the client's order: later frames wait behind the one being decompressed.
      this.heldIn.push({ body: Buffer.from(body), flags });
      return;
    }
    const codec = (flags & CODEC_MASK) as Codec;
    if (codec !== Codec.None) {
      if ((this.inboundCodecs & (1 << codec)) === 0) {
        this.fail(undefined, ErrorCode.BadFrame, `compressed frame (${codecName(codec)}), but that codec was not negotiated in hello`);
        return;
      }
      let out: Buffer | Promise<Buffer>;
      try {
        out = decompressBody(codec, body, this.host.services.config.maxFrameBytes);
      } catch (err) {
        this.fail(undefined, ErrorCode.BadFrame, (err as Error).message);
        return;
      }
      if (out instanceof Promise) {
        this.heldIn = [];
        this.pause(Pause.Inflate);
        out.then(
          (b) => this.inflated(b),
          (err: unknown) => this.fail(undefined, ErrorCode.BadFrame, err instanceof CompressionError ? err.message : 'corrupt compressed frame'),
        );
        return;
      }
      body = out;
    }
    this.handleBody(body);
  }

  /** A frame decompressed asynchronously: handle it, then the frames held behind it. */
  private inflated(body: Buffer): void {
    if (this.state !== State.Open) return;
    this.handleBody(body);
    const held = this.heldIn ?? [];
    this.heldIn = null;
    let i = 0;
    while (i < held.length && this.state === State.Open && !this.holdingInput()) {
      const f = held[i++];
      this.onFrame(f.body, f.flags);
    }
    if (this.state !== State.Open) return;
    // Another frame started decompressing: the rest of the held frames go on waiting behind it.
    if (this.holdingInput()) this.heldIn = held.slice(i);
    else this.unpause(Pause.Inflate);
  }

  private holdingInput(): boolean {
    return this.heldIn !== null;
  }

  /**
   * One complete frame body: take a token (every frame, a rejected one too, counts against the
   * rate limit), bound the nesting, parse, then dispatch. Neither a frame past the limit nor one
   * nested too deep is parsed: parsing is the expensive part (V8 takes milliseconds for 20 kB of
   * nested arrays, and a failed parse builds an exception), and everything recursive after it
   * (JSON.stringify of `data`) throws on deep input. Their id, for the reply, comes from a scan.
   */
  private handleBody(body: Buffer): void {
    const counters = this.host.services.counters;
    if (body.length >= LARGE_FRAME_BYTES) this.yieldTurn = true;
    if (!this.takeToken()) {
      this.rateLimited(topLevelId(body));
      return;
    }
    this.rateNoticeSent = false;
    const maxDepth = this.host.services.config.maxJsonDepth;
    if (jsonDepthExceeds(body, maxDepth)) {
      counters.countReceived('invalid');
      counters.limitHits[Limit.MaxJsonDepth]++;
      this.fail(topLevelId(body), ErrorCode.BadRequest, `the message nests objects and arrays deeper than ${maxDepth} levels`);
      return;
    }
    let value: unknown;
    try {
      value = JSON.parse(body.toString('utf8'));
    } catch {
      counters.countReceived('invalid');
      this.fail(undefined, ErrorCode.BadJson, 'frame is not valid JSON');
      return;
    }
    this.dispatch(value);
  }

  /**
   * A frame past the rate limit is dropped. A request with an id still gets its one reply
   * (`rate_limited`); of the others only the first since the bucket ran dry is answered, so a
   * flood of bad frames costs the server no flood of error replies.
   */
  private rateLimited(id: RequestId | undefined): void {
    const counters = this.host.services.counters;
    counters.dropped[DropReason.RateLimited]++;
    counters.limitHits[Limit.RateLimit]++;
    if ((this.paused & Pause.Rate) === 0 && this.state === State.Open) {
      // The rest of this chunk is handled (and refused); the socket is read again once the
      // bucket has a token, so a flood costs at most a chunk per refill and waits in TCP.
      this.pause(Pause.Rate);
      const timer = setTimeout(onRateRefilled, Math.max(1, Math.ceil(1000 / this.host.services.config.rateLimitPerSec)), this);
      timer.unref();
    }
    if (id === undefined) {
      if (this.rateNoticeSent) return;
      this.rateNoticeSent = true;
    }
    this.fail(id, ErrorCode.RateLimited, `rate limit of ${this.host.services.config.rateLimitPerSec} messages/s exceeded`);
  }

  private takeToken(): boolean {
    const cfg = this.host.services.config;
    if (this.tokens < 1) {
      const now = this.lastSeen;
      const refill = ((now - this.refilledAt) * cfg.rateLimitPerSec) / 1000;
      this.refilledAt = now;
      this.tokens = Math.min(cfg.rateLimitBurst, this.tokens + refill);
      if (this.tokens < 1) return false;
    } else if (this.tokens < cfg.rateLimitBurst) {
      const now = this.lastSeen;
      this.tokens = Math.min(cfg.rateLimitBurst, this.tokens + ((now - this.refilledAt) * cfg.rateLimitPerSec) / 1000);
      this.refilledAt = now;
    } else {
      this.refilledAt = this.lastSeen;
    }
    this.tokens -= 1;
    return true;
  }

  /** Route one parsed value (its token already taken): envelope check, core types, then plugins. */
  private dispatch(value: unknown): void {
    const counters = this.host.services.counters;
    let msg: InboundMessage;
    try {
      msg = asInbound(value);
    } catch (err) {
      counters.countReceived('invalid');
      this.fail(requestIdOf(value), ErrorCode.BadRequest, (err as Error).message);
      return;
    }
    const type = msg.type;
    if (type === 'ping') {
      counters.countReceived(type);
      this.enqueue(Outbound.of(msg.id === undefined ? { type: 'pong', ts: Date.now() } : { type: 'pong', id: msg.id, ts: Date.now() }), true);
      return;
    }
    if (type === 'hello') {
      counters.countReceived(type);
      if (this.user === '' && this.host.admitSession?.() === false) {
        // Refused before any work: the client should come back later or elsewhere.
        counters.countError(ErrorCode.Overloaded);
        this.enqueue(errorFrame(msg.id, ErrorCode.Overloaded, 'server overloaded: try again later or another server'));
        this.disconnect(DisconnectReason.Overloaded);
        return;
      }
      this.execute(msg, null);
      return;
    }
    if (this.user === '') {
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

  /** Run a core type (plugin null: hello, refresh) or a plugin and send its result or failure, now or when it settles. */
  private execute(msg: InboundMessage, plugin: MessageProcessor | null): void {
    let result: MaybePromise<ProcessResult>;
    try {
      result = plugin !== null ? plugin.process(msg, this) : msg.type === 'hello' ? this.hello(msg) : this.refresh(msg);
    } catch (err) {
      this.replyFailure(msg.id, err);
      return;
    }
    const id = msg.id;
    if (result instanceof Promise) {
      // Replies leave in request order even when handlers finish out of order (cluster mode).
      const slot: ReplySlot = { done: false, emit: null };
      (this.replySlots ??= []).push(slot);
      result.then(
        (r) => this.settle(slot, () => this.reply(id, r)),
        (err: unknown) => this.settle(slot, () => this.replyFailure(id, err)),
      );
      return;
    }
    if (this.replySlots !== null && this.replySlots.length > 0) {
      this.replySlots.push({ done: true, emit: () => this.reply(id, result) });
      return;
    }
    this.reply(id, result);
  }

  private settle(slot: ReplySlot, emit: () => void): void {
    slot.done = true;
    slot.emit = emit;
    const slots = this.replySlots!;
    while (slots.length > 0 && slots[0].done) slots.shift()!.emit!();
  }

  private reply(id: RequestId | undefined, r: ProcessResult): void {
    if (this.state !== State.Open) return;
    if (r === undefined) {
      if (id !== undefined) this.enqueue(Outbound.of({ type: 'ok', id }), true);
      return;
    }
    if (r instanceof Outbound) {
      this.enqueue(r, true);
      return;
    }
    const out: Record<string, unknown> = { type: 'ok' };
    if (id !== undefined) out.id = id;
    this.enqueue(Outbound.of(Object.assign(out, r)), true);
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
    if (this.state !== State.Open) return;
    const frame = errorFrame(id, code, message);
    if (ErrorInfo[code].closes) this.close(disconnectReasonOf(code), frame);
    else this.enqueue(frame, true);
  }

  // ---- session -----------------------------------------------------------------------------

  private hello(msg: InboundMessage): MaybePromise<ProcessResult> {
    if (this.user !== '' || this.helloPending) throw new SwitchboardError(ErrorCode.BadRequest, 'hello was already sent');
    const codecs = optionalStringArrayField(msg, 'codecs');
    const cfg = this.host.services.config;
    const secret = cfg.authSecret;
    let user: string;
    let expiresAt = 0;
    if (secret !== '') {
      const token = optionalStringField(msg, 'token');
      if (token === undefined) throw new SwitchboardError(ErrorCode.Unauthorized, 'a token is required');
      const verified = verifyHs256(token, secret, Date.now(), { requireExp: cfg.authRequireExp });
      user = verified.sub;
      expiresAt = tokenDeadline(verified.exp);
      const claimed = optionalStringField(msg, 'user');
      if (claimed !== undefined && claimed !== user) throw new SwitchboardError(ErrorCode.Unauthorized, 'user does not match the token');
    } else {
      user = nameField(msg, 'user');
    }
    this.user = user;
    this.tokenExpiresAt = expiresAt;
    this.negotiateCompression(codecs);
    this.sessionId = this.host.nextSessionId();
    this.helloPending = true;
    const registered = this.host.services.hub.addUser(this);
    if (registered instanceof Promise) return registered.then(() => this.welcome(), (err: unknown) => this.helloFailed(err));
    return this.welcome();
  }

  private helloFailed(err: unknown): never {
    this.helloPending = false;
    const undo = this.host.services.hub.removeUser(this);
    if (undo instanceof Promise) undo.catch(ignoreRollbackFailure);
    this.user = '';
    this.sessionId = '';
    this.tokenExpiresAt = 0;
    this.codec = Codec.None;
    this.inboundCodecs = 0;
    throw new SwitchboardError(ErrorCode.Unavailable, 'session could not be registered', { cause: err });
  }

  /**
   * `refresh` {token}: a new token for the same user (same `sub`) before the session's token
   * expires; the session then ends at the new token's `exp`. A token that does not verify, or is
   * for another user, is `unauthorized` (and closes, like a failed hello).
   */
  private refresh(msg: InboundMessage): ProcessResult {
    const cfg = this.host.services.config;
    if (cfg.authSecret === '') throw new SwitchboardError(ErrorCode.BadRequest, 'this server uses no tokens (no AUTH_SECRET): nothing to refresh');
    const token = optionalStringField(msg, 'token');
    if (token === undefined) throw new SwitchboardError(ErrorCode.BadRequest, 'field "token" is required');
    const verified = verifyHs256(token, cfg.authSecret, Date.now(), { requireExp: cfg.authRequireExp });
    if (verified.sub !== this.user) throw new SwitchboardError(ErrorCode.Unauthorized, 'the token is for another user');
    this.tokenExpiresAt = tokenDeadline(verified.exp);
    return verified.exp === undefined ? undefined : { exp: verified.exp };
  }

  /**
   * Binary mode, when the `compression` flag is on for the user: outbound frames use the server's
   * first preferred codec the client lists; the client may send frames in any codec both list.
   */
  private negotiateCompression(offered: readonly string[] | undefined): void {
    const prefs = this.host.services.config.compressionCodecs;
    if (offered === undefined || this.mode !== Mode.Binary || prefs.length === 0) return;
    if (!this.host.featureEnabled('compression', this.user)) return;
    this.codec = negotiateCodec(prefs, offered);
    for (const name of prefs) if (offered.includes(name)) this.inboundCodecs |= 1 << codecOf(name);
  }

  private welcome(): Record<string, unknown> {
    this.helloPending = false;
    return {
      type: 'welcome',
      session: this.sessionId,
      user: this.user,
      server: this.host.services.serverId,
      protocol: PROTOCOL_VERSION,
      codec: codecName(this.codec),
      limits: this.host.limits,
      flags: this.host.flagsFor(this.user),
    };
  }

  joinRoom(room: string): MaybePromise<void> {
    if (this.roomSet?.has(room)) return;
    const rooms = (this.roomSet ??= new Set());
    const { config, hub, counters } = this.host.services;
    const max = config.maxRoomsPerConnection;
    if (rooms.size >= max) {
      counters.limitHits[Limit.RoomsPerConnection]++;
      throw new SwitchboardError(ErrorCode.TooManyRooms, `at most ${max} rooms per connection`);
    }
    if (hub.roomCount >= config.maxRoomsTotal && hub.localMembers(room) === 0) {
      counters.limitHits[Limit.RoomsTotal]++;
      throw new SwitchboardError(ErrorCode.TooManyRooms, `this server holds its maximum of ${config.maxRoomsTotal} rooms`);
    }
    rooms.add(room);
    const joined = this.host.services.hub.join(room, this);
    if (joined instanceof Promise) {
      return joined.catch((err: unknown) => {
        rooms.delete(room);
        // The rollback needs the same dependency that just failed: its own failure is expected
        // and must not escape as an unhandled rejection (that took whole gateways down). The
        // gateway re-registers what it holds once Redis is back, so nothing stale remains.
        const undo = this.host.services.hub.leave(room, this);
        if (undo instanceof Promise) undo.catch(ignoreRollbackFailure);
        throw new SwitchboardError(ErrorCode.Unavailable, 'could not join the room', { cause: err });
      });
    }
  }

  leaveRoom(room: string): MaybePromise<void> {
    if (this.roomSet === null || !this.roomSet.delete(room)) return;
    return this.host.services.hub.leave(room, this);
  }

  send(msg: Outbound): void {
    this.enqueue(msg);
  }

  // ---- output ------------------------------------------------------------------------------

  /**
   * Queue a frame. `reply`: it answers this client's own request (a reply, an error, a pong),
   * which the `drop` policy does not drop (see admits).
   */
  enqueue(msg: Outbound, reply = false): boolean {
    if (this.state !== State.Open) return false;
    let buf: Buffer | null;
    if (this.mode !== MODE_BINARY) buf = msg.text();
    else if (this.codec === CODEC_NONE) buf = msg.binary();
    else if (this.heldOut !== null) return this.holdBack(msg, reply);
    else {
      buf = msg.binaryFor(this.codec, this.host.services.config.compressionThreshold, this);
      if (buf === null) return this.holdBack(msg, reply);
    }
    return this.queueBytes(buf, reply);
  }

  /**
   * The outbound policy (docs/operations.md, "Limits and abuse"): a frame is accepted while
   * everything pending for the client (our queue, frames waiting for compression, the socket's
   * buffer) stays within MAX_OUTBOUND_BYTES. Besides that:
   * - a client with nothing pending gets the next frame whatever its size: it reads, it is not
   *   slow, and one frame the server built (each is bounded) must not cut it off;
   * - under the `drop` policy a reply to the client's own request is not dropped (every request
   *   gets its reply) as long as pending stays within twice the bound; a client that neither
   *   reads nor stops sending requests is past that, and is disconnected under either policy.
   */
  private admits(size: number, reply: boolean): boolean {
    const pending = this.queuedBytes + this.heldOutBytes + this.socket.writableLength;
    const max = this.host.services.config.maxOutboundBytes;
    if (pending + size <= max || pending === 0) return true;
    return reply && this.host.services.config.slowConsumerPolicy === 'drop' && pending + size <= 2 * max;
  }

  /**
   * Hold `msg` until the frame ahead of it is compressed (order is per connection), starting its
   * own compression now so that every recipient shares it. Held bytes count against the bound.
   */
  private holdBack(msg: Outbound, reply: boolean): boolean {
    const size = msg.binary().length;
    if (!this.admits(size, reply)) return this.slowConsumer(reply);
    if (this.heldOut === null) this.heldOut = [msg]; // the head: enqueue registered us as its waiter
    else {
      msg.binaryFor(this.codec, this.host.services.config.compressionThreshold);
      this.heldOut.push(msg);
    }
    this.heldOutBytes += size;
    return true;
  }

  /** FrameWaiter: the first held message is compressed; queue every ready one, in order. */
  frameReady(): void {
    const held = this.heldOut;
    if (held === null) return;
    const threshold = this.host.services.config.compressionThreshold;
    let i = 0;
    while (i < held.length && this.state === State.Open) {
      const buf = held[i].binaryFor(this.codec, threshold, this);
      if (buf === null) break;
      this.heldOutBytes -= held[i].binary().length;
      i++;
      this.queueBytes(buf);
    }
    if (i < held.length && this.state === State.Open) {
      held.splice(0, i);
      return;
    }
    this.heldOut = null;
    this.heldOutBytes = 0;
  }

  private queueBytes(buf: Buffer, reply = false): boolean {
    if (!this.admits(buf.length, reply)) return this.slowConsumer(reply);
    if (this.queuedBytes === 0) this.host.services.hub.markDirty(this);
    this.queue.push(buf);
    this.queuedBytes += buf.length;
    if (this.queuedBytes >= INLINE_FLUSH_BYTES) this.flush();
    return true;
  }

  private slowConsumer(reply: boolean): false {
    const services = this.host.services;
    services.counters.dropped[DropReason.SlowConsumer]++;
    services.counters.limitHits[Limit.OutboundBytes]++;
    // Under `drop`, pushes are dropped (history recovers them); a reply reaches here only past
    // twice the bound, and then the client is disconnected as under `disconnect`.
    if (services.config.slowConsumerPolicy === 'drop' && !reply) return false;
    // Nothing queued will reach a client that does not read: free it, say why, close.
    this.queue.length = 0;
    this.queuedBytes = 0;
    this.fail(undefined, ErrorCode.SlowConsumer, 'outbound buffer full: the client does not read fast enough');
    return false;
  }

  flush(): void {
    const n = this.queue.length;
    if (n === 0 || this.state === State.Closed) return;
    const socket = this.socket;
    const queue = this.queue;
    this.host.services.counters.bytesSent += this.queuedBytes;
    this.queuedBytes = 0;
    if (n === 1) socket.write(queue[0]);
    else {
      // One writev(2) of the shared frames, no copy into a new buffer per socket and turn.
      socket.cork();
      for (let i = 0; i < n; i++) socket.write(queue[i]);
      socket.uncork();
    }
    queue.length = 0;
    if (this.state === State.Ending) this.socket.end();
  }

  /**
   * Close gracefully: stop reading, send `final` (an error or a reconnect push) after what is
   * queued, end the socket, and destroy it if it has not gone within the grace period.
   */
  close(reason: DisconnectReason, final?: Outbound, graceMs = CLOSE_GRACE_MS): void {
    if (this.state !== State.Open) return;
    this.parser?.stop();
    this.releasePartial();
    // Messages still waiting for compression are dropped with the connection; a client that
    // reconnects recovers room messages through history.
    this.heldOut = null;
    this.heldOutBytes = 0;
    if (final !== undefined && this.mode !== Mode.Unknown && this.mode !== Mode.Http) {
      const buf = this.mode === Mode.Binary ? final.binary() : final.text();
      if (this.queuedBytes === 0) this.host.services.hub.markDirty(this);
      this.queue.push(buf);
      this.queuedBytes += buf.length;
    }
    this.state = State.Ending;
    this.host.services.log.debug('closing connection', { session: this.sessionId, reason });
    if (this.queuedBytes === 0) this.socket.end();
    this.closeTimer = setTimeout(destroySocket, graceMs, this.socket);
    this.closeTimer.unref();
  }

  /** Close with a `reconnect` push that tells the client why and whether to come back. */
  disconnect(reason: DisconnectReason, graceMs = CLOSE_GRACE_MS): void {
    if (this.mode === Mode.Unknown) {
      this.socket.destroy();
      return;
    }
    this.close(reason, reconnectFrame(reason), graceMs);
  }

  destroy(): void {
    this.socket.destroy();
  }

  private detach(): void {
    this.state = State.Closed;
    this.releasePartial();
    this.socket.removeListener('data', onSocketData);
    this.socket.removeListener('error', onSocketError);
    this.socket.removeListener('close', onSocketClose);
    (this.socket as ConnSocket)[CONN] = undefined;
  }

  onClosed(): void {
    if (this.state === State.Closed) return;
    this.state = State.Closed;
    this.parser?.stop();
    this.releasePartial();
    this.queue.length = 0;
    this.queuedBytes = 0;
    if (this.closeTimer !== null) clearTimeout(this.closeTimer);
    const { hub, log } = this.host.services;
    const swallow = (err: unknown) => log.warn('cleanup after close failed', { err, session: this.sessionId });
    if (this.roomSet !== null) {
      for (const room of this.roomSet) {
        const p = hub.leave(room, this);
        if (p instanceof Promise) p.catch(swallow);
      }
    }
    if (this.user !== '') {
      const p = hub.removeUser(this);
      if (p instanceof Promise) p.catch(swallow);
      for (const plugin of this.host.plugins.list()) plugin.onClose?.(this);
    }
    this.host.services.counters.connections--;
    this.host.closed(this);
  }
}

function onNextTurn(conn: Connection): void {
  conn.nextTurn();
}

function onRateRefilled(conn: Connection): void {
  conn.rateRefilled();
}

function onSocketData(this: ConnSocket, chunk: Buffer): void {
  this[CONN]?.onData(chunk);
}

function onSocketError(this: ConnSocket): void {
  // ECONNRESET and friends: 'close' follows and cleans up.
}

function onSocketClose(this: ConnSocket): void {
  this[CONN]?.onClosed();
}

function ignoreRollbackFailure(): void {}

/** A token's `exp` (seconds) as a session deadline (ms); 0 without one. */
function tokenDeadline(exp: number | undefined): number {
  return exp === undefined ? 0 : Math.max(1, exp * 1000);
}

function destroySocket(socket: Socket): void {
  socket.destroy();
}
