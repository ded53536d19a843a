/**
 * A work queue of object keys ({namespace, name}), like client-go's rate-limited workqueue:
 * a key is queued at most once, a key being processed is not processed twice at once (a change
 * during processing queues it again afterwards), and a failed key is retried with per-key
 * exponential backoff (5 ms doubling up to 5 minutes by default) until it succeeds.
 */
import { keyString, type ObjectKey } from './key';

export type Handler = (key: ObjectKey) => Promise<RequeueAfter | void>;

/** A handler may ask for a later visit without it counting as a failure. */
export interface RequeueAfter {
  readonly requeueAfterMs: number;
}

export interface QueueOptions {
  /** @default 5 */
  readonly baseDelayMs?: number;
  /** @default 300000 */
  readonly maxDelayMs?: number;
  /** Called when a key fails; the queue retries it with backoff. */
  readonly onError?: (key: ObjectKey, err: unknown, attempt: number) => void;
}

/** Sets and maps below are by keyString(key); `keys` maps that back to the typed key. */
export class WorkQueue {
  private readonly keys = new Map<string, ObjectKey>();
  private readonly queued = new Set<string>();
  private readonly order: string[] = [];
  private readonly processing = new Set<string>();
  private readonly dirty = new Set<string>();
  private readonly failures = new Map<string, number>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private running = false;
  private wake: (() => void) | null = null;
  private loop: Promise<void> = Promise.resolve();

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
    this.wake?.();
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

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.running = false;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    this.wake?.();
    await this.loop;
  }

  private async run(): Promise<void> {
    while (this.running) {
      const key = this.order.shift();
      if (key === undefined) {
        await new Promise<void>((r) => (this.wake = r));
        this.wake = null;
        continue;
      }
      this.queued.delete(key);
      this.processing.add(key);
      const obj = this.keys.get(key)!;
      try {
        const res = await this.handler(obj);
        this.failures.delete(key);
        if (res && res.requeueAfterMs > 0) this.addAfter(obj, res.requeueAfterMs);
      } catch (err) {
        const attempt = (this.failures.get(key) ?? 0) + 1;
        this.failures.set(key, attempt);
        this.opts.onError?.(obj, err, attempt);
        const base = this.opts.baseDelayMs ?? 5;
        this.addAfter(obj, Math.min(base * 2 ** Math.min(attempt - 1, 30), this.opts.maxDelayMs ?? 300_000));
      } finally {
        this.processing.delete(key);
        if (this.dirty.delete(key)) this.add(obj);
        // Forget the typed key once nothing refers to it (no growth with deleted objects).
        if (!this.queued.has(key) && !this.timers.has(key) && !this.failures.has(key)) this.keys.delete(key);
      }
    }
  }
}
