/**
 * Plain-number counters written on the hot path and read by /stats and, at scrape time, by the
 * Prometheus registry. Incrementing a field is far cheaper than a prom-client label lookup, and
 * each server instance owns its own set (tests run several servers in one process).
 */
import { ALL_ERROR_CODES, ErrorCode } from '../protocol';
import { Histogram } from './histogram';

export const DropReason = {
  SlowConsumer: 'slow_consumer',
  RateLimited: 'rate_limited',
  Duplicate: 'duplicate',
  Overloaded: 'overloaded',
  Shutdown: 'shutdown',
} as const;
export type DropReason = (typeof DropReason)[keyof typeof DropReason];

export class Counters {
  connections = 0;
  connectionsOpened = 0;
  /** Messages received, by type; types no handler knows are counted under "unknown". */
  readonly received = new Map<string, number>();
  receivedTotal = 0;
  delivered = 0;
  bytesReceived = 0;
  bytesSent = 0;
  errorsTotal = 0;
  readonly errors: Record<ErrorCode, number>;
  readonly dropped: Record<DropReason, number>;
  /** Delivery latency (accepted -> written to the recipient's socket), cumulative. */
  readonly deliveryLatency = new Histogram();

  constructor() {
    this.errors = Object.fromEntries(ALL_ERROR_CODES.map((c) => [c, 0])) as Record<ErrorCode, number>;
    this.dropped = Object.fromEntries(Object.values(DropReason).map((r) => [r, 0])) as Record<DropReason, number>;
  }

  countReceived(type: string): void {
    this.receivedTotal++;
    this.received.set(type, (this.received.get(type) ?? 0) + 1);
  }

  countError(code: ErrorCode): void {
    this.errors[code]++;
    this.errorsTotal++;
  }
}
