/**
 * The extension point: message processors (the origin's MessageProcessor) and their registry.
 *
 * The core handles only `hello` and `ping`; every other message type belongs to a plugin. A
 * plugin says which types it handles (`canHandle`) and processes a validated message with a
 * context that gives it the session and the gateway's services. See docs/plugins.md.
 */
import type { Bus, MaybePromise } from '../bus';
import type { Config } from '../control';
import type { InboundMessage, Outbound } from '../protocol';
import type { Counters } from '../telemetry/counters';
import type { Logger } from '../telemetry/log';
import type { Hub } from './hub';

/** What a gateway offers plugins, shared by every connection. */
export interface GatewayServices {
  readonly serverId: string;
  readonly config: Config;
  readonly bus: Bus;
  readonly hub: Hub;
  readonly counters: Counters;
  readonly log: Logger;
}

/** The calling connection, as a plugin sees it. */
export interface PluginContext {
  readonly sessionId: string;
  readonly user: string;
  /** Rooms this connection is in. */
  readonly rooms: ReadonlySet<string>;
  readonly services: GatewayServices;
  /** Join a room (routing included); resolves once messages of the room will reach us. */
  joinRoom(room: string): MaybePromise<void>;
  leaveRoom(room: string): MaybePromise<void>;
  /** Push a message to this connection, outside the request/reply flow. */
  send(msg: Outbound): void;
}

/**
 * What `process` returns: nothing (the client gets `ok` when it sent an `id`), a plain object
 * (sent as the reply, with the request's `id` added; `type` defaults to `ok`), or an Outbound
 * already encoded (sent as is: the plugin includes the id itself).
 */
export type ProcessResult = void | Record<string, unknown> | Outbound;

export interface MessageProcessor {
  /** Unique name, for logs and docs. */
  readonly name: string;
  /** Feature flag that gates this plugin; a gated request gets `feature_disabled`. */
  readonly flag?: string;
  /**
   * The flag gating one message type, for plugins whose types are gated differently (chat gates
   * only `history`). Returns undefined for ungated types. Takes precedence over `flag`.
   */
  flagFor?(type: string): string | undefined;
  canHandle(type: string): boolean;
  /**
   * Whether a type's replies grow with the server's state rather than with the request (chat:
   * `history`, `presence`): such requests run at most MAX_BULK_IN_FLIGHT at once per connection,
   * and across connections within REPLY_TOTAL_BYTES_PER_SEC, each holding half of
   * MAX_OUTBOUND_BYTES until its reply is built. Their replies should stay within that half.
   */
  bulk?(type: string): boolean;
  /** Throw a SwitchboardError to answer with its code. */
  process(msg: InboundMessage, ctx: PluginContext): MaybePromise<ProcessResult>;
  /** Called once when a connection closes, after it left its rooms. */
  onClose?(ctx: PluginContext): void;
}

/** Plugins in registration order; the first that can handle a type wins. Lookups are cached. */
export class PluginRegistry {
  private readonly plugins: MessageProcessor[] = [];
  private readonly byType = new Map<string, MessageProcessor>();

  register(plugin: MessageProcessor): this {
    if (this.plugins.some((p) => p.name === plugin.name)) throw new Error(`plugin "${plugin.name}" is already registered`);
    this.plugins.push(plugin);
    this.byType.clear();
    return this;
  }

  /** The processor for a type, or undefined. Only hits are cached, so random types cannot grow the cache. */
  find(type: string): MessageProcessor | undefined {
    const hit = this.byType.get(type);
    if (hit !== undefined) return hit;
    for (const p of this.plugins) {
      if (p.canHandle(type)) {
        this.byType.set(type, p);
        return p;
      }
    }
    return undefined;
  }

  list(): readonly MessageProcessor[] {
    return this.plugins;
  }
}
