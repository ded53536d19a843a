/**
 * The bus between gateways: the one interface that the embedded in-memory bus and the Redis
 * Streams bus both implement, so every plugin works unchanged in both modes.
 *
 * A gateway calls the bus for everything that crosses gateways (publishing, routing membership,
 * direct messages, presence, history) and receives what the bus delivers through a BusSink.
 * Methods may complete synchronously (memory) or return a promise (Redis): callers handle both.
 */
import type { Outbound } from '../protocol';

export type MaybePromise<T> = T | Promise<T>;

/** What a gateway receives from the bus. */
export interface BusSink {
  /**
   * Fan a room message out to local members. `msg` is the encoded `message` push (encode once);
   * `ts` is when the origin gateway accepted it (for delivery latency); `trace` is the
   * traceparent of the routing span when the message is sampled for tracing (the gateway's
   * `gateway deliver` span continues from it). The bus has dropped duplicates already.
   */
  deliverRoom(room: string, msg: Outbound, ts: number, trace?: string): void;
  /** Deliver a direct push to every local connection of `user`; returns how many got it. */
  deliverUser(user: string, msg: Outbound): number;
  /**
   * What this gateway holds, for a bus that must register it again (Redis lost it): every room
   * with the users in it here, and every user with a connection here.
   */
  registrations(): { rooms: Iterable<readonly [string, Iterable<string>]>; users: Iterable<string> };
  /** The users this gateway holds in `room` at this moment (none: empty), found directly. */
  usersIn(room: string): Iterable<string>;
  /** The bus dropped a message it had delivered already (switchboard_dropped_total{reason="duplicate"}). */
  duplicate?(): void;
  /**
   * A push for every local member of a room that is not a room message (a `position` notice);
   * not counted as a delivery. Returns how many got it.
   */
  pushRoom?(room: string, msg: Outbound): number;
}

export interface PublishRequest {
  room: string;
  from: string;
  /** The payload, already serialised as JSON (parsed once, serialised once). */
  dataJson: string;
  /** Accept time at the origin gateway, ms since epoch. */
  ts: number;
  /** W3C traceparent of the sampled span that accepted the message, carried across processes. */
  trace?: string;
}

export interface PublishResult {
  /** Sequence number within the room, when the bus assigns it synchronously. */
  seq?: number;
}

/**
 * Where a room's stream stands. `seq` counts the room's messages within one `epoch`; the epoch is
 * a random id chosen whenever the room's sequence (re)starts at 0: a room forgotten and recreated,
 * a standalone restart, Redis losing its data. A client that saw another epoch knows its `seq`
 * means nothing here any more and its missed messages cannot be recovered.
 */
export interface RoomPosition {
  seq: number;
  epoch: string;
}

/** One page of a room's history: a contiguous run of messages, oldest first. */
export interface HistoryPage extends RoomPosition {
  /** The messages' JSON texts, oldest first. */
  messages: string[];
  /**
   * False when the messages after the requested position cannot all be returned: the client's
   * epoch is not the room's (the page then starts at the current epoch's oldest kept message), or
   * messages after `since` were already trimmed. True when nothing after `since` is missing.
   */
  recovered: boolean;
  /** More messages follow this page: ask again with `since` = the last seq returned. */
  more: boolean;
}

export interface HistoryQuery {
  /** Messages after this seq (forward paging); absent: the newest `limit` messages. */
  since?: number;
  /** The epoch the client's `since` belongs to; absent: the current one is assumed. */
  epoch?: string;
  /** At most this many messages. */
  limit: number;
  /**
   * At most about this many bytes of messages (the first is always included): a bus that reads
   * history from a store stops fetching there, instead of building a page the reply cuts anyway.
   */
  maxBytes?: number;
}

export interface Bus {
  /** Human-readable kind, for logs and /stats. */
  readonly kind: string;
  /** True while the bus can accept work (Redis connected). */
  readonly ready: boolean;
  start(sink: BusSink): Promise<void>;
  stop(): Promise<void>;
  /** Accept a room message. Resolves only once the message is durably accepted. */
  publish(req: PublishRequest): MaybePromise<PublishResult>;
  /** `user` now has a connection in `room` on this gateway (first one). */
  join(room: string, user: string): MaybePromise<void>;
  /** `user` has no connection left in `room` on this gateway. */
  leave(room: string, user: string): MaybePromise<void>;
  /** The last local member of `room` left this gateway: stop routing the room here. */
  roomEmpty?(room: string): MaybePromise<void>;
  /** `user` has a connection on this gateway (first one) / has none left. */
  userOnline(user: string): MaybePromise<void>;
  userOffline(user: string): MaybePromise<void>;
  /** Send a direct push; resolves to false when the user has no connection anywhere. */
  direct(to: string, msg: Outbound): MaybePromise<boolean>;
  /** Users with a connection in the room, across gateways. */
  presence(room: string): MaybePromise<string[]>;
  /** A page of the room's history (encoded pushes, oldest first), see HistoryQuery. */
  history(room: string, query: HistoryQuery): MaybePromise<HistoryPage>;
  /**
   * The room's last assigned seq (0 when none) and its epoch, created if the room has none yet.
   * `joining`: for a join's reply; in cluster mode the epoch is then created only while a gateway
   * is routed for the room (the member's own leave may have overtaken its join), else it is ''.
   */
  position(room: string, joining?: boolean): MaybePromise<RoomPosition>;
}
