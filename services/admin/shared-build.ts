/**
 * A value that is costly to build and may be a little stale: an admin answer (/stats, /metrics)
 * or the broadcast worker's pending count (XPENDING per shard on its Redis connection). Without
 * this every request built its own, so a client pipelining requests decided how much CPU (and,
 * for the broadcast worker, how many Redis commands ahead of its routing) the admin port cost.
 *
 * Requests that arrive while a build is in flight share it, and builds are rate-limited by a
 * token bucket: past it, a request gets the last value built. A scraper that asks now and then
 * (Prometheus, a probe, a test reading after a change) always gets a fresh value; a flood gets
 * at most `perSecond` builds a second, whatever its request rate.
 */
export interface SharedBuildOptions {
  /** Builds per second once the burst is spent. */
  readonly perSecond: number;
  /** Builds allowed back to back. @default 1 */
  readonly burst?: number;
  /** @default Date.now */
  readonly now?: () => number;
}

export class SharedBuild<T> {
  private value: T | undefined = undefined;
  private built = false;
  private inFlight: Promise<T> | null = null;
  private tokens: number;
  private refilledAt: number;
  private readonly burst: number;
  private readonly now: () => number;
  /** Builds started so far (tests and the docs' claims read it). */
  builds = 0;

  constructor(
    private readonly build: () => T | Promise<T>,
    private readonly opts: SharedBuildOptions,
  ) {
    this.burst = Math.max(1, opts.burst ?? 1);
    this.now = opts.now ?? Date.now;
    this.tokens = this.burst;
    this.refilledAt = this.now();
  }

  /** The value: the build in flight, a new build if the bucket allows, else the last one built. */
  get(): Promise<T> {
    if (this.inFlight !== null) return this.inFlight;
    if (!this.take() && this.built) return Promise.resolve(this.value as T);
    // No token but nothing built yet (or the last build failed): build anyway, one at a time.
    this.builds++;
    let p: Promise<T>;
    try {
      p = Promise.resolve(this.build());
    } catch (err) {
      p = Promise.reject(err);
    }
    const shared = p.then(
      (v) => {
        this.value = v;
        this.built = true;
        this.inFlight = null;
        return v;
      },
      (err: unknown) => {
        this.inFlight = null;
        throw err;
      },
    );
    this.inFlight = shared;
    return shared;
  }

  private take(): boolean {
    const now = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.refilledAt) * this.opts.perSecond) / 1000);
    this.refilledAt = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}
