/**
 * One generator connection as a worker sees it, whatever it speaks: Switchboard's protocol
 * (worker.ts) or a peer server's (load-tests/peers/). The worker owns scheduling (what each
 * publisher owes, every tick), the latency histogram and the error counts; a connection only
 * knows its wire protocol: how to connect and subscribe, how to frame k publishes, and how to
 * count what is delivered without parsing it.
 */
import type { LatencySink } from '../lib/counter';
import type { ConnSpec } from './messages';

/** The receive side's figures, read by the worker's snapshots. */
export interface DeliveryCounter {
  /** Room messages delivered to this connection. */
  readonly messages: number;
  /** Bytes received. */
  readonly bytes: number;
  /** Frames that are neither a delivery nor an expected reply (errors, pushes), by code. */
  readonly others: ReadonlyMap<string, number>;
}

export interface LoadConn {
  readonly spec: ConnSpec;
  readonly counter: DeliveryCounter;
  /** Connect and subscribe to the spec's room: null once ready, else an error code. */
  open(host: string): Promise<string | null>;
  /** Whether the transport is still open. */
  isOpen(): boolean;
  /** Write k publishes stamped with `ts` (µs), as one write. */
  publish(k: number, ts: number): void;
  close(): void;
}

/** What a worker lends its connections. */
export interface ConnContext {
  /** The worker's latency histogram. */
  readonly hist: LatencySink;
  /** Count a transport error after setup (a disconnect, a reset) by code. */
  countError(code: string): void;
  /** Sample the latency of one delivered message in this many. */
  readonly sampleEvery: number;
  /** Chat-like padding in each publish's payload. */
  readonly padBytes: number;
}

/**
 * The setup phase of a connection, the same for every protocol: `open()` is answered once (null
 * when subscribed, else an error code); a transport error or close before that answers it, after
 * it counts against the run, unless we closed the connection ourselves.
 */
export class ConnSetup {
  private answer: ((err: string | null) => void) | null = null;
  closedByUs = false;

  constructor(private readonly countError: (code: string) => void) {}

  begin(answer: (err: string | null) => void): void {
    this.answer = answer;
  }

  /** Still setting up: replies are read as setup replies, not counted as deliveries. */
  get pending(): boolean {
    return this.answer !== null;
  }

  /** Answer `open()`: null (ready) or an error code. Later calls do nothing. */
  settle(err: string | null): void {
    const answer = this.answer;
    this.answer = null;
    answer?.(err);
  }

  /** The transport failed or closed: `duringSetup` answers open(), `afterSetup` is counted. */
  lost(duringSetup: string, afterSetup: string): void {
    if (this.answer !== null) this.settle(duringSetup);
    else if (!this.closedByUs) this.countError(afterSetup);
  }
}
