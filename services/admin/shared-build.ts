/**
 * A value that is costly to build: an admin answer (/stats, /metrics) or the broadcast worker's
 * pending count (XPENDING per shard on its Redis connection). Without this every request built
 * its own, so a client pipelining requests decided how much CPU (and, for the broadcast worker,
 * how many Redis commands ahead of its routing) the admin port cost.
 *
 * Builds run one at a time and are rate-limited by a token bucket. A request is answered by a
 * build that began after it arrived, so a reader never sees a value older than its question (a
 * scraper, or a test that changed something and reads the result); past the bucket it waits for
 * the next build, which every request arriving until then shares. A flood therefore gets at most
 * `perSecond` builds a second, and waits for them. Where a value of some age is good enough
 * (`maxAgeMs`), a request within that age of the last build takes that value without waiting.
 */
import { TokenBucket } from '../gateway/token-bucket';

export interface SharedBuildOptions {
  /** Builds per second once the burst is spent. */
  readonly perSecond: number;
  /** Builds allowed back to back. @default 1 */
  readonly burst?: number;
  /** A value whose build began at most this long ago answers at once. @default 0 (never) */
  readonly maxAgeMs?: number;
  /** @default Date.now */
  readonly now?: () => number;
  /** Runs `fn` after `ms` (tests drive time). @default an unref'd setTimeout */
  readonly later?: (fn: () => void, ms: number) => void;
}

interface Waiting<T> {
  readonly promise: Promise<T>;
  resolve(v: T): void;
  reject(err: unknown): void;
}

function waiting<T>(): Waiting<T> {
  let resolve!: (v: T) => void;
  let reject!: (err: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

function unrefLater(fn: () => void, ms: number): void {
  setTimeout(fn, ms).unref();
}

export class SharedBuild<T> {
  private last: T | undefined = undefined;
  /** When the build of `last` began; -Infinity while there is none. */
  private lastBegan = -Infinity;
  private inFlight: Promise<T> | null = null;
  /** Requests that arrived after the build in flight began (or past the bucket): the next build's. */
  private next: Waiting<T> | null = null;
  private timerSet = false;
  private readonly bucket: TokenBucket;
  private readonly maxAgeMs: number;
  private readonly now: () => number;
  private readonly later: (fn: () => void, ms: number) => void;
  /** Builds started so far (tests and the docs' claims read it). */
  builds = 0;

  constructor(
    private readonly build: () => T | Promise<T>,
    opts: SharedBuildOptions,
  ) {
    this.maxAgeMs = opts.maxAgeMs ?? 0;
    this.now = opts.now ?? Date.now;
    this.later = opts.later ?? unrefLater;
    this.bucket = new TokenBucket(opts.perSecond, Math.max(1, opts.burst ?? 1), this.now());
  }

  /** A value built after this call (or within `maxAgeMs` of it). */
  get(): Promise<T> {
    if (this.maxAgeMs > 0) {
      if (this.now() - this.lastBegan <= this.maxAgeMs) return Promise.resolve(this.last as T);
      if (this.inFlight !== null) return this.inFlight;
    }
    if (this.next !== null) return this.next.promise;
    if (this.inFlight === null && this.bucket.take(this.now())) return this.start();
    const w = waiting<T>();
    this.next = w;
    if (this.inFlight === null) this.startNext();
    return w.promise;
  }

  private start(): Promise<T> {
    this.builds++;
    const began = this.now();
    let p: Promise<T>;
    try {
      p = Promise.resolve(this.build());
    } catch (err) {
      p = Promise.reject(err);
    }
    const shared = p.then(
      (v) => {
        this.last = v;
        this.lastBegan = began;
        this.settled();
        return v;
      },
      (err: unknown) => {
        this.settled();
        throw err;
      },
    );
    this.inFlight = shared;
    return shared;
  }

  private settled(): void {
    this.inFlight = null;
    if (this.next !== null) this.startNext();
  }

  /** Start the build the waiting requests share, now if the bucket has a token, else when it will. */
  private startNext(): void {
    if (this.timerSet || this.next === null) return;
    if (this.bucket.take(this.now())) {
      const w = this.next;
      this.next = null;
      this.start().then(w.resolve, w.reject);
      return;
    }
    this.timerSet = true;
    this.later(() => {
      this.timerSet = false;
      if (this.inFlight === null) this.startNext();
    }, this.bucket.refillMs);
  }
}
