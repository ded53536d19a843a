/** The Lua scripts of the broadcast tier, in services/broadcast/lua/ (see services/bus/lua.ts). */
import { loadLua } from '../bus/lua';

const lua = (name: string) => loadLua(__dirname, 'broadcast', name);

/** Assign a room's next seqs and append to its history, for one room's entries of a batch. */
export const APPLY_LUA = lua('apply.lua');
/** A worker's heartbeat on Redis' clock; returns the live workers. */
export const HEARTBEAT_LUA = lua('heartbeat.lua');
/** Renew a lease only if we still hold it. */
export const RENEW_LUA = lua('renew.lua');
/** Release a lease only if we hold it. */
export const RELEASE_LUA = lua('release.lua');
/** Take a shard's entries (new ones, or a predecessor's pending ones) only while holding its lease. */
export const READ_LUA = lua('read.lua');
