-- A broadcast worker's heartbeat: record it with Redis' clock (workers' clocks may disagree, so
-- none of them decides who is alive), drop workers silent for a lease period, and return the live
-- ones. KEYS[1] = sb:workers, ARGV[1] = worker id, ARGV[2] = lease ms.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
return redis.call('ZRANGE', KEYS[1], 0, -1)
