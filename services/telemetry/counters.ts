/**
 * Plain-number counters written on the hot path and read by /stats and, at scrape time, by the
 * Prometheus registry. Incrementing a field is far cheaper than a prom-client label lookup, and
 * each server instance owns its own set (tests run several servers in one process).
 */
import { ALL_ERROR_CODES, ErrorCode, ErrorInfo } from '../protocol';
import { Histogram } from './histogram';

export const DropReason = {
  SlowConsumer: 'slow_consumer',
  RateLimited: 'rate_limited',
  /** A room message the bus had delivered already (at-least-once redelivery in cluster mode). */
  Duplicate: 'duplicate',
} as const;
export type DropReason = (typeof DropReason)[keyof typeof DropReason];

/**
 * The budgets a client can run into, named by their setting (the `limit` label of
 * switchboard_limit_exceeded_total). docs/operations.md ("Limits and abuse") lists each.
 */
export const Limit = {
  MaxFrameBytes: 'MAX_FRAME_BYTES',
  FrameTimeout: 'FRAME_TIMEOUT_MS',
  PartialFramesBudget: 'PARTIAL_FRAMES_BUDGET_BYTES',
  InflateBytes: 'INFLATE_BYTES_PER_SEC',
  InflateTotal: 'INFLATE_TOTAL_BYTES_PER_SEC',
  InboundBytes: 'INBOUND_BYTES_PER_SEC',
  ReplyTotal: 'REPLY_TOTAL_BYTES_PER_SEC',
  MaxJsonDepth: 'MAX_JSON_DEPTH',
  MaxConnections: 'MAX_CONNECTIONS',
  ApiConnections: 'MAX_API_CONNECTIONS',
  ApiUnprovenCalls: 'MAX_UNPROVEN_CALLS',
  ApiAccepts: 'API_ACCEPTS_PER_SEC',
  RoomsPerConnection: 'MAX_ROOMS_PER_CONNECTION',
  RoomsTotal: 'MAX_ROOMS_TOTAL',
  ConnectionsPerUser: 'MAX_CONNECTIONS_PER_USER',
  RateLimit: 'RATE_LIMIT_PER_SEC',
  OutboundBytes: 'MAX_OUTBOUND_BYTES',
  OutboundBudget: 'OUTBOUND_BUDGET_BYTES',
  HttpTimeout: 'HTTP_REQUEST_TIMEOUT_MS',
  IdleTimeout: 'IDLE_TIMEOUT_MS',
  HelloTimeout: 'HELLO_TIMEOUT_MS',
} as const;
export type Limit = (typeof Limit)[keyof typeof Limit];

/** Why a connection was refused as soon as it was accepted (switchboard_connections_rejected_total). */
export const RejectReason = {
  /** MAX_CONNECTIONS (client and HTTP connections together) reached. */
  Limit: 'limit',
  /** Shutting down. */
  Draining: 'draining',
  /** Backing off after the process ran out of file descriptors (EMFILE/ENFILE). */
  Backoff: 'backoff',
  /** accept(2) itself failed (EMFILE, ENFILE, ...): the kernel had a connection we could not take. */
  AcceptError: 'accept_error',
  /**
   * Not the newcomer: an older connection that had proven nothing yet (no hello, or HTTP with no
   * request being answered), closed to admit it when MAX_CONNECTIONS was reached.
   */
  Evicted: 'evicted',
} as const;
export type RejectReason = (typeof RejectReason)[keyof typeof RejectReason];

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
  /** Times a client ran into each budget. */
  readonly limitHits: Record<Limit, number>;
  readonly rejected: Record<RejectReason, number>;
  /** Open HTTP connections, client port (sniffed) and admin port. */
  httpConnections = 0;
  /** Bytes of incomplete frames held by all connections (PARTIAL_FRAMES_BUDGET_BYTES). */
  partialFrameBytes = 0;
  /** Output pending for every connection together, as of the last outbound budget check. */
  outboundPendingBytes = 0;
  /**
   * Server-side errors as the overload monitor counts them: each connection at most once per
   * monitor interval (`epoch`), so that one client cannot make the error rate by itself.
   */
  serverErrorsForOverload = 0;
  /** Incremented by the performance monitor at every sample. */
  epoch = 1;
  /** Delivery latency (accepted -> written to the recipient's socket), cumulative. */
  readonly deliveryLatency = new Histogram();

  constructor() {
    this.errors = Object.fromEntries(ALL_ERROR_CODES.map((c) => [c, 0])) as Record<ErrorCode, number>;
    this.dropped = Object.fromEntries(Object.values(DropReason).map((r) => [r, 0])) as Record<DropReason, number>;
    this.limitHits = Object.fromEntries(Object.values(Limit).map((l) => [l, 0])) as Record<Limit, number>;
    this.rejected = Object.fromEntries(Object.values(RejectReason).map((r) => [r, 0])) as Record<RejectReason, number>;
  }

  countReceived(type: string): void {
    this.receivedTotal++;
    this.received.set(type, (this.received.get(type) ?? 0) + 1);
  }

  /**
   * Count an error reply. `source` is whatever caused it (a connection): a server-side error
   * counts toward the overload error rate once per source and monitor interval. Without a source
   * every server-side error counts.
   */
  countError(code: ErrorCode, source?: { errorEpoch: number }): void {
    this.errors[code]++;
    this.errorsTotal++;
    if (!ErrorInfo[code].serverSide) return;
    if (source === undefined) this.serverErrorsForOverload++;
    else if (source.errorEpoch !== this.epoch) {
      source.errorEpoch = this.epoch;
      this.serverErrorsForOverload++;
    }
  }
}
