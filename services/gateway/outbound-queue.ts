/**
 * What a connection has to write, bounded. Frames arrive already encoded (an Outbound shared by
 * every recipient) and are queued as bytes in the client's mode and codec; the hub flushes each
 * dirty queue once per event-loop turn (or earlier, past INLINE_FLUSH_BYTES) as one corked
 * writev. A frame still being compressed holds back the frames behind it (InOrder), and its
 * bytes count against the bound like queued ones.
 *
 * The queue only measures: `enqueue` returns a verdict and the session applies the policy
 * (centrifuge's writer answers DisconnectSlow the same way), so the bound lives here and what to
 * do about a slow client lives with the rest of the session's decisions.
 */
import { Codec, InOrder, Mode, type FrameWaiter, type Outbound } from '../protocol';

/** What the queue writes to: a socket, or later another transport's stream. */
export interface ByteSink {
  write(buf: Buffer): unknown;
  cork(): void;
  uncork(): void;
  /** Bytes the sink holds that the peer has not taken yet. */
  readonly writableLength: number;
}

/**
 * The per-turn write budget shared by every queue of a gateway (the hub's FLUSH_TURN_BYTES):
 * each flush takes its bytes from `turnLeft`, and an inline flush waits for the hub's flush
 * once it is spent.
 */
export interface WriteTurn {
  turnLeft: number;
}

/** No per-turn budget (a queue outside a gateway, in tests). */
const UNLIMITED_TURN: WriteTurn = { turnLeft: Infinity };

/** The bounds of one connection's outbound side, from MAX_OUTBOUND_BYTES and friends. */
export interface OutboundLimits {
  /** Everything pending for a client (queued, waiting for compression, in the socket). */
  readonly maxOutboundBytes: number;
  /** Under `drop`, replies may take pending up to twice the bound (see admits). */
  readonly slowConsumerPolicy: 'disconnect' | 'drop';
  /** Binary frames with a body above this are compressed in the negotiated codec. */
  readonly compressionThreshold: number;
}

/** The answer to `enqueue`. */
export const Verdict = {
  /** Queued (or waiting behind a frame being compressed). */
  Queued: 0,
  /** Not queued: over the bound. The session decides: drop it, or disconnect the client. */
  Full: 1,
  /** Not queued: the queue is closed. */
  Closed: 2,
} as const;
export type Verdict = (typeof Verdict)[keyof typeof Verdict];

/**
 * Queued bytes that trigger a write before the end of the turn (nats.js' inline threshold): a
 * busy turn must not pile up more than the outbound bound in our queue, or members that read
 * perfectly well would be taken for slow consumers. Only while the turn's write budget lasts
 * (WriteTurn): past it the queue waits for the hub's flush, in the order it became dirty.
 */
const INLINE_FLUSH_BYTES = 32 * 1024;

/**
 * Constants read once per delivery, copied out of the protocol module: `export *` compiles to a
 * getter per imported name, and enqueue read two of them for every recipient of every message
 * (1.7% of the server's busy time at a million deliveries a second).
 */
const MODE_BINARY = Mode.Binary;
const CODEC_NONE = Codec.None;

export class OutboundQueue implements FrameWaiter {
  /** Frame encoding, set once the mode is sniffed and the codec negotiated. */
  mode: Mode = Mode.Unknown;
  codec: Codec = Codec.None;
  private queue: Buffer[] = [];
  private queuedBytes = 0;
  /** Messages waiting, in order, behind one still being compressed (zstd is asynchronous). */
  private readonly held: InOrder<Outbound>;
  private heldBytes = 0;
  private closed = false;

  constructor(
    private readonly sink: ByteSink,
    private readonly limits: OutboundLimits,
    /** The queue went from empty to non-empty: schedule a flush (the hub's dirty list). */
    private readonly becameDirty: () => void,
    /** Bytes handed to the sink, for the counters. */
    private readonly wrote: (bytes: number) => void,
    /**
     * A flush left bytes in the sink (the peer does not take them as fast): the server's
     * OUTBOUND_BUDGET_BYTES check looks only at such queues.
     */
    private readonly backlogged: () => void = noBacklogWatch,
    /** The gateway's write budget for this turn (the hub). */
    private readonly turn: WriteTurn = UNLIMITED_TURN,
  ) {
    this.held = new InOrder((msg) => this.takeCompressed(msg));
  }

  /** Everything pending for the client: queued, waiting for compression, in the sink. */
  get pendingBytes(): number {
    return this.queuedBytes + this.heldBytes + this.sink.writableLength;
  }

  /** Bytes in our queue, not handed to the sink yet. */
  get queued(): number {
    return this.queuedBytes;
  }

  /** Bytes waiting to be written: our queue plus the sink's own buffer. */
  get bufferedAmount(): number {
    return this.queuedBytes + this.sink.writableLength;
  }

  /**
   * Queue a frame. `reply`: it answers this client's own request (a reply, an error, a pong),
   * which the bound treats more leniently under `drop` (see admits).
   */
  enqueue(msg: Outbound, reply: boolean): Verdict {
    if (this.closed) return Verdict.Closed;
    let buf: Buffer;
    if (this.mode !== MODE_BINARY) buf = msg.text();
    else if (this.codec === CODEC_NONE) buf = msg.binary();
    else {
      // Compressed: straight to the queue when nothing waits and the frame is ready; else held
      // in order (binaryFor registered us as the waiter of the head).
      if (!this.held.holding) {
        const ready = msg.binaryFor(this.codec, this.limits.compressionThreshold, this);
        if (ready !== null) return this.queueBytes(ready, reply);
      } else {
        // Start its compression now, so that every recipient shares it.
        msg.binaryFor(this.codec, this.limits.compressionThreshold);
      }
      const size = msg.binary().length;
      if (!this.admits(size, reply)) return Verdict.Full;
      this.held.hold(msg);
      this.heldBytes += size;
      return Verdict.Queued;
    }
    return this.queueBytes(buf, reply);
  }

  /**
   * The outbound bound (docs/operations.md, "Limits and abuse"): a frame is accepted while
   * everything pending for the client (our queue, frames waiting for compression, the socket's
   * buffer) stays within MAX_OUTBOUND_BYTES. Besides that:
   * - a client with nothing pending gets the next frame whatever its size: it reads, it is not
   *   slow, and one frame the server built (each is bounded) must not cut it off;
   * - under the `drop` policy a reply to the client's own request is admitted (every request gets
   *   its reply) as long as pending stays within twice the bound; a client that neither reads nor
   *   stops sending requests is past that.
   */
  private admits(size: number, reply: boolean): boolean {
    if (this.fits(size, reply)) return true;
    // What our own queue holds may only have been kept back by the flush's turn budget
    // (FLUSH_TURN_BYTES), not by the client: write it now, and judge by what the socket keeps.
    // Several senders fanning out megabytes in one turn filled readers that read perfectly well
    // past the bound before the flush reached them, and cut them off as slow consumers.
    if (this.queuedBytes === 0) return false;
    this.flush();
    return this.fits(size, reply);
  }

  private fits(size: number, reply: boolean): boolean {
    const pending = this.pendingBytes;
    const max = this.limits.maxOutboundBytes;
    if (pending + size <= max || pending === 0) return true;
    return reply && this.limits.slowConsumerPolicy === 'drop' && pending + size <= 2 * max;
  }

  /** InOrder: the held message at the head, once its compressed frame exists. */
  private takeCompressed(msg: Outbound): boolean {
    if (this.closed) return true;
    const buf = msg.binaryFor(this.codec, this.limits.compressionThreshold, this);
    if (buf === null) return false;
    this.heldBytes -= msg.binary().length;
    this.append(buf);
    return true;
  }

  /** FrameWaiter: a frame we wait for is compressed; send on every ready one, in order. */
  frameReady(): void {
    this.held.drain();
  }

  private queueBytes(buf: Buffer, reply: boolean): Verdict {
    if (!this.admits(buf.length, reply)) return Verdict.Full;
    this.append(buf);
    return Verdict.Queued;
  }

  private append(buf: Buffer): void {
    if (this.queuedBytes === 0) this.becameDirty();
    this.queue.push(buf);
    this.queuedBytes += buf.length;
    if (this.queuedBytes >= INLINE_FLUSH_BYTES && this.turn.turnLeft > 0) this.flush();
  }

  /** The last frame of a closing connection (an error, a reconnect push): past the bound. */
  appendFinal(msg: Outbound): void {
    if (this.mode === Mode.Unknown || this.mode === Mode.Http) return;
    this.append(this.mode === MODE_BINARY ? msg.binary() : msg.text());
  }

  /** Whether nothing is queued (a closing connection may end its stream at once). */
  get empty(): boolean {
    return this.queuedBytes === 0;
  }

  /**
   * Write everything queued as one corked writev (the shared frames, no copy per socket), and
   * charge it to the turn's write budget.
   */
  flush(): void {
    const n = this.queue.length;
    if (n === 0) return;
    const sink = this.sink;
    const queue = this.queue;
    const bytes = this.queuedBytes;
    this.wrote(bytes);
    this.turn.turnLeft -= bytes;
    this.queuedBytes = 0;
    if (n === 1) sink.write(queue[0]);
    else {
      sink.cork();
      for (let i = 0; i < n; i++) sink.write(queue[i]);
      sink.uncork();
    }
    queue.length = 0;
    // A write the kernel took whole leaves nothing behind (the length drops synchronously).
    if (sink.writableLength > 0) this.backlogged();
  }

  /**
   * Stop taking frames. Messages still waiting for compression are dropped (a client that
   * reconnects recovers room messages through history); queued bytes stay for a last flush
   * unless `discard`.
   */
  close(discard: boolean): void {
    this.closed = true;
    this.held.clear();
    this.heldBytes = 0;
    if (discard) this.discard();
  }

  /** Drop everything queued: nothing will reach a client that does not read. */
  discard(): void {
    this.queue.length = 0;
    this.queuedBytes = 0;
  }
}

function noBacklogWatch(): void {}
