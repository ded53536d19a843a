/** Direct messages: `direct` {to, data} reaches every connection of the user, on any gateway. */
import type { Bus, MaybePromise } from '../bus';
import type { MessageProcessor } from '../gateway/plugins';
import { dataJsonField, directMessageJson, ErrorCode, nameField, Outbound, SwitchboardError } from '../protocol';

function offline(to: string): never {
  throw new SwitchboardError(ErrorCode.UserOffline, `user "${to}" is not connected`);
}

/**
 * Send a direct message to every connection of `to`, on any gateway: what `direct` does, and the
 * gRPC API's SendDirect. False (or a promise of false) when the user is not connected anywhere.
 */
export function sendDirect(bus: Bus, from: string, to: string, dataJson: string): MaybePromise<boolean> {
  return bus.direct(to, new Outbound(directMessageJson(from, dataJson, Date.now())));
}

export const directPlugin: MessageProcessor = {
  name: 'direct',
  flag: 'direct',
  canHandle: (type) => type === 'direct',
  process(msg, ctx) {
    const to = nameField(msg, 'to');
    const sent = sendDirect(ctx.services.bus, ctx.user, to, dataJsonField(msg, ctx.services.config.maxFrameBytes));
    if (sent instanceof Promise) return sent.then((ok) => (ok ? undefined : offline(to)));
    if (!sent) offline(to);
  },
};
