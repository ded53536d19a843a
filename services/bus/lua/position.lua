-- Both keys hash by the room (one tag), so the script is valid on Redis Cluster.
--
-- POSITION answers with a room's position {seq, epoch}, creating the epoch if the room has none
-- (a join's reply, or a `position` notice to members who may have missed messages).
--
-- For a join (ARGV[3] = 1) the epoch is created only while some gateway is routed for the room.
-- The joining gateway added its routing entry before it asks, so the set is empty only when the
-- member's own leave already ran (a client that sends leave_room right behind join_room: requests
-- run concurrently) and unroute.lua found nothing to keep. Creating the position then would leave
-- it behind for HISTORY_TTL_SEC, the churn unroute.lua exists to stop. The reply is then
-- {seq, false}, and the join reply says epoch '' (a room the client saw no position of).
--
-- KEYS[1] = sb:seq:{room}, KEYS[2] = sb:room:{room}
-- ARGV[1] = the epoch to create, ARGV[2] = seconds a created position lives (0: for ever),
-- ARGV[3] = 1: create only while the room has routing (a join), 0: always
-- Returns HMGET seq epoch.
if redis.call('HEXISTS', KEYS[1], 'epoch') == 0 and (ARGV[3] == '0' or redis.call('SCARD', KEYS[2]) > 0) then
  redis.call('HSET', KEYS[1], 'epoch', ARGV[1])
end
local ttl = tonumber(ARGV[2])
-- NX leaves a message's expiry alone; a position written before expiries existed gets one here.
if ttl > 0 then redis.call('EXPIRE', KEYS[1], ttl, 'NX') end
return redis.call('HMGET', KEYS[1], 'seq', 'epoch')
