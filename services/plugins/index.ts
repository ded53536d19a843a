/** Built-in plugins. The core knows none of their message types. */
import type { MessageProcessor } from '../gateway/plugins';
import { chatPlugin, publishChat } from './chat';
import { directPlugin, sendDirect } from './direct';

export { chatPlugin, directPlugin, publishChat, sendDirect };

/** The plugins every role registers by default, in order. */
export function builtinPlugins(): MessageProcessor[] {
  return [chatPlugin, directPlugin];
}
