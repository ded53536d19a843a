/**
 * The Lua scripts of the broadcast tier, kept as real `.lua` files in services/broadcast/lua/
 * (each documents its keys and arguments) and read once at start-up. The image build copies
 * them next to the compiled JavaScript; in a source checkout they are read from services/.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

function lua(name: string): string {
  const candidates = [join(__dirname, 'lua', name), resolve(__dirname, '../../../services/broadcast/lua', name)];
  const found = candidates.find((p) => existsSync(p));
  if (found === undefined) throw new Error(`${name} not found (looked in ${candidates.join(', ')})`);
  return readFileSync(found, 'utf8');
}

/** Assign a room's next seqs and append to its history, for one room's entries of a batch. */
export const APPLY_LUA = lua('apply.lua');
/** A worker's heartbeat on Redis' clock; returns the live workers. */
export const HEARTBEAT_LUA = lua('heartbeat.lua');
/** Renew a lease only if we still hold it. */
export const RENEW_LUA = lua('renew.lua');
/** Release a lease only if we hold it. */
export const RELEASE_LUA = lua('release.lua');
