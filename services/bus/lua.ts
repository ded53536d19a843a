/**
 * Lua scripts are kept as real `.lua` files in a `lua/` folder next to the module that runs them
 * (each file documents its keys and arguments) and read once at start-up. The image build copies
 * those folders next to the compiled JavaScript; in a source checkout they are read from services/.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

/** The script `name` of the services/<folder>/lua/ folder, for a module compiled into `dir`. */
export function loadLua(dir: string, folder: string, name: string): string {
  const candidates = [join(dir, 'lua', name), resolve(dir, '../../../services', folder, 'lua', name)];
  const found = candidates.find((p) => existsSync(p));
  if (found === undefined) throw new Error(`${name} not found (looked in ${candidates.join(', ')})`);
  return readFileSync(found, 'utf8');
}
