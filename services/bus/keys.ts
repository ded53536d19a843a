/**
 * Redis key names of cluster mode (DESIGN.md "Cluster keys in Redis"). Every key carries a hash
 * tag ({...}) so that the keys one command or script touches share a slot on Redis Cluster:
 * a room's routing set, sequence counter, history and presence all hash by the room name.
 */

export const GROUP = 'broadcast';

export const Keys = {
  /** Ingress stream of shard n. */
  ingress: (shard: number) => `sb:in:{${shard}}`,
  /** Which broadcast worker owns shard n. */
  lease: (shard: number) => `sb:lease:{${shard}}`,
  /** Gateway ids with members in the room. */
  room: (room: string) => `sb:room:{${room}}`,
  /** Per-room sequence counter and last applied ingress id (hash: seq, last). */
  seq: (room: string) => `sb:seq:{${room}}`,
  /** Room history stream; entry ids are `<seq>-1`. */
  history: (room: string) => `sb:hist:{${room}}`,
  /** Presence hash: field `<gateway>|<user>`. */
  presence: (room: string) => `sb:pres:{${room}}`,
  /** Egress stream of one gateway. */
  egress: (gw: string) => `sb:out:{${gw}}`,
  /** Gateway heartbeat (expires). */
  gateway: (gw: string) => `sb:gw:{${gw}}`,
  /** Rooms a gateway has members in (for cleanup when it dies). */
  gatewayRooms: (gw: string) => `sb:gwrooms:{${gw}}`,
  /** Users a gateway has connections of (for cleanup when it dies). */
  gatewayUsers: (gw: string) => `sb:gwusers:{${gw}}`,
  /** Gateways holding connections of a user, for direct messages. */
  user: (user: string) => `sb:user:{${user}}`,
  /** Every gateway that registered, alive or not yet cleaned up. */
  gateways: 'sb:gateways',
  /** Live broadcast workers: sorted set, score = last heartbeat (ms). */
  workers: 'sb:workers',
  flags: 'sb:flags',
  flagsChanged: 'sb:flags:changed',
} as const;

/** FNV-1a 32-bit: a stable, cheap hash for mapping rooms to ingress shards. */
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

/** Compare two stream ids ("ms-seq"). */
export function compareStreamIds(a: string, b: string): number {
  const [am, as] = a.split('-');
  const [bm, bs] = b.split('-');
  const d = Number(am) - Number(bm);
  return d !== 0 ? Math.sign(d) : Math.sign(Number(as ?? 0) - Number(bs ?? 0));
}
