/** Direct messages: `direct` {to, data} reaches every connection of the user, on any gateway. */
import type { MessageProcessor } from '../gateway/plugins';
import { dataField, directMessageJson, ErrorCode, nameField, Outbound, SwitchboardError } from '../protocol';

function offline(to: string): never {
  throw new SwitchboardError(ErrorCode.UserOffline, `user "${to}" is not connected`);
}

export const directPlugin: MessageProcessor = {
  name: 'direct',
  flag: 'direct',
  canHandle: (type) => type === 'direct',
  process(msg, ctx) {
    const to = nameField(msg, 'to');
    const out = new Outbound(directMessageJson(ctx.user, JSON.stringify(dataField(msg)), Date.now()));
    const sent = ctx.services.bus.direct(to, out);
    if (sent instanceof Promise) return sent.then((ok) => (ok ? undefined : offline(to)));
    if (!sent) offline(to);
  },
};
