/**
 * The inbound side of a TCP connection (ws' Receiver): from bytes to validated messages.
 *
 * It sniffs the protocol from the first bytes (JSON lines, the binary preamble, or HTTP), runs
 * the framing parser, decompresses frames in the client's order (InOrder: zstd is asynchronous,
 * and frames behind one wait for it), takes a token per frame (TokenBucket), bounds nesting,
 * parses JSON once and checks the envelope. What comes out is an InboundMessage for the session,
 * or a refusal with a stable error code.
 *
 * Hostile input is bounded here (docs/operations.md, "Limits and abuse"): only complete frames
 * count as activity; an incomplete frame is bounded in bytes (MAX_FRAME_BYTES, and all of them
 * together by PARTIAL_FRAMES_BUDGET_BYTES) and in time (FRAME_TIMEOUT_MS, enforced by the
 * server's sweep from `partialSince`); every frame, a rejected one included, takes a token, and
 * past the limit the socket is read again only after a tenth of a second (TokenBucket.resumeMs);
 * nesting is bounded (MAX_JSON_DEPTH) so that no input reaches `internal`; every 64 KiB
 * of frames yields the event-loop turn.
 */
import { isUtf8 } from 'node:buffer';
import {
  asInbound,
  BinaryParser,
  BINARY_PREAMBLE,
  Codec,
  CODEC_MASK,
  codecName,
  CompressionError,
  decompressBody,
  DisconnectReason,
  ErrorCode,
  inflateBound,
  InOrder,
  jsonDepthExceeds,
  Mode,
  requestIdOf,
  sniffMode,
  TextParser,
  topLevelId,
  type FrameSink,
  type InboundMessage,
  type RequestId,
} from '../protocol';
import { DropReason, Limit, type Counters } from '../telemetry/counters';
import { TokenBucket } from './token-bucket';

/** The bounds of one connection's inbound side. */
export interface InboundLimits {
  readonly maxFrameBytes: number;
  readonly maxJsonDepth: number;
  readonly rateLimitPerSec: number;
  readonly rateLimitBurst: number;
  /** Partial-frame bytes of all connections together; 0: no budget. */
  readonly partialFramesBudgetBytes: number;
  /** Bytes per second this connection's compressed frames may decompress to; 0: no budget. */
  readonly inflateBytesPerSec: number;
  /**
   * Bytes per second the compressed frames of all connections together may decompress to
   * (INFLATE_TOTAL_BYTES_PER_SEC): one bucket, shared by every connection. Null: no budget.
   */
  readonly inflateTotal: TokenBucket | null;
  /** Bytes per second read from this connection (its burst: a second's worth, or one frame); 0: no budget. */
  readonly inboundBytesPerSec: number;
}

/** Where validated messages and refusals go: the session. */
export interface InboundSink {
  /** Still taking input (false once the session is ending). */
  readonly live: boolean;
  /** Bit (1 << codec) for each codec the client may send compressed frames in (hello). */
  readonly inboundCodecs: number;
  /** The first bytes named the protocol: text or binary. */
  onMode(mode: Mode): void;
  /** A valid message; its token is taken. */
  onMessage(msg: InboundMessage): void;
  /** A refused frame: send the error (and close, when the code closes). */
  fail(id: RequestId | undefined, code: ErrorCode, message: string): void;
  /** Close with a `reconnect` push saying why. */
  disconnect(reason: DisconnectReason): void;
}

/** What the inbound side needs of the server: the process-wide partial-frame budget. */
export interface PartialBudget {
  /** All partial frames are over the budget: `inbound` paused; call budgetResume once it frees. */
  waitForPartialBudget(inbound: Inbound): void;
  /** Partial-frame bytes were released. */
  partialBudgetFreed(): void;
  /** All partial frames are past the budget by a quarter, `inbound`'s read last: refuse the largest held. */
  partialOverflow(inbound: Inbound): void;
}

/** The hub's flush, as a connection that yielded its turn sees it. */
export interface FlushGate {
  /** The last flush carried dirty connections over to a later turn (FLUSH_TURN_BYTES). */
  readonly flushBehind: boolean;
  /** Call `waiter.flushCaughtUp()` once the flush has caught up. */
  waitForFlush(waiter: Inbound): void;
}

/** What is read from: the socket, paused and resumed for backpressure. */
export interface Readable {
  pause(): unknown;
  resume(): unknown;
}

/** Why the socket is not being read; it is read again when no reason is left. */
const Pause = {
  /** A compressed frame is being decompressed; later frames wait behind it. */
  Inflate: 1,
  /** All partial frames together are over PARTIAL_FRAMES_BUDGET_BYTES. */
  Budget: 2,
  /** The rate-limit bucket is empty: read no more than one chunk per tenth of a second. */
  Rate: 4,
  /** TURN_BYTES were handled: the rest of this event-loop turn belongs to the others (and while the hub's flush is behind, until it caught up). */
  Turn: 8,
  /** The connection's frames decompressed to more than INFLATE_BYTES_PER_SEC allows. */
  InflateBudget: 16,
  /** The session has as many requests in flight as it takes (Session, MAX_BULK_IN_FLIGHT). */
  Requests: 32,
  /** The connection sent more than INBOUND_BYTES_PER_SEC allows. */
  Bytes: 64,
} as const;

/**
 * After handling this many bytes of frames a connection yields the rest of the event-loop turn
 * (it is read again from the next one). libuv reads up to 32 chunks (2 MB) from one socket per
 * turn, and handling that much takes tens of milliseconds whatever the frames' size (one frame
 * near MAX_FRAME_BYTES, or sixty of 32 kB), so one fast sender would otherwise take whole turns
 * from everyone else. A yield costs a pause and a resume; at 64 kB it is well under 1% of the
 * work of the frames before it.
 */
const TURN_BYTES = 64 * 1024;

const CODEC_NONE = Codec.None;

/** A frame waiting behind one being decompressed, or being decompressed itself. */
interface HeldFrame {
  body: Buffer;
  flags: number;
  /** Raw: not looked at yet; Inflating: its decompression runs; Ready: body is the plain body; Refused: skip it. */
  stage: 0 | 1 | 2 | 3;
  /** Charged to the process-wide inflate budget before decompressing (the output bound), settled after. */
  reserved: number;
}
const RAW = 0;
const INFLATING = 1;
const READY = 2;
const REFUSED = 3;

export class Inbound implements FrameSink {
  mode: Mode = Mode.Unknown;
  /** Last time the client completed a frame (ms, coarse): partial frames are not activity. */
  lastSeen: number;
  /** When the incomplete frame held now began (ms); 0 when none (FRAME_TIMEOUT_MS). */
  partialSince = 0;
  /** When the chunk being handled arrived (ms); the time of the frames it completes. */
  private chunkAt: number;
  /** Bytes of the incomplete frame held by the parser, as last added to counters.partialFrameBytes. */
  private partialBytes = 0;
  /** Why the socket is paused (Pause bits); 0 while it is read. */
  private paused = 0;
  private parser: TextParser | BinaryParser | null = null;
  private sniffed: Buffer | null = null;
  private stopped = false;
  /**
   * The session takes no more requests for now (holdRequests): frames already read wait in
   * `order`, copied (at most the chunk being parsed: the socket is paused), instead of running.
   */
  private requestsHeld = false;
  /** A `rate_limited` error without id was sent since the bucket last had a token. */
  private rateNoticeSent = false;
  /** Frame bytes handled since the connection last yielded its turn (TURN_BYTES). */
  private turnBytes = 0;
  /** TURN_BYTES were reached in this chunk: yield after it. */
  private yieldTurn = false;
  private readonly bucket: TokenBucket;
  private readonly order: InOrder<HeldFrame>;
  /**
   * Decompressed bytes this connection may still produce (INFLATE_BYTES_PER_SEC, at most one
   * second's worth); in debt, compressed frames wait until it is repaid. Null: no budget.
   */
  private readonly inflateBudget: TokenBucket | null;
  /** Bytes this connection may still send (INBOUND_BYTES_PER_SEC); in debt it is not read. Null: no budget. */
  private readonly bytesBudget: TokenBucket | null;

  constructor(
    private readonly input: Readable,
    private readonly sink: InboundSink,
    private readonly limits: InboundLimits,
    private readonly counters: Counters,
    private readonly budget: PartialBudget,
    /** The first bytes are HTTP: hand the socket over with them. */
    private readonly onHttp: (firstBytes: Buffer) => void,
    now: number,
    /** The hub: after yielding its turn a connection waits for the flush to catch up. */
    private readonly flushGate: FlushGate | null = null,
  ) {
    this.lastSeen = now;
    this.chunkAt = now;
    this.bucket = new TokenBucket(limits.rateLimitPerSec, limits.rateLimitBurst, now);
    this.order = new InOrder((f) => this.takeFrame(f));
    this.inflateBudget = limits.inflateBytesPerSec > 0 ? new TokenBucket(limits.inflateBytesPerSec, limits.inflateBytesPerSec, now) : null;
    const bytesPerSec = limits.inboundBytesPerSec;
    this.bytesBudget = bytesPerSec > 0 ? new TokenBucket(bytesPerSec, Math.max(bytesPerSec, limits.maxFrameBytes), now) : null;
  }

  push(chunk: Buffer): void {
    if (this.stopped) return;
    this.counters.bytesReceived += chunk.length;
    this.chunkAt = Date.now();
    const parser = this.parser;
    if (parser === null) {
      this.sniff(chunk);
    } else {
      const done = parser.framesCompleted;
      parser.push(chunk);
      this.trackPartial(parser, done);
      if (this.yieldTurn) this.yieldRestOfTurn();
    }
    if (this.bytesBudget !== null) this.chargeBytes(this.bytesBudget, chunk.length, this.chunkAt);
  }

  /** A large reply to one of this connection's requests: charged like bytes read (session.ts, REPLY_CHARGE_MIN). */
  chargeReply(n: number): void {
    if (this.bytesBudget !== null) this.chargeBytes(this.bytesBudget, n, Date.now());
  }

  /**
   * INBOUND_BYTES_PER_SEC: every byte read is charged to the connection's bucket, whatever it
   * turns out to be (frames, refused frames, partial ones). In debt, the socket is not read until
   * the debt is repaid: TCP slows the sender down, nothing is dropped, and one client sending
   * megabyte frames as fast as it can takes no more of the process than the budget allows.
   */
  private chargeBytes(budget: TokenBucket, n: number, now: number): void {
    budget.spend(n);
    if (this.stopped || (this.paused & Pause.Bytes) !== 0 || budget.positive(now)) return;
    this.counters.limitHits[Limit.InboundBytes]++;
    this.pause(Pause.Bytes);
    setTimeout(onBytesRefilled, budget.debtMs, this).unref();
  }

  /** @internal timer: the byte debt is repaid (or a new timer is set for what is left). */
  bytesRefilled(): void {
    const budget = this.bytesBudget!;
    if (!this.stopped && !budget.positive(Date.now())) {
      setTimeout(onBytesRefilled, budget.debtMs, this).unref();
      return;
    }
    this.unpause(Pause.Bytes);
  }

  /** Stop reading for good: the parser drops what it holds and its bytes leave the budget. */
  stop(): void {
    this.stopped = true;
    this.parser?.stop();
    this.order.clear();
    this.releasePartial();
  }

  /**
   * The session takes no more requests for now (true) or again (false): backpressure in TCP. The
   * rest of the chunk being parsed waits too (a 64 KiB read holds a thousand small requests, which
   * would otherwise all run past the session's bound), and runs, in order, when it is released.
   */
  holdRequests(hold: boolean): void {
    if (hold) {
      this.requestsHeld = true;
      if (!this.stopped) this.pause(Pause.Requests);
      return;
    }
    if (!this.requestsHeld) return;
    this.requestsHeld = false;
    // What the client sent meanwhile waited in TCP, not read: the wait was ours, not its silence.
    this.lastSeen = Date.now();
    // What waited runs now, and may hold requests again before the end.
    this.order.drain();
    if (this.requestsHeld) return;
    this.unpause(Pause.Requests);
    if (!this.order.holding) this.unpause(Pause.Inflate);
  }

  /** The session holds the client's requests (its own are still running or waiting): not idle. */
  get heldByServer(): boolean {
    return this.requestsHeld;
  }

  /** The server's budget wait is over: read again (unless something else holds the input). */
  budgetResume(): void {
    this.unpause(Pause.Budget);
  }

  /** Called by the server's sweep when the incomplete frame is older than FRAME_TIMEOUT_MS. */
  frameTimedOut(timeoutMs: number): void {
    this.counters.limitHits[Limit.FrameTimeout]++;
    this.sink.fail(undefined, ErrorCode.FrameTimeout, `frame not completed within ${timeoutMs} ms of its first byte`);
  }

  private sniff(chunk: Buffer): void {
    const data = this.sniffed === null ? chunk : Buffer.concat([this.sniffed, chunk]);
    this.sniffed = null;
    const mode = sniffMode(data);
    switch (mode) {
      case Mode.Unknown:
        this.sniffed = data;
        return;
      case Mode.Text:
      case Mode.Binary: {
        this.mode = mode;
        const parser = mode === Mode.Text ? new TextParser(this, this.limits.maxFrameBytes) : new BinaryParser(this, this.limits.maxFrameBytes);
        this.parser = parser;
        this.sink.onMode(mode);
        const rest = mode === Mode.Text ? data : data.subarray(BINARY_PREAMBLE.length);
        if (rest.length > 0) {
          parser.push(rest);
          this.trackPartial(parser, 0);
          if (this.yieldTurn) this.yieldRestOfTurn();
        }
        return;
      }
      case Mode.Http:
        this.mode = Mode.Http;
        this.stop();
        this.onHttp(data);
        return;
      default:
        // Unknown first bytes: answer in text mode, which a human with nc can read, then close.
        this.mode = Mode.Text;
        this.sink.onMode(Mode.Text);
        this.sink.fail(undefined, ErrorCode.BadFrame, 'unrecognised protocol preamble: send JSON lines, the binary preamble, or HTTP');
    }
  }

  // ---- backpressure --------------------------------------------------------------------------

  private pause(reason: number): void {
    if (this.paused === 0) this.input.pause();
    this.paused |= reason;
  }

  private unpause(reason: number): void {
    if ((this.paused & reason) === 0) return;
    this.paused &= ~reason;
    if (this.paused === 0 && !this.stopped && this.sink.live) this.input.resume();
  }

  private yieldRestOfTurn(): void {
    this.yieldTurn = false;
    this.turnBytes = 0;
    if (this.stopped || (this.paused & Pause.Turn) !== 0) return;
    this.pause(Pause.Turn);
    setImmediate(onNextTurn, this);
  }

  /**
   * @internal setImmediate: a new turn, read again; unless the hub's flush is behind (it carried
   * connections over past FLUSH_TURN_BYTES): then read again once it has caught up. A burst of
   * frames is what yields a turn, and its fan-out is what the flush is behind with: a sender of
   * megabyte messages to hundreds of members is read at the pace their sockets are written,
   * instead of piling its messages up in their queues until they are cut off as slow consumers.
   */
  nextTurn(): void {
    const gate = this.flushGate;
    if (gate !== null && gate.flushBehind && !this.stopped) {
      gate.waitForFlush(this);
      return;
    }
    this.unpause(Pause.Turn);
  }

  /** @internal the hub's flush caught up after this connection yielded its turn. */
  flushCaughtUp(): void {
    this.unpause(Pause.Turn);
  }

  /** @internal timer: the bucket has a token again. */
  rateRefilled(): void {
    this.bucket.resumed(Date.now());
    this.unpause(Pause.Rate);
  }

  /** @internal timer: the decompression debt is repaid: go on with the frame waiting for it. */
  inflateRefilled(): void {
    // First: a frame that has to wait again sets it again (with a new timer).
    this.unpause(Pause.InflateBudget);
    this.order.drain();
    // The frame that waited may have been decompressed at once (lz4): nothing else would end
    // an Inflate pause left from an earlier zstd frame.
    if (!this.order.holding) this.unpause(Pause.Inflate);
  }

  /**
   * Whether a compressed frame may be decompressed now (INFLATE_BYTES_PER_SEC). A few bytes of
   * zstd can stand for a megabyte (RLE blocks), and then the server, not the sender, pays for
   * the megabyte: decompressing, scanning and parsing it. So the bytes frames decompress to are
   * charged to a per-connection bucket; in debt, the frame waits at the head (frames behind it
   * wait too, in order), the socket is not read, and a timer resumes once the debt is repaid.
   * Nothing is dropped: a sender past the budget is slowed down, as TCP would slow it.
   */
  private inflateAllowed(f: HeldFrame, codec: Codec): boolean {
    const own = this.inflateBudget;
    const total = this.limits.inflateTotal;
    const now = Date.now();
    const ownOk = own === null || own.positive(now);
    if (ownOk && (total === null || total.positive(now))) {
      // The process-wide budget is charged the frame's output bound up front (settled once the
      // output is known): zstd runs on the thread pool, and 150 connections each starting a bomb
      // in the same turn, all charged only when done, had 150 MiB decompressing at once and their
      // parses in one turn (the witness waited 1.3 s). Charged first, at most the bucket's burst
      // is in flight.
      if (total !== null) {
        f.reserved = inflateBound(codec, f.body, this.limits.maxFrameBytes);
        total.spend(f.reserved);
      }
      return true;
    }
    if ((this.paused & Pause.InflateBudget) === 0 && !this.stopped) {
      this.counters.limitHits[ownOk ? Limit.InflateTotal : Limit.InflateBytes]++;
      this.pause(Pause.InflateBudget);
      setTimeout(onInflateRefilled, ownOk ? total!.debtMs : own!.debtMs, this).unref();
    }
    // It waits in the queue: its body must outlive the parser's chunk.
    f.body = Buffer.from(f.body);
    return false;
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
      const counters = this.counters;
      counters.partialFrameBytes += delta;
      this.partialBytes = held;
      if (delta < 0) this.budget.partialBudgetFreed();
      else {
        const budget = this.limits.partialFramesBudgetBytes;
        if (budget > 0 && counters.partialFrameBytes > budget + budget / 4 && !this.stopped) {
          // Past the budget by a quarter: pausing came too late. A connection is paused only
          // after the read that took it over, and every connection not paused yet may add a
          // whole read (64 KiB): 1,500 connections each holding 700 kB of a frame held 149 MiB
          // against the 64 MiB budget. The largest frames held are refused (their connections
          // closed) until the total is back within the bound, whichever read went past it: a
          // client whose ordinary frame happens to span two reads is not the one to go.
          this.budget.partialOverflow(this);
          if (this.stopped) return;
        }
        if (budget > 0 && counters.partialFrameBytes > budget && !this.stopped && (this.paused & Pause.Budget) === 0) {
          // Over the budget: stop reading this socket (TCP pushes back on the client) until
          // partial frames elsewhere complete or time out. Its own frame timeout still runs.
          counters.limitHits[Limit.PartialFramesBudget]++;
          this.pause(Pause.Budget);
          this.budget.waitForPartialBudget(this);
        }
      }
    }
    if (held === 0) this.partialSince = 0;
    else if (this.partialSince === 0 || parser.framesCompleted !== doneBefore) this.partialSince = this.chunkAt;
  }

  /** Bytes of the incomplete frame held against PARTIAL_FRAMES_BUDGET_BYTES. */
  get heldPartialBytes(): number {
    return this.partialBytes;
  }

  /** Chosen by the server to bring partial frames back within their hard bound: refuse the frame, close. */
  refuseOverflow(budget: number): void {
    this.counters.limitHits[Limit.PartialFramesBudget]++;
    this.sink.fail(undefined, ErrorCode.Overloaded, `incomplete frames of all connections are past PARTIAL_FRAMES_BUDGET_BYTES (${budget}) by a quarter: this frame, one of the largest held, is refused`);
    this.sink.disconnect(DisconnectReason.Overloaded);
    // A session already ending took no input: its bytes go now all the same.
    if (!this.stopped) this.stop();
  }

  /** Let go of the partial frame's bytes in the process-wide account (closing, handed over). */
  private releasePartial(): void {
    this.partialSince = 0;
    if (this.partialBytes === 0) return;
    this.counters.partialFrameBytes -= this.partialBytes;
    this.partialBytes = 0;
    this.budget.partialBudgetFreed();
  }

  // ---- frames --------------------------------------------------------------------------------

  onFrameError(code: ErrorCode, message: string): void {
    if (code === ErrorCode.TooLarge) this.counters.limitHits[Limit.MaxFrameBytes]++;
    this.sink.fail(undefined, code, message);
  }

  /** FrameSink: a complete frame (`body` valid only during the call). */
  onFrame(body: Buffer, flags: number): void {
    if (!this.sink.live) return;
    // A complete frame is activity (the idle timer); bytes of an incomplete one are not.
    this.lastSeen = this.chunkAt;
    if (this.order.holding || this.requestsHeld) {
      // Keep the client's order: later frames wait behind the one being decompressed, or until
      // the session takes requests again.
      this.order.hold({ body: Buffer.from(body), flags, stage: RAW, reserved: 0 });
      return;
    }
    if ((flags & CODEC_MASK) === CODEC_NONE) this.handleBody(body);
    else this.order.push({ body, flags, stage: RAW, reserved: 0 });
  }

  /** InOrder: handle the frame at the head, decompressing it first; false while that runs. */
  private takeFrame(f: HeldFrame): boolean {
    if (!this.sink.live) return true;
    if (this.requestsHeld) return false;
    if (f.stage === INFLATING) return false;
    if (f.stage === REFUSED) return true;
    if (f.stage === RAW) {
      f.stage = READY;
      const codec = (f.flags & CODEC_MASK) as Codec;
      if (codec !== CODEC_NONE) {
        if ((this.sink.inboundCodecs & (1 << codec)) === 0) {
          this.sink.fail(undefined, ErrorCode.BadFrame, `compressed frame (${codecName(codec)}), but that codec was not negotiated in hello`);
          return true;
        }
        if (!this.inflateAllowed(f, codec)) {
          f.stage = RAW;
          return false;
        }
        let out: Buffer | Promise<Buffer>;
        try {
          out = decompressBody(codec, f.body, this.limits.maxFrameBytes);
        } catch (err) {
          this.settleInflate(f, 0);
          this.sink.fail(undefined, ErrorCode.BadFrame, (err as Error).message);
          return true;
        }
        if (out instanceof Promise) {
          f.stage = INFLATING;
          this.pause(Pause.Inflate);
          out.then(
            (b) => this.inflated(f, b, READY),
            (err: unknown) => {
              this.sink.fail(undefined, ErrorCode.BadFrame, err instanceof CompressionError ? err.message : 'corrupt compressed frame');
              this.inflated(f, f.body, REFUSED);
            },
          );
          return false;
        }
        this.inflateBudget?.spend(out.length);
        this.settleInflate(f, out.length);
        f.body = out;
      }
    }
    this.handleBody(f.body);
    return true;
  }

  /** The process-wide inflate budget gets back what the frame's bound over-charged. */
  private settleInflate(f: HeldFrame, produced: number): void {
    if (f.reserved === 0) return;
    const total = this.limits.inflateTotal;
    if (total !== null) {
      if (produced > f.reserved) total.spend(produced - f.reserved);
      else total.refund(f.reserved - produced);
    }
    f.reserved = 0;
  }

  /** A frame's decompression ended: handle it (or skip it, refused) and the frames held behind it. */
  private inflated(f: HeldFrame, body: Buffer, stage: typeof READY | typeof REFUSED): void {
    if (stage === READY) this.inflateBudget?.spend(body.length);
    this.settleInflate(f, stage === READY ? body.length : 0);
    f.body = body;
    f.stage = stage;
    this.order.drain();
    if (!this.order.holding) this.unpause(Pause.Inflate);
  }

  /**
   * One complete frame body: take a token (every frame, a rejected one too, counts against the
   * rate limit), bound the nesting, parse, validate the envelope, hand it to the session. Neither
   * a frame past the limit nor one nested too deep is parsed: parsing is the expensive part (V8
   * takes milliseconds for 20 kB of nested arrays, and a failed parse builds an exception), and
   * everything recursive after it (JSON.stringify of `data`) throws on deep input. Their id, for
   * the reply, comes from a scan.
   */
  private handleBody(body: Buffer): void {
    const counters = this.counters;
    if ((this.turnBytes += body.length) >= TURN_BYTES) this.yieldTurn = true;
    if (!this.bucket.take(this.lastSeen)) {
      this.rateLimited(topLevelId(body));
      return;
    }
    this.rateNoticeSent = false;
    const maxDepth = this.limits.maxJsonDepth;
    if (jsonDepthExceeds(body, maxDepth)) {
      counters.countReceived('invalid');
      counters.limitHits[Limit.MaxJsonDepth]++;
      this.sink.fail(topLevelId(body), ErrorCode.BadRequest, `the message nests objects and arrays deeper than ${maxDepth} levels`);
      return;
    }
    if (!isUtf8(body)) {
      // Decoding would turn each bad byte into U+FFFD: different names would become one.
      counters.countReceived('invalid');
      this.sink.fail(undefined, ErrorCode.BadJson, 'frame is not valid UTF-8');
      return;
    }
    let value: unknown;
    try {
      value = JSON.parse(body.toString('utf8'));
    } catch {
      counters.countReceived('invalid');
      this.sink.fail(undefined, ErrorCode.BadJson, 'frame is not valid JSON');
      return;
    }
    let msg: InboundMessage;
    try {
      msg = asInbound(value);
    } catch (err) {
      counters.countReceived('invalid');
      this.sink.fail(requestIdOf(value), ErrorCode.BadRequest, (err as Error).message);
      return;
    }
    this.sink.onMessage(msg);
  }

  /**
   * A frame past the rate limit is dropped. A request with an id still gets its one reply
   * (`rate_limited`); of the others only the first since the bucket ran dry is answered, so a
   * flood of bad frames costs the server no flood of error replies.
   */
  private rateLimited(id: RequestId | undefined): void {
    const counters = this.counters;
    counters.dropped[DropReason.RateLimited]++;
    counters.limitHits[Limit.RateLimit]++;
    if ((this.paused & Pause.Rate) === 0 && !this.stopped) {
      // The rest of this chunk is handled (and refused); the socket is read again after a tenth
      // of a second, whatever the burst, so a flood costs at most a chunk (a 64 KiB
      // read, about a thousand small frames, each refused) per tenth of a second, and the rest
      // waits in TCP. Resuming at the first token instead cost a chunk per millisecond: 300,000
      // refusals a second from four connections, and a cluster gateway's other clients waited
      // up to a second for their messages.
      this.pause(Pause.Rate);
      setTimeout(onRateRefilled, this.bucket.resumeMs, this).unref();
    }
    if (id === undefined) {
      if (this.rateNoticeSent) return;
      this.rateNoticeSent = true;
    }
    this.sink.fail(id, ErrorCode.RateLimited, `rate limit of ${this.limits.rateLimitPerSec} messages/s exceeded`);
  }
}

function onNextTurn(inbound: Inbound): void {
  inbound.nextTurn();
}

function onRateRefilled(inbound: Inbound): void {
  inbound.rateRefilled();
}

function onInflateRefilled(inbound: Inbound): void {
  inbound.inflateRefilled();
}

function onBytesRefilled(inbound: Inbound): void {
  inbound.bytesRefilled();
}
