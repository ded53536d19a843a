/** Messages between the generator's main thread and its workers (threads or child processes). */

/** Compression the generator's connections ask for in hello (binary mode only). */
export type LoadCodec = 'none' | 'lz4' | 'zstd';

/**
 * What the generator's connections speak: Switchboard's protocol, or a peer server's
 * (load-tests/peers/): the NATS text protocol over TCP, Centrifugo's JSON protocol over WebSocket.
 */
export type WireProtocol = 'switchboard' | 'nats' | 'centrifugo';

export interface ConnSpec {
  user: string;
  room: string;
  /** Whether this connection publishes. */
  publish: boolean;
  /** Members of its room (for the expected delivery count). */
  roomSize: number;
  /** Server port to connect to (several in cluster mode). */
  port: number;
}

export interface WorkerSnap {
  published: number;
  /** Deliveries owed for what was published: sum of the room sizes. */
  expected: number;
  delivered: number;
  /** Bytes received on the connections (after the join), for compression figures. */
  rxBytes: number;
  /** Non-message frames by error code or type. */
  others: Record<string, number>;
  /** Transport and setup errors by code. */
  errors: Record<string, number>;
  hist?: string;
  open: number;
}

export type ToWorker =
  | { cmd: 'setup'; host: string; conns: ConnSpec[]; protocol: WireProtocol; binary: boolean; codec: LoadCodec; sampleEvery: number; padBytes: number; concurrency: number }
  | { cmd: 'start'; rate: number; tickMs: number }
  | { cmd: 'stop' }
  | { cmd: 'snap'; resetHist: boolean; withHist: boolean }
  | { cmd: 'close' }
  | { cmd: 'churn'; host: string; ports: number[]; rate: number; durationMs: number; maxInFlight: number; binary: boolean }
  | { cmd: 'exit' };

export type ToMain =
  | { ev: 'ready'; id: number; ok: number; failed: number }
  | { ev: 'tick'; id: number; published: number; delivered: number; errors: number }
  | { ev: 'stopped'; id: number }
  | { ev: 'snap'; id: number; snap: WorkerSnap }
  | { ev: 'closed'; id: number }
  | { ev: 'churn'; id: number; started: number; completed: number; elapsedS: number; errors: Record<string, number>; hist: string };
