/** Built-in plugins. The core knows none of their message types. */
import type { MessageProcessor } from '../gateway/plugins';
import { chatPlugin } from './chat';
import { directPlugin } from './direct';

export { chatPlugin, directPlugin };

/** The plugins every role registers by default, in order. */
export function builtinPlugins(): MessageProcessor[] {
  return [chatPlugin, directPlugin];
}
