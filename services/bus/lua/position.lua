-- Both keys hash by the room (one tag), so the script is valid on Redis Cluster.
--
-- POSITION answers a join with the room's position {seq, epoch}, creating the epoch if the room
-- has none, but only while some gateway is routed for the room. The joining gateway added its
-- routing entry before it asks, so the set is empty only when the member's own leave already ran
-- (a client that sends leave_room right behind join_room: requests run concurrently) and
-- unroute.lua found nothing to keep: creating the position then would leave it behind for
-- HISTORY_TTL_SEC, the churn unroute.lua exists to stop. The reply is then {seq, false}, and the
-- join reply says epoch '' (a room the client saw no position of).
--
-- KEYS[1] = sb:seq:{room}, KEYS[2] = sb:room:{room}
-- ARGV[1] = the epoch to create, ARGV[2] = seconds a created position lives (0: for ever)
-- Returns HMGET seq epoch.
if redis.call('HEXISTS', KEYS[1], 'epoch') == 0 and redis.call('SCARD', KEYS[2]) > 0 then
  redis.call('HSET', KEYS[1], 'epoch', ARGV[1])
end
local ttl = tonumber(ARGV[2])
-- NX leaves a message's expiry alone; a position written before expiries existed gets one here.
if ttl > 0 then redis.call('EXPIRE', KEYS[1], ttl, 'NX') end
return redis.call('HMGET', KEYS[1], 'seq', 'epoch')
