/**
 * The chat-room plugin (the origin's chat_room): join_room, leave_room, send_chat, presence and
 * history. Rooms, sequence numbers and history live behind the bus, so this plugin is the same
 * in embedded and cluster mode.
 */
import type { MessageProcessor, PluginContext, ProcessResult } from '../gateway/plugins';
import type { MaybePromise, PublishRequest } from '../bus';
import {
  dataField,
  ErrorCode,
  nameField,
  optionalCountField,
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

function historyReply(id: RequestId | undefined, room: string, messages: readonly Outbound[]): Outbound {
  const head = id === undefined ? '{"type":"history"' : `{"type":"history","id":${JSON.stringify(id)}`;
  let body = '';
  for (let i = 0; i < messages.length; i++) body += (i === 0 ? '' : ',') + messages[i].json;
  return new Outbound(`${head},"room":${JSON.stringify(room)},"messages":[${body}]}`);
}

function then<T>(v: MaybePromise<T>, f: (v: T) => ProcessResult): MaybePromise<ProcessResult> {
  return v instanceof Promise ? v.then(f) : f(v);
}

export const chatPlugin: MessageProcessor = {
  name: 'chat',
  canHandle: (type) => TYPES.has(type),
  // Rooms and chat are the core of the product; only history (a store read) sits behind a flag.
  flagFor: (type) => (type === 'history' ? 'history' : undefined),
  process(msg, ctx) {
    switch (msg.type) {
      case 'send_chat': {
        const room = memberRoom(msg, ctx);
        const dataJson = JSON.stringify(dataField(msg));
        const req: PublishRequest = { room, from: ctx.user, dataJson, ts: preciseNow() };
        const bus = ctx.services.bus;
        const accepted = tracing.enabled ? traceReceive(room, {}, (tp) => (req.trace = tp), () => bus.publish(req)) : bus.publish(req);
        if (msg.id === undefined) return accepted instanceof Promise ? accepted.then(() => undefined) : undefined;
        return then(accepted, (r) => (r.seq === undefined ? undefined : { seq: r.seq }));
      }
      case 'join_room': {
        const room = nameField(msg, 'room');
        const joined = ctx.joinRoom(room);
        if (msg.id === undefined) return joined;
        // The reply carries the room's last sequence number: where a (re)joining client stands,
        // and how it notices a room whose sequence went backwards after a server restart.
        const lastSeq = () => then(ctx.services.bus.lastSeq(room), (seq) => ({ seq }));
        return joined instanceof Promise ? joined.then(lastSeq) : lastSeq();
      }
      case 'leave_room':
        return ctx.leaveRoom(memberRoom(msg, ctx));
      case 'presence': {
        const room = memberRoom(msg, ctx);
        return then(ctx.services.bus.presence(room), (users) => ({ type: 'presence', room, users }));
      }
      case 'history': {
        const room = memberRoom(msg, ctx);
        const since = optionalCountField(msg, 'since');
        const max = ctx.services.config.historySize;
        const limit = Math.min(optionalCountField(msg, 'limit') ?? max, max);
        return then(ctx.services.bus.history(room, since, limit), (messages) => historyReply(msg.id, room, messages));
      }
      default:
        throw new SwitchboardError(ErrorCode.UnknownType, `chat cannot handle "${msg.type}"`);
    }
  },
};
