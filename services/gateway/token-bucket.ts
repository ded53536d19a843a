/**
 * A budget refilled over time: per connection the rate limit (RATE_LIMIT_PER_SEC sustained,
 * RATE_LIMIT_BURST at once, a token per frame) and the byte budgets (INBOUND_BYTES_PER_SEC and
 * INFLATE_BYTES_PER_SEC, metered with positive() and spend()); per process the admin builds
 * (services/admin/shared-build.ts). A token
 * bucket refilled lazily from the time of the frame being counted, so it costs no timer and no
 * clock read of its own. A full bucket only moves its refill time; the arithmetic runs only once
 * a client has spent some tokens.
 */
import { MAX_TIMER_MS } from '../control/config';

/** The shortest pause of a connection past its rate limit (ms). */
export const RATE_PAUSE_MS = 100;

export class TokenBucket {
  private tokens: number;
  private refilledAt: number;

  constructor(
    readonly perSec: number,
    readonly burst: number,
    now: number,
  ) {
    this.tokens = burst;
    this.refilledAt = now;
  }

  /** Take one token at time `now` (ms); false when the bucket is empty. */
  take(now: number): boolean {
    if (this.tokens < this.burst) {
      this.tokens = Math.min(this.burst, this.tokens + ((now - this.refilledAt) * this.perSec) / 1000);
      if (this.tokens < 1) {
        this.refilledAt = now;
        return false;
      }
    }
    this.refilledAt = now;
    this.tokens -= 1;
    return true;
  }

  /** Whether the bucket has refilled to its burst by time `now` (a fresh bucket would be the same). */
  full(now: number): boolean {
    return this.tokens + ((now - this.refilledAt) * this.perSec) / 1000 >= this.burst;
  }

  /** How long until the next token, at the most (ms, at least 1). */
  get refillMs(): number {
    return Math.max(1, Math.ceil(1000 / this.perSec));
  }

  /**
   * What a connection past its rate limit waits before it is read again (ms): a tenth of a
   * second, or one token's refill when that is longer. Never shorter, whatever the burst: each
   * resumed read of a flood is a chunk of refusals, and a pause as short as a small burst's refill
   * (1 ms for RATE_LIMIT_BURST = RATE_LIMIT_PER_SEC/1000) let one connection make a read of
   * refusals every millisecond. The tokens earned during the pause are credited when it ends
   * (resumed()), beyond a smaller burst, so a connection that fell behind once still gets its
   * sustained rate.
   */
  get resumeMs(): number {
    return Math.max(RATE_PAUSE_MS, Math.ceil(1000 / this.perSec));
  }

  /**
   * A rate pause ended at `now`: the bucket holds what it earned, up to the larger of the burst
   * and the pause's worth. Capped at a small burst, a client sending steadily at half its rate
   * that overshot once got `burst` frames per pause, the rest of what waited in TCP refused, and
   * paused again, for good.
   */
  resumed(now: number): void {
    const earned = this.tokens + ((now - this.refilledAt) * this.perSec) / 1000;
    this.tokens = Math.min(earned, Math.max(this.burst, (this.perSec * this.resumeMs) / 1000));
    this.refilledAt = now;
  }

  /**
   * Metered use (bytes, not messages): whether anything is left at time `now`. What is used is
   * charged after the fact with spend(), so one use may leave the bucket in debt.
   */
  positive(now: number): boolean {
    if (this.tokens < this.burst) this.tokens = Math.min(this.burst, this.tokens + ((now - this.refilledAt) * this.perSec) / 1000);
    this.refilledAt = now;
    return this.tokens > 0;
  }

  /** Charge `n` tokens (possibly into debt). */
  spend(n: number): void {
    this.tokens -= n;
  }

  /**
   * Give back `n` tokens charged in advance and not used, never past the burst: a refund that
   * lands after the bucket refilled would otherwise raise it above its size, and what it admits
   * at once with it.
   */
  refund(n: number): void {
    this.tokens = Math.min(this.burst, this.tokens + n);
  }

  /**
   * How long until the debt is repaid (ms, at least 1), at most MAX_TIMER_MS: it is a timer's
   * delay, and a longer one fires after 1 ms (a debt of a few MB at INBOUND_BYTES_PER_SEC=1 re-armed
   * its timer every millisecond). The timer checks positive() again and waits for what is left.
   */
  get debtMs(): number {
    return Math.min(MAX_TIMER_MS, Math.max(1, Math.ceil((-this.tokens * 1000) / this.perSec) + 1));
  }
}
