/**
 * The chat-room plugin (the origin's chat_room): join_room, leave_room, send_chat, presence and
 * history. Rooms, sequence numbers and history live behind the bus, so this plugin is the same
 * in embedded and cluster mode.
 */
import type { MessageProcessor, PluginContext, ProcessResult } from '../gateway/plugins';
import type { Bus, HistoryPage, MaybePromise, PublishRequest, PublishResult } from '../bus';
import { bulkReplyBytes } from '../control';
import {
  dataJsonField,
  ErrorCode,
  nameField,
  optionalCountField,
  optionalStringField,
  Outbound,
  SwitchboardError,
  type InboundMessage,
  type RequestId,
} from '../protocol';
import { preciseNow } from '../telemetry/clock';
import { traceReceive, tracing } from '../telemetry/tracing';

const TYPES = new Set(['join_room', 'leave_room', 'send_chat', 'presence', 'history']);

function memberRoom(msg: InboundMessage, ctx: PluginContext): string {
  const room = nameField(msg, 'room');
  if (!ctx.rooms.has(room)) throw new SwitchboardError(ErrorCode.NotInRoom, `not in room "${room}"`);
  return room;
}

/**
 * The history reply: at most `budget` bytes of messages, so that one reply never exceeds a
 * connection's outbound bound by itself (a reader that reads normally must not be cut off as a
 * slow consumer by asking for history). At least one message is sent, so paging always
 * progresses. A page after `since` cut short says `more`, and the client asks again from the last
 * seq it got; the newest page (no `since`) keeps its newest messages, as much as fits.
 */
function historyReply(id: RequestId | undefined, room: string, page: HistoryPage, budget: number, newest: boolean): Outbound {
  const head = id === undefined ? '{"type":"history"' : `{"type":"history","id":${JSON.stringify(id)}`;
  const { messages } = page;
  // As many messages as fit, from the oldest (after `since`) or from the newest.
  const total = messages.length;
  let bytes = 0;
  let kept = 0;
  while (kept < total) {
    const b = Buffer.byteLength(messages[newest ? total - 1 - kept : kept]) + 1;
    if (kept > 0 && bytes + b > budget) break;
    bytes += b;
    kept++;
  }
  const from = newest ? total - kept : 0;
  const to = newest ? total : kept;
  const more = page.more || to < total;
  const body = messages.slice(from, to).join(',');
  return new Outbound(
    `${head},"room":${JSON.stringify(room)},"epoch":"${page.epoch}","seq":${page.seq},"recovered":${page.recovered},"more":${more},"messages":[${body}]}`,
  );
}

/**
 * Publish a chat message into a room: what `send_chat` does, and the gRPC API's Publish, so both
 * are traced (a `receive` span when tracing is on) and stamped the same way.
 */
export function publishChat(bus: Bus, room: string, from: string, dataJson: string): MaybePromise<PublishResult> {
  const req: PublishRequest = { room, from, dataJson, ts: preciseNow() };
  return tracing.enabled ? traceReceive(room, {}, (tp) => (req.trace = tp), () => bus.publish(req)) : bus.publish(req);
}

/**
 * The members of a room, as many as fit in `budget` bytes of JSON (at least one), and
 * `more: true` when some were left out. A room's member list is the one reply whose size grows
 * with the square of the attack (each member's name in every member's reply): 1,500 connections
 * with 775-byte names made each `presence` reply 1.2 MB.
 */
function presenceReply(room: string, users: readonly string[], budget: number): Record<string, unknown> {
  let bytes = 0;
  let kept = 0;
  while (kept < users.length) {
    const b = Buffer.byteLength(JSON.stringify(users[kept])) + 1;
    if (kept > 0 && bytes + b > budget) break;
    bytes += b;
    kept++;
  }
  if (kept === users.length) return { type: 'presence', room, users };
  return { type: 'presence', room, users: users.slice(0, kept), more: true, count: users.length };
}

function then<T>(v: MaybePromise<T>, f: (v: T) => ProcessResult): MaybePromise<ProcessResult> {
  return v instanceof Promise ? v.then(f) : f(v);
}

export const chatPlugin: MessageProcessor = {
  name: 'chat',
  canHandle: (type) => TYPES.has(type),
  // Rooms and chat are the core of the product; only history (a store read) sits behind a flag.
  flagFor: (type) => (type === 'history' ? 'history' : undefined),
  // Their replies follow the room (its history, its members), not the request's size.
  bulk: (type) => type === 'history' || type === 'presence',
  process(msg, ctx) {
    switch (msg.type) {
      case 'send_chat': {
        const room = memberRoom(msg, ctx);
        const accepted = publishChat(ctx.services.bus, room, ctx.user, dataJsonField(msg, ctx.services.config.maxFrameBytes));
        if (msg.id === undefined) return accepted instanceof Promise ? accepted.then(() => undefined) : undefined;
        return then(accepted, (r) => (r.seq === undefined ? undefined : { seq: r.seq }));
      }
      case 'join_room': {
        const room = nameField(msg, 'room');
        const joined = ctx.joinRoom(room);
        if (msg.id === undefined) return joined;
        // The reply carries the room's position: where a (re)joining client stands, and, through
        // the epoch, whether the seq it knew still means anything here.
        const position = () => then(ctx.services.bus.position(room, true), (p) => ({ seq: p.seq, epoch: p.epoch }));
        return joined instanceof Promise ? joined.then(position) : position();
      }
      case 'leave_room':
        return ctx.leaveRoom(memberRoom(msg, ctx));
      case 'presence': {
        const room = memberRoom(msg, ctx);
        const budget = bulkReplyBytes(ctx.services.config);
        return then(ctx.services.bus.presence(room), (users) => presenceReply(room, users, budget));
      }
      case 'history': {
        const room = memberRoom(msg, ctx);
        const since = optionalCountField(msg, 'since');
        const epoch = optionalStringField(msg, 'epoch');
        const { historySize } = ctx.services.config;
        const asked = optionalCountField(msg, 'limit');
        // A page of none would say `more` for ever: a client paging on it would never progress.
        if (asked === 0) throw new SwitchboardError(ErrorCode.BadRequest, 'field "limit" must be at least 1');
        const limit = Math.min(asked ?? historySize, historySize);
        const budget = bulkReplyBytes(ctx.services.config);
        return then(
          ctx.services.bus.history(room, { since, epoch, limit, maxBytes: budget }),
          // The newest page, unless the epoch asked for is gone (the page then starts at the oldest).
          (page) => historyReply(msg.id, room, page, budget, since === undefined && (epoch === undefined || epoch === page.epoch)),
        );
      }
      default:
        throw new SwitchboardError(ErrorCode.UnknownType, `chat cannot handle "${msg.type}"`);
    }
  },
};
