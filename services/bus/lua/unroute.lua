-- Both keys hash by the room (one tag), so the script is valid on Redis Cluster.
--
-- UNROUTE takes a gateway out of a room's routing set (its last local member left, or the repair
-- found it registered for a room it no longer holds) and, when that leaves the room with no
-- gateway and nothing was ever said in it (its position has an epoch but no seq), deletes the
-- position a join created. Joining and leaving
-- fresh room names then leaves nothing behind in Redis, as in standalone mode, where a room
-- nobody is in and nothing was said in is forgotten; a room with messages keeps its position and
-- history (for members who come back) until HISTORY_TTL_SEC. A join on another gateway adds its
-- routing entry before it reads the position, so it either keeps the position alive here or
-- creates a fresh one after the delete: no member is left holding an epoch that is gone.
--
-- KEYS[1] = sb:room:{room}, KEYS[2] = sb:seq:{room}; ARGV[1] = the gateway id
-- Returns 1 when the position was deleted, else 0.
redis.call('SREM', KEYS[1], ARGV[1])
if redis.call('SCARD', KEYS[1]) == 0 and redis.call('HEXISTS', KEYS[2], 'seq') == 0 then
  return redis.call('DEL', KEYS[2])
end
return 0
