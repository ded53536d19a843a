/**
 * Redis key names of cluster mode (docs/cluster.md "Keys"). Every key carries a hash tag ({...})
 * so that the keys one command or script touches share a slot on Redis Cluster: a room's routing
 * set, sequence counter, history and presence all hash by the room.
 *
 * The tag is never the client-chosen name itself: Redis Cluster hashes the text between the first
 * `{` and the first `}` after it, so a room named `}x` or `{a}b` would have split its keys over
 * several slots (CROSSSLOT on every script). The tag is a fixed-width hash of the name, and the
 * name follows it unchanged, so keys stay unique and readable: `sb:room:{1c3f5a7e}lobby`.
 */

export const GROUP = 'broadcast';

/** The hash tag of a client-chosen name: its FNV-1a hash, 8 hex digits (no braces possible). */
export function tagOf(name: string): string {
  return fnv1a(name).toString(16).padStart(8, '0');
}

const tagged = (prefix: string, name: string) => `${prefix}{${tagOf(name)}}${name}`;

export const Keys = {
  /** Ingress stream of shard n. */
  ingress: (shard: number) => `sb:in:{${shard}}`,
  /** Which broadcast worker owns shard n. */
  lease: (shard: number) => `sb:lease:{${shard}}`,
  /** Gateway ids with members in the room. */
  room: (room: string) => tagged('sb:room:', room),
  /** Per-room position: hash of seq, epoch and the last applied ingress id. */
  seq: (room: string) => tagged('sb:seq:', room),
  /** Room history stream; entry ids are `<seq>-1`. */
  history: (room: string) => tagged('sb:hist:', room),
  /** Presence hash: field `<gateway>|<user>`. */
  presence: (room: string) => tagged('sb:pres:', room),
  /** Egress stream of one gateway. */
  egress: (gw: string) => tagged('sb:out:', gw),
  /** Gateway heartbeat (expires). */
  gateway: (gw: string) => tagged('sb:gw:', gw),
  /** Rooms a gateway has members in (for cleanup when it dies). */
  gatewayRooms: (gw: string) => tagged('sb:gwrooms:', gw),
  /** Users a gateway has connections of (for cleanup when it dies). */
  gatewayUsers: (gw: string) => tagged('sb:gwusers:', gw),
  /** Gateways holding connections of a user, for direct messages. */
  user: (user: string) => tagged('sb:user:', user),
  /** Every gateway that registered, alive or not yet cleaned up. */
  gateways: 'sb:gateways',
  /** Live broadcast workers: sorted set, score = last heartbeat (ms, Redis clock). */
  workers: 'sb:workers',
  flags: 'sb:flags',
  flagsChanged: 'sb:flags:changed',
} as const;

/** FNV-1a 32-bit: a stable, cheap hash for mapping rooms to ingress shards and hash tags. */
export function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

export function shardOf(room: string, shards: number): number {
  return fnv1a(room) % shards;
}
