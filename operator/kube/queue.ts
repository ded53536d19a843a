/**
 * A work queue of object keys ({namespace, name}), like client-go's rate-limited workqueue with
 * its workers: a key is queued at most once, up to `concurrency` keys are handled at once but a
 * key is never handled twice at once (a change during processing queues it again afterwards),
 * and a failed key is retried with per-key exponential backoff (5 ms doubling up to 5 minutes by
 * default) until it succeeds.
 *
 * No key can hold the queue: each handler call has a deadline (`timeoutMs`). Past it the call's
 * AbortSignal fires, it counts as a failure (retried with backoff) and its worker takes the next
 * key; the key itself is not handled again before the late call has settled. One Switchboard whose
 * Redis accepts connections and never answers held the operator's only worker, so no other
 * tenant's flags were published, for ever. `stop()` aborts the calls still running and waits for
 * them at most `stopTimeoutMs`: a step-down or a SIGTERM waits for it.
 */
import { keyString, type ObjectKey } from './key';

/** `signal` fires at the call's deadline or when the queue stops: stop, and send nothing more. */
export type Handler = (key: ObjectKey, signal: AbortSignal) => Promise<RequeueAfter | void>;

/** A handler may ask for a later visit without it counting as a failure. */
export interface RequeueAfter {
  readonly requeueAfterMs: number;
}

export interface QueueOptions {
  /** @default 5 */
  readonly baseDelayMs?: number;
  /** @default 300000 */
  readonly maxDelayMs?: number;
  /** Keys handled at once (client-go's workers). @default 1 */
  readonly concurrency?: number;
  /** A handler call still running after this long fails, and frees its worker. @default 30000 */
  readonly timeoutMs?: number;
  /** The longest `stop()` waits for calls still running. @default 5000 */
  readonly stopTimeoutMs?: number;
  /** Called when a key fails; the queue retries it with backoff. */
  readonly onError?: (key: ObjectKey, err: unknown, attempt: number) => void;
}

/** The error of a handler call that passed its deadline. */
export class DeadlineError extends Error {
  constructor(key: ObjectKey, ms: number) {
    super(`${keyString(key)}: no result within ${ms} ms`);
    this.name = 'DeadlineError';
  }
}

/** Sets and maps below are by keyString(key); `keys` maps that back to the typed key. */
export class WorkQueue {
  private readonly keys = new Map<string, ObjectKey>();
  private readonly queued = new Set<string>();
  private readonly order: string[] = [];
  /** Keys whose handler call has not settled yet (including calls past their deadline). */
  private readonly processing = new Map<string, { readonly abort: AbortController; done: Promise<void> }>();
  private readonly dirty = new Set<string>();
  private readonly failures = new Map<string, number>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private running = false;
  /** Workers busy: calls running that are within their deadline. */
  private busy = 0;

  constructor(
    private readonly handler: Handler,
    private readonly opts: QueueOptions = {},
  ) {}

  add(obj: ObjectKey): void {
    const key = keyString(obj);
    if (!this.keys.has(key)) this.keys.set(key, { namespace: obj.namespace, name: obj.name });
    if (this.processing.has(key)) {
      this.dirty.add(key);
      return;
    }
    if (this.queued.has(key)) return;
    this.queued.add(key);
    this.order.push(key);
    this.pump();
  }

  addAfter(obj: ObjectKey, delayMs: number): void {
    const key = keyString(obj);
    const existing = this.timers.get(key);
    if (existing !== undefined) clearTimeout(existing);
    const t = setTimeout(() => {
      this.timers.delete(key);
      this.add(obj);
    }, delayMs);
    t.unref();
    this.timers.set(key, t);
  }

  get length(): number {
    return this.order.length;
  }

  /** Handler calls not settled yet, past their deadline or not. */
  get inFlight(): number {
    return this.processing.size;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.pump();
  }

  /**
   * Stop taking keys, abort the calls running, and wait for them to settle, at most
   * `stopTimeoutMs`. Keys still queued stay queued for the next start().
   */
  async stop(): Promise<void> {
    this.running = false;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    const running = [...this.processing.values()];
    for (const p of running) p.abort.abort(new Error('the work queue stopped'));
    if (running.length === 0) return;
    let timer: NodeJS.Timeout | undefined;
    // Not unref'd: whoever awaits stop() is kept waiting for its answer, which comes within the bound.
    const bound = new Promise<void>((r) => (timer = setTimeout(r, this.opts.stopTimeoutMs ?? 5000)));
    await Promise.race([Promise.all(running.map((p) => p.done)), bound]);
    clearTimeout(timer);
  }

  private pump(): void {
    const workers = Math.max(1, this.opts.concurrency ?? 1);
    while (this.running && this.busy < workers && this.order.length > 0) {
      const key = this.order.shift()!;
      this.queued.delete(key);
      this.process(key);
    }
  }

  private process(key: string): void {
    const obj = this.keys.get(key)!;
    const abort = new AbortController();
    const timeoutMs = this.opts.timeoutMs ?? 30_000;
    this.busy++;
    let freed = false;
    let timedOut = false;
    const free = () => {
      if (freed) return;
      freed = true;
      this.busy--;
      this.pump();
    };
    const deadline = setTimeout(() => {
      // The call goes on (it was told to stop), but it no longer holds a worker.
      timedOut = true;
      const err = new DeadlineError(obj, timeoutMs);
      abort.abort(err);
      this.failed(key, obj, err);
      free();
    }, timeoutMs);
    deadline.unref();
    // Registered before the call starts: a handler that throws at once settles synchronously.
    const entry = { abort, done: Promise.resolve() };
    this.processing.set(key, entry);
    entry.done = (async () => {
      try {
        const res = await this.handler(obj, abort.signal);
        if (!timedOut) {
          this.failures.delete(key);
          if (res && res.requeueAfterMs > 0) this.addAfter(obj, res.requeueAfterMs);
        }
      } catch (err) {
        if (!timedOut) this.failed(key, obj, err);
      } finally {
        clearTimeout(deadline);
        this.processing.delete(key);
        if (this.dirty.delete(key)) this.add(obj);
        // Forget the typed key once nothing refers to it (no growth with deleted objects).
        if (!this.queued.has(key) && !this.timers.has(key) && !this.failures.has(key)) this.keys.delete(key);
        free();
      }
    })();
  }

  private failed(key: string, obj: ObjectKey, err: unknown): void {
    const attempt = (this.failures.get(key) ?? 0) + 1;
    this.failures.set(key, attempt);
    this.opts.onError?.(obj, err, attempt);
    if (!this.running) return; // a stopped queue schedules nothing; the next start() resyncs
    const base = this.opts.baseDelayMs ?? 5;
    this.addAfter(obj, Math.min(base * 2 ** Math.min(attempt - 1, 30), this.opts.maxDelayMs ?? 300_000));
  }
}
