/**
 * What a chaos run records: one flat list of timestamped events (ms since the epoch), written by
 * the members (clients), the traffic generator and the fault injector, and read by the checker.
 * Plain data, so a run's events can be saved as NDJSON and checked again offline.
 */

export type FaultKind =
  | 'worker_kill9'
  | 'worker_term'
  | 'gateway_kill9'
  | 'gateway_term'
  | 'gateway_pause'
  | 'scale_workers'
  | 'redis_pause'
  | 'redis_restart_empty';

export const FAULT_KINDS: readonly FaultKind[] = [
  'worker_kill9',
  'worker_term',
  'gateway_kill9',
  'gateway_term',
  'gateway_pause',
  'scale_workers',
  'redis_pause',
  'redis_restart_empty',
];

/** How a member got a message: a live push, or a history reply (recovery). */
export type Via = 'live' | 'history';

export type ChaosEvent =
  /** A fault began (`detail` names the target and parameters). */
  | { t: number; e: 'fault'; kind: FaultKind; detail: string }
  /** Redis could not serve between `start` and `end` (paused, or down until the new one answered). */
  | { t: number; e: 'outage'; start: number; end: number; kind: FaultKind }
  /** Redis lost every key: the new empty server answered at `t`. */
  | { t: number; e: 'dataloss' }
  /** A send_chat went out (`key` is the unique message key carried in data.k). */
  | { t: number; e: 'sent'; room: string; member: string; key: string }
  /** Its `ok` came back: the message was accepted. */
  | { t: number; e: 'ack'; room: string; member: string; key: string }
  /** An error reply: not accepted. */
  | { t: number; e: 'nack'; room: string; member: string; key: string; code: string }
  /** No reply (timeout or the connection dropped): fate unknown, not counted as accepted. */
  | { t: number; e: 'noreply'; room: string; member: string; key: string; why: string }
  /** join_room answered ok. */
  | { t: number; e: 'joined'; room: string; member: string; seq: number; epoch: string; first: boolean }
  /**
   * A message handed to the member's application, in the order the member applies them (live
   * pushes that arrive during a recovery are held back until the history pages are applied).
   */
  | { t: number; e: 'recv'; room: string; member: string; key: string; seq: number; epoch: string; via: Via }
  /** The member learned that the room's epoch changed (Redis lost the room's data). */
  | { t: number; e: 'epoch'; room: string; member: string; from: string; to: string; via: 'live' | 'join' | 'history' }
  /** A history reply said recovered=false in the same epoch: messages after `since` were trimmed. */
  | { t: number; e: 'trimmed'; room: string; member: string; since: number }
  /** A `position` push made the member recover (it was behind the room, or in another epoch). */
  | { t: number; e: 'position'; room: string; member: string; seq: number; epoch: string }
  /** A join_room reply's seq was below the last seq the member had seen, in the same epoch. */
  | { t: number; e: 'seq_regressed'; room: string; member: string; last: number; seq: number; epoch: string }
  /** A member's connection came up (after hello, joins and recovery) or went down. */
  | { t: number; e: 'conn'; member: string; up: boolean; port: number; why?: string }
  /** A server process exited; `expected` when the run had told it to stop. */
  | {
      t: number;
      e: 'exit';
      proc: string;
      code: number | null;
      signal: string | null;
      /** The run had told it to stop (it sent `told`); an exit without that is a failure. */
      expected: boolean;
      told: string | null;
      /** Its last log lines. */
      tail: string[];
    }
  /** The harness itself could not do what the schedule asked (a restart that did not come up...). */
  | { t: number; e: 'harness_error'; detail: string }
  /** Traffic started or stopped. */
  | { t: number; e: 'traffic'; on: boolean };

export type EventOf<K extends ChaosEvent['e']> = Extract<ChaosEvent, { e: K }>;
